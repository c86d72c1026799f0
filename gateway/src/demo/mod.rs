//! The demo federation: eight departments over all four levels of Wuxi, with a hierarchical PKI.
//!
//! `fedgate demo --dir DIR` writes DIR/pki (root and the district intermediates), the signed
//! federation directory DIR/directory.cbor (from the sources in DIR/directory/) and one folder
//! per node, DIR/<node-id>/ with gateway.toml (no `[[peers]]`: peers come from the directory),
//! tls/, catalog.toml, grants.toml and data/*.db (SQLite, synthetic records deterministic from a
//! seed), which `fedgate serve --config` starts as is. It
//! then starts every gateway in this process and runs a showcase of queries — records in clear,
//! masked, row-scoped, and a denial — and of subscriptions (the grid office and the Guangrui
//! committee receive a new hotline ticket, masked and scoped) and of a sharing request (the
//! court applies for family-dispute data, the women's federation approves it with a quota, the
//! court's query succeeds) and of referrals (the hotline hands a ticket to the grid office the
//! directory names for Chong'an, which passes it to the Guangrui committee; the result comes back
//! up; another referral runs overdue) and of an objection (the mediation centre objects to a
//! petition record, the marker shows in its next query, the petition office corrects it and the
//! marker goes), and exits (or keeps serving with `--serve`; the two subscriptions
//! stay and resume whenever those nodes run).

mod content;
pub mod data;

/// The catalog TOML of a demo dataset (e.g. `hotline-tickets`), for tools that want realistic
/// shapes (the benchmark uses the hotline's 14 fields).
pub fn catalog_text(dataset: &str) -> Option<&'static str> {
    content::DATASETS.iter().find(|(_, id, ..)| *id == dataset).map(|(.., toml)| *toml)
}

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fedgate_catalog::{NodeId, Region};
use fedgate_certs::authority::{Authority, NodeProfile, CA_DAYS, NODE_DAYS, ROOT_DAYS};
use fedgate_certs::store;
use time::OffsetDateTime;

use crate::config;
use crate::node::{Prebound, RunningNode};
use crate::quic::Transfer;

/// What `fedgate demo` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to build the federation.
    pub dir: PathBuf,
    /// Synthetic records per dataset.
    pub records: u64,
    /// Keep running after the showcase.
    pub serve: bool,
    /// Delete a federation already in `dir` (keys, data, audit logs) and build a new one.
    pub force: bool,
}

/// The demo's nodes and what each stands for.
pub const NODES: &[(&str, &str)] = &[
    ("hotline12345@wuxi", "12345 citizen hotline (city)"),
    ("petition@wuxi", "petitions bureau (city)"),
    ("womens-federation@wuxi", "women's federation (city)"),
    ("mediation-center@wuxi", "city dispute-resolution centre"),
    ("police@wuxi.liangxi", "Liangxi district police"),
    ("court@wuxi.xinwu", "Xinwu district court"),
    ("grid@wuxi.liangxi.chongan", "Chong'an street grid office"),
    ("mediation@wuxi.liangxi.chongan.guangrui", "Guangrui community mediation committee"),
];

/// Districts that get their own intermediate CA.
pub const DISTRICTS: &[&str] = &["wuxi.liangxi", "wuxi.xinwu"];

const MARKER: &str = ".fedgate-demo";

/// One node's place in the built federation.
#[derive(Debug)]
pub struct BuiltNode {
    /// Its id.
    pub node: NodeId,
    /// Its gateway.toml.
    pub config: PathBuf,
    /// Its ports, still bound: start it with [`RunningNode::start_on`] so no other process
    /// (tests and demos run side by side) takes one between building and serving.
    pub sockets: Prebound,
}

/// A node's QUIC and API sockets, bound on ports the OS chooses, and their addresses.
fn bind_node() -> Result<(Prebound, SocketAddr, SocketAddr)> {
    let quic = UdpSocket::bind("127.0.0.1:0")?;
    let api = TcpListener::bind("127.0.0.1:0")?;
    let addrs = (quic.local_addr()?, api.local_addr()?);
    Ok((Prebound { quic: Some(quic), api: Some(api), console: None }, addrs.0, addrs.1))
}

/// Makes `dir` ready for a new federation. A folder that already holds one is refused, because
/// fresh keys next to the old audit logs would leave logs no key verifies; with `force` the old
/// federation (keys, data, audit logs) is deleted first. A folder fedgate did not build is never
/// deleted.
fn prepare_dir(dir: &Path, force: bool) -> Result<()> {
    if dir.exists() {
        let non_empty = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some();
        let ours = dir.join(MARKER).exists();
        if non_empty && !ours {
            bail!("{} exists and is not a fedgate demo folder; choose an empty or new folder", dir.display());
        }
        if ours && !force {
            bail!(
                "{} already holds a demo federation (its keys and audit logs); run `fedgate serve --config {}` to use it, \
                 choose another folder, or pass --force to delete it and build a new one",
                dir.display(),
                dir.join("<node-id>/gateway.toml").display()
            );
        }
        if ours {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("--force: cannot delete the old federation in {}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "built by fedgate demo; safe to delete\n")?;
    Ok(())
}

/// Writes the PKI and every node folder; returns the nodes with their config paths.
pub fn build(dir: &Path, records: u64, force: bool) -> Result<Vec<BuiltNode>> {
    prepare_dir(dir, force)?;
    let now = OffsetDateTime::now_utc();
    let wuxi: Region = "wuxi".parse()?;
    let root = Authority::new_root(&wuxi, now, ROOT_DAYS)?;
    store::write_authority(&dir.join("pki/root"), &root, now, true)?;
    let mut cas = vec![];
    for d in DISTRICTS {
        let ca = root.issue_ca(&d.parse()?, now, CA_DAYS)?;
        store::write_authority(&dir.join("pki").join(d), &ca, now, true)?;
        cas.push(ca);
    }
    let mut crl_sources = vec![dir.join("pki/root/crl.pem")];
    crl_sources.extend(DISTRICTS.iter().map(|d| dir.join("pki").join(d).join("crl.pem")));

    let mut bound = Vec::new();
    let mut addrs = Vec::new();
    for (id, _) in NODES {
        let (mut sockets, quic, api) = bind_node()?;
        if *id == CONSOLE_NODE {
            sockets.console = Some(TcpListener::bind("127.0.0.1:0")?);
        }
        addrs.push((id.parse::<NodeId>()?, (quic, api)));
        bound.push(sockets);
    }
    write_directory(dir, &root, &cas, &addrs, now)?;
    let mut built = Vec::new();
    for ((node, (quic, api)), sockets) in addrs.iter().zip(bound) {
        let issuer = cas.iter().find(|ca| ca.region().covers(node.region())).unwrap_or(&root);
        let ndir = dir.join(node.to_string());
        let issued = issuer.issue_node(node, NodeProfile::gateway(now, NODE_DAYS))?;
        store::write_node(&ndir.join("tls"), &issued, root.root(), true)?;
        let mut crls = Vec::new();
        for (i, src) in crl_sources.iter().enumerate() {
            let name = format!("crl-{i}.pem");
            std::fs::copy(src, ndir.join("tls").join(&name))?;
            crls.push(format!("\"tls/{name}\""));
        }
        let (mut top, tables) = node_content(&ndir, node, records)?;
        if let Some(console) = &sockets.console {
            top = format!("console = \"{}\"\n{top}", console.local_addr()?);
        }
        // No [[peers]]: every node finds the others in the signed directory.
        let text = format!(
            "# {node}: generated by `fedgate demo`\nnode = \"{node}\"\nlisten = \"{quic}\"\napi = \"{api}\"\n\
             directory = \"../{DIRECTORY}\"\n{top}\n\
             [tls]\ncert = \"tls/node.crt\"\nkey = \"tls/node.key\"\ntrust = \"tls/trust.crt\"\ncrls = [{}]\n{tables}",
            crls.join(", ")
        );
        let path = ndir.join("gateway.toml");
        std::fs::write(&path, text)?;
        if node.to_string() == CONSOLE_NODE {
            console_accounts(&config::load(&path)?)?;
        }
        built.push(BuiltNode { node: node.clone(), config: path, sockets });
    }
    Ok(built)
}

/// The node whose gateway serves the web console in the demo: the steward there answers the
/// sharing requests the showcase makes.
pub const CONSOLE_NODE: &str = "womens-federation@wuxi";
/// The demo console accounts' password. Printed by `fedgate demo --serve`: the demo is a local
/// playground on 127.0.0.1; real accounts get their own passwords from `fedgate user add`.
pub const CONSOLE_PASSWORD: &str = "fedgate-demo-2026";
/// The demo console's accounts, one per role.
pub const CONSOLE_ACCOUNTS: [(&str, crate::console::accounts::Role); 3] = [
    ("steward", crate::console::accounts::Role::Steward),
    ("operator", crate::console::accounts::Role::Operator),
    ("auditor", crate::console::accounts::Role::Auditor),
];

fn console_accounts(cfg: &config::Config) -> Result<()> {
    use crate::console::accounts::AccountStore;
    let store = AccountStore::open(&AccountStore::path_in(&cfg.state_dir))?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    for (name, role) in CONSOLE_ACCOUNTS {
        store.add(name, role, CONSOLE_PASSWORD, now)?;
    }
    Ok(())
}

/// The demo's directory bundle, in DIR.
pub const DIRECTORY: &str = "directory.cbor";

/// Writes the federation directory: DIR/directory/<scope>.toml (the sources an operator would
/// write), signed into DIR/directory.cbor: the root's for the city and the districts without a
/// CA of their own, each district CA's for its own subtree.
fn write_directory(
    dir: &Path,
    root: &Authority,
    cas: &[Authority],
    addrs: &[(NodeId, (SocketAddr, SocketAddr))],
    now: OffsetDateTime,
) -> Result<()> {
    use fedgate_certs::directory::{parse_source, sign, Bundle};
    std::fs::create_dir_all(dir.join("directory"))?;
    let mut bundle = Bundle::default();
    for ca in std::iter::once(root).chain(cas) {
        let scope = ca.region();
        // A node goes in the narrowest scope that covers it.
        let mine = addrs.iter().filter(|(n, _)| {
            let narrowest =
                cas.iter().map(Authority::region).filter(|r| r.covers(n.region())).max_by_key(|r| r.level());
            narrowest.unwrap_or(root.region()) == scope
        });
        let mut text = format!("# signed by the {scope} CA into ../{DIRECTORY}\nfederation = \"{}\"\nscope = \"{scope}\"\nversion = 1\n", root.region());
        for (node, (quic, _)) in mine {
            let _ = write!(text, "\n[[nodes]]\nnode = \"{node}\"\naddress = \"{quic}\"\n");
        }
        let file = dir.join("directory").join(format!("{scope}.toml"));
        std::fs::write(&file, &text)?;
        let draft = parse_source(&file.display().to_string(), &text, None, now.unix_timestamp())
            .map_err(|d| anyhow::anyhow!("{d}"))?;
        bundle.put(sign(&draft, ca)?)?;
    }
    crate::directory::write_bundle(&dir.join(DIRECTORY), &bundle)
        .with_context(|| format!("writing {}", dir.join(DIRECTORY).display()))
}

/// Writes the node's catalog, grants and data; returns the config's top-level lines and tables
/// that point at them.
fn node_content(ndir: &Path, node: &NodeId, records: u64) -> Result<(String, String)> {
    let mine: Vec<_> = content::DATASETS.iter().filter(|(owner, ..)| *owner == node.to_string()).collect();
    let mut top = String::new();
    let mut cfg = String::new();
    if !mine.is_empty() {
        let catalog_text: String = mine.iter().map(|(.., toml)| *toml).collect();
        std::fs::write(ndir.join("catalog.toml"), &catalog_text)?;
        let catalog =
            fedgate_catalog::parse("catalog.toml", &catalog_text).map_err(|d| anyhow::anyhow!("{d}"))?;
        top.push_str("catalog = [\"catalog.toml\"]\n");
        std::fs::create_dir_all(ndir.join("data"))?;
        for (i, (_, id, within, _)) in mine.iter().enumerate() {
            let ds = catalog.get(id).context("demo dataset missing from its catalog")?;
            let db = format!("data/{id}.db");
            write_sqlite(
                &ndir.join(&db),
                ds,
                records,
                within,
                0x5EED + i as u64 * 7919 + node.to_string().len() as u64,
            )?;
            let _ =
                write!(cfg, "\n[[sources]]\ndataset = \"{id}\"\nsqlite = \"{db}\"\ntable = \"records\"\n");
        }
    }
    if let Some((_, grants)) = content::GRANTS.iter().find(|(owner, _)| *owner == node.to_string()) {
        std::fs::write(ndir.join("grants.toml"), grants)?;
        top.push_str("grants = [\"grants.toml\"]\n");
    }
    Ok((top, cfg))
}

fn write_sqlite(
    path: &Path,
    ds: &fedgate_catalog::Dataset,
    records: u64,
    within: &str,
    seed: u64,
) -> Result<()> {
    let mut rng = data::Rng::new(seed);
    write_table(path, ds, (0..records).map(|seq| data::record(&mut rng, ds, seq, within)))
}

/// Writes `rows` of `ds` into a new SQLite table `records` at `path`, columns named like the
/// fields, with the primary key and an index on the jurisdiction field.
pub fn write_table(
    path: &Path,
    ds: &fedgate_catalog::Dataset,
    rows: impl Iterator<Item = fedgate_catalog::Record>,
) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut conn = rusqlite::Connection::open(path)?;
    let cols: Vec<String> = ds
        .fields
        .iter()
        .map(|f| {
            let ty = match f.ty {
                fedgate_catalog::FieldType::Integer | fedgate_catalog::FieldType::Bool => "INTEGER",
                _ => "TEXT",
            };
            format!("\"{}\" {ty}", f.name)
        })
        .collect();
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; CREATE TABLE records ({}, PRIMARY KEY (\"{}\")); CREATE INDEX records_region ON records (\"{}\");",
        cols.join(", "),
        ds.primary_key,
        ds.jurisdiction
    ))?;
    let tx = conn.transaction()?;
    {
        let placeholders: Vec<String> = (1..=ds.fields.len()).map(|i| format!("?{i}")).collect();
        let mut stmt = tx.prepare(&format!("INSERT INTO records VALUES ({})", placeholders.join(", ")))?;
        for rec in rows {
            let vals: Vec<rusqlite::types::Value> = rec
                .into_iter()
                .map(|v| match v {
                    fedgate_catalog::Value::Null => rusqlite::types::Value::Null,
                    fedgate_catalog::Value::Bool(b) => rusqlite::types::Value::Integer(i64::from(b)),
                    fedgate_catalog::Value::Int(i) => rusqlite::types::Value::Integer(i),
                    fedgate_catalog::Value::Text(s) => rusqlite::types::Value::Text(s),
                })
                .collect();
            stmt.execute(rusqlite::params_from_iter(vals))?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// One showcase query.
struct Case {
    consumer: &'static str,
    provider: &'static str,
    dataset: &'static str,
    purpose: &'static str,
    limit: Option<u64>,
    show: &'static [&'static str],
    what: &'static str,
}

const CASES: &[Case] = &[
    Case {
        consumer: "mediation-center@wuxi",
        provider: "hotline12345@wuxi",
        dataset: "hotline-tickets",
        purpose: "dispute-mediation",
        limit: Some(3),
        show: &["ticket_id", "caller_name", "caller_id", "caller_mobile", "address", "content"],
        what: "the city dispute centre, cleared for everything: records in clear, city-wide",
    },
    Case {
        consumer: "police@wuxi.liangxi",
        provider: "hotline12345@wuxi",
        dataset: "hotline-tickets",
        purpose: "law-enforcement",
        limit: Some(3),
        show: &["ticket_id", "region", "caller_name", "caller_id", "caller_mobile", "address"],
        what: "a district police station at clearance 2: names, phones and IDs masked, addresses cut to the district, only its district's rows",
    },
    Case {
        consumer: "mediation-center@wuxi",
        provider: "petition@wuxi",
        dataset: "petitions",
        purpose: "dispute-mediation",
        limit: Some(2),
        show: &["petition_id", "petitioner_name", "petitioner_id", "summary"],
        what: "the centre at clearance 3 for petitions: the core-grade ID arrives as a keyed hash, joinable across its own queries only",
    },
    Case {
        consumer: "grid@wuxi.liangxi.chongan",
        provider: "hotline12345@wuxi",
        dataset: "hotline-tickets",
        purpose: "dispute-mediation",
        limit: None,
        show: &["ticket_id", "region", "content"],
        what: "a street grid office: rows scoped to its own street; phones and IDs inside free text masked in place",
    },
    Case {
        consumer: "mediation@wuxi.liangxi.chongan.guangrui",
        provider: "womens-federation@wuxi",
        dataset: "family-disputes",
        purpose: "dispute-mediation",
        limit: Some(3),
        show: &["case_id", "region", "applicant_name", "applicant_id", "applicant_age", "description"],
        what: "a community mediation committee: pseudonymous IDs, age bands, its own community's rows",
    },
    Case {
        consumer: "court@wuxi.xinwu",
        provider: "womens-federation@wuxi",
        dataset: "family-disputes",
        purpose: "dispute-mediation",
        limit: Some(3),
        show: &[],
        what: "a district court with no grant for family disputes",
    },
    Case {
        consumer: "petition@wuxi",
        provider: "court@wuxi.xinwu",
        dataset: "court-mediation-cases",
        purpose: "statistics",
        limit: Some(3),
        show: &["case_no", "party_a", "party_b", "cause", "outcome", "amount"],
        what: "an unconditional dataset read without a grant: clearance 1, grade-2 fields masked",
    },
];

fn cell(s: &str) -> String {
    const MAX: usize = 48;
    let mut out: String = s.chars().take(MAX).collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

async fn showcase(running: &[RunningNode], records: u64) -> Result<()> {
    for (i, case) in CASES.iter().enumerate() {
        run_case(running, &(i + 1).to_string(), case, records).await?;
    }
    Ok(())
}

/// Runs one showcase query, numbered `label`, and prints what arrived.
async fn run_case(running: &[RunningNode], label: &str, case: &Case, records: u64) -> Result<()> {
    let by_id = |id: &str| running.iter().find(|n| n.config().node.to_string() == id);
    let (Some(consumer), Some(provider)) = (by_id(case.consumer), by_id(case.provider)) else {
        return Ok(());
    };
    println!(
        "\n[{}] {} asks {} for `{}` ({})",
        label, case.consumer, case.provider, case.dataset, case.purpose
    );
    println!("    {}", case.what);
    let pc = consumer.peer(&provider.config().node).await?;
    let query = crate::exchange::Query::asked(case.dataset, case.purpose, Vec::new(), case.limit)
        .map_err(anyhow::Error::msg)?;
    let exchange = query.exchange.clone();
    let mut t = match Transfer::begin(&pc, &consumer.config().node, query, Default::default()).await {
        Ok(t) => t,
        Err(e) => {
            println!("    DENIED: {e}");
            let mut entry = consumer.shared().audit_entry(fedgate_audit::Kind::RequestOut);
            entry.counterpart = Some(case.provider.into());
            entry.dataset = Some(case.dataset.into());
            entry.purpose = Some(case.purpose.into());
            e.refusal_receipt(&mut entry);
            entry.exchange = exchange;
            consumer.shared().audit.append(entry).await?;
            return Ok(());
        }
    };
    println!("    {}", t.reason());
    let fields = t.fields().to_vec();
    let idx: Vec<usize> = case.show.iter().filter_map(|f| fields.iter().position(|g| g == f)).collect();
    let mut rows = Vec::new();
    let mut regions = std::collections::BTreeSet::new();
    let region_idx = fields.iter().position(|f| f == "region");
    let mut n = 0u64;
    while let Some(batch) = t.next_batch().await? {
        for rec in batch {
            n += 1;
            if let Some(fedgate_catalog::Value::Text(r)) = region_idx.and_then(|i| rec.get(i)) {
                regions.insert(r.split('.').take(3).collect::<Vec<_>>().join("."));
            }
            if rows.len() < 3 {
                rows.push(idx.iter().map(|&i| cell(&rec[i].to_string())).collect::<Vec<_>>());
            }
        }
    }
    let header: Vec<&str> = idx.iter().map(|&i| fields[i].as_str()).collect();
    for line in crate::render::table(&header, &rows).lines() {
        println!("    {line}");
    }
    let dropped: Vec<&str> = case.show.iter().filter(|f| !fields.iter().any(|g| g == *f)).copied().collect();
    if !dropped.is_empty() {
        println!("    (not sent: {})", dropped.join(", "));
    }
    consumer
        .shared()
        .audit
        .append(t.receipt(consumer.shared().audit_entry(fedgate_audit::Kind::RequestOut)))
        .await?;
    let summary = t.summary().map(|s| format!("digest {}…", &s.digest[..12])).unwrap_or_default();
    // The provider signs whether it cut the result short; say so rather than imply a whole.
    let cut = match t.summary().and_then(|s| s.truncated) {
        Some(why) if why.by_provider() => format!("; CUT SHORT by the provider's {}", why.as_str()),
        Some(_) => "; more records match (stopped at the limit)".into(),
        None => String::new(),
    };
    if case.limit.is_none() {
        println!(
            "    received {n} of {records} records, all under: {}; trailer verified, {summary}{cut}",
            regions.into_iter().collect::<Vec<_>>().join(", ")
        );
    } else {
        println!("    {n} record(s); trailer signature and {summary} verified{cut}");
    }
    Ok(())
}

/// Says what the directory holds and who answers for a street, as every node resolves it.
fn show_directory(running: &[RunningNode]) {
    let Some(first) = running.first() else { return };
    let view = first.shared().directory.view();
    let held: Vec<String> = view
        .directories()
        .map(|v| {
            let cn = v.signer().rsplit("CN=").next().unwrap_or(v.signer());
            format!("{} (signed by {cn})", v.directory().label())
        })
        .collect();
    println!(
        "federation directory: {}; no node lists its peers by hand, each finds them there",
        held.join(", ")
    );
    let street: Region = match "wuxi.liangxi.chongan.guangrui".parse() {
        Ok(r) => r,
        Err(_) => return,
    };
    for department in ["grid", "police", "court"] {
        let who =
            view.resolve(department, &street).map_or_else(|| "nobody".to_owned(), |e| e.node.to_string());
        println!("  {department} responsible for {street}: {who}");
    }
}

/// The push side: the street grid office and the community mediation committee of Guangrui
/// subscribe to hotline tickets; the hotline publishes a ticket in Guangrui and one in another
/// community of the same street. Each arrives where it must, masked to the subscriber's
/// clearance; the Guangrui committee never sees the other community's ticket.
async fn showcase_subscriptions(running: &[RunningNode], records: u64) -> Result<()> {
    use crate::exchange::subscription::Subscription;
    let by_id = |id: &str| running.iter().find(|n| n.config().node.to_string() == id);
    let (Some(hotline), Some(grid), Some(committee)) = (
        by_id("hotline12345@wuxi"),
        by_id("grid@wuxi.liangxi.chongan"),
        by_id("mediation@wuxi.liangxi.chongan.guangrui"),
    ) else {
        return Ok(());
    };
    println!(
        "\n[{}] the grid office and the Guangrui mediation committee subscribe to `hotline-tickets`",
        CASES.len() + 1
    );
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut subs = Vec::new();
    for n in [grid, committee] {
        let sub = Subscription::create("hotline-tickets", "dispute-mediation", Vec::new())
            .map_err(anyhow::Error::msg)?;
        let held = n.shared().subscriptions.create(&hotline.config().node, &sub, now)?;
        crate::quic::subscription::audit_state(n.shared(), &held, "subscribed", "demo showcase", None).await;
        subs.push((n, held));
    }
    let catalog = hotline.shared().catalog();
    let ds = catalog.get("hotline-tickets").context("the hotline's catalog lacks hotline-tickets")?;
    let mut rng = data::Rng::new(14);
    let tickets = [
        data::record(&mut rng, ds, records + 1, "wuxi.liangxi.chongan.guangrui"),
        data::record(&mut rng, ds, records + 2, "wuxi.liangxi.chongan.huangnichao"),
    ];
    let published = std::time::Instant::now();
    let ids = hotline.shared().events.publish("hotline-tickets", crate::events::Op::Insert, &tickets, now)?;
    let head = ids.map_or(0, |(_, last)| last);
    println!(
        "    hotline12345@wuxi publishes two new tickets: one in Guangrui, one in Huangnichao (same street)"
    );
    for (n, held) in &subs {
        let store = &n.shared().subscriptions;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while store.get(&held.id)?.cursor < head && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let ms = published.elapsed().as_millis();
        let items = store.items(&held.id, 0, 10)?;
        println!("    {} received {} ticket(s) within {ms} ms of publishing (signed batch verified, receipt audited):", n.config().node, items.len());
        let show = ["ticket_id", "region", "caller_name", "caller_mobile", "address"];
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|i| show.iter().map(|f| cell(i.json[*f].as_str().unwrap_or(""))).collect())
            .collect();
        for line in crate::render::table(&show, &rows).lines() {
            println!("    {line}");
        }
    }
    println!("    (the committee's grant scopes it to its own community: the Huangnichao ticket never left for it)");
    Ok(())
}

/// A sharing request (共享申请): the district court, denied family-dispute data above, applies
/// for it; the women's federation's steward approves it for 30 days with a daily quota (a grant
/// in force at once); the court's query then succeeds.
async fn showcase_requests(running: &[RunningNode], records: u64) -> Result<()> {
    use crate::governance::request::{rfc3339, Approval};
    let by_id = |id: &str| running.iter().find(|n| n.config().node.to_string() == id);
    let (Some(court), Some(federation)) = (by_id("court@wuxi.xinwu"), by_id("womens-federation@wuxi")) else {
        return Ok(());
    };
    let label = CASES.len() + 2;
    println!("\n[{label}] court@wuxi.xinwu applies to womens-federation@wuxi for `family-disputes` (dispute-mediation)");
    let ask = crate::api_requests::CreateRequest {
        peer: federation.config().node.clone(),
        dataset: "family-disputes".into(),
        purpose: "dispute-mediation".into(),
        fields: ["case_id", "region", "applicant_name", "dispute_type"].map(String::from).to_vec(),
        until: None,
        reason: "mediation of family dispute case (2026) 锡新民初 17".into(),
    };
    let made = crate::api_requests::make(court.shared(), ask).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::quic::request::ask(court.shared(), &made).await.map_err(anyhow::Error::msg)?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let got = federation.shared().requests.get(&made.id, crate::governance::store::Role::Incoming, now)?;
    println!(
        "    signed request {}… stored and audited by both; answer due {} (5 working days)",
        &made.id[..8],
        got.deadline.map_or_else(String::new, rfc3339)
    );
    let approval = Approval {
        clearance: got.clearance.unwrap_or(1),
        until: now + 30 * 86_400,
        quota: Some(50),
        rows: "own".into(),
    };
    let approved = crate::api_requests::approve_request(federation.shared(), &made.id, approval)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "    the federation's steward approves for 30 days, 50 records a day: grant `{}` in force at once",
        approved.grant.as_deref().unwrap_or("?")
    );
    crate::quic::request::ask(court.shared(), &made).await.map_err(anyhow::Error::msg)?;
    let seen = court.shared().requests.get(&made.id, crate::governance::store::Role::Outgoing, now)?;
    println!("    the court's gateway verifies the signed answer: {}", seen.state.as_str());
    let case = Case {
        consumer: "court@wuxi.xinwu",
        provider: "womens-federation@wuxi",
        dataset: "family-disputes",
        purpose: "dispute-mediation",
        limit: Some(3),
        show: &["case_id", "region", "applicant_name", "dispute_type"],
        what: "the same query as before, now under the approved grant",
    };
    run_case(running, &format!("{label}b"), &case, records).await
}

/// Waits (up to 15 s) until `node` holds referral `id` in a state `done` accepts.
async fn referral_reaches(
    node: &RunningNode,
    id: &str,
    done: impl Fn(crate::exchange::referral::State) -> bool,
) -> Result<crate::referrals::Referral> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match node.shared().referrals.get(id) {
            Ok(r) if done(r.state) => return Ok(r),
            _ if std::time::Instant::now() > deadline => {
                bail!("{}: referral {id} did not arrive in 15 s", node.config().node)
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

/// A ticket of the hotline's own source inside `region`, to attach to a referral as its case.
fn ticket_in(hotline: &RunningNode, region: &str) -> Option<String> {
    let source = hotline.config().sources.iter().find(|s| s.dataset == "hotline-tickets")?;
    let crate::config::SourceKind::Sqlite(path) = &source.kind else { return None };
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    let sql = format!(
        "SELECT ticket_id FROM \"{}\" WHERE region = ?1 OR region LIKE ?1 || '.%' ORDER BY ticket_id LIMIT 1",
        source.table
    );
    conn.query_row(&sql, [region], |row| row.get(0)).ok()
}

/// Prints a referral's steps as `node` holds them (what `fedgate referral show` prints).
fn print_history(node: &RunningNode, id: &str) -> Result<()> {
    let steps = node.shared().referrals.history(id)?;
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            vec![s.seq.to_string(), s.step.name().to_owned(), s.author.clone(), s.state.as_str().to_owned()]
        })
        .collect();
    println!("    {} holds {}… (`fedgate referral show` there):", node.config().node, &id[..8]);
    for line in crate::render::table(&["step", "what", "by", "then"], &rows).lines() {
        println!("      {line}");
    }
    Ok(())
}

/// Referrals (交办 → 受理 → 办理 → 反馈 → 办结): the hotline hands a ticket to "the grid office
/// responsible for Chong'an street" (found in the directory); the grid office passes it down to
/// the Guangrui mediation committee, which resolves it; the result flows back up to the hotline,
/// which closes it. A second referral, to the district police, runs past its deadline.
async fn showcase_referrals(running: &[RunningNode]) -> Result<Option<String>> {
    use crate::exchange::referral::State;
    use crate::referral_ops::{self as ops, CaseSpec, NewReferral, Receiver};
    use crate::wire::referral::Step;
    let by_id = |id: &str| running.iter().find(|n| n.config().node.to_string() == id);
    let (Some(hotline), Some(grid), Some(committee), Some(police)) = (
        by_id("hotline12345@wuxi"),
        by_id("grid@wuxi.liangxi.chongan"),
        by_id("mediation@wuxi.liangxi.chongan.guangrui"),
        by_id("police@wuxi.liangxi"),
    ) else {
        return Ok(None);
    };
    let label = CASES.len() + 3;
    let err = |e: ops::OpError| anyhow::anyhow!("{e}");
    let now = OffsetDateTime::now_utc();
    let street: Region = "wuxi.liangxi.chongan".parse()?;
    println!("\n[{label}] hotline12345@wuxi refers a ticket to \"grid for {street}\" (交办), due in 5 working days");

    // The overdue one first, so its (short, for the demo) deadline passes while the chain runs.
    let late = ops::send(
        hotline.shared(),
        NewReferral {
            to: Receiver::Node(police.config().node.clone()),
            reference: "12345-2026-0041".into(),
            subject: "反映夜间施工扰民 / night-time construction noise".into(),
            instructions: "核查并反馈 / check and report back".into(),
            deadline: now.unix_timestamp() + 1,
            case: None,
        },
    )
    .await
    .map_err(err)?;

    let case = ticket_in(hotline, street.as_str()).map(|ticket| CaseSpec {
        dataset: "hotline-tickets".into(),
        purpose: "dispute-mediation".into(),
        filters: vec![("ticket_id".into(), ticket)],
    });
    let sent = ops::send(
        hotline.shared(),
        NewReferral {
            to: Receiver::Responsible { department: "grid".into(), region: street.clone() },
            reference: "12345-2026-0042".into(),
            subject: "邻里噪音纠纷 / neighbours' noise dispute".into(),
            instructions: "核实情况并组织调解，办结后反馈 / verify, mediate, report the result".into(),
            deadline: hotline.shared().calendar.add_working_days(now, 5).unix_timestamp(),
            case,
        },
    )
    .await
    .map_err(err)?;
    let id = sent.exchange.clone();
    println!("    the directory names {} for {street}; signed referral {}… sent", sent.peer, &id[..8]);
    referral_reaches(grid, &id, |s| s == State::Received).await?;
    if let Some(c) = grid.shared().referrals.case(&id)? {
        let show = ["ticket_id", "region", "caller_name", "caller_mobile"];
        let idx: Vec<usize> = show.iter().filter_map(|f| c.fields.iter().position(|g| g == f)).collect();
        let row = vec![idx.iter().map(|&i| cell(&c.record[i].to_string())).collect::<Vec<_>>()];
        let header: Vec<&str> = idx.iter().map(|&i| c.fields[i].as_str()).collect();
        println!("    the grid office's gateway stores it (received); its case, desensitized for the grid office as a query would be:");
        for line in crate::render::table(&header, &row).lines() {
            println!("      {line}");
        }
    }
    ops::take(grid.shared(), &id, Step::Accept).await.map_err(err)?;
    let child = ops::forward(
        grid.shared(),
        &id,
        NewReferral {
            to: Receiver::Node(committee.config().node.clone()),
            reference: "chongan-grid-0042".into(),
            subject: "3号楼噪音纠纷 / noise dispute, building 3".into(),
            instructions: "上门调解 / mediate on site".into(),
            deadline: grid.shared().calendar.add_working_days(now, 3).unix_timestamp(),
            case: None,
        },
    )
    .await
    .map_err(err)?;
    println!(
        "    the grid office accepts it (受理) and passes it down to {} as {}…",
        child.peer,
        &child.exchange[..8]
    );
    referral_reaches(committee, &child.exchange, |s| s == State::Received).await?;
    for step in [
        Step::Accept,
        Step::Update { notes: "已约双方面谈 / both parties invited to talk".into() },
        Step::Resolve {
            result: "双方达成调解协议 / mediation agreement signed".into(),
            feedback: "施工时间调整为 8:00-18:00 / works limited to 8:00-18:00".into(),
        },
    ] {
        ops::take(committee.shared(), &child.exchange, step).await.map_err(err)?;
    }
    println!("    the committee accepts, updates and resolves it (办理 → 反馈)");
    referral_reaches(hotline, &id, |s| s == State::Resolved).await?;
    let result = hotline.shared().referrals.history(&id)?.into_iter().find_map(|s| match s.step {
        Step::Resolve { result, feedback } => Some(format!("{result}; {feedback}")),
        _ => None,
    });
    println!(
        "    the result flows up through the grid office to the hotline (反馈): {}",
        result.as_deref().unwrap_or("?")
    );
    ops::take(hotline.shared(), &id, Step::Close).await.map_err(err)?;
    referral_reaches(grid, &id, |s| s == State::Closed).await?;
    println!("    the hotline closes it (办结); every step is signed and audited on both ends:");
    print_history(hotline, &id)?;
    print_history(committee, &child.exchange)?;

    referral_reaches(police, &late.exchange, |s| s == State::Received).await?;
    let wait = (late.deadline + 1 - OffsetDateTime::now_utc().unix_timestamp()).max(0);
    tokio::time::sleep(std::time::Duration::from_secs(wait as u64)).await;
    let at = OffsetDateTime::now_utc().unix_timestamp();
    for n in [hotline, police] {
        let list = n.shared().referrals.list(at)?;
        let first = list.first().filter(|r| r.exchange == late.exchange && r.overdue(at));
        println!(
            "    {}: `fedgate referral list` shows {} first, OVERDUE ({} to {}, still {})",
            n.config().node,
            first.map_or("?", |r| &r.exchange[..8]),
            late.reference,
            late.peer,
            first.map_or("?", |r| r.state.as_str())
        );
    }
    Ok(Some(id))
}

/// An objection (数据异议): the mediation centre finds a petitioner's mobile number wrong and
/// objects; the marker appears in its next query of the petitions; the petition office's steward
/// corrects the record at its source, and the marker goes.
async fn showcase_objections(running: &[RunningNode], records: u64) -> Result<()> {
    let by_id = |id: &str| running.iter().find(|n| n.config().node.to_string() == id);
    let (Some(centre), Some(petition)) = (by_id("mediation-center@wuxi"), by_id("petition@wuxi")) else {
        return Ok(());
    };
    let label = CASES.len() + 4;
    let source = petition
        .config()
        .sources
        .iter()
        .find(|s| s.dataset == "petitions")
        .context("petition@wuxi serves no petitions")?;
    let crate::config::SourceKind::Sqlite(db) = &source.kind else { return Ok(()) };
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let key: String = conn.query_row(
        &format!(
            "SELECT petition_id FROM {} ORDER BY petition_id LIMIT 1",
            crate::source::quote(&source.table)
        ),
        [],
        |r| r.get(0),
    )?;
    drop(conn);
    println!("\n[{label}] mediation-center@wuxi objects to petition {key}: its mobile number is wrong");
    let file = crate::api_objections::FileObjection {
        peer: petition.config().node.clone(),
        dataset: "petitions".into(),
        purpose: "dispute-mediation".into(),
        key: key.clone(),
        field: "mobile".into(),
        reason: "the petitioner gave another number at the mediation session".into(),
        proposed: Some("13900001111".into()),
    };
    let filed =
        crate::api_objections::file(centre.shared(), file).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::quic::objection::ask(centre.shared(), &filed).await.map_err(anyhow::Error::msg)?;
    println!(
        "    signed objection {}… stored and audited by both; the record is marked while it is open",
        &filed.id[..8]
    );
    let case = Case {
        consumer: "mediation-center@wuxi",
        provider: "petition@wuxi",
        dataset: "petitions",
        purpose: "dispute-mediation",
        limit: Some(3),
        show: &["petition_id", "mobile", "@objection"],
        what: "every delivery of the objected record carries the @objection marker",
    };
    run_case(running, &format!("{label}a"), &case, records).await?;
    let accept = crate::api_objections::AcceptBody {
        value: Some("13900001111".into()),
        reason: Some("confirmed with the petitioner".into()),
    };
    crate::api_objections::accept_objection(petition.shared(), &filed.id, accept)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "    the petition office's steward accepts: the source is corrected, subscribers get the update"
    );
    crate::quic::objection::ask(centre.shared(), &filed).await.map_err(anyhow::Error::msg)?;
    let seen = centre.shared().objections.get(&filed.id, crate::governance::store::Role::Outgoing)?;
    println!(
        "    the centre's gateway verifies the signed answer: {} (corrected: {})",
        seen.state.as_str(),
        seen.corrected
    );
    let case = Case {
        what: "the corrected record, and no marker any more",
        show: &["petition_id", "mobile"],
        ..case
    };
    run_case(running, &format!("{label}b"), &case, records).await
}

/// Builds the federation, starts it, shows it working, and exits or keeps serving.
pub async fn run(opts: Options) -> Result<()> {
    let built = build(&opts.dir, opts.records, opts.force)?;
    println!(
        "demo federation built in {} ({} nodes, {} records per dataset requested)",
        opts.dir.display(),
        built.len(),
        opts.records
    );
    let mut running = Vec::new();
    for b in built {
        let cfg = config::load(&b.config)?;
        running.push(
            RunningNode::start_on(cfg, b.sockets).await.with_context(|| format!("starting {}", b.node))?,
        );
    }
    println!(
        "gateways listening on 127.0.0.1 (mutual-TLS QUIC); each peer's identity comes from its certificate"
    );
    show_directory(&running);
    showcase(&running, opts.records).await?;
    showcase_subscriptions(&running, opts.records).await?;
    showcase_requests(&running, opts.records).await?;
    let referral = showcase_referrals(&running).await?;
    showcase_objections(&running, opts.records).await?;
    if opts.serve {
        let cfg = opts.dir.join("mediation-center@wuxi/gateway.toml");
        println!("\nfederation running. From another terminal, for example:");
        println!("  fedgate catalog list --config {} --peer hotline12345@wuxi", cfg.display());
        println!(
            "  fedgate directory resolve --config {} --department grid --region wuxi.liangxi.chongan.guangrui",
            cfg.display()
        );
        println!("  fedgate query --config {} --peer hotline12345@wuxi --dataset hotline-tickets --purpose dispute-mediation --limit 5", cfg.display());
        println!("  fedgate policy explain --config {} --peer police@wuxi.liangxi --dataset hotline-tickets --purpose law-enforcement", opts.dir.join("hotline12345@wuxi/gateway.toml").display());
        let hotline = opts.dir.join("hotline12345@wuxi/gateway.toml");
        println!("  fedgate referral list --config {}", hotline.display());
        if let Some(id) = referral {
            println!("  fedgate referral show --config {} {id}", hotline.display());
        }
        if let Some(console) = running.iter().find_map(|n| n.console_addr()) {
            println!("\nweb console of {CONSOLE_NODE}: http://{console}/  (demo logins, local demo only:");
            for (name, role) in CONSOLE_ACCOUNTS {
                println!("  {name} / {CONSOLE_PASSWORD}  ({})", role.as_str());
            }
            println!("  real accounts are made with `fedgate user add`)");
        }
        println!(
            "Ctrl-C stops. Each node also starts alone: fedgate serve --config DIR/<node-id>/gateway.toml"
        );
        crate::node::shutdown_signal().await;
    }
    for n in running {
        n.shutdown().await;
    }
    Ok(())
}
