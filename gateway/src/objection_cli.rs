//! `fedgate objection file|list|show` (the objector's side) and `fedgate objections
//! list|show|accept|reject` (the steward's side): thin clients of the node's own gateway (its
//! local API), which signs, sends, stores, marks and audits.

use std::path::{Path, PathBuf};

use fedgate_catalog::NodeId;
use serde_json::{json, Value};

use crate::client::Client;
use crate::config;
use crate::governance::request::rfc3339;

/// Output of the objection commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: aligned columns (one objection: one `key: value` per line).
    Table,
    /// One JSON object per line, as the local API answers.
    Jsonl,
}

/// `fedgate objection …`: objections this node files.
#[derive(Debug, clap::Subcommand)]
pub enum ObjectionCommand {
    /// Object to one field of one record of a peer's dataset (数据异议). Only a record this node
    /// may receive, for the purpose given; the provider marks it in every delivery until its
    /// steward decides.
    File {
        /// This node's gateway.toml (its gateway must be running: `fedgate serve`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The providing node (the record's owner).
        #[arg(long, value_name = "NODE_ID")]
        peer: NodeId,
        /// The dataset id.
        #[arg(long, value_name = "ID")]
        dataset: String,
        /// The purpose this node receives the record for.
        #[arg(long, value_name = "P")]
        purpose: String,
        /// The record's primary key, as received.
        #[arg(long, value_name = "KEY")]
        key: String,
        /// The field held to be wrong.
        #[arg(long, value_name = "FIELD")]
        field: String,
        /// What is wrong (required; the provider's steward reads it).
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// The value held right, if known.
        #[arg(long, value_name = "VALUE")]
        proposed: Option<String>,
        /// Output: the new objection's id (table) or the stored objection.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// List the objections this node filed, newest first, with where they stand.
    List {
        /// This node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Output.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show one objection with its answer.
    Show {
        /// This node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The objection id.
        #[arg(long, value_name = "ID")]
        id: String,
        /// Output.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// `fedgate objections …`: objections to this node's records, for its steward.
#[derive(Debug, clap::Subcommand)]
pub enum ObjectionsCommand {
    /// List the objections this node received, newest first; open ones mark their records.
    List {
        /// This node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Output.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show one objection.
    Show {
        /// This node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The objection id.
        #[arg(long, value_name = "ID")]
        id: String,
        /// Output.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Accept an objection (校核纠错): with --value the gateway writes the corrected value into
    /// the source; without, the source must already hold a corrected value. The corrected record
    /// goes to subscribers as an update, the objector is told, the marker goes.
    Accept {
        /// This node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The objection id.
        #[arg(long, value_name = "ID")]
        id: String,
        /// The corrected value, written into the source.
        #[arg(long, value_name = "VALUE")]
        value: Option<String>,
        /// A note for the objector.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Reject an objection, saying why the record stands (the objector is told).
    Reject {
        /// This node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The objection id.
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

/// Runs `fedgate objection …`.
pub fn objection(c: ObjectionCommand) -> Res {
    match c {
        ObjectionCommand::File { config, peer, dataset, purpose, key, field, reason, proposed, format } => {
            let body = json!({
                "peer": peer.to_string(), "dataset": dataset, "purpose": purpose, "key": key,
                "field": field, "reason": reason, "proposed": proposed,
            });
            let filed = client(&config)?.send_json("/v1/objections", Some(&body))?;
            match format {
                Format::Jsonl => println!("{filed}"),
                Format::Table => println!("{}", filed["id"].as_str().unwrap_or_default()),
            }
        }
        ObjectionCommand::List { config, format } => list(&config, "outgoing", format)?,
        ObjectionCommand::Show { config, id, format } => show(&config, &id, format)?,
    }
    Ok(())
}

/// Runs `fedgate objections …`.
pub fn objections(c: ObjectionsCommand) -> Res {
    match c {
        ObjectionsCommand::List { config, format } => list(&config, "incoming", format)?,
        ObjectionsCommand::Show { config, id, format } => show(&config, &id, format)?,
        ObjectionsCommand::Accept { config, id, value, reason } => {
            let body = json!({ "value": value, "reason": reason });
            let f = client(&config)?.send_json(&format!("/v1/objections/{id}/accept"), Some(&body))?;
            print!("{}", details(&f));
        }
        ObjectionsCommand::Reject { config, id, reason } => {
            let body = json!({ "reason": reason });
            let f = client(&config)?.send_json(&format!("/v1/objections/{id}/reject"), Some(&body))?;
            print!("{}", details(&f));
        }
    }
    Ok(())
}

fn list(config: &Path, role: &str, format: Format) -> Res {
    let all: Vec<Value> = client(config)?.get_json(&format!("/v1/objections?role={role}"))?;
    match format {
        Format::Jsonl => all.iter().for_each(|f| println!("{f}")),
        Format::Table => print!("{}", table(&all)),
    }
    Ok(())
}

fn show(config: &Path, id: &str, format: Format) -> Res {
    let f: Value = client(config)?.get_json(&format!("/v1/objections/{id}"))?;
    match format {
        Format::Jsonl => println!("{f}"),
        Format::Table => print!("{}", details(&f)),
    }
    Ok(())
}

fn date(v: &Value) -> String {
    v.as_i64().map_or_else(|| "-".into(), rfc3339)
}

/// The objections as aligned columns: id, role, peer, dataset, key, field, status, made.
pub fn table(all: &[Value]) -> String {
    let head = ["ID", "ROLE", "PEER", "DATASET", "KEY", "FIELD", "STATUS", "MADE"].map(String::from);
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or("-").to_owned();
            vec![
                s("id"),
                s("role"),
                s("peer"),
                s("dataset"),
                s("key"),
                s("field"),
                s("state"),
                date(&f["created"]),
            ]
        })
        .collect();
    let h: Vec<&str> = head.iter().map(String::as_str).collect();
    crate::render::table(&h, &rows)
}

/// One objection as `key: value` lines.
pub fn details(f: &Value) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<10} {v}\n"));
    let s = |k: &str| f[k].as_str().unwrap_or("-").to_owned();
    for k in ["id", "role", "peer", "dataset", "purpose", "key", "field", "reason"] {
        line(&format!("{k}:"), s(k));
    }
    if let Some(p) = f["proposed"].as_str() {
        line("proposed:", p.to_owned());
    }
    line("made:", date(&f["created"]));
    line("status:", s("state"));
    if f.get("answered").is_some_and(|v| !v.is_null()) {
        line("answered:", date(&f["answered"]));
        line("corrected:", if f["corrected"].as_bool() == Some(true) { "yes".into() } else { "no".into() });
    }
    if let Some(r) = f["answer_reason"].as_str() {
        line("answer:", r.to_owned());
    }
    out
}
