//! The `fedgate` binary from the outside: exit codes, messages, files and modes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn fedgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedgate")).args(args).output().expect("run fedgate")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

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
