//! `fedgate referral send|list|show|accept|return|forward|update|resolve|close|reopen`: a thin
//! client of the node's own gateway (its local API, `/v1/referrals`), which holds both ends of
//! every referral durably and delivers each step to the other end.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::client::Client;
use crate::config;

/// Output of `list` and `show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: aligned columns, overdue flagged `OVERDUE`.
    Table,
    /// One JSON object per line, as the local API answers.
    Jsonl,
}

/// The node to address and this node's config.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// This node's gateway.toml (its gateway must be running: `fedgate serve`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// A new referral: to whom, what, by when, with which case.
#[derive(Debug, Clone, clap::Args)]
pub struct NewArgs {
    /// The receiving node (`grid@wuxi.liangxi.chongan`). Or use --department and --region.
    #[arg(long, value_name = "NODE_ID", conflicts_with_all = ["department", "region"])]
    pub to: Option<String>,
    /// The receiving department, resolved with --region through the federation directory to
    /// the nearest node of that department whose region covers it.
    #[arg(long, value_name = "DEPT", requires = "region")]
    pub department: Option<String>,
    /// The region the receiving department must be responsible for (`wuxi.liangxi.chongan`).
    #[arg(long, value_name = "REGION", requires = "department")]
    pub region: Option<String>,
    /// Your own reference (ticket number), shown on both ends.
    #[arg(long, value_name = "REF")]
    pub reference: String,
    /// One line saying what it is about.
    #[arg(long, value_name = "TEXT")]
    pub subject: String,
    /// What the receiver is asked to do.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub instructions: String,
    /// Due by the end of this day (`2026-12-04`, in the calendar's time) or this RFC 3339 moment.
    #[arg(long, value_name = "DATE", conflicts_with = "working_days")]
    pub deadline: Option<String>,
    /// Due this many working days from now, counted in the node's calendar (`[calendar] file`;
    /// Monday–Friday by default). Without --deadline or this: 5 working days.
    #[arg(long, value_name = "N")]
    pub working_days: Option<u32>,
    /// Attach a record of one of this node's datasets as the case, desensitized for the
    /// receiver (its grant needs the action `refer`). Needs --purpose and --case.
    #[arg(long, value_name = "ID", requires_all = ["purpose", "case"])]
    pub dataset: Option<String>,
    /// The purpose the receiver's grant must list for the case.
    #[arg(long, value_name = "P", requires = "dataset")]
    pub purpose: Option<String>,
    /// Which record is the case: FIELD=VALUE, repeatable; together they must match exactly one.
    #[arg(long, value_name = "F=V", value_parser = parse_filter, requires = "dataset")]
    pub case: Vec<(String, String)>,
}

/// `fedgate referral …`.
#[derive(Debug, clap::Subcommand)]
pub enum ReferralCommand {
    /// Hand a referral over (交办) to a node, or to "department D responsible for region R".
    /// Prints its id. The gateway stores and audits it, then delivers it, resending while the
    /// receiver is down.
    Send {
        /// This node's config and the output format.
        #[command(flatten)]
        common: Common,
        /// The new referral.
        #[command(flatten)]
        new: NewArgs,
    },
    /// List the referrals this node sent or received: overdue first (flagged), then the most
    /// recently changed.
    List {
        /// This node's config and the output format.
        #[command(flatten)]
        common: Common,
    },
    /// Show one referral: its case, every step on both ends (who, when, what), and the chain it
    /// was forwarded down.
    Show {
        /// This node's config and the output format.
        #[command(flatten)]
        common: Common,
        /// The referral id (from `referral list`).
        id: String,
    },
    /// Accept a received referral (受理).
    Accept {
        /// This node's config and the output format.
        #[command(flatten)]
        common: Common,
        /// The referral id.
        id: String,
    },
    /// Return a received referral to its sender (退回), saying why.
    Return {
        /// This node's config and the output format.
        #[command(flatten)]
        common: Common,
        /// The referral id.
        id: String,
        /// Why it is returned.
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Pass an accepted referral further down (the street to a community): a new referral,
    /// linked to this one; its result resolves this one when it comes back.
    Forward {
        /// This node's config and the output format.
        #[command(flatten)]
        common: Common,
        /// The referral id to forward.
        id: String,
        /// The new referral.
        #[command(flatten)]
        new: NewArgs,
    },
    /// Record progress on an accepted referral (办理).
    Update {
        /// This node's config and the output format.
        #[command(flatten)]
        common: Common,
        /// The referral id.
        id: String,
        /// What was done so far.
        #[arg(long, value_name = "TEXT")]
        notes: String,
    },
    /// Resolve a referral with its result and feedback for the sender (反馈).
    Resolve {
        /// This node's config and the output format.
        #[command(flatten)]
        common: Common,
        /// The referral id.
        id: String,
        /// What was done.
        #[arg(long, value_name = "TEXT")]
        result: String,
        /// Feedback for the sender.
        #[arg(long, value_name = "TEXT")]
        feedback: String,
    },
    /// Close a resolved or returned referral you sent (办结). Final.
    Close {
        /// This node's config and the output format.
        #[command(flatten)]
        common: Common,
        /// The referral id.
        id: String,
    },
    /// Reopen a resolved referral you sent whose result is not accepted.
    Reopen {
        /// This node's config and the output format.
        #[command(flatten)]
        common: Common,
        /// The referral id.
        id: String,
        /// Why.
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
}

fn parse_filter(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((f, v)) if !f.is_empty() => Ok((f.to_owned(), v.to_owned())),
        _ => Err(format!("expected FIELD=VALUE, got {s:?}")),
    }
}

type Res = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn client(c: &Common) -> Result<Client, Box<dyn std::error::Error + Send + Sync>> {
    let cfg = config::load(&c.config)?;
    Ok(Client::new(&cfg)?.streaming(Duration::from_secs(30)))
}

/// The API body of a new referral.
pub fn new_body(n: &NewArgs) -> Value {
    let mut b = json!({ "reference": n.reference, "subject": n.subject, "instructions": n.instructions });
    let m = b.as_object_mut().expect("an object literal");
    if let Some(to) = &n.to {
        m.insert("to".into(), to.as_str().into());
    }
    if let (Some(d), Some(r)) = (&n.department, &n.region) {
        m.insert("department".into(), d.as_str().into());
        m.insert("region".into(), r.as_str().into());
    }
    if let Some(d) = &n.deadline {
        m.insert("deadline".into(), d.as_str().into());
    }
    if let Some(d) = n.working_days {
        m.insert("working_days".into(), d.into());
    }
    if let (Some(ds), Some(p)) = (&n.dataset, &n.purpose) {
        let w: serde_json::Map<String, Value> =
            n.case.iter().map(|(f, v)| (f.clone(), v.as_str().into())).collect();
        m.insert("case".into(), json!({ "dataset": ds, "purpose": p, "where": w }));
    }
    b
}

/// Runs `fedgate referral …`.
pub fn run(cmd: ReferralCommand) -> Res {
    use ReferralCommand as C;
    let (common, id, path_step, body) = match &cmd {
        C::Send { common, new } => {
            let r = client(common)?.send_json("/v1/referrals", Some(&new_body(new)))?;
            return print_one(common.format, &r);
        }
        C::List { common } => return list(common),
        C::Show { common, id } => return show(common, id),
        C::Accept { common, id } => (common, id, "accept", json!({})),
        C::Return { common, id, reason } => (common, id, "return", json!({ "reason": reason })),
        C::Forward { common, id, new } => (common, id, "forward", new_body(new)),
        C::Update { common, id, notes } => (common, id, "update", json!({ "notes": notes })),
        C::Resolve { common, id, result, feedback } => {
            (common, id, "resolve", json!({ "result": result, "feedback": feedback }))
        }
        C::Close { common, id } => (common, id, "close", json!({})),
        C::Reopen { common, id, reason } => (common, id, "reopen", json!({ "reason": reason })),
    };
    let r = client(common)?.send_json(&format!("/v1/referrals/{id}/{path_step}"), Some(&body))?;
    print_one(common.format, &r)
}

fn print_one(format: Format, r: &Value) -> Res {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Jsonl => writeln!(out, "{r}")?,
        Format::Table => {
            writeln!(out, "{}  {}  {}", s(&r["exchange"]), s(&r["state"]), flag(r))?;
        }
    }
    Ok(())
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn flag(r: &Value) -> &'static str {
    if r["overdue"].as_bool() == Some(true) {
        "OVERDUE"
    } else {
        ""
    }
}

fn list(c: &Common) -> Res {
    let all: Vec<Value> = client(c)?.get_json("/v1/referrals")?;
    let mut out = std::io::stdout().lock();
    if c.format == Format::Jsonl {
        for r in &all {
            writeln!(out, "{r}")?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<7}  {:<32}  {:<8}  {:<11}  {:<20}  {:<40}  reference / subject",
        "", "id", "role", "state", "due", "peer"
    )?;
    for r in &all {
        writeln!(
            out,
            "{:<7}  {:<32}  {:<8}  {:<11}  {:<20}  {:<40}  {} / {}",
            flag(r),
            s(&r["exchange"]),
            s(&r["party"]),
            s(&r["state"]),
            s(&r["due"]),
            s(&r["peer"]),
            s(&r["reference"]),
            s(&r["subject"]),
        )?;
    }
    Ok(())
}

fn show(c: &Common, id: &str) -> Res {
    let r: Value = client(c)?.get_json(&format!("/v1/referrals/{id}"))?;
    let mut out = std::io::stdout().lock();
    if c.format == Format::Jsonl {
        writeln!(out, "{r}")?;
        return Ok(());
    }
    show_table(&mut out, &r, 0)?;
    Ok(())
}

fn show_table(out: &mut impl Write, r: &Value, depth: usize) -> std::io::Result<()> {
    let pad = "    ".repeat(depth);
    let role = if s(&r["party"]) == "sender" { "to" } else { "from" };
    writeln!(out, "{pad}referral {}  {} {}  {}", s(&r["exchange"]), role, s(&r["peer"]), flag(r))?;
    writeln!(out, "{pad}  reference {}  subject {}", s(&r["reference"]), s(&r["subject"]))?;
    writeln!(out, "{pad}  state {}  due {}", s(&r["state"]), s(&r["due"]))?;
    if let Some(p) = r["parent"].as_str() {
        writeln!(out, "{pad}  forwarded from {p}")?;
    }
    for step in r["history"].as_array().into_iter().flatten() {
        let at = time::OffsetDateTime::from_unix_timestamp(step["at"].as_i64().unwrap_or(0))
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        writeln!(
            out,
            "{pad}  #{} {at} {:<8} by {}  → {}{}",
            step["seq"],
            s(&step["step"]),
            s(&step["by"]),
            s(&step["state"]),
            details(step)
        )?;
    }
    for child in r["forwarded"].as_array().into_iter().flatten() {
        show_table(out, child, depth + 1)?;
    }
    Ok(())
}

/// The step's own texts, `key=value`, the case's record as `case.field=value`.
fn details(step: &Value) -> String {
    let mut parts = Vec::new();
    for k in ["instructions", "reason", "notes", "forwarded_to", "child", "result", "feedback"] {
        if let Some(v) = step[k].as_str().filter(|v| !v.is_empty()) {
            parts.push(format!("{k}={v}"));
        }
    }
    if let Some(rec) = step["case"]["record"].as_object() {
        parts.push(format!("case {}:", s(&step["case"]["dataset"])));
        for (f, v) in rec {
            parts.push(format!("{f}={}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("  {}", parts.join("  "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_bodies_carry_what_was_given() {
        let n = NewArgs {
            to: None,
            department: Some("grid".into()),
            region: Some("wuxi.liangxi.chongan".into()),
            reference: "12345-1".into(),
            subject: "noise".into(),
            instructions: String::new(),
            deadline: None,
            working_days: Some(3),
            dataset: Some("tickets".into()),
            purpose: Some("dispute-mediation".into()),
            case: vec![("ticket_id".into(), "T-1".into())],
        };
        let b = new_body(&n);
        assert_eq!(b["department"], "grid");
        assert_eq!(b["working_days"], 3);
        assert_eq!(b["case"]["where"]["ticket_id"], "T-1");
        assert!(b.get("to").is_none() && b.get("deadline").is_none());
    }

    #[test]
    fn steps_show_their_texts_and_the_case() {
        let step =
            json!({"step":"send","instructions":"visit","case":{"dataset":"t","record":{"id":"T-1","n":3}}});
        assert_eq!(details(&step), "  instructions=visit  case t:  id=T-1  n=3");
        assert_eq!(details(&json!({"step":"accept"})), "");
    }
}
