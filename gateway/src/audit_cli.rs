//! What the `fedgate audit` commands do, on top of [`fedgate_audit`].

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use thiserror::Error;

use crate::config::{self, ConfigError};
use fedgate_audit::{self as audit, AuditError, AuditKeys, AuditLog, Entry, Kind};

/// Output format of `audit reconcile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReconcileFormat {
    /// Aligned columns, one row per exchange.
    Table,
    /// One JSON document.
    Json,
}

/// Output format of `audit show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON object per entry.
    Jsonl,
}

/// An `audit` command: the CLI's definition (help text included) and what [`run`] takes.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify the whole log: every entry's integrity and sequence, every checkpoint's signature,
    /// and every checkpoint's root recomputed from the entries. Exit 0 only if all of it holds;
    /// otherwise name the first bad entry or checkpoint and exit 1.
    ///
    /// With --config the entries are also decrypted and authenticated with the node's audit
    /// key. An auditor who holds only an export uses --dir with --trust (the federation root:
    /// the log's key is trusted only if the node's certificate vouches for it) or --pubkey.
    Verify {
        /// The node's gateway.toml.
        #[arg(long, value_name = "FILE", required_unless_present = "dir", conflicts_with = "dir")]
        config: Option<PathBuf>,
        /// A log folder (e.g. from `audit export`).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The signer's note verifier key (signing.pub), trusted as given.
        #[arg(long, value_name = "FILE", conflicts_with = "trust")]
        pubkey: Option<PathBuf>,
        /// The federation root certificate: trust the log's key only through a statement signed
        /// by the node's certificate key whose chain verifies to this root.
        #[arg(long, value_name = "ROOT_CRT")]
        trust: Option<PathBuf>,
        /// With --dir: also decrypt and authenticate the entries this auditor key reads.
        #[arg(long, value_name = "FILE", requires = "dir")]
        auditor_key: Option<PathBuf>,
    },
    /// Decrypt and list entries, optionally filtered. The node reads with --config; an auditor
    /// reads an export with --dir and --auditor-key. Entries of crypto-shredded segments are
    /// listed as shredded.
    Show {
        /// The node's gateway.toml.
        #[arg(long, value_name = "FILE", required_unless_present = "dir", conflicts_with = "dir")]
        config: Option<PathBuf>,
        /// A log folder (e.g. from `audit export`).
        #[arg(long, value_name = "DIR", requires = "auditor_key")]
        dir: Option<PathBuf>,
        /// An auditor's secret key (from `audit keygen`).
        #[arg(long, value_name = "FILE")]
        auditor_key: Option<PathBuf>,
        /// Only entries at or after this time: RFC 3339, or YYYY-MM-DD for the start of that
        /// day (UTC+8).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Only entries up to this time: RFC 3339 (exclusive), or YYYY-MM-DD for that whole day
        /// included (UTC+8), as grant dates mean.
        #[arg(long, value_name = "T")]
        until: Option<String>,
        /// Only entries with this counterpart node.
        #[arg(long, value_name = "NODE_ID")]
        peer: Option<String>,
        /// Only entries about this dataset.
        #[arg(long, value_name = "ID")]
        dataset: Option<String>,
        /// Only entries of this kind: request-in, transfer-end, request-out, deny, cert-reject, reload, start, stop, shred.
        #[arg(long, value_name = "K")]
        kind: Option<String>,
        /// Only entries with this purpose.
        #[arg(long, value_name = "P")]
        purpose: Option<String>,
        /// Only entries with this decision (allow, deny, error, sent, aborted, received, incomplete, …).
        #[arg(long, value_name = "D")]
        decision: Option<String>,
        /// Only entries of this exchange (its 128-bit id in hex; a unique prefix of 8 or more
        /// digits will do).
        #[arg(long, value_name = "ID")]
        exchange: Option<String>,
        /// Output format; default table on a terminal, jsonl when piped.
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Print a proof as JSON that `fedgate audit check-proof` verifies offline with only the
    /// public key: with --entry, that entry SEQ is in the log signed by the latest checkpoint;
    /// with --from, that the signed log of that size is a prefix of a later one (consistency).
    Prove {
        /// The node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The entry's sequence number (inclusion proof).
        #[arg(long, value_name = "SEQ", required_unless_present = "from", conflicts_with = "from")]
        entry: Option<u64>,
        /// Size of the earlier signed checkpoint (consistency proof).
        #[arg(long, value_name = "SIZE")]
        from: Option<u64>,
        /// Size of the later signed checkpoint; the latest if omitted.
        #[arg(long, value_name = "SIZE", requires = "from")]
        to: Option<u64>,
    },
    /// Check a proof offline: the checkpoint's signature and the path to its root.
    CheckProof {
        /// The proof (JSON from `audit prove`).
        #[arg(long, value_name = "FILE")]
        proof: PathBuf,
        /// The signer's note verifier key (signing.pub), trusted as given.
        #[arg(long, value_name = "FILE", required_unless_present = "trust", conflicts_with = "trust")]
        pubkey: Option<PathBuf>,
        /// The federation root certificate: trust only a key that the node's certificate
        /// vouches for in the statements the proof carries.
        #[arg(long, value_name = "ROOT_CRT")]
        trust: Option<PathBuf>,
    },
    /// Write a self-contained bundle for an outside auditor: entries (encrypted), checkpoints,
    /// public key and a README. No key that decrypts or signs is included.
    Export {
        /// The node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The folder to write.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// An auditor's public key (from `audit keygen`): every readable segment's key is also
        /// wrapped for it in the export, so that auditor can read it. Repeatable.
        #[arg(long, value_name = "PUB_FILE")]
        auditor_key: Vec<PathBuf>,
    },
    /// Match every exchange across the exports of two or more nodes by its id and name what
    /// disagrees (count, digest, purpose, decision, a side that is missing), and check every
    /// checkpoint a consumer witnessed against the provider's log (a truncated, rolled-back or
    /// forked log is named with the witnessing entry). Each export is verified first. Exit 0
    /// only if everything between the given nodes reconciles.
    Reconcile {
        /// Export folders (`audit export`), one per node.
        #[arg(value_name = "EXPORT", num_args = 1.., required = true)]
        exports: Vec<PathBuf>,
        /// An auditor's secret key the exports' segments are wrapped for.
        #[arg(long, value_name = "FILE")]
        auditor_key: PathBuf,
        /// The federation root: trust each export's audit key only through its node's
        /// certificate (otherwise each export's signing.pub is taken as given).
        #[arg(long, value_name = "ROOT_CRT")]
        trust: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: ReconcileFormat,
    },
    /// Make an auditor key pair (X25519): NAME.key (secret, 0600) and NAME.pub in DIR. Put the
    /// .pub in a node's [audit] auditors, or give it to `audit export --auditor-key`.
    Keygen {
        /// The folder to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// File name stem.
        #[arg(long, value_name = "NAME", default_value = "auditor")]
        name: String,
    },
    /// Append entries as fast as possible, printing each acknowledged seq; for crash tests and
    /// the benchmark. Runs until killed or --count entries.
    #[command(hide = true)]
    Soak {
        /// The log folder (keys are kept in DIR/keys).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Stop after this many entries.
        #[arg(long)]
        count: Option<u64>,
        /// Concurrent appenders.
        #[arg(long, default_value_t = 64)]
        writers: usize,
    },
}

/// Why an audit command failed.
#[derive(Debug, Error)]
pub enum CliError {
    /// The config is bad.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The log is bad or unreadable.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// Anything else, said in one line.
    #[error("{0}")]
    Other(String),
}

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

/// Runs one audit command.
pub fn run(cmd: Command) -> Result<(), CliError> {
    match cmd {
        Command::Verify { config, dir, pubkey, trust, auditor_key } => {
            let reader = auditor_key.as_deref().map(auditor_reader).transpose()?;
            verify(config, dir, pubkey, trust, reader)
        }
        Command::Show {
            config,
            dir,
            auditor_key,
            since,
            until,
            peer,
            dataset,
            kind,
            purpose,
            decision,
            exchange,
            format,
        } => {
            let (dir, sealer) = match (config, dir, auditor_key) {
                (Some(c), _, _) => {
                    let cfg = config::load(&c)?;
                    (cfg.audit_dir.clone(), AuditKeys::load_reader(&cfg.audit_key)?)
                }
                (None, Some(d), Some(k)) => (d, auditor_reader(&k)?),
                _ => return Err(other("give --config FILE, or --dir DIR --auditor-key FILE")),
            };
            let filter = Filter {
                since: since.as_deref().map(|t| parse_time(t, Bound::Start)).transpose()?,
                until: until.as_deref().map(|t| parse_time(t, Bound::End)).transpose()?,
                peer,
                dataset,
                kind: kind.as_deref().map(|k| Kind::parse(k).ok_or_else(|| other(format!("unknown kind {k:?} (request-in, transfer-end, request-out, deny, cert-reject, reload, start, stop, shred, governance)")))).transpose()?,
                purpose,
                decision,
                exchange: exchange.as_deref().map(exchange_prefix).transpose()?,
            };
            let format =
                format.unwrap_or(if std::io::stdout().is_terminal() { Format::Table } else { Format::Jsonl });
            show(&dir, &sealer, &filter, format)
        }
        Command::Prove { config, entry, from, to } => {
            let cfg = config::load(&config)?;
            let verifier = audit::read_verifier(&cfg.audit_dir.join("signing.pub"))?;
            let json = match (entry, from) {
                (Some(seq), _) => {
                    serde_json::to_string_pretty(&audit::prove(&cfg.audit_dir, &verifier, seq)?)
                }
                (None, Some(from)) => serde_json::to_string_pretty(&audit::prove_consistency(
                    &cfg.audit_dir,
                    &verifier,
                    from,
                    to,
                )?),
                (None, None) => {
                    return Err(other(
                        "give --entry SEQ (inclusion) or --from SIZE [--to SIZE] (consistency)",
                    ))
                }
            };
            println!("{}", json.map_err(other)?);
            Ok(())
        }
        Command::CheckProof { proof, pubkey, trust } => check_proof(&proof, pubkey, trust),
        Command::Export { config, out, auditor_key } => {
            let cfg = config::load(&config)?;
            let auditors = auditor_key
                .iter()
                .map(|p| {
                    crate::audit_trust::read_auditor_public(p)
                        .map_err(|e| other(format!("{}: {e}", p.display())))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let master = match AuditKeys::load_reader(&cfg.audit_key)? {
                audit::Reader::Node(k) => k,
                audit::Reader::Auditor(_) => return Err(other("the node's audit key is not an auditor key")),
            };
            let n = audit::export_for(
                &cfg.audit_dir,
                &out,
                (!auditors.is_empty()).then_some((&master, auditors.as_slice())),
            )?;
            println!("exported {n} segment(s) with their wrapped keys, checkpoints, public key and key statements to {}", out.display());
            if !auditors.is_empty() {
                println!(
                    "every segment still readable is also wrapped for {} auditor key(s)",
                    auditors.len()
                );
            }
            Ok(())
        }
        Command::Keygen { out, name } => keygen(&out, &name),
        Command::Reconcile { exports, auditor_key, trust, format } => {
            reconcile(&exports, &auditor_key, trust.as_deref(), format)
        }
        Command::Soak { dir, count, writers } => soak(dir, count, writers),
    }
}

fn verify(
    config: Option<PathBuf>,
    dir: Option<PathBuf>,
    pubkey: Option<PathBuf>,
    trust: Option<PathBuf>,
    reader: Option<audit::Reader>,
) -> Result<(), CliError> {
    let (dir, pubkey, sealer) = match (config, dir) {
        (Some(c), _) => {
            let cfg = config::load(&c)?;
            let sealer = AuditKeys::load_reader(&cfg.audit_key)?;
            (cfg.audit_dir.clone(), pubkey.or_else(|| Some(cfg.audit_dir.join("signing.pub"))), Some(sealer))
        }
        (None, Some(d)) => (d, pubkey, reader),
        (None, None) => {
            return Err(other("give --config FILE, or --dir DIR with --trust ROOT_CRT or --pubkey FILE"))
        }
    };
    let (verifier, vouched) = match (trust, pubkey) {
        (Some(root), _) => {
            let store = crate::audit_trust::read_root(&root).map_err(other)?;
            let (v, node) = crate::audit_trust::trusted_verifier(&dir, &store).map_err(other)?;
            (v, Some(node))
        }
        (None, Some(p)) => (audit::read_verifier(&p)?, None),
        (None, None) => return Err(other("--dir needs --trust ROOT_CRT or --pubkey FILE")),
    };
    let tty = std::io::stderr().is_terminal();
    let v = audit::verify(&dir, &verifier, sealer.as_ref(), |n| {
        if tty {
            eprint!("\rverifying… {n} entries");
        }
    })?;
    if tty {
        eprintln!();
    }
    println!(
        "OK: {} entries intact{}; {} signed checkpoint(s) valid and consistent, the latest covering {} entries",
        v.entries,
        if v.decrypted { " and the readable ones authentic (decrypted)" } else { "" },
        v.checkpoints,
        v.signed_size
    );
    if v.shredded > 0 {
        println!("note: {} entries are in crypto-shredded segments (past retention): intact, but no one can read them", v.shredded);
    }
    if v.unreadable > 0 {
        println!("note: {} entries are in segments this key is not wrapped for", v.unreadable);
    }
    if let Some(node) = vouched {
        println!("the audit key is {node}'s: its certificate, verified to the federation root, signed a statement naming it");
    }
    if v.entries > v.signed_size {
        println!(
            "note: {} newer entries are not yet covered by a signed checkpoint",
            v.entries - v.signed_size
        );
    }
    if v.unfinished_tail {
        println!("note: the log ends inside an unacknowledged entry (a write in progress, or cut by a crash; the gateway removes it on restart)");
    }
    Ok(())
}

fn reconcile(
    exports: &[PathBuf],
    key: &std::path::Path,
    trust: Option<&std::path::Path>,
    format: ReconcileFormat,
) -> Result<(), CliError> {
    let reader = auditor_reader(key)?;
    let store = trust.map(crate::audit_trust::read_root).transpose().map_err(other)?;
    let report = reconcile_exports(exports, &reader, store.as_ref())?;
    match format {
        ReconcileFormat::Json => println!("{}", serde_json::to_string_pretty(&report).map_err(other)?),
        ReconcileFormat::Table => {
            let rows: Vec<Vec<String>> = report
                .exchanges
                .iter()
                .map(|x| {
                    let status = if x.one_sided {
                        "other side not given".to_owned()
                    } else if x.disagreements.is_empty() {
                        "ok".to_owned()
                    } else {
                        x.disagreements.join("; ")
                    };
                    let id: String = x.exchange.chars().take(8).collect();
                    vec![
                        // A subscription batch: its id range after the subscription's id.
                        x.batch.as_ref().map_or_else(|| id.clone(), |b| format!("{id} {b}")),
                        x.provider.clone(),
                        x.consumer.clone(),
                        x.dataset.clone().unwrap_or_default(),
                        x.provider_says.clone().unwrap_or_else(|| "-".into()),
                        x.consumer_says.clone().unwrap_or_else(|| "-".into()),
                        status,
                    ]
                })
                .collect();
            let header = [
                "EXCHANGE",
                "PROVIDER",
                "CONSUMER",
                "DATASET",
                "PROVIDER SAYS",
                "CONSUMER SAYS",
                "RECONCILES",
            ];
            print!("{}", crate::render::table(&header, &rows));
            let bad = report.exchanges.iter().filter(|x| !x.disagreements.is_empty()).count();
            println!("{} exchange(s); {bad} disagree", report.exchanges.len());
            print_witnessed(&report.witnessed);
        }
    }
    if report.reconciled {
        Ok(())
    } else {
        Err(other("the logs do not reconcile (see the disagreements and inconsistent checkpoints above)"))
    }
}

/// Reconciles exports (`audit export` folders) as `audit reconcile` does: verifies each (its
/// audit key trusted through `trust` if given, else its `signing.pub`), reads it with
/// `reader`, matches every exchange across sides and checks every checkpoint a consumer
/// witnessed against the provider's log, reproduced at that size.
pub fn reconcile_exports(
    exports: &[PathBuf],
    reader: &audit::Reader,
    trust: Option<&fedgate_certs::verify::TrustStore>,
) -> Result<audit::reconcile::Report, CliError> {
    let mut logs = Vec::new();
    let mut verified = Vec::new();
    for dir in exports {
        let verifier = match trust {
            Some(s) => crate::audit_trust::trusted_verifier(dir, s).map_err(other)?.0,
            None => audit::read_verifier(&dir.join("signing.pub"))?,
        };
        audit::verify(dir, &verifier, Some(reader), |_| {})?;
        let node = crate::audit_trust::origin_node(&verifier.0).map_err(other)?.to_owned();
        let mut entries = Vec::new();
        audit::entries(dir, reader, |e| {
            entries.push(e);
            Ok(())
        })?;
        verified.push((node.clone(), dir, verifier));
        logs.push((node, entries));
    }
    // Each provider's log is reproduced at every size its consumers witnessed.
    let sizes = audit::reconcile::witnessed_sizes(&logs);
    let mut heads = std::collections::BTreeMap::new();
    for (node, dir, verifier) in verified {
        let want = sizes.get(&node).cloned().unwrap_or_default();
        let (entries, roots) = audit::proof::heads_at(dir, &want)?;
        heads.insert(node, audit::reconcile::Heads { entries, roots, verifier: Some(verifier) });
    }
    Ok(audit::reconcile::reconcile_witnessed(&logs, &heads))
}

/// The witnessed checkpoints: a count, and a row for each one the provider's log contradicts.
fn print_witnessed(all: &[audit::reconcile::Witnessed]) {
    let checked = all.iter().filter(|w| w.consistent.is_some()).count();
    let bad: Vec<_> = all.iter().filter(|w| w.consistent == Some(false)).collect();
    println!(
        "{checked} witnessed checkpoint(s) checked against the provider's log; {} inconsistent{}",
        bad.len(),
        match all.len() - checked {
            0 => String::new(),
            n => format!(" ({n} of providers whose log was not given)"),
        }
    );
    if bad.is_empty() {
        return;
    }
    let rows: Vec<Vec<String>> = bad
        .iter()
        .map(|w| {
            vec![
                w.provider.clone(),
                w.consumer.clone(),
                w.consumer_entry.to_string(),
                w.exchange.clone().unwrap_or_default(),
                w.provider_entry.to_string(),
                w.size.to_string(),
                w.problem.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let header = ["PROVIDER", "WITNESSED BY", "ENTRY", "EXCHANGE", "PROVIDER ENTRY", "SIZE", "INCONSISTENT"];
    print!("{}", crate::render::table(&header, &rows));
}

fn keygen(out: &std::path::Path, name: &str) -> Result<(), CliError> {
    if name.is_empty() || name.contains(['/', '\\']) {
        return Err(other(format!("--name {name:?}: a plain file name stem")));
    }
    std::fs::create_dir_all(out).map_err(|e| other(format!("{}: {e}", out.display())))?;
    let (secret, public) = audit::keys::generate_auditor().map_err(other)?;
    let key = out.join(format!("{name}.key"));
    let pubf = out.join(format!("{name}.pub"));
    if key.exists() || pubf.exists() {
        return Err(other(format!("{} or {} exists; not overwriting a key", key.display(), pubf.display())));
    }
    crate::secret::write_new(&key, &fedgate_catalog::hex(&secret))
        .map_err(|e| other(format!("{}: {e}", key.display())))?;
    std::fs::write(&pubf, format!("{}\n", audit::keys::public_text(&public)))
        .map_err(|e| other(format!("{}: {e}", pubf.display())))?;
    println!(
        "{}\nsecret key: {} (keep it; 0600)\npublic key: {}",
        audit::keys::public_text(&public),
        key.display(),
        pubf.display()
    );
    Ok(())
}

/// An auditor's secret key file as a reader; refused if others can read it.
fn auditor_reader(path: &std::path::Path) -> Result<audit::Reader, CliError> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |why: String| other(format!("{}: {why}", path.display()));
    let mode = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(bad(format!("readable by others (mode {mode:o}); run chmod 600")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    audit::keys::parse_auditor_secret(&text)
        .map(audit::Reader::auditor)
        .ok_or_else(|| bad("not an auditor secret key (64 hex digits from `audit keygen`)".into()))
}

fn check_proof(
    proof: &std::path::Path,
    pubkey: Option<PathBuf>,
    trust: Option<PathBuf>,
) -> Result<(), CliError> {
    let text = std::fs::read_to_string(proof).map_err(|e| other(format!("{}: {e}", proof.display())))?;
    let bad = |e: String| other(format!("{}: proof does not verify: {e}", proof.display()));
    let consistency = serde_json::from_str::<audit::ConsistencyProof>(&text).ok();
    let inclusion = match consistency {
        Some(_) => None,
        None => Some(
            serde_json::from_str::<audit::InclusionProof>(&text)
                .map_err(|e| other(format!("{}: not a proof: {e}", proof.display())))?,
        ),
    };
    let verifiers = match (&trust, pubkey) {
        (Some(root), _) => {
            let store = crate::audit_trust::read_root(root).map_err(other)?;
            let statements = consistency.as_ref().map_or_else(
                || inclusion.as_ref().map(|p| p.key_statements.clone()).unwrap_or_default(),
                |p| p.key_statements.clone(),
            );
            let v = crate::audit_trust::vouched_verifiers(&statements, &store);
            if v.is_empty() {
                return Err(bad(format!(
                    "no key statement in the proof is vouched for by {} (the proof must come from `audit prove` of a node that signed one)",
                    root.display()
                )));
            }
            v
        }
        (None, Some(p)) => vec![audit::read_verifier(&p)?],
        (None, None) => return Err(other("give --trust ROOT_CRT or --pubkey FILE")),
    };
    let through = if trust.is_some() { " by a key the node's certificate vouches for" } else { "" };
    let mut last = String::new();
    for v in &verifiers {
        if let Some(p) = &consistency {
            match audit::check_consistency(p, v) {
                Ok((old, new)) => {
                    println!("{}'s log of {} entries extends its log of {} entries (both signatures{through} and the consistency proof verified)", new.origin, new.size, old.size);
                    return Ok(());
                }
                Err(e) => last = e,
            }
        } else if let Some(p) = &inclusion {
            match audit::check_proof(p, v) {
                Ok(cp) => {
                    println!("entry {} is in {}'s log of {} entries (checkpoint signature{through} and inclusion path verified)", p.entry, cp.origin, cp.size);
                    return Ok(());
                }
                Err(e) => last = e,
            }
        }
    }
    Err(bad(last))
}

#[derive(Debug, Default)]
struct Filter {
    since: Option<i64>,
    until: Option<i64>,
    peer: Option<String>,
    dataset: Option<String>,
    kind: Option<Kind>,
    purpose: Option<String>,
    decision: Option<String>,
    exchange: Option<String>,
}

impl Filter {
    fn keeps(&self, e: &Entry) -> bool {
        let is = |want: &Option<String>, got: &Option<String>| {
            want.as_ref().is_none_or(|w| got.as_ref() == Some(w))
        };
        self.since.is_none_or(|t| e.time_ms >= t)
            && self.until.is_none_or(|t| e.time_ms < t)
            && is(&self.peer, &e.counterpart)
            && is(&self.dataset, &e.dataset)
            && self.kind.is_none_or(|k| e.kind == Some(k))
            && is(&self.purpose, &e.purpose)
            && is(&self.decision, &e.decision)
            && self
                .exchange
                .as_ref()
                .is_none_or(|x| e.exchange.as_ref().is_some_and(|id| id.starts_with(x.as_str())))
    }
}

/// A table row standing for an entry that cannot be read.
fn placeholder(seq: u64, kind: &str, why: &str) -> Vec<String> {
    let mut row = vec![seq.to_string(), String::new(), kind.to_owned()];
    row.extend(std::iter::repeat_n(String::new(), 6));
    row.push(why.chars().take(60).collect());
    row
}

impl Filter {
    /// True if and only if no criterion is set.
    fn is_empty(&self) -> bool {
        self.since.is_none()
            && self.until.is_none()
            && self.peer.is_none()
            && self.dataset.is_none()
            && self.kind.is_none()
            && self.purpose.is_none()
            && self.decision.is_none()
            && self.exchange.is_none()
    }
}

/// An `--exchange` value: lowercase hex, 8 to 32 digits.
fn exchange_prefix(s: &str) -> Result<String, CliError> {
    let t = s.trim().to_ascii_lowercase();
    if (8..=32).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(t);
    }
    Err(other(format!("--exchange {s:?}: an exchange id is 32 hex digits (a prefix of 8 or more will do)")))
}

/// Which end of a day a bare date stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    /// `--since D`: from the start of D.
    Start,
    /// `--until D`: through the end of D (so the bound is the start of the next day).
    End,
}

/// RFC 3339, or a YYYY-MM-DD date meaning a whole day in UTC+8 (as grant dates do); as Unix
/// milliseconds.
pub(crate) fn parse_time(s: &str, bound: Bound) -> Result<i64, CliError> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let parts: Vec<&str> = s.split('-').collect();
    if let [y, m, d] = parts.as_slice() {
        if let (Ok(y), Ok(m), Ok(d)) = (y.parse::<i64>(), m.parse::<u32>(), d.parse::<u32>()) {
            if fedgate_policy::time::is_valid_date(y, m, d) {
                let day = fedgate_policy::time::days_from_civil(y, m, d) + i64::from(bound == Bound::End);
                let secs = day * 86_400 - fedgate_policy::time::CST_OFFSET_SECS;
                return Ok(secs * 1000);
            }
        }
    }
    Err(other(format!("{s:?} is neither an RFC 3339 time nor a YYYY-MM-DD date")))
}

fn time_text(ms: i64) -> String {
    let cst = time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC);
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(|t| t.to_offset(cst))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

fn show(
    dir: &std::path::Path,
    sealer: &audit::Reader,
    filter: &Filter,
    format: Format,
) -> Result<(), CliError> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut rows = Vec::new();
    let (mut shredded, mut unreadable) = (0u64, 0u64);
    let unfiltered = filter.is_empty();
    audit::entries_all(dir, sealer, |o| {
        let e = match o {
            audit::Opened::Entry(e) => *e,
            audit::Opened::Shredded { seq } => {
                shredded += 1;
                if unfiltered {
                    match format {
                        Format::Jsonl => {
                            let _ = writeln!(out, "{}", serde_json::json!({"seq": seq, "shredded": true}));
                        }
                        Format::Table => rows.push(placeholder(
                            seq,
                            "shredded",
                            "the data key was destroyed after retention",
                        )),
                    }
                }
                return Ok(());
            }
            audit::Opened::Unreadable { seq, why } => {
                unreadable += 1;
                if unfiltered {
                    match format {
                        Format::Jsonl => {
                            let _ = writeln!(out, "{}", serde_json::json!({"seq": seq, "unreadable": why}));
                        }
                        Format::Table => rows.push(placeholder(seq, "unreadable", &why)),
                    }
                }
                return Ok(());
            }
        };
        if !filter.keeps(&e) {
            return Ok(());
        }
        match format {
            Format::Jsonl => {
                let mut v = serde_json::to_value(&e).unwrap_or_default();
                v["time"] = time_text(e.time_ms).into();
                let _ = writeln!(out, "{v}");
            }
            Format::Table => rows.push(vec![
                e.seq.to_string(),
                time_text(e.time_ms),
                e.kind.map(Kind::as_str).unwrap_or("?").to_owned(),
                e.exchange.as_deref().map(|x| x.chars().take(8).collect()).unwrap_or_default(),
                e.counterpart.clone().unwrap_or_default(),
                e.dataset.clone().unwrap_or_default(),
                e.purpose.clone().unwrap_or_default(),
                e.decision.clone().unwrap_or_default(),
                e.records.map(|r| r.to_string()).unwrap_or_default(),
                e.reason.clone().unwrap_or_default().chars().take(60).collect(),
            ]),
        }
        Ok(())
    })?;
    if !unfiltered && shredded + unreadable > 0 {
        eprintln!("note: {shredded} shredded and {unreadable} unreadable entries cannot be filtered and are not shown");
    }
    if format == Format::Table {
        let header = [
            "SEQ",
            "TIME",
            "KIND",
            "EXCHANGE",
            "COUNTERPART",
            "DATASET",
            "PURPOSE",
            "DECISION",
            "RECORDS",
            "REASON",
        ];
        let _ = write!(out, "{}", crate::render::table(&header, &rows));
    }
    out.flush().map_err(other)
}

fn soak(dir: PathBuf, count: Option<u64>, writers: usize) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(other)?;
    rt.block_on(async move {
        let keys = AuditKeys::load_or_create(&dir.join("keys/audit.key"), &dir.join("keys/signing.key"))?;
        let (log, _) = AuditLog::open(&dir.join("log"), "fedgate.audit/soak@wuxi", keys)?;
        let left = Arc::new(AtomicU64::new(count.unwrap_or(u64::MAX)));
        let mut tasks = Vec::new();
        for w in 0..writers.max(1) {
            let (log, left) = (log.clone(), left.clone());
            tasks.push(tokio::spawn(async move {
                while left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
                    let e = Entry {
                        kind: Some(Kind::RequestIn),
                        actor: "soak@wuxi".into(),
                        counterpart: Some(format!("writer{w}@wuxi")),
                        dataset: Some("hotline-tickets".into()),
                        purpose: Some("dispute-mediation".into()),
                        decision: Some("allow".into()),
                        reason: Some("allowed by grant centre-hotline-full (clearance 4, rows all)".into()),
                        obligations: vec!["caller_name=mask-name".into(), "caller_id=mask".into()],
                        records: Some(1),
                        content_digest: Some("e1217bf0c7a0".repeat(5)),
                        ..Entry::default()
                    };
                    match log.append(e).await {
                        Ok(seq) => println!("{seq}"),
                        Err(e) => {
                            eprintln!("append failed: {e}");
                            return;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        log.close().await?;
        Ok::<(), CliError>(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_mean_whole_days_in_utc8() {
        // 2026-11-29 00:00 UTC+8 is 2026-11-28 16:00 UTC.
        let start = parse_time("2026-11-29", Bound::Start).unwrap();
        assert_eq!(start, parse_time("2026-11-28T16:00:00Z", Bound::Start).unwrap());
        // --until D keeps all of D: the bound is the next day's start.
        let end = parse_time("2026-11-29", Bound::End).unwrap();
        assert_eq!(end - start, 86_400_000);
        let f = Filter { since: Some(start), until: Some(end), ..Filter::default() };
        let at = |rfc: &str| Entry { time_ms: parse_time(rfc, Bound::Start).unwrap(), ..Entry::default() };
        assert!(f.keeps(&at("2026-11-29T23:59:59+08:00")));
        assert!(f.keeps(&at("2026-11-29T00:00:00+08:00")));
        assert!(!f.keeps(&at("2026-11-30T00:00:00+08:00")));
        assert!(!f.keeps(&at("2026-11-28T23:59:59+08:00")));
        // An exact time stays exact at both ends.
        assert_eq!(
            parse_time("2026-11-29T10:00:00Z", Bound::End).unwrap(),
            parse_time("2026-11-29T10:00:00Z", Bound::Start).unwrap()
        );
        assert!(parse_time("2026-02-30", Bound::End).is_err());
    }

    #[test]
    fn purpose_decision_and_exchange_filters() {
        let id = "0123456789abcdef0123456789abcdef";
        let e = Entry {
            purpose: Some("statistics".into()),
            decision: Some("deny".into()),
            exchange: Some(id.into()),
            ..Entry::default()
        };
        let keeps = |f: Filter| f.keeps(&e);
        assert!(keeps(Filter { purpose: Some("statistics".into()), ..Filter::default() }));
        assert!(!keeps(Filter { purpose: Some("law-enforcement".into()), ..Filter::default() }));
        assert!(keeps(Filter { decision: Some("deny".into()), ..Filter::default() }));
        assert!(!keeps(Filter { decision: Some("allow".into()), ..Filter::default() }));
        assert!(keeps(Filter { exchange: Some(exchange_prefix(id).unwrap()), ..Filter::default() }));
        assert!(keeps(Filter {
            exchange: Some(exchange_prefix("0123456789ABCDEF").unwrap()),
            ..Filter::default()
        }));
        assert!(!keeps(Filter {
            exchange: Some(exchange_prefix("0123456789abcdee").unwrap()),
            ..Filter::default()
        }));
        assert!(!Filter { exchange: Some(id.into()), ..Filter::default() }.keeps(&Entry::default()));
        assert!(exchange_prefix("0123").is_err(), "too short to be unique");
        assert!(exchange_prefix("zz23456789").is_err());
    }
}
