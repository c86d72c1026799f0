//! The `fedgate` binary from the outside: exit codes, messages, files and modes.

mod served;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use served::{fedgate, s, serve};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn pki_round_trip_with_modes_and_region_refusal() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let lx = t.path().join("lx");
    let node = t.path().join("police");
    assert!(fedgate(&["pki", "init", "--federation", "wuxi", "--out", s(&root)]).status.success());
    assert_eq!(std::fs::metadata(root.join("root.key")).unwrap().permissions().mode() & 0o777, 0o600);
    // A second init into the same folder must not clobber the root key.
    let again = fedgate(&["pki", "init", "--federation", "wuxi", "--out", s(&root)]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("refusing to overwrite"), "{}", stderr(&again));

    assert!(fedgate(&["pki", "issue-ca", "--ca", s(&root), "--region", "wuxi.liangxi", "--out", s(&lx)])
        .status
        .success());
    assert!(fedgate(&["pki", "issue", "--ca", s(&lx), "--node", "police@wuxi.liangxi", "--out", s(&node)])
        .status
        .success());
    assert_eq!(std::fs::metadata(node.join("node.key")).unwrap().permissions().mode() & 0o777, 0o600);
    for bad in ["police@wuxi", "police@wuxi.xinwu"] {
        let o = fedgate(&["pki", "issue", "--ca", s(&lx), "--node", bad, "--out", s(&t.path().join("x"))]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("bound to region wuxi.liangxi and may not issue"), "{}", stderr(&o));
    }
    let show = fedgate(&["pki", "show", s(&node.join("node.crt"))]);
    let out = String::from_utf8_lossy(&show.stdout);
    for want in [
        "node id:     police@wuxi.liangxi",
        "department:  police",
        "level:       2",
        "serial:",
        "sha256:",
        "CA bound to: wuxi.liangxi",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    let show = fedgate(&["pki", "show", s(&node.join("node.crt")), "--format", "json"]);
    assert!(show.status.success(), "{}", stderr(&show));
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(v[0]["kind"], "node");
    assert_eq!(v[0]["node_id"], "police@wuxi.liangxi");
    assert_eq!(v[0]["level"], 2);
    assert_eq!(v[0]["ca"], false);
    assert!(v[0]["days_left"].as_i64().unwrap() > 300, "{v}");
    assert!(v[0]["not_after"].as_str().unwrap().ends_with('Z'), "{v}");
    assert_eq!(v[1]["kind"], "ca");
    assert_eq!(v[1]["region"], "wuxi.liangxi");
    let revoke = fedgate(&["pki", "revoke", "--ca", s(&lx), "--cert", s(&node.join("node.crt"))]);
    assert!(revoke.status.success(), "{}", stderr(&revoke));
    // The root did not issue the node: revoking there is refused.
    let wrong = fedgate(&["pki", "revoke", "--ca", s(&root), "--cert", s(&node.join("node.crt"))]);
    assert!(!wrong.status.success());
}

#[test]
fn bad_input_gets_a_one_line_reason() {
    let t = tempfile::tempdir().unwrap();
    let o = fedgate(&["pki", "init", "--federation", "Wu Xi", "--out", s(t.path())]);
    assert_eq!(o.status.code(), Some(2), "clap usage error");
    assert!(stderr(&o).contains("invalid region path"), "{}", stderr(&o));

    let junk = t.path().join("junk.crt");
    std::fs::write(&junk, "not a certificate").unwrap();
    let o = fedgate(&["pki", "show", s(&junk)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("junk.crt"), "{}", stderr(&o));

    let cfg = t.path().join("gateway.toml");
    std::fs::write(&cfg, "node = \"police@wuxi\"\nlisten = \"nowhere\"\n").unwrap();
    let o = fedgate(&["serve", "--config", s(&cfg)]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("gateway.toml:2:10: `listen` must be HOST:PORT"), "{err}");
    assert!(err.contains("missing required key `api`"), "{err}");
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec![],
        vec!["pki"],
        vec!["pki", "init"],
        vec!["pki", "issue-ca"],
        vec!["pki", "issue"],
        vec!["pki", "revoke"],
        vec!["pki", "show"],
        vec!["serve"],
        vec!["demo"],
        vec!["subscribe"],
        vec!["subscriptions"],
        vec!["subscriptions", "list"],
        vec!["subscriptions", "cancel"],
        vec!["subscriptions", "follow"],
    ] {
        let mut a = args.clone();
        a.push("--help");
        let o = fedgate(&a);
        assert!(o.status.success(), "{args:?} --help failed");
        assert!(String::from_utf8_lossy(&o.stdout).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn catalog_check_reports_located_errors_and_exit_codes() {
    let t = tempfile::tempdir().unwrap();
    let doc = include_str!("../../docs/catalog.md");
    let start = doc.find("```toml\n").unwrap() + 8;
    let example = &doc[start..start + doc[start..].find("```").unwrap()];
    let good = t.path().join("good.toml");
    std::fs::write(&good, example).unwrap();
    let o = fedgate(&["catalog", "check", s(&good)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("catalog digest sha256:"));

    let bad = t.path().join("bad.toml");
    std::fs::write(&bad, example.replace("update = \"realtime\"", "update = \"often\"")).unwrap();
    let junk = t.path().join("junk.toml");
    std::fs::write(&junk, "this is = = not toml\n").unwrap();
    let o = fedgate(&["catalog", "check", s(&bad), s(&junk)]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("bad.toml:8:10: `dataset.update`: unknown update frequency \"often\""), "{err}");
    assert!(err.contains("junk.toml:1:"), "{err}");
}

#[test]
fn demo_folders_serve_and_answer_queries_through_the_local_api() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("demo");
    let o = fedgate(&["demo", "--dir", s(&dir), "--records", "300"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("DENIED") && out.contains("trailer"), "{out}");

    let cfg = |n: &str| dir.join(n).join("gateway.toml");
    let _hotline = serve(&cfg("hotline12345@wuxi"));
    let _centre = serve(&cfg("mediation-center@wuxi"));
    let _police = serve(&cfg("police@wuxi.liangxi"));

    let q = |node: &str, purpose: &str, extra: &[&str]| {
        let c = cfg(node);
        let mut args = vec![
            "query",
            "--config",
            s(&c),
            "--peer",
            "hotline12345@wuxi",
            "--dataset",
            "hotline-tickets",
            "--purpose",
            purpose,
        ];
        args.extend_from_slice(extra);
        fedgate(&args)
    };
    let o = q("mediation-center@wuxi", "dispute-mediation", &["--limit", "5", "--format", "jsonl"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    assert!(lines[0]["caller_id"].as_str().unwrap().len() == 18, "clear for the centre: {}", lines[0]);

    let o = q("police@wuxi.liangxi", "law-enforcement", &["--format", "csv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut rows = csv.lines();
    assert!(rows.next().unwrap().starts_with("ticket_id,region,caller_name"));
    for row in rows {
        assert!(row.contains(",wuxi.liangxi."), "row outside the district: {row}");
        assert!(row.contains("****"), "unmasked row: {row}");
    }
    // Spreadsheet users: a byte-order mark on request, only with CSV (else a usage error).
    let o = q("police@wuxi.liangxi", "law-enforcement", &["--format", "csv", "--bom", "--limit", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        o.stdout.starts_with("\u{feff}ticket_id,region,".as_bytes()),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stdout).ends_with("\r\n"), "RFC 4180 line ends");
    let o = q("police@wuxi.liangxi", "law-enforcement", &["--format", "jsonl", "--bom"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // A denial is exit 1 and says it is one: the API's code leads the reason.
    let o = q("police@wuxi.liangxi", "statistics", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with(
            "fedgate: denied: hotline12345@wuxi: no grant allows police@wuxi.liangxi to read `hotline-tickets` for purpose `statistics`"
        ),
        "{}",
        stderr(&o)
    );

    let o = fedgate(&[
        "catalog",
        "list",
        "--config",
        s(&cfg("police@wuxi.liangxi")),
        "--peer",
        "hotline12345@wuxi",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"id\": \"hotline-tickets\""));

    let o = fedgate(&[
        "policy",
        "explain",
        "--config",
        s(&cfg("hotline12345@wuxi")),
        "--peer",
        "police@wuxi.liangxi",
        "--dataset",
        "hotline-tickets",
        "--purpose",
        "law-enforcement",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["fields"]["caller_id"], "mask");
    assert_eq!(v["fields"]["ticket_id"], "clear");
}

#[test]
fn query_without_a_running_gateway_says_so() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("demo");
    let o = fedgate(&["demo", "--dir", s(&dir), "--records", "10"]);
    assert!(o.status.success(), "demo failed: {}", stderr(&o));
    let c = dir.join("mediation-center@wuxi/gateway.toml");
    let o = fedgate(&[
        "query",
        "--config",
        s(&c),
        "--peer",
        "hotline12345@wuxi",
        "--dataset",
        "hotline-tickets",
        "--purpose",
        "dispute-mediation",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("cannot reach the gateway's local API") || err.contains("api.token"), "{err}");
}

#[test]
fn demo_into_a_used_folder_refuses_or_starts_clean_with_force() {
    // r10.10: a second demo run regenerated the keys and kept the old audit logs.
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("demo");
    let o = fedgate(&["demo", "--dir", s(&dir), "--records", "10"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let key = dir.join("pki/root/root.key");
    let before = std::fs::read(&key).unwrap();
    let audit = dir.join("hotline12345@wuxi/audit");
    assert!(audit.exists());
    let o = fedgate(&["demo", "--dir", s(&dir), "--records", "10"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("already holds a demo federation") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), before, "a refused run changes nothing");

    // --force: the old federation is gone, audit logs included, and a new one runs.
    let stale = audit.join("stale-marker");
    std::fs::write(&stale, "old").unwrap();
    let o = fedgate(&["demo", "--dir", s(&dir), "--records", "10", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(std::fs::read(&key).unwrap(), before);
    assert!(!stale.exists(), "old audit folder removed");

    // --force never deletes a folder fedgate did not build.
    let other = t.path().join("mine");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "keep").unwrap();
    let o = fedgate(&["demo", "--dir", s(&other), "--records", "10", "--force"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(other.join("notes.txt").exists());
}

#[test]
fn check_passes_a_demo_node_and_fails_a_broken_one_with_one_error() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("demo");
    let o = fedgate(&["demo", "--dir", s(&dir), "--records", "10"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = dir.join("hotline12345@wuxi/gateway.toml");
    let o = fedgate(&["check", "--config", s(&cfg), "--no-peers"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ready to serve"));

    let catalog = dir.join("hotline12345@wuxi/catalog.toml");
    let text = std::fs::read_to_string(&catalog).unwrap();
    std::fs::write(&catalog, text.replacen("type = \"string\"", "type = \"strin\"", 1)).unwrap();
    let o = fedgate(&["check", "--config", s(&cfg), "--no-peers"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let problems: Vec<&str> = err.lines().filter(|l| !l.starts_with("warning:")).collect();
    assert_eq!(problems.len(), 2, "one problem and the summary:\n{err}");
    assert!(problems[0].starts_with(&format!("{}:", catalog.display())), "{err}");
    assert!(problems[0].contains("unknown field type \"strin\""), "{err}");
    assert!(problems[1].ends_with("1 problem(s), 0 warning(s)"), "{err}");
}

/// A provider folder for `policy explain`: the shared family catalog (testdata/) and grants, no
/// certificates needed.
fn explain_folder(dir: &Path) -> std::path::PathBuf {
    let catalog = include_str!("../../testdata/family.catalog.toml");
    let grants = r#"
[[grant]]
id = "police-2025"
to = { department = "police" }
datasets = ["family-disputes"]
purposes = ["law-enforcement"]
clearance = 2
valid_until = 2025-12-31

[[grant]]
id = "centre"
to = "mediation-center@wuxi"
datasets = ["family-disputes"]
purposes = ["dispute-mediation"]
clearance = 4
"#;
    std::fs::write(dir.join("catalog.toml"), catalog).unwrap();
    std::fs::write(dir.join("grants.toml"), grants).unwrap();
    let cfg = dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        "node = \"womens-federation@wuxi\"\nlisten = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\ncatalog = [\"catalog.toml\"]\ngrants = [\"grants.toml\"]\n[tls]\ncert = \"node.crt\"\nkey = \"node.key\"\ntrust = \"trust.crt\"\n",
    )
    .unwrap();
    cfg
}

#[test]
fn policy_explain_names_near_misses_and_exits_1_on_deny() {
    let t = tempfile::tempdir().unwrap();
    let cfg = explain_folder(t.path());
    let explain = |peer: &str, purpose: &str, format: &str| {
        fedgate(&[
            "policy",
            "explain",
            "--config",
            s(&cfg),
            "--peer",
            peer,
            "--dataset",
            "family-disputes",
            "--purpose",
            purpose,
            "--format",
            format,
        ])
    };
    let o = explain("police@wuxi.liangxi", "law-enforcement", "text");
    assert_eq!(o.status.code(), Some(1), "deny exits 1");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("DENY"), "{out}");
    assert!(
        out.contains("grant police-2025 (")
            && out.contains("grants.toml:3:6): expired at 2026-01-01 00:00 UTC+8"),
        "{out}"
    );
    assert!(stderr(&o).contains("denied: no grant allows police@wuxi.liangxi"), "{}", stderr(&o));

    let o = explain("police@wuxi.liangxi", "law-enforcement", "json");
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["near_misses"][0]["grant"], "police-2025");
    assert_eq!(v["near_misses"][0]["why"][0]["kind"], "expired");

    // The centre asking for another purpose: its grant is one difference away.
    let o = explain("mediation-center@wuxi", "statistics", "json");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let near = v["near_misses"].as_array().unwrap();
    let centre = near.iter().find(|n| n["grant"] == "centre").expect("centre grant named");
    assert_eq!(centre["why"][0]["kind"], "other-purpose");
    assert_eq!(centre["why"][0]["message"], "other purpose: grants only dispute-mediation");

    let o = explain("mediation-center@wuxi", "dispute-mediation", "json");
    assert!(o.status.success(), "allow exits 0: {}", stderr(&o));
}

#[test]
fn query_reports_truncation_timeouts_and_source_failures_without_internals() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("demo");
    let o = fedgate(&["demo", "--dir", s(&dir), "--records", "40"]);
    assert!(o.status.success(), "demo failed: {}", stderr(&o));
    let cfg = |n: &str| dir.join(n).join("gateway.toml");
    let hotline = dir.join("hotline12345@wuxi");
    std::fs::write(
        hotline.join("grants.toml"),
        "[[grant]]\nid = \"centre-3\"\nto = \"mediation-center@wuxi\"\ndatasets = [\"hotline-tickets\"]\npurposes = [\"dispute-mediation\"]\nclearance = 4\nrows = \"all\"\nquota = 3\n\n[[grant]]\nid = \"police\"\nto = { department = \"police\" }\ndatasets = [\"hotline-tickets\"]\npurposes = [\"law-enforcement\"]\nclearance = 1\nrows = \"all\"\n",
    )
    .unwrap();
    let hotline_proc = serve(&cfg("hotline12345@wuxi"));
    let _centre = serve(&cfg("mediation-center@wuxi"));
    let _police = serve(&cfg("police@wuxi.liangxi"));
    let q = |node: &str, purpose: &str, extra: &[&str]| {
        let c = cfg(node);
        let mut args = vec![
            "query",
            "--config",
            s(&c),
            "--peer",
            "hotline12345@wuxi",
            "--dataset",
            "hotline-tickets",
            "--purpose",
            purpose,
            "--format",
            "jsonl",
        ];
        args.extend_from_slice(extra);
        fedgate(&args)
    };

    // 40 match, the quota is 3: three verified records, then a loud exit 3.
    let o = q("mediation-center@wuxi", "dispute-mediation", &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 3);
    assert!(
        stderr(&o).contains("truncated: hotline12345@wuxi sent 3 records and withheld the rest"),
        "{}",
        stderr(&o)
    );

    // The consumer's own --limit: a note, exit 0.
    let o = q("police@wuxi.liangxi", "law-enforcement", &["--limit", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("note: stopped at --limit 2; more records match"), "{}", stderr(&o));

    // The provider's database disappears: the consumer hears that, and nothing of where it was.
    let data = hotline.join("data");
    std::fs::rename(&data, hotline.join("data.moved")).unwrap();
    // Transient (exit 4, code source-unavailable): the same query may work later.
    let o = q("police@wuxi.liangxi", "law-enforcement", &[]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.starts_with("fedgate: source-unavailable: hotline12345@wuxi: "), "{err}");
    assert!(err.contains("the provider cannot read dataset `hotline-tickets` right now"), "{err}");
    for leak in [s(&hotline), "data/", ".db", "unable to open", "SELECT"] {
        assert!(!err.contains(leak), "consumer sees {leak:?}: {err}");
    }
    let audit = fedgate(&["audit", "show", "--config", s(&cfg("police@wuxi.liangxi")), "--format", "jsonl"]);
    let log = String::from_utf8_lossy(&audit.stdout);
    assert!(log.contains("cannot read dataset"), "{log}");
    assert!(!log.contains(".db") && !log.contains(s(&hotline)), "{log}");

    // The provider freezes (SIGSTOP): --timeout bounds the wait and the message names the peer
    // and the step, instead of hanging until the connection's idle timeout.
    let stop = Command::new("kill").args(["-STOP", &hotline_proc.0.id().to_string()]).status().unwrap();
    assert!(stop.success());
    let started = std::time::Instant::now();
    // A timeout is transient (exit 4) and told as one, never as bad input.
    let o = q("police@wuxi.liangxi", "law-enforcement", &["--timeout", "1"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.starts_with("fedgate: peer-timeout: hotline12345@wuxi timed out: "), "{err}");
    assert!(err.contains("took longer than 1 s"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(8), "{:?}", started.elapsed());
}

#[test]
fn completions_generate_for_every_shell_from_the_clap_definitions() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = fedgate(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        for word in ["query", "issue-ca", "check-proof", "dataset", "log-format"] {
            assert!(text.contains(word), "{shell} completion lacks {word}");
        }
    }
    let o = fedgate(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2), "unknown shell is a usage error");
    if Command::new("bash").arg("--version").output().is_ok() {
        // The bash script must at least be valid bash.
        let o = fedgate(&["completions", "bash"]);
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("fedgate.bash");
        std::fs::write(&f, &o.stdout).unwrap();
        let check = Command::new("bash").args(["-n", s(&f)]).output().unwrap();
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    }
}

#[test]
fn man_pages_for_the_command_and_each_subcommand() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("man1");
    let o = fedgate(&["man", "--out", s(&dir)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let top = std::fs::read_to_string(dir.join("fedgate.1")).unwrap();
    assert!(top.starts_with(".ie") || top.contains(".TH fedgate 1"), "{}", &top[..top.len().min(200)]);
    let query = std::fs::read_to_string(dir.join("fedgate-query.1")).unwrap();
    assert!(query.contains(".TH fedgate-query 1") && query.contains("\\-\\-bom"), "{query}");
    assert!(dir.join("fedgate-pki-issue-ca.1").exists());
    assert!(dir.join("fedgate-audit-check-proof.1").exists());
}

#[test]
fn log_format_is_a_checked_global_option() {
    let o = fedgate(&["--log-format", "json", "pki", "show", "/nonexistent.crt"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = fedgate(&["pki", "show", "--log-format", "xml", "/nonexistent.crt"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn an_auditor_with_an_export_an_auditor_key_and_the_root_verifies_and_reads_without_department_secrets() {
    let t = tempfile::tempdir().unwrap();
    let demo = t.path().join("demo");
    let o = fedgate(&["demo", "--dir", s(&demo), "--records", "30"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let node = demo.join("mediation-center@wuxi");
    let auditor = t.path().join("auditor");
    let o = fedgate(&["audit", "keygen", "--out", s(&auditor), "--name", "city"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(auditor.join("city.key")).unwrap().permissions().mode() & 0o777, 0o600);
    let again = fedgate(&["audit", "keygen", "--out", s(&auditor), "--name", "city"]);
    assert!(!again.status.success() && stderr(&again).contains("not overwriting"), "{}", stderr(&again));

    // The department exports for this auditor; the auditor copies out the root certificate.
    let export = t.path().join("export");
    let cfg = node.join("gateway.toml");
    let pubkey = auditor.join("city.pub");
    let o =
        fedgate(&["audit", "export", "--config", s(&cfg), "--out", s(&export), "--auditor-key", s(&pubkey)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = t.path().join("root.crt");
    std::fs::copy(node.join("tls/trust.crt"), &root).unwrap();
    for f in std::fs::read_dir(&export).unwrap() {
        let name = f.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains("signing.key") && name != "audit.key", "a secret in the export: {name}");
    }

    let key = auditor.join("city.key");
    let o = fedgate(&["audit", "verify", "--dir", s(&export), "--trust", s(&root), "--auditor-key", s(&key)]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("authentic (decrypted)") && out.contains("mediation-center@wuxi's"), "{out}");
    assert!(!out.contains("not wrapped"), "every segment was wrapped for the auditor: {out}");

    let o = fedgate(&[
        "audit",
        "show",
        "--dir",
        s(&export),
        "--auditor-key",
        s(&key),
        "--format",
        "jsonl",
        "--kind",
        "request-out",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|v| v["kind"] == "request-out" && v["actor"] == "mediation-center@wuxi"));

    // Another auditor's key reads nothing, and says so.
    let o = fedgate(&["audit", "keygen", "--out", s(&auditor), "--name", "other"]);
    assert!(o.status.success());
    let o = fedgate(&[
        "audit",
        "show",
        "--dir",
        s(&export),
        "--auditor-key",
        s(&auditor.join("other.key")),
        "--format",
        "jsonl",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.lines().all(|l| l.contains("\"unreadable\"")), "{text}");

    // A public key file that is not one is refused, naming it.
    let o = fedgate(&[
        "audit",
        "export",
        "--config",
        s(&cfg),
        "--out",
        s(&t.path().join("x")),
        "--auditor-key",
        s(&root),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("root.crt") && stderr(&o).contains("not an auditor public key"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn reconcile_matches_both_sides_of_every_exchange_of_the_demo_federation() {
    let t = tempfile::tempdir().unwrap();
    let demo = t.path().join("demo");
    let o = fedgate(&["demo", "--dir", s(&demo), "--records", "30"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let auditor = t.path().join("auditor");
    assert!(fedgate(&["audit", "keygen", "--out", s(&auditor)]).status.success());
    let (key, pubkey) = (auditor.join("auditor.key"), auditor.join("auditor.pub"));
    let mut exports = Vec::new();
    let mut nodes: Vec<String> = std::fs::read_dir(&demo)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| demo.join(n).join("gateway.toml").is_file())
        .collect();
    nodes.sort();
    assert_eq!(nodes.len(), 8, "{nodes:?}");
    for node in &nodes {
        let out = t.path().join(node);
        let cfg = demo.join(node).join("gateway.toml");
        let o =
            fedgate(&["audit", "export", "--config", s(&cfg), "--out", s(&out), "--auditor-key", s(&pubkey)]);
        assert!(o.status.success(), "{}", stderr(&o));
        exports.push(out);
    }
    let root = demo.join("mediation-center@wuxi/tls/trust.crt");
    let mut args =
        vec!["audit", "reconcile", "--auditor-key", s(&key), "--trust", s(&root), "--format", "json"];
    args.extend(exports.iter().map(|p| s(p)));
    let o = fedgate(&args);
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let xs = v["exchanges"].as_array().unwrap();
    let judged: Vec<_> = xs.iter().filter(|x| x["one_sided"] == false).collect();
    assert!(judged.len() >= 3, "{v}");
    assert!(judged.iter().all(|x| x["disagreements"].as_array().unwrap().is_empty()));
    assert!(xs.iter().all(|x| x["one_sided"] == false), "every node's log was given: {v}");
    assert!(
        judged.iter().any(|x| x["provider_says"] == "deny" && x["consumer_says"] == "refused"),
        "refusals pair too: {v}"
    );
    // Every query answer, refusal and subscription batch the demo's consumers received was
    // witnessed, and every witness holds. Only a subscription's own life (subscribed,
    // cancelled, stopped) is the subscriber's word alone.
    let witnessed = v["witnessed"].as_array().unwrap();
    assert!(witnessed.iter().all(|w| w["consistent"] == true), "{v}");
    let lifecycle = ["subscribed", "cancelled", "stopped"];
    let is_step = |x: &&&serde_json::Value| x["batch"].as_str().is_some_and(|b| b.starts_with("step "));
    let answers =
        judged.iter().filter(|x| !lifecycle.iter().any(|d| x["consumer_says"] == *d)).filter(|x| !is_step(x));
    for x in answers {
        let proving = |w: &&serde_json::Value| w["exchange"] == x["exchange"];
        assert!(witnessed.iter().any(|w| proving(&w)), "{} is not witnessed: {v}", x["exchange"]);
    }
    // The grid office's and the Guangrui committee's hotline subscriptions each got at least one
    // batch (the showcase's new ticket), judged on its own and witnessed.
    let subscribers = ["grid@wuxi.liangxi.chongan", "mediation@wuxi.liangxi.chongan.guangrui"];
    for s in subscribers {
        let batches: Vec<_> =
            judged.iter().filter(|x| x["consumer"] == s && !is_step(x) && x["batch"].is_string()).collect();
        assert!(!batches.is_empty(), "{s} received no subscription batch: {v}");
        for b in batches {
            let n = witnessed.iter().filter(|w| w["exchange"] == b["exchange"]).count();
            let of_sub = judged
                .iter()
                .filter(|x| x["exchange"] == b["exchange"] && !is_step(x) && x["batch"].is_string())
                .count();
            assert!(n >= of_sub, "{s}: {of_sub} batches, {n} witnessed: {v}");
        }
    }
    // The referral showcase: every step of the hotline → grid → committee chain (and the
    // overdue one to the police) is in both logs, as the same step with the same digest.
    let steps: Vec<_> = judged.iter().filter(is_step).collect();
    for (a, b, least) in [
        ("hotline12345@wuxi", "grid@wuxi.liangxi.chongan", 6),
        ("grid@wuxi.liangxi.chongan", "mediation@wuxi.liangxi.chongan.guangrui", 5),
        ("hotline12345@wuxi", "police@wuxi.liangxi", 2),
    ] {
        let between = |x: &&&&serde_json::Value| {
            (x["provider"] == a && x["consumer"] == b) || (x["provider"] == b && x["consumer"] == a)
        };
        let n = steps.iter().filter(between).count();
        assert!(n >= least, "{a} ↔ {b}: {n} referral steps reconciled, expected {least}: {v}");
        assert!(steps.iter().filter(between).all(|x| x["provider_says"] == x["consumer_says"]), "{v}");
    }
    // Without the provider's export, its exchanges are listed, not judged.
    let centre = exports.iter().find(|p| p.ends_with("mediation-center@wuxi")).unwrap();
    let o = fedgate(&["audit", "reconcile", "--auditor-key", s(&key), s(centre)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("other side not given"));
}
