//! `fedgate subscribe` and `fedgate subscriptions list|cancel|follow`: thin clients of the
//! node's own gateway (its local API), which holds the subscriptions and receives the events.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use fedgate_catalog::NodeId;

use crate::client::{Client, ClientError};
use crate::config;

/// How `--follow` prints events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFormat {
    /// One JSON object per event as the gateway stores it (`@id`, `@op`, `@time`, the fields;
    /// a gap as `{"@id", "@gap": {"from", "to"}}`).
    Jsonl,
    /// One line per event: id, operation, then field=value pairs.
    Table,
}

/// `fedgate subscribe`.
#[derive(Debug, clap::Args)]
pub struct SubscribeArgs {
    /// This node's gateway.toml (its gateway must be running: `fedgate serve`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The providing node.
    #[arg(long, value_name = "NODE_ID")]
    pub peer: NodeId,
    /// The dataset id.
    #[arg(long, value_name = "ID")]
    pub dataset: String,
    /// The purpose of use (the provider's grant must allow `subscribe` for it).
    #[arg(long, value_name = "P")]
    pub purpose: String,
    /// Only events whose field F equals V (fields you receive in clear); repeatable.
    #[arg(long = "where", value_name = "F=V", value_parser = parse_filter)]
    pub filters: Vec<(String, String)>,
    /// Stay and print events as they arrive (acknowledging each printed batch to the gateway)
    /// until interrupted or the subscription ends.
    #[arg(long)]
    pub follow: bool,
    /// Output format of --follow.
    #[arg(long, value_enum, default_value_t = EventFormat::Jsonl)]
    pub format: EventFormat,
}

/// `fedgate subscriptions …`.
#[derive(Debug, clap::Subcommand)]
pub enum SubscriptionsCommand {
    /// List the subscriptions this node holds: id, provider, dataset, purpose, state, cursor.
    List {
        /// This node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Output: a table, or the API's JSON.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Cancel a subscription: no more events are asked for; what arrived stays readable.
    Cancel {
        /// This node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The subscription id (from `subscriptions list`).
        #[arg(long, value_name = "ID")]
        id: String,
    },
    /// Print a subscription's events as they arrive, from the first not yet acknowledged.
    Follow {
        /// This node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The subscription id.
        #[arg(long, value_name = "ID")]
        id: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = EventFormat::Jsonl)]
        format: EventFormat,
    },
}

/// Output of `subscriptions list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// Aligned columns.
    Table,
    /// The API's JSON array.
    Json,
}

fn parse_filter(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((f, v)) if !f.is_empty() => Ok((f.to_owned(), v.to_owned())),
        _ => Err(format!("expected FIELD=VALUE, got {s:?}")),
    }
}

fn client(path: &std::path::Path) -> Result<Client, Box<dyn std::error::Error + Send + Sync>> {
    let cfg = config::load(path)?;
    Ok(Client::new(&cfg)?.streaming(Duration::from_secs(LONG_POLL_SECS)))
}

/// How long one events read waits at the gateway.
const LONG_POLL_SECS: u64 = 25;

type Res = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Runs `fedgate subscribe`: prints the new subscription's id; with --follow, its events.
pub fn subscribe(a: SubscribeArgs) -> Res {
    let c = client(&a.config)?;
    let filters: serde_json::Map<String, serde_json::Value> =
        a.filters.iter().map(|(f, v)| (f.clone(), serde_json::Value::from(v.as_str()))).collect();
    let body = serde_json::json!({
        "peer": a.peer.to_string(), "dataset": a.dataset, "purpose": a.purpose, "where": filters,
    });
    let held = c.send_json("/v1/subscriptions", Some(&body))?;
    let id = held["id"].as_str().unwrap_or_default().to_owned();
    if !a.follow {
        println!("{id}");
        return Ok(());
    }
    eprintln!("fedgate: subscribed to {} of {} as {id}; following (Ctrl-C to stop)", a.dataset, a.peer);
    follow(&c, &id, a.format)
}

/// Runs `fedgate subscriptions …`.
pub fn subscriptions(cmd: SubscriptionsCommand) -> Res {
    match cmd {
        SubscriptionsCommand::List { config, format } => {
            let text = client(&config)?.get_text("/v1/subscriptions")?;
            let list: Vec<serde_json::Value> = serde_json::from_str(&text)?;
            let mut out = std::io::stdout().lock();
            if format == ListFormat::Json {
                writeln!(out, "{text}")?;
                return Ok(());
            }
            writeln!(
                out,
                "{:<32}  {:<9}  {:>8}  {:>8}  peer / dataset / purpose",
                "id", "state", "cursor", "acked"
            )?;
            for s in list {
                let reason = s["reason"].as_str().map_or_else(String::new, |r| format!("  ({r})"));
                writeln!(
                    out,
                    "{:<32}  {:<9}  {:>8}  {:>8}  {} / {} / {}{reason}",
                    s["id"].as_str().unwrap_or(""),
                    s["state"].as_str().unwrap_or(""),
                    s["cursor"],
                    s["delivered"],
                    s["peer"].as_str().unwrap_or(""),
                    s["dataset"].as_str().unwrap_or(""),
                    s["purpose"].as_str().unwrap_or(""),
                )?;
            }
            Ok(())
        }
        SubscriptionsCommand::Cancel { config, id } => {
            let held = client(&config)?.send_json(&format!("/v1/subscriptions/{id}"), None)?;
            println!("{id} {}", held["state"].as_str().unwrap_or(""));
            Ok(())
        }
        SubscriptionsCommand::Follow { config, id, format } => follow(&client(&config)?, &id, format),
    }
}

/// Prints events as they arrive and acknowledges each printed read; ends when the
/// subscription does (an error if the provider stopped it).
fn follow(c: &Client, id: &str, format: EventFormat) -> Res {
    let mut after = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        let path = format!("/v1/subscriptions/{id}/events?after={after}&wait_ms={}", LONG_POLL_SECS * 1000);
        let text = c.get_text(&path)?;
        let mut last = None;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)?;
            if let Some(state) = v.get("@state").and_then(|s| s.as_str()) {
                out.flush()?;
                let reason = v["reason"].as_str().unwrap_or("");
                if state == "stopped" {
                    return Err(Box::new(ClientError::Answer(format!(
                        "subscription {id} was stopped: {reason}"
                    ))));
                }
                eprintln!("fedgate: subscription {id} is {state}");
                return Ok(());
            }
            print_event(&mut out, &v, format)?;
            last = v["@id"].as_u64();
        }
        out.flush()?;
        if let Some(upto) = last {
            c.send_json(&format!("/v1/subscriptions/{id}/ack"), Some(&serde_json::json!({ "upto": upto })))?;
            after = upto;
        }
    }
}

fn print_event(out: &mut impl Write, v: &serde_json::Value, format: EventFormat) -> std::io::Result<()> {
    if format == EventFormat::Jsonl {
        return writeln!(out, "{v}");
    }
    let id = &v["@id"];
    if let Some(g) = v.get("@gap") {
        return writeln!(
            out,
            "#{id}  GAP  events {}..={} are no longer kept by the provider",
            g["from"], g["to"]
        );
    }
    let fields: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with('@'))
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    writeln!(
        out,
        "#{id}  {}  {}  {}",
        v["@op"].as_str().unwrap_or(""),
        v["@time"].as_str().unwrap_or(""),
        fields.join("  ")
    )
}
