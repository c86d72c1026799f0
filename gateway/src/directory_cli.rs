//! What the `fedgate directory` commands do, on top of [`fedgate_certs::directory`].

use std::path::{Path, PathBuf};

use fedgate_catalog::{Diagnostics, Region};
use fedgate_certs::directory::{self, Bundle, Directory, Entry, Revocations, Signed, View};
use fedgate_certs::names::Named;
use fedgate_certs::{inspect, store};
use thiserror::Error;
use time::OffsetDateTime;

use crate::config;
use crate::directory::{read_bundle, write_bundle};

/// Output format of `directory show` and `directory resolve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document.
    Json,
}

/// A `directory` command: the CLI's definition (help text included) and what [`run`] takes.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Build an unsigned directory (a draft for `directory sign`) from a TOML list of nodes, or
    /// from node folders (DIR/*/gateway.toml, as `fedgate demo` writes them).
    ///
    /// The TOML has `federation`, optional `scope` (a region subtree; the federation if absent),
    /// `version`, and one [[nodes]] table per node with `node`, `address` (IP:PORT) and an
    /// optional `fingerprint` (SHA-256 of its certificate). Every problem is printed as
    /// FILE:LINE:COL: message (exit 1). From node folders, each node's `listen` address is
    /// taken, the federation from its trust.crt, and only nodes inside --scope are listed.
    Build {
        /// The TOML list of nodes.
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "node_folders",
            conflicts_with = "node_folders"
        )]
        nodes: Option<PathBuf>,
        /// A folder of node folders, each with a gateway.toml.
        #[arg(long, value_name = "DIR")]
        node_folders: Option<PathBuf>,
        /// Only nodes inside this region (default: the whole federation, or the TOML's `scope`).
        #[arg(long, value_name = "REGION")]
        scope: Option<Region>,
        /// The directory's version (required with --node-folders; overrides the TOML's). A gateway never
        /// takes a directory older than the one it holds for the same scope.
        #[arg(long = "directory-version", id = "directory_version", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        version: Option<u64>,
        /// With --node-folders: pin each node's current certificate (peers then refuse any
        /// other until a new directory is issued).
        #[arg(long, requires = "node_folders")]
        pin: bool,
        /// Where to write the draft.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a draft with a CA: the federation root for any scope, a region CA for a scope
    /// inside its region only. The signed directory is added to the bundle FILE (replacing the
    /// one of the same scope), which is created if missing: a root directory and region
    /// directories live in one file, the one gateway.toml's `directory` names.
    Sign {
        /// The CA folder (root.crt + root.key, or ca.crt + ca.key).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The draft from `directory build`.
        #[arg(long, value_name = "DRAFT")]
        draft: PathBuf,
        /// The bundle to add the signed directory to.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print a bundle's directories and nodes, without verifying them (see `directory check`).
    Show {
        /// The bundle.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Output format. json: {"verified": false, "directories": [{"scope", "federation",
        /// "version", "issued", "signer", "nodes": [{"node", "department", "region", "address",
        /// "fingerprint"}]}]}.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Verify every directory of a bundle against the federation root: signature, signer's
    /// chain and region (and, with --crl, that no CA on it is revoked), every entry. Prints one
    /// line per directory; exit 1 naming each directory and entry at fault.
    Check {
        /// The bundle.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The federation root certificate (PEM).
        #[arg(long, value_name = "ROOT_CRT")]
        trust: PathBuf,
        /// A revocation list (PEM) of the root or a region CA; repeat for each. A region CA its
        /// issuer revoked signs no directory.
        #[arg(long = "crl", value_name = "CRL")]
        crls: Vec<PathBuf>,
    },
    /// Which node of DEPARTMENT is responsible for REGION: the nearest one whose region covers
    /// it (REGION itself, then its parent, up to the top). Exit 1 if there is none.
    Resolve {
        /// A bundle, verified with --trust.
        #[arg(value_name = "FILE", required_unless_present = "config", requires = "trust")]
        file: Option<PathBuf>,
        /// The federation root certificate (PEM), with FILE.
        #[arg(long, value_name = "ROOT_CRT")]
        trust: Option<PathBuf>,
        /// With FILE: a revocation list (PEM) to check the signers against; repeatable.
        #[arg(long = "crl", value_name = "CRL", conflicts_with = "config")]
        crls: Vec<PathBuf>,
        /// Instead of FILE: the directory a node holds (its state folder's, else its
        /// `directory` file), verified with its trust.crt.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["file", "trust"])]
        config: Option<PathBuf>,
        /// The department, e.g. grid.
        #[arg(long, value_name = "D")]
        department: String,
        /// The region, e.g. wuxi.liangxi.chongan.guangrui.
        #[arg(long, value_name = "R")]
        region: Region,
        /// Output format. json: {"department", "region", "node", "address"}.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// Why a `directory` command failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CliError {
    /// A file could not be read, written or used.
    #[error("{}: {why}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The TOML list of nodes has problems, each located.
    #[error("{0}")]
    Source(Diagnostics),
    /// A CA folder does not load (the message names the file).
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A node's config does not load.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A directory of the bundle did not verify (each already printed).
    #[error("{0}")]
    Refused(String),
}

fn file_err(path: &Path, why: impl std::fmt::Display) -> CliError {
    CliError::File { path: path.to_owned(), why: why.to_string() }
}

/// Runs one `directory` command.
pub fn run(cmd: Command) -> Result<(), CliError> {
    let now = OffsetDateTime::now_utc();
    match cmd {
        Command::Build { nodes, node_folders, scope, version, pin, out } => {
            let dir = match (nodes, node_folders) {
                (Some(file), _) => from_toml(&file, scope, version, now)?,
                (None, Some(folders)) => from_node_folders(&folders, scope, version, pin, now)?,
                (None, None) => {
                    return Err(CliError::Refused("give --nodes FILE or --node-folders DIR".into()))
                }
            };
            std::fs::write(&out, dir.encode()).map_err(|e| file_err(&out, e))?;
            println!(
                "directory {} ({} nodes) drafted in {}; sign it with `fedgate directory sign`",
                dir.label(),
                dir.nodes().len(),
                out.display()
            );
        }
        Command::Sign { ca, draft, out } => {
            let authority = store::load_authority(&ca)?;
            let bytes = std::fs::read(&draft).map_err(|e| file_err(&draft, e))?;
            let dir = Directory::decode(&bytes).map_err(|e| file_err(&draft, e))?;
            let signed = directory::sign(&dir, &authority).map_err(|e| file_err(&ca, e))?;
            let mut bundle = if out.exists() {
                read_bundle(&out).map_err(|e| file_err(&out, e))?
            } else {
                Bundle::default()
            };
            bundle.put(signed).map_err(|e| file_err(&out, e))?;
            write_bundle(&out, &bundle).map_err(|e| file_err(&out, e))?;
            println!(
                "directory {} signed by the {} CA into {}",
                dir.label(),
                authority.region(),
                out.display()
            );
        }
        Command::Show { file, format } => {
            show(&read_bundle(&file).map_err(|e| file_err(&file, e))?, format, &file)?
        }
        Command::Check { file, trust, crls } => check(&file, &trust, &read_revocations(&crls)?, now)?,
        Command::Resolve { file, trust, crls, config, department, region, format } => {
            let view = match (file, trust, config) {
                (Some(file), Some(trust), _) => {
                    verified(&file, &read_root(&trust)?, &read_revocations(&crls)?, now)?
                }
                (_, _, Some(cfg)) => node_view(&cfg, now)?,
                _ => return Err(CliError::Refused("give FILE with --trust, or --config".into())),
            };
            let Some(e) = view.resolve(&department, &region) else {
                return Err(CliError::Refused(format!(
                    "no node of department {department} covers region {region} in the directory"
                )));
            };
            match format {
                Format::Table => println!("{}\t{}", e.node, e.address),
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"department": department, "region": region.to_string(), "node": e.node.to_string(), "address": e.address.to_string()})
                ),
            }
        }
    }
    Ok(())
}

fn from_toml(
    file: &Path,
    scope: Option<Region>,
    version: Option<u64>,
    now: OffsetDateTime,
) -> Result<Directory, CliError> {
    let text = std::fs::read_to_string(file).map_err(|e| file_err(file, e))?;
    let dir = directory::parse_source(&file.display().to_string(), &text, version, now.unix_timestamp())
        .map_err(CliError::Source)?;
    match scope {
        Some(s) if s != dir.scope => {
            Err(file_err(file, format!("--scope {s} differs from the file's scope {}", dir.scope)))
        }
        _ => Ok(dir),
    }
}

fn from_node_folders(
    folders: &Path,
    scope: Option<Region>,
    version: Option<u64>,
    pin: bool,
    now: OffsetDateTime,
) -> Result<Directory, CliError> {
    let version = version
        .ok_or_else(|| CliError::Refused("--directory-version N is required with --node-folders".into()))?;
    let mut configs: Vec<PathBuf> = std::fs::read_dir(folders)
        .map_err(|e| file_err(folders, e))?
        .filter_map(|d| d.ok().map(|d| d.path().join("gateway.toml")))
        .filter(|p| p.is_file())
        .collect();
    configs.sort();
    let mut federation = None;
    let mut nodes = Vec::new();
    for path in &configs {
        let cfg = config::load(path)?;
        let root = read_root(&cfg.tls.trust)?;
        let Named::Region(fed) = inspect::parse(&root).map_err(|e| file_err(&cfg.tls.trust, e))?.named else {
            return Err(file_err(&cfg.tls.trust, "not a fedgate federation root (no region binding)"));
        };
        match &federation {
            Some(f) if f != &fed => {
                return Err(file_err(path, format!("belongs to federation {fed}, the others to {f}")))
            }
            _ => federation = Some(fed),
        }
        let fingerprint = match pin {
            true => {
                let chain = store::read_certs(&cfg.tls.cert).map_err(|e| file_err(&cfg.tls.cert, e))?;
                Some(inspect::parse(&chain[0]).map_err(|e| file_err(&cfg.tls.cert, e))?.fingerprint)
            }
            false => None,
        };
        nodes.push(Entry { node: cfg.node, address: cfg.listen, fingerprint });
    }
    let federation =
        federation.ok_or_else(|| file_err(folders, "no node folder (DIR/*/gateway.toml) here"))?;
    let scope = scope.unwrap_or_else(|| federation.clone());
    nodes.retain(|e| scope.covers(e.node.region()));
    Directory::new(federation, scope, version, now.unix_timestamp(), nodes).map_err(|e| file_err(folders, e))
}

fn read_root(path: &Path) -> Result<rustls_pki_types::CertificateDer<'static>, CliError> {
    let mut certs = store::read_certs(path).map_err(|e| file_err(path, e))?;
    match certs.len() {
        1 => Ok(certs.remove(0)),
        n => Err(file_err(path, format!("expected the one federation root, found {n} certificates"))),
    }
}

/// The revocation lists in `paths`, each error naming its file.
fn read_revocations(paths: &[PathBuf]) -> Result<Revocations, CliError> {
    let mut crls = Vec::with_capacity(paths.len());
    for p in paths {
        let crl = store::read_crl(p).map_err(|e| file_err(p, e))?;
        Revocations::parse(std::slice::from_ref(&crl)).map_err(|e| file_err(p, e))?;
        crls.push(crl);
    }
    Revocations::parse(&crls).map_err(CliError::Refused)
}

fn verified(
    file: &Path,
    root: &rustls_pki_types::CertificateDer<'_>,
    revocations: &Revocations,
    now: OffsetDateTime,
) -> Result<View, CliError> {
    let bundle = read_bundle(file).map_err(|e| file_err(file, e))?;
    View::verify(&bundle, root, revocations, now).map_err(|e| file_err(file, e))
}

/// The directory a node holds: its persisted state if any (newer than or equal to its file),
/// else its `directory` file.
fn node_view(cfg_path: &Path, now: OffsetDateTime) -> Result<View, CliError> {
    let cfg = config::load(cfg_path)?;
    let root = read_root(&cfg.tls.trust)?;
    let file =
        if cfg.directory_state.exists() { Some(cfg.directory_state.clone()) } else { cfg.directory.clone() };
    let file =
        file.ok_or_else(|| file_err(cfg_path, "this node has no `directory` and holds none from peers"))?;
    verified(&file, &root, &read_revocations(&cfg.tls.crls)?, now)
}

fn signer_name(s: &Signed) -> String {
    match s.chain().first() {
        None => "the federation root".into(),
        Some(c) => inspect::parse(c).map_or_else(|e| format!("<unreadable certificate: {e}>"), |i| i.subject),
    }
}

fn issued_text(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

fn show(bundle: &Bundle, format: Format, file: &Path) -> Result<(), CliError> {
    let mut json = Vec::new();
    for (i, s) in bundle.docs.iter().enumerate() {
        let d = s.unverified().map_err(|e| file_err(file, e))?;
        let signer = signer_name(s);
        if format == Format::Json {
            let nodes: Vec<_> = d
                .nodes()
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "node": e.node.to_string(),
                        "department": e.node.department(),
                        "region": e.node.region().to_string(),
                        "address": e.address.to_string(),
                        "fingerprint": e.fingerprint.map(|f| fedgate_catalog::hex(&f)),
                    })
                })
                .collect();
            json.push(serde_json::json!({
                "scope": d.scope.to_string(), "federation": d.federation.to_string(), "version": d.version,
                "issued": issued_text(d.issued), "signer": signer, "nodes": nodes,
            }));
            continue;
        }
        if i > 0 {
            println!();
        }
        println!(
            "directory {} of federation {}, issued {}, signed by {signer}",
            d.label(),
            d.federation,
            issued_text(d.issued)
        );
        let rows: Vec<Vec<String>> = d
            .nodes()
            .iter()
            .map(|e| {
                vec![
                    e.node.to_string(),
                    e.node.department().to_owned(),
                    e.node.region().to_string(),
                    e.address.to_string(),
                    e.fingerprint.map_or_else(|| "-".into(), |f| inspect::hex_colon(&f[..8]) + "…"),
                ]
            })
            .collect();
        print!("{}", crate::render::table(&["NODE", "DEPARTMENT", "REGION", "ADDRESS", "PINNED"], &rows));
    }
    match format {
        Format::Json => println!("{}", serde_json::json!({"verified": false, "directories": json})),
        Format::Table => println!("(not verified; `fedgate directory check FILE --trust ROOT_CRT` verifies)"),
    }
    Ok(())
}

fn check(file: &Path, trust: &Path, revocations: &Revocations, now: OffsetDateTime) -> Result<(), CliError> {
    let root = read_root(trust)?;
    let bundle = read_bundle(file).map_err(|e| file_err(file, e))?;
    let mut failed = 0;
    for s in &bundle.docs {
        match directory::verify(s, &root, revocations, now) {
            Ok(v) => println!(
                "ok: directory {}: {} nodes, signed by {}",
                v.directory().label(),
                v.directory().nodes().len(),
                v.signer()
            ),
            Err(e) => {
                failed += 1;
                println!("FAIL: {}: {e}", file.display());
            }
        }
    }
    if failed == 0 {
        // Each verified alone; together they must still make one view (one per scope).
        View::verify(&bundle, &root, revocations, now).map_err(|e| file_err(file, e))?;
        return Ok(());
    }
    Err(CliError::Refused(format!(
        "{}: {failed} of {} directories do not verify",
        file.display(),
        bundle.docs.len()
    )))
}
