//! `fedgate`: the command-line front end. Parses arguments, runs one command, maps errors to a
//! one-line reason and an exit code: 0 success, 1 failure (a `policy explain` that denies
//! included), 2 usage, 3 a query the provider cut short, 4 a peer or its source down, busy or
//! slow (see README, "Exit status").

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use fedgate_catalog::{NodeId, Region};
use fedgate_certs::authority::{self, Authority, NodeProfile};
use fedgate_certs::{inspect, store};
use fedgate_gateway::client::{self, Client};
use fedgate_gateway::logs::LogFormat;
use fedgate_gateway::render::RecordFormat;
use fedgate_gateway::render::Records;
use fedgate_gateway::{config, demo, node::RunningNode};
use time::OffsetDateTime;

/// fedgate: a federated data-exchange gateway. Each department runs one; gateways exchange
/// classified, graded, desensitized records over mutual-TLS QUIC under usage-scope policies.
#[derive(Parser)]
#[command(name = "fedgate", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    /// Log lines on stderr: json (one object per line) or text; default text on a terminal,
    /// json otherwise. FEDGATE_LOG sets the level (e.g. debug).
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Federation PKI: create the root, region-bound intermediates and node certificates.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Run one gateway from its gateway.toml until Ctrl-C or SIGTERM.
    ///
    /// Listens for peers on `listen` (QUIC, mutual TLS) and for the department's applications on
    /// `api`. Revocation lists, catalog and grant files, and the node's own certificate and key
    /// are re-read when they change (checked every reload_secs, default 5) and on SIGHUP;
    /// connections from peers that are now revoked are closed; files that do not load leave the
    /// previous ones in force. A new certificate is used for new connections.
    Serve {
        /// The node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a node before starting it: everything serve would load, and its peers.
    ///
    /// Config, catalog, grants, secret files and their modes, certificates and CRLs (warning
    /// when one runs out within 30 days), every source against the catalog, and a handshake plus
    /// hello with each configured peer. Prints every problem as FILE:LINE:COL: message (or the
    /// peer and why), warnings prefixed `warning:`; exit 1 if there is any problem. Safe to run
    /// beside the running gateway: it binds none of its addresses.
    Check {
        /// The node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Skip the peer handshakes (before start under systemd: a node must start even while
        /// its peers are down).
        #[arg(long)]
        no_peers: bool,
    },
    /// Build the demo federation in DIR, start every gateway and show them talking.
    ///
    /// DIR must be new or empty; one that already holds a federation is refused (use --force to
    /// start clean).
    Demo(DemoArgs),
    /// Catalogs: check the steward's files, list a node's or a peer's datasets.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Grants: check the steward's files, explain what a peer would get.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The audit log: verify it, read it, prove an entry, export it for an auditor.
    #[command(subcommand)]
    Audit(fedgate_gateway::audit_cli::Command),
    /// The signed federation directory: build, sign, show, check, resolve.
    ///
    /// A directory lists the federation's nodes (id, department, region, QUIC address), signed
    /// by the root or by a region CA for its own subtree. Gateways that name it in gateway.toml
    /// (`directory = "FILE"`) find peers there and hand newer ones to each other.
    #[command(subcommand)]
    Directory(fedgate_gateway::directory_cli::Command),
    /// Ask a peer for records, through this node's running gateway.
    ///
    /// The peer decides by its grants what you get: rows of your jurisdiction (unless a grant
    /// widens it), fields in clear, masked or dropped. The transfer is checked against the
    /// provider's signed trailer; an incomplete transfer is an error (exit 1), never a short
    /// success. A result the provider cut short (its quota for you ran out) prints what arrived,
    /// says so on stderr and exits 3; reaching your own --limit is only noted on stderr.
    Query(QueryArgs),
    /// Subscribe to a peer's dataset, through this node's running gateway.
    ///
    /// The gateway holds the subscription durably (it survives restarts of either side) and
    /// receives new events pushed by the provider, each desensitized and row-scoped as a query by
    /// this node for the same purpose would be. Prints the subscription's id; with --follow,
    /// prints events as they arrive. A provider that refuses (no grant with action `subscribe`,
    /// or one that expired) stops the subscription: `subscriptions list` shows why.
    Subscribe(fedgate_gateway::subscribe_cli::SubscribeArgs),
    /// The subscriptions this node holds: list, cancel, follow.
    #[command(subcommand)]
    Subscriptions(fedgate_gateway::subscribe_cli::SubscriptionsCommand),
    /// Referrals (交办 → 受理 → 办理 → 反馈 → 办结), through this node's running gateway.
    ///
    /// Hand a case to the department that must act, with a deadline; follow it as the receiver
    /// accepts or returns it, works on it, passes it further down, and resolves it; close or
    /// reopen it. Every step is signed, stored and audited on both ends under the referral's
    /// id, and delivered even if the other end is down for a while. Overdue referrals are listed
    /// first and flagged. A case record goes only to a receiver whose grant allows `refer`.
    ///
    /// e.g. `fedgate referral send --config gateway.toml --department grid --region
    /// wuxi.liangxi.chongan --reference 12345-0001 --subject "noise" --working-days 5`
    #[command(subcommand)]
    Referral(fedgate_gateway::referral_cli::ReferralCommand),
    /// Apply to a peer for conditional data (a sharing request), through this node's gateway.
    ///
    /// The gateway signs the request, audits it, and sends it to the provider until the
    /// provider has stored it; the provider's steward answers within the configured working
    /// days. Prints the request id; `requests list|show` shows the answer.
    Request(fedgate_gateway::request_cli::RequestArgs),
    /// Sharing requests made and received: list, show; and, for the provider's steward,
    /// approve (writes a grant in force at once), refuse, revoke.
    #[command(subcommand)]
    Requests(fedgate_gateway::request_cli::RequestsCommand),
    /// Object to a record a peer shares with this node (数据异议): file, list, show.
    ///
    /// The gateway signs the objection, audits it, and sends it until the provider's steward
    /// decides; meanwhile every delivery of the record carries the `@objection` marker.
    #[command(subcommand)]
    Objection(fedgate_gateway::objection_cli::ObjectionCommand),
    /// Objections to this node's records, for its steward: list, show, accept (correcting the
    /// source; subscribers get the record as an update), reject with a reason.
    #[command(subcommand)]
    Objections(fedgate_gateway::objection_cli::ObjectionsCommand),
    /// Usage statistics per dataset and peer: sharing requests (approved, refused, pending,
    /// overdue, answer times), queries, records sent and received, subscriptions, referrals and
    /// objections (open and closed).
    ///
    /// Counted from the node's own audit log and state folder; works with the gateway running
    /// or stopped.
    Stats(fedgate_gateway::stats_cli::StatsArgs),
    /// Web console accounts: add, change the password of, remove, list.
    ///
    /// Accounts live in the node's state folder (console.db, mode 0600) with Argon2id password
    /// hashes; the console is served on `console = "HOST:PORT"` of gateway.toml. The password
    /// is asked for at a prompt, or read from --password-file FILE (`-`: standard input) in
    /// scripts. e.g. `fedgate user add --config gateway.toml --role steward wang.li`.
    #[command(subcommand)]
    User(fedgate_gateway::user_cli::UserCommand),
    /// Print a completion script for SHELL on stdout, generated from these very options.
    ///
    /// e.g. `fedgate completions bash > /etc/bash_completion.d/fedgate`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (fedgate.1 and one per subcommand, e.g. fedgate-query.1) into DIR.
    Man {
        /// Folder to write the pages into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Args)]
struct QueryArgs {
    /// This node's gateway.toml (its gateway must be running: `fedgate serve`).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The providing node.
    #[arg(long, value_name = "NODE_ID")]
    peer: NodeId,
    /// The dataset id (see `fedgate catalog list --peer`).
    #[arg(long, value_name = "ID")]
    dataset: String,
    /// The purpose of use.
    #[arg(long, value_name = "P")]
    purpose: String,
    /// Only records whose field F equals V (fields you receive in clear); repeatable.
    #[arg(long = "where", value_name = "F=V", value_parser = parse_filter)]
    filters: Vec<(String, String)>,
    /// At most N records.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Seconds to wait for the peer to connect, to give its first answer, and between pieces of
    /// data; a transfer that keeps moving is never cut.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Output format; default jsonl when piped, table on a terminal.
    #[arg(long, value_enum)]
    format: Option<RecordFormat>,
    /// With --format csv: start with a UTF-8 byte-order mark, so spreadsheet programs read
    /// Chinese text correctly.
    #[arg(long)]
    bom: bool,
}

fn parse_filter(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((f, v)) if !f.is_empty() => Ok((f.to_owned(), v.to_owned())),
        _ => Err(format!("expected FIELD=VALUE, got {s:?}")),
    }
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check grant files. Exit 0 if valid; otherwise print every problem as FILE:LINE:COL:
    /// message and exit 1. With --catalog, dataset ids are checked against those catalog files.
    Check {
        /// Grant files (TOML).
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        /// Catalog files the grants must refer to.
        #[arg(long, value_name = "FILE")]
        catalog: Vec<PathBuf>,
    },
    /// The provider's dry run: what would PEER get of DATASET for PURPOSE, field by field,
    /// under this node's catalog and grants, now. Touches no data and needs no running gateway.
    Explain {
        /// The provider node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The asking node.
        #[arg(long, value_name = "NODE_ID")]
        peer: NodeId,
        /// The dataset id.
        #[arg(long, value_name = "ID")]
        dataset: String,
        /// The purpose of use.
        #[arg(long, value_name = "P")]
        purpose: String,
        /// read or subscribe.
        #[arg(long, value_enum, default_value_t = ActionArg::Read)]
        action: ActionArg,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ExplainFormat::Text)]
        format: ExplainFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ActionArg {
    /// Query records.
    Read,
    /// Receive change notifications.
    Subscribe,
    /// Receive a record as the case of a referral.
    Refer,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExplainFormat {
    /// For people.
    Text,
    /// {"decision": "allow"|"deny", "reason": "...", "fields": {"<field>": "clear"|"drop"|"<operator>"}, ...}
    Json,
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Check catalog files. Exit 0 if valid; otherwise print every problem as
    /// FILE:LINE:COL: message and exit 1. The files are checked together, as one node's catalog.
    Check {
        /// Catalog files (TOML).
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// List datasets (metadata only): the node's own, or with --peer a sibling's, asked through
    /// this node's running gateway.
    List {
        /// The node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// A peer's node id; its catalog is fetched over the federation link.
        #[arg(long, value_name = "NODE_ID")]
        peer: Option<NodeId>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ListFormat {
    /// Aligned columns for people.
    Table,
    /// The catalog as JSON: {"datasets": [{"id": ..., "fields": [...]}, ...]}.
    Json,
}

#[derive(Args)]
struct DemoArgs {
    /// Folder to build the federation in; each node gets DIR/<node-id>/gateway.toml.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Synthetic records per dataset.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    records: u64,
    /// Keep the federation running until Ctrl-C instead of exiting after the showcase.
    #[arg(long)]
    serve: bool,
    /// DIR already holds a demo federation: delete it (keys, data, audit logs) and build a new
    /// one. Without it such a DIR is refused.
    #[arg(long)]
    force: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ShowCertFormat {
    /// For people.
    Text,
    /// [{"kind": "node"|"ca"|"none"|"invalid", "node_id", "department", "region", "level",
    /// "subject", "issuer", "ca", "not_before", "not_after", "days_left", "serial", "sha256"}, ...]
    Json,
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create a federation root CA: DIR/root.crt, DIR/root.key (0600) and DIR/crl.pem.
    ///
    /// The root is bound to the federation's top region, NAME (e.g. wuxi): everything it and its
    /// intermediates issue must lie in that region.
    Init {
        /// The federation's name, which is also its top region (e.g. wuxi).
        #[arg(long, value_name = "NAME")]
        federation: Region,
        /// Folder to write the root into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = authority::ROOT_DAYS)]
        days: u32,
        /// Replace an existing key in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Create an intermediate CA bound to REGION: it may issue identities in REGION and below only.
    ///
    /// Writes DIR2/ca.crt (the intermediate and any intermediates above it), DIR2/ca.key (0600),
    /// DIR2/trust.crt (the root) and DIR2/crl.pem.
    IssueCa {
        /// The issuing CA's folder (a root or another intermediate).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The region to bind the new CA to; must lie inside the issuing CA's region.
        #[arg(long, value_name = "REGION")]
        region: Region,
        /// Folder to write the intermediate into.
        #[arg(long, value_name = "DIR2")]
        out: PathBuf,
        /// Validity in days (never beyond the issuing CA's own).
        #[arg(long, default_value_t = authority::CA_DAYS)]
        days: u32,
        /// Replace an existing key in DIR2.
        #[arg(long)]
        force: bool,
    },
    /// Issue a gateway certificate for NODE_ID (DEPARTMENT@REGION).
    ///
    /// Writes DIR3/node.crt (leaf then intermediates), DIR3/node.key (0600) and DIR3/trust.crt
    /// (the federation root). The node id is carried as the URI SAN urn:fedgate:node:NODE_ID.
    Issue {
        /// The issuing CA's folder; its region must cover the node's region.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The node id, e.g. police@wuxi.liangxi.
        #[arg(long, value_name = "NODE_ID")]
        node: NodeId,
        /// Folder to write the node's files into.
        #[arg(long, value_name = "DIR3")]
        out: PathBuf,
        /// Validity in days (never beyond the issuing CA's own).
        #[arg(long, default_value_t = authority::NODE_DAYS)]
        days: u32,
        /// Replace an existing key in DIR3.
        #[arg(long)]
        force: bool,
    },
    /// Revoke a certificate issued by the CA in DIR: adds it to DIR/crl.pem.
    ///
    /// Gateways that list this CRL under [tls] crls pick it up within reload_secs (or on SIGHUP)
    /// and close connections from the revoked peer.
    Revoke {
        /// The CA folder that issued the certificate.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The certificate to revoke (PEM; the first certificate in the file).
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
    },
    /// Print a certificate's node id (or CA region), level, issuer, validity, serial, fingerprint.
    Show {
        /// A PEM certificate file; with a chain, every certificate is shown.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Output format; json is an array with one object per certificate in the file.
        #[arg(long, value_enum, default_value_t = ShowCertFormat::Text)]
        format: ShowCertFormat,
    },
}

/// Any failure, including a denial in `policy explain` and a query that timed out.
const EXIT_FAILURE: u8 = 1;
/// `fedgate query` printed verified records, but the provider stopped before the end of the
/// result (its quota): what was printed is not everything that matched.
const EXIT_TRUNCATED: u8 = 3;
/// The local API answered with a transient code (busy, source-unavailable, peer-unavailable,
/// peer-timeout), or took the request and did not answer in time: the same command may succeed
/// later, unlike a denial.
const EXIT_TRANSIENT: u8 = 4;

/// A failure with its own exit status.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Exit {
    code: u8,
    message: String,
}

impl Exit {
    fn new(code: u8, message: String) -> Exit {
        Exit { code, message }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve { .. }) { "info" } else { "warn" };
    fedgate_gateway::logs::init(cli.log_format, default_level);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fedgate: {}", one_line(&e));
            ExitCode::from(exit_status(&e))
        }
    }
}

/// The exit status of a failed command: its own, else by the local API's error code.
fn exit_status(e: &anyhow::Error) -> u8 {
    if let Some(x) = e.downcast_ref::<Exit>() {
        return x.code;
    }
    let transient = match (e.downcast_ref::<client::ClientError>(), e.downcast_ref::<client::AnswerError>()) {
        (Some(c), _) => c.is_transient(),
        (_, Some(client::AnswerError::Failed { code, .. })) => code.is_some_and(|c| c.is_transient()),
        _ => false,
    };
    if transient {
        EXIT_TRANSIENT
    } else {
        EXIT_FAILURE
    }
}

/// The error and its causes on one line, skipping causes the message already states.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Pki(cmd) => pki(cmd),
        Command::Serve { config } => serve(config),
        Command::Check { config, no_peers } => check(config, !no_peers),
        Command::Catalog(cmd) => catalog(cmd),
        Command::Policy(cmd) => policy(cmd),
        Command::Query(a) => query(a),
        Command::Subscribe(a) => fedgate_gateway::subscribe_cli::subscribe(a).map_err(|e| anyhow::anyhow!(e)),
        Command::Subscriptions(c) => {
            fedgate_gateway::subscribe_cli::subscriptions(c).map_err(|e| anyhow::anyhow!(e))
        }
        Command::Referral(c) => fedgate_gateway::referral_cli::run(c).map_err(|e| anyhow::anyhow!(e)),
        Command::Request(a) => fedgate_gateway::request_cli::request(a).map_err(|e| anyhow::anyhow!(e)),
        Command::Requests(c) => fedgate_gateway::request_cli::requests(c).map_err(|e| anyhow::anyhow!(e)),
        Command::Objection(c) => fedgate_gateway::objection_cli::objection(c).map_err(|e| anyhow::anyhow!(e)),
        Command::Objections(c) => {
            fedgate_gateway::objection_cli::objections(c).map_err(|e| anyhow::anyhow!(e))
        }
        Command::User(c) => fedgate_gateway::user_cli::run(c).map_err(|e| anyhow::anyhow!(e)),
        Command::Stats(a) => fedgate_gateway::stats_cli::run(a).map_err(|e| anyhow::anyhow!(e)),
        Command::Audit(cmd) => Ok(fedgate_gateway::audit_cli::run(cmd)?),
        Command::Directory(cmd) => Ok(fedgate_gateway::directory_cli::run(cmd)?),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "fedgate", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { out } => {
            use clap::CommandFactory;
            std::fs::create_dir_all(&out).with_context(|| format!("{}", out.display()))?;
            clap_mangen::generate_to(Cli::command(), &out)
                .with_context(|| format!("writing man pages to {}", out.display()))?;
            println!("man pages written to {}", out.display());
            Ok(())
        }
        Command::Demo(a) => runtime()?.block_on(demo::run(demo::Options {
            dir: a.dir,
            records: a.records,
            serve: a.serve,
            force: a.force,
        })),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

fn pki(cmd: PkiCommand) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    match cmd {
        PkiCommand::Init { federation, out, days, force } => {
            let root = Authority::new_root(&federation, now, days)?;
            store::write_authority(&out, &root, now, force)?;
            println!("federation {federation}: root CA written to {}", out.display());
        }
        PkiCommand::IssueCa { ca, region, out, days, force } => {
            let parent = store::load_authority(&ca)?;
            let child = parent.issue_ca(&region, now, days)?;
            store::write_authority(&out, &child, now, force)?;
            println!("intermediate CA for {region} written to {}", out.display());
        }
        PkiCommand::Issue { ca, node, out, days, force } => {
            let issuer = store::load_authority(&ca)?;
            let issued = issuer.issue_node(&node, NodeProfile::gateway(now, days))?;
            store::write_node(&out, &issued, issuer.root(), force)?;
            println!("{node}: node.crt, node.key, trust.crt written to {}", out.display());
        }
        PkiCommand::Revoke { ca, cert } => {
            let crl = store::revoke(&ca, &cert, now)?;
            println!("revoked; updated {}", crl.display());
        }
        PkiCommand::Show { file, format } => {
            let certs = store::read_certs(&file)?;
            let mut json = Vec::new();
            for (i, c) in certs.iter().enumerate() {
                let info = inspect::parse(c)
                    .map_err(|e| anyhow::anyhow!("{}: certificate {}: {e}", file.display(), i + 1))?;
                if format == ShowCertFormat::Json {
                    json.push(fedgate_gateway::render::cert_json(&info, now));
                    continue;
                }
                if i > 0 {
                    println!();
                }
                print!("{}", inspect::describe(&info));
            }
            if format == ShowCertFormat::Json {
                println!("{}", serde_json::to_string_pretty(&json)?);
            }
        }
    }
    Ok(())
}

fn query(a: QueryArgs) -> Result<()> {
    use std::io::IsTerminal;
    let format = a.format.unwrap_or(if std::io::stdout().is_terminal() {
        RecordFormat::Table
    } else {
        RecordFormat::Jsonl
    });
    if a.bom && format != RecordFormat::Csv {
        use clap::CommandFactory;
        Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, "--bom is for --format csv only")
            .exit();
    }
    let cfg = config::load(&a.config)?;
    let wait = std::time::Duration::from_secs(a.timeout);
    let body = client::query_body(&a.peer, &a.dataset, &a.purpose, &a.filters, a.limit, wait);
    let reader = Client::new(&cfg)?.streaming(wait).post_lines("/v1/query", &body)?;
    let mut out = Records::new(format, std::io::BufWriter::new(std::io::stdout().lock()), a.bom)?;
    let end = match client::read_answer(reader, &a.peer, |line, rec| out.record(line, rec)) {
        Ok(end) => end,
        Err(e) => {
            out.abandon()?;
            return Err(e.into());
        }
    };
    let cut = end.truncated.as_deref().map_or_else(String::new, |t| format!(", truncated by {t}"));
    out.finish(&format!("({} records, verified against {}'s signed trailer{cut})", end.count, a.peer))?;
    truncation_outcome(&a.peer, end.count, end.truncated.as_deref())
}

/// A result the provider vouches is short: the consumer's own limit is a note; anything the
/// provider imposed (its quota) is a failure with its own exit status, never a quiet success.
fn truncation_outcome(peer: &NodeId, count: u64, truncated: Option<&str>) -> Result<()> {
    match truncated {
        None => Ok(()),
        Some("limit") => {
            eprintln!("fedgate: note: stopped at --limit {count}; more records match");
            Ok(())
        }
        Some("quota") => Err(Exit::new(
            EXIT_TRUNCATED,
            format!(
                "truncated: {peer} sent {count} records and withheld the rest because your daily quota \
                 is used up (it resets at midnight UTC+8); the records printed are verified but incomplete"
            ),
        )
        .into()),
        Some(other) => Err(Exit::new(
            EXIT_TRUNCATED,
            format!("truncated: {peer} sent {count} records and withheld the rest ({other})"),
        )
        .into()),
    }
}

fn read_texts(files: &[PathBuf]) -> Result<Vec<(String, String)>> {
    files
        .iter()
        .map(|f| {
            Ok((
                f.display().to_string(),
                std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?,
            ))
        })
        .collect()
}

fn as_refs(texts: &[(String, String)]) -> Vec<(&str, &str)> {
    texts.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect()
}

/// Prints located problems and exits 1, the contract for `check` commands.
fn fail_with(d: fedgate_catalog::Diagnostics) -> ! {
    eprintln!("{d}");
    std::process::exit(1);
}

fn policy(cmd: PolicyCommand) -> Result<()> {
    match cmd {
        PolicyCommand::Check { files, catalog } => {
            let known = if catalog.is_empty() {
                None
            } else {
                let texts = read_texts(&catalog)?;
                Some(fedgate_catalog::parse_files(&as_refs(&texts)).unwrap_or_else(|d| fail_with(d)))
            };
            let ids: Option<Vec<&str>> =
                known.as_ref().map(|c| c.datasets().iter().map(|d| d.id.as_str()).collect());
            let texts = read_texts(&files)?;
            let set = fedgate_policy::parse_grants(&as_refs(&texts), ids.as_deref())
                .unwrap_or_else(|d| fail_with(d));
            println!("{} grant(s) valid; grants digest sha256:{}", set.grants.len(), set.digest());
            Ok(())
        }
        PolicyCommand::Explain { config, peer, dataset, purpose, action, format } => {
            let cfg = config::load(&config)?;
            let catalog = fedgate_gateway::node::load_catalog(&cfg)?;
            let policy = fedgate_gateway::node::load_policy(&cfg, &catalog)?;
            let action = match action {
                ActionArg::Read => fedgate_policy::Action::Read,
                ActionArg::Subscribe => fedgate_policy::Action::Subscribe,
                ActionArg::Refer => fedgate_policy::Action::Refer,
            };
            let req = fedgate_policy::Request { dataset, purpose, action };
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let decision = policy.decide(&catalog, &peer, &req, now)?;
            let near = if decision.is_allow() {
                Vec::new()
            } else {
                fedgate_policy::near_misses(policy.grants(), &catalog, &peer, &req, now)
            };
            match format {
                ExplainFormat::Json => {
                    println!("{}", fedgate_gateway::render::explain_json(&decision, &near))
                }
                ExplainFormat::Text => {
                    print!("{}", fedgate_gateway::render::explain_text(&peer, &req, &decision, &near))
                }
            }
            if decision.is_allow() {
                Ok(())
            } else {
                Err(Exit::new(EXIT_FAILURE, format!("denied: {}", decision.reason())).into())
            }
        }
    }
}

fn catalog(cmd: CatalogCommand) -> Result<()> {
    match cmd {
        CatalogCommand::Check { files } => {
            let texts = read_texts(&files)?;
            match fedgate_catalog::parse_files(&as_refs(&texts)) {
                Ok(c) => {
                    println!("{} dataset(s) valid; catalog digest sha256:{}", c.datasets().len(), c.digest());
                    Ok(())
                }
                Err(d) => fail_with(d),
            }
        }
        CatalogCommand::List { config, peer, format } => {
            let cfg = config::load(&config)?;
            let catalog = match peer {
                None => fedgate_gateway::node::load_catalog(&cfg)?,
                Some(p) => Client::new(&cfg)?.get_json(&format!("/v1/peers/{p}/catalog"))?,
            };
            match format {
                ListFormat::Json => println!("{}", serde_json::to_string_pretty(&catalog)?),
                ListFormat::Table => print!("{}", fedgate_gateway::render::catalog_table(&catalog)),
            }
            Ok(())
        }
    }
}

fn check(path: PathBuf, dial_peers: bool) -> Result<()> {
    use fedgate_gateway::check::{self, Severity};
    let findings = runtime()?.block_on(check::run(&path, OffsetDateTime::now_utc(), dial_peers));
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    for f in &findings {
        match f.severity {
            Severity::Error => eprintln!("{}", f.text),
            Severity::Warning => eprintln!("warning: {}", f.text),
        }
    }
    let warnings = findings.len() - errors;
    if errors > 0 {
        eprintln!("{}: {errors} problem(s), {warnings} warning(s)", path.display());
        std::process::exit(1);
    }
    println!("{}: ready to serve ({warnings} warning(s))", path.display());
    Ok(())
}

fn serve(path: PathBuf) -> Result<()> {
    let cfg = config::load(&path)?;
    runtime()?.block_on(async move {
        let node = RunningNode::start(cfg).await?;
        wait_for_shutdown(&node).await;
        node.shutdown().await;
        Ok(())
    })
}

#[cfg(unix)]
async fn wait_for_shutdown(node: &RunningNode) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                if let Err(e) = node.reload_trust().await {
                    tracing::warn!(error = %e, "revocation list reload on SIGHUP failed");
                }
                if let Err(e) = node.reload_identity().await {
                    tracing::error!(error = %e, "node certificate/key reload on SIGHUP failed; the previous ones stay in use");
                }
                if let Err(e) = node.reload_rules().await {
                    tracing::error!(error = %e, "catalog/grants reload on SIGHUP failed; the previous rules stay in force");
                }
            }
        }
    }
    tracing::info!("shutting down");
}

#[cfg(not(unix))]
async fn wait_for_shutdown(_: &RunningNode) {
    let _ = tokio::signal::ctrl_c().await;
}
