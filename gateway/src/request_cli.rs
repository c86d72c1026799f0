//! `fedgate request` and `fedgate requests list|show|approve|refuse|revoke`: thin clients of the
//! node's own gateway (its local API), which signs, sends, stores and audits the requests and
//! keeps the grants approvals write.

use std::path::{Path, PathBuf};

use fedgate_catalog::NodeId;
use serde_json::{json, Value};

use crate::client::Client;
use crate::config;
use crate::governance::request::rfc3339;

/// Output of the request commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns (one request: one `key: value` per line).
    Table,
    /// The API's JSON.
    Json,
}

/// `fedgate request`.
#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    /// This node's gateway.toml (its gateway must be running: `fedgate serve`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The providing node.
    #[arg(long, value_name = "NODE_ID")]
    pub peer: NodeId,
    /// The dataset id (a conditional dataset: unconditional ones need no request).
    #[arg(long, value_name = "ID")]
    pub dataset: String,
    /// The purpose of use.
    #[arg(long, value_name = "P")]
    pub purpose: String,
    /// Fields needed, comma-separated (default: the whole dataset).
    #[arg(long, value_name = "F,F…", value_delimiter = ',')]
    pub fields: Vec<String>,
    /// Last day of use asked for, YYYY-MM-DD (China Standard Time).
    #[arg(long, value_name = "DATE")]
    pub until: Option<String>,
    /// Why the data is needed (required; the provider's steward reads it).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Output.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `fedgate requests …`.
#[derive(Debug, clap::Subcommand)]
pub enum RequestsCommand {
    /// List this node's sharing requests, made and received, newest first; overdue ones are
    /// flagged.
    List {
        /// This node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Only requests this node received (incoming) or made (outgoing).
        #[arg(long, value_name = "ROLE", value_parser = ["incoming", "outgoing"])]
        role: Option<String>,
        /// Output.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show one request with its answer.
    Show {
        /// This node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The request id.
        #[arg(long, value_name = "ID")]
        id: String,
        /// Output.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Approve a request this node received: writes a grant for the consumer (this dataset and
    /// purpose, read and subscribe) into the grants file the gateway manages, in force at once.
    Approve {
        /// This node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The request id.
        #[arg(long, value_name = "ID")]
        id: String,
        /// Grant for this many days from now.
        #[arg(long, value_name = "N", conflicts_with = "until")]
        days: Option<u64>,
        /// Grant until the end of this day, YYYY-MM-DD (default: the end the request asked for).
        #[arg(long, value_name = "DATE")]
        until: Option<String>,
        /// Records per day (China Standard Time days).
        #[arg(long, value_name = "N")]
        quota: Option<u64>,
        /// Highest grade shown in clear, 1–4 (default: the highest the request covers).
        #[arg(long, value_name = "GRADE")]
        clearance: Option<u8>,
        /// Rows: own (the consumer's jurisdiction, default), all, or a region path.
        #[arg(long, value_name = "ROWS")]
        rows: Option<String>,
    },
    /// Refuse a request this node received, saying why (the consumer is told).
    Refuse {
        /// This node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The request id.
        #[arg(long, value_name = "ID")]
        id: String,
        /// Why.
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Revoke the grant of an approved request, at once for queries and subscriptions.
    Revoke {
        /// This node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The request id.
        #[arg(long, value_name = "ID")]
        id: String,
        /// Why.
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
}

type Res = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn client(path: &Path) -> Result<Client, Box<dyn std::error::Error + Send + Sync>> {
    Ok(Client::new(&config::load(path)?)?)
}

/// Runs `fedgate request`: prints the new request's id (table) or the stored request (json).
pub fn request(a: RequestArgs) -> Res {
    let body = json!({
        "peer": a.peer.to_string(), "dataset": a.dataset, "purpose": a.purpose,
        "fields": a.fields, "until": a.until, "reason": a.reason,
    });
    let held = client(&a.config)?.send_json("/v1/requests", Some(&body))?;
    match a.format {
        Format::Json => println!("{held}"),
        Format::Table => println!("{}", held["id"].as_str().unwrap_or_default()),
    }
    Ok(())
}

/// Runs `fedgate requests …`.
pub fn requests(c: RequestsCommand) -> Res {
    match c {
        RequestsCommand::List { config, role, format } => {
            let path = role.map_or_else(|| "/v1/requests".to_owned(), |r| format!("/v1/requests?role={r}"));
            let all: Vec<Value> = client(&config)?.get_json(&path)?;
            match format {
                Format::Json => println!("{}", Value::Array(all)),
                Format::Table => print!("{}", table(&all)),
            }
        }
        RequestsCommand::Show { config, id, format } => {
            let held: Value = client(&config)?.get_json(&format!("/v1/requests/{id}"))?;
            match format {
                Format::Json => println!("{held}"),
                Format::Table => print!("{}", details(&held)),
            }
        }
        RequestsCommand::Approve { config, id, days, until, quota, clearance, rows } => {
            // Absent options are left out, so the gateway applies its defaults.
            let given = [
                ("days", days.map(Value::from)),
                ("until", until.map(Value::from)),
                ("quota", quota.map(Value::from)),
                ("clearance", clearance.map(Value::from)),
                ("rows", rows.map(Value::from)),
            ];
            let body =
                Value::Object(given.into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))).collect());
            let held = client(&config)?.send_json(&format!("/v1/requests/{id}/approve"), Some(&body))?;
            print!("{}", details(&held));
        }
        RequestsCommand::Refuse { config, id, reason } => {
            let body = json!({ "reason": reason });
            let held = client(&config)?.send_json(&format!("/v1/requests/{id}/refuse"), Some(&body))?;
            print!("{}", details(&held));
        }
        RequestsCommand::Revoke { config, id, reason } => {
            let body = json!({ "reason": reason });
            let held = client(&config)?.send_json(&format!("/v1/requests/{id}/revoke"), Some(&body))?;
            print!("{}", details(&held));
        }
    }
    Ok(())
}

fn date(v: &Value) -> String {
    v.as_i64().map_or_else(|| "-".into(), rfc3339)
}

fn status(h: &Value) -> String {
    let state = h["state"].as_str().unwrap_or("?");
    if h["overdue"].as_bool() == Some(true) {
        format!("{state} OVERDUE")
    } else {
        state.to_owned()
    }
}

/// The requests as aligned columns: id, role, peer, dataset, purpose, status, answer due.
pub fn table(all: &[Value]) -> String {
    let rows: Vec<[String; 7]> = all
        .iter()
        .map(|h| {
            let s = |k: &str| h[k].as_str().unwrap_or("-").to_owned();
            [s("id"), s("role"), s("peer"), s("dataset"), s("purpose"), status(h), date(&h["deadline"])]
        })
        .collect();
    let head = ["ID", "ROLE", "PEER", "DATASET", "PURPOSE", "STATUS", "ANSWER DUE"].map(String::from);
    let mut width = [0usize; 7];
    for r in std::iter::once(&head).chain(&rows) {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&head).chain(&rows) {
        let cells: Vec<String> = r.iter().zip(width).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One request as `key: value` lines.
pub fn details(h: &Value) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<13} {v}\n"));
    let s = |k: &str| h[k].as_str().unwrap_or("-").to_owned();
    line("id:", s("id"));
    line("role:", s("role"));
    line("peer:", s("peer"));
    line("dataset:", s("dataset"));
    line("purpose:", s("purpose"));
    let fields: Vec<&str> = h["fields"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    line("fields:", if fields.is_empty() { "all".into() } else { fields.join(", ") });
    line("reason:", s("reason"));
    line("asked until:", date(&h["until"]));
    line("made:", date(&h["created"]));
    line("status:", status(h));
    line("answer due:", date(&h["deadline"]));
    if h.get("answered").is_some_and(|v| !v.is_null()) {
        line("answered:", date(&h["answered"]));
    }
    if let Some(r) = h["answer_reason"].as_str() {
        line("answer:", r.to_owned());
    }
    if let Some(g) = h["grant"].as_str() {
        line("grant:", g.to_owned());
        line("clearance:", h["clearance"].to_string());
        line("grant until:", date(&h["grant_until"]));
        line("quota:", h["quota"].as_u64().map_or_else(|| "none".into(), |q| format!("{q} records/day")));
    }
    out
}
