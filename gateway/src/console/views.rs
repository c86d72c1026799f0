//! Filling the pages from the node's state: the rules in force, the stores, the audit log.
//! Read-only; the blocking readers (SQLite, the audit log) are called off the async threads by
//! the server.

use std::path::Path;

use fedgate_audit::{self as audit, Entry, Kind};
use fedgate_catalog::NodeId;
use time::OffsetDateTime;

use super::chart::{self, Bar};
use super::i18n::Text;
use super::pages::*;
use crate::state::Shared;

/// Dates and times as the console shows them: China Standard Time, to the minute.
pub fn when(unix: i64) -> String {
    let cst = time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC);
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.to_offset(cst).format(&fmt).ok())
        .unwrap_or_else(|| unix.to_string())
}

fn when_ms(ms: i64) -> String {
    when(ms.div_euclid(1000))
}

/// Certificates and CRLs due within this many days are highlighted.
const EXPIRY_WARN_DAYS: i64 = 30;

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn expiry(file: &Path, t: Result<OffsetDateTime, String>, now: OffsetDateTime) -> ExpiryRow {
    match t {
        Ok(t) => {
            let days = (t - now).whole_days();
            ExpiryRow {
                file: file_name(file),
                when: when(t.unix_timestamp()),
                days,
                warn: days < EXPIRY_WARN_DAYS,
            }
        }
        Err(why) => ExpiryRow { file: file_name(file), when: why, days: 0, warn: true },
    }
}

/// The node certificate's and every CRL's expiry.
pub fn expiries(shared: &Shared, now: OffsetDateTime) -> (Vec<ExpiryRow>, Vec<ExpiryRow>) {
    use fedgate_certs::{inspect, store};
    let cfg = &shared.cfg;
    let leaf = store::read_certs(&cfg.tls.cert)
        .map_err(|e| e.to_string())
        .and_then(|c| c.first().cloned().ok_or_else(|| "no certificate in the file".to_owned()))
        .and_then(|c| inspect::parse(&c).map_err(|e| e.to_string()))
        .map(|i| i.not_after);
    let cert = vec![expiry(&cfg.tls.cert, leaf, now)];
    let crls = cfg
        .tls
        .crls
        .iter()
        .map(|f| {
            let next = store::read_crl(f)
                .map_err(|e| e.to_string())
                .and_then(|c| inspect::crl_next_update(&c).map_err(|e| e.to_string()))
                .and_then(|n| n.ok_or_else(|| "no next update".to_owned()));
            expiry(f, next, now)
        })
        .collect();
    (cert, crls)
}

/// Configured peers, then the directory's, each with its contact state.
pub fn peers(shared: &Shared) -> Vec<PeerRow> {
    let cfg = &shared.cfg;
    let mut list: Vec<(NodeId, String)> =
        cfg.peers.iter().map(|p| (p.node.clone(), p.address.to_string())).collect();
    for e in shared.directory.view().entries() {
        if e.node != cfg.node && cfg.peer(&e.node).is_none() {
            list.push((e.node.clone(), e.address.to_string()));
        }
    }
    let contacts = shared.link.contacts();
    // Peers that dialled in without being listed are shown too.
    for (node, _) in contacts.all() {
        if !list.iter().any(|(n, _)| *n == node) {
            list.push((node, String::new()));
        }
    }
    list.into_iter()
        .map(|(node, address)| {
            let c = contacts.get(&node).unwrap_or_default();
            PeerRow {
                node: node.to_string(),
                address,
                up: c.up(),
                last_ok: c.last_ok_ms.map(when_ms).unwrap_or_default(),
                last_failure: c
                    .last_failure
                    .map(|(ms, why)| format!("{} {}", when_ms(ms), why.chars().take(120).collect::<String>()))
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// What the overview reads from the audit log: its size, the last checkpoint, and the last 24
/// hours' volume per peer and dataset (counted as `fedgate stats` counts).
pub struct AuditSummary {
    /// Entries in the log.
    pub entries: u64,
    /// The last signed checkpoint's size, if any, as text.
    pub last_checkpoint: String,
    /// Peer, dataset, sent, received.
    pub volume: Vec<VolumeRow>,
}

/// Reads the audit log for the overview (blocking).
pub fn audit_summary(shared: &Shared, now_ms: i64) -> Result<AuditSummary, String> {
    let cfg = &shared.cfg;
    let reader = audit::AuditKeys::load_reader(&cfg.audit_key).map_err(|e| e.to_string())?;
    let mut counter = crate::governance::stats::Counter::new(Some(now_ms - 24 * 3600 * 1000));
    let entries = audit::entries(&cfg.audit_dir, &reader, |e| {
        counter.add_entry(&e);
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    let volume = counter
        .rows()
        .into_iter()
        .filter(|r| r.records_sent + r.records_received > 0)
        .map(|r| VolumeRow {
            peer: r.peer,
            dataset: r.dataset,
            sent: r.records_sent,
            received: r.records_received,
        })
        .collect();
    Ok(AuditSummary { entries, last_checkpoint: last_checkpoint(&cfg.audit_dir), volume })
}

fn last_checkpoint(dir: &Path) -> String {
    let (Ok((notes, _)), Ok((name, key))) =
        (audit::log::read_checkpoints(dir), audit::read_verifier(&dir.join("signing.pub")))
    else {
        return String::new();
    };
    notes
        .last()
        .and_then(|n| audit::checkpoint::Checkpoint::verify(n, &name, &key).ok())
        .map(|c| format!("{} / {}", c.size, fedgate_catalog::hex(&c.root[..8])))
        .unwrap_or_default()
}

/// The volume chart.
pub fn volume_chart(t: &Text, volume: &[VolumeRow]) -> String {
    let bars: Vec<Bar> = volume
        .iter()
        .map(|v| Bar { label: format!("{} · {}", v.peer, v.dataset), sent: v.sent, received: v.received })
        .collect();
    chart::svg(&bars, (t.records_sent, t.records_received), t.volume_24h)
}

/// The catalog in force, and the problems of the files on disk now (a steward who just broke
/// a file sees why it did not load, with file:line:col).
pub fn catalog(shared: &Shared) -> (Vec<DatasetRow>, Vec<String>) {
    let datasets = shared
        .catalog()
        .datasets()
        .iter()
        .map(|d| DatasetRow {
            id: d.id.to_string(),
            title: d.title.clone(),
            steward: d.steward.clone(),
            grade: d.grade.to_string(),
            classification: d.classification.clone(),
            sharing: d.sharing.to_string(),
            update: d.update.to_string(),
            fields: d
                .fields
                .iter()
                .map(|f| FieldRow {
                    name: f.name.clone(),
                    ty: format!("{:?}", f.ty).to_lowercase(),
                    grade: f.grade.to_string(),
                    classification: f.classification.clone(),
                    pii: match format!("{:?}", f.pii).to_lowercase().as_str() {
                        "none" => String::new(),
                        other => other.to_owned(),
                    },
                })
                .collect(),
        })
        .collect();
    let problems = match crate::state::load_catalog(&shared.cfg) {
        Ok(_) => Vec::new(),
        Err(crate::state::NodeError::Catalog(crate::state::CatalogError::Invalid(d))) => {
            d.0.iter().map(ToString::to_string).collect()
        }
        Err(e) => vec![e.to_string()],
    };
    (datasets, problems)
}

/// The grants in force.
pub fn grants(shared: &Shared, now: i64) -> Vec<GrantRow> {
    let policy = shared.policy();
    policy
        .grants()
        .grants
        .iter()
        .map(|g| GrantRow {
            id: g.id.clone(),
            to: g.to.to_string(),
            datasets: g.datasets.as_ref().map_or_else(
                || "*".to_owned(),
                |d| d.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            ),
            actions: g.actions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            purposes: g.purposes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            clearance: g.clearance.to_string(),
            rows: match &g.rows {
                fedgate_policy::Rows::Own => "own".into(),
                fedgate_policy::Rows::All => "all".into(),
                fedgate_policy::Rows::Within(r) => r.to_string(),
            },
            until: g.valid_until.map(when).unwrap_or_default(),
            quota: g.quota.map(|q| q.to_string()).unwrap_or_default(),
            source: file_name(Path::new(&g.source)),
            inactive: !g.in_force(now),
        })
        .collect()
}

/// Runs the explain form through the policy in force, as `fedgate policy explain` does.
pub fn explain(shared: &Shared, form: &ExplainForm, now: i64) -> Result<ExplainView, String> {
    let peer: NodeId =
        form.peer.trim().parse().map_err(|e: fedgate_catalog::NameError| format!("peer: {e}"))?;
    let action = match form.action.as_str() {
        "subscribe" => fedgate_policy::Action::Subscribe,
        "refer" => fedgate_policy::Action::Refer,
        _ => fedgate_policy::Action::Read,
    };
    let req = fedgate_policy::Request {
        dataset: form.dataset.clone(),
        purpose: form.purpose.trim().to_owned(),
        action,
    };
    let (catalog, policy) = (shared.catalog(), shared.policy());
    let decision = policy.decide(&catalog, &peer, &req, now).map_err(|e| e.to_string())?;
    let near = if decision.is_allow() {
        Vec::new()
    } else {
        fedgate_policy::near_misses(policy.grants(), &catalog, &peer, &req, now)
    };
    // The same JSON `policy explain --format json` prints, so the two cannot disagree.
    let v: serde_json::Value =
        serde_json::from_str(&crate::render::explain_json(&decision, &near)).map_err(|e| e.to_string())?;
    let s = |k: &str| {
        v.get(k).map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned)).unwrap_or_default()
    };
    let fields = v
        .get("field_rules")
        .or_else(|| v.get("fields"))
        .and_then(|f| f.as_object())
        .map(|o| o.iter().map(|(k, x)| (k.clone(), x.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default();
    let near = v
        .get("near_misses")
        .and_then(|n| n.as_array())
        .map(|a| a.iter().map(|n| n.to_string()).collect())
        .unwrap_or_default();
    Ok(ExplainView {
        allow: decision.is_allow(),
        reason: s("reason"),
        grant: s("grant"),
        terms: format!(
            "clearance {} · rows {} · quota/day {}",
            s("clearance"),
            s("rows"),
            s("quota_per_day")
        ),
        fields,
        near,
    })
}

/// Sharing requests: overdue first, then those awaiting an answer, then the rest, newest first.
pub fn requests(t: &Text, held: Vec<crate::governance::store::Held>) -> Vec<RequestRow> {
    use crate::governance::request::State;
    use crate::governance::store::Role;
    let mut rows: Vec<(u8, i64, RequestRow)> = held
        .into_iter()
        .map(|h| {
            let incoming = h.role == Role::Incoming;
            let pending = h.state == State::Pending;
            let rank = if h.overdue {
                0
            } else if pending {
                1
            } else {
                2
            };
            let answer = match (&h.grant, &h.answer_reason) {
                (Some(g), _) if h.state == State::Approved => format!("{} {g}", t.grant),
                (_, Some(r)) => format!("{}: {r}", t.reason),
                _ => String::new(),
            };
            let row = RequestRow {
                direction: if incoming { t.incoming } else { t.outgoing },
                incoming,
                peer: h.peer,
                dataset: h.dataset,
                purpose: h.purpose,
                fields: if h.fields.is_empty() { "*".into() } else { h.fields.join(", ") },
                reason: h.reason,
                created: when(h.created),
                deadline: h.deadline.map(when).unwrap_or_default(),
                overdue: h.overdue,
                state: h.state.as_str().to_owned(),
                pending,
                approved: h.state == State::Approved,
                clearance: h.clearance.unwrap_or(1),
                answer,
                id: h.id,
            };
            (rank, -h.created, row)
        })
        .collect();
    rows.sort_by_key(|(rank, newest, _)| (*rank, *newest));
    rows.into_iter().map(|(_, _, r)| r).collect()
}

/// This node's subscriptions, stopped ones highlighted.
pub fn subscriptions(held: Vec<crate::subscriptions::Held>) -> Vec<SubscriptionRow> {
    held.into_iter()
        .map(|s| {
            let state = serde_json::to_value(s.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            SubscriptionRow {
                stopped: state == "stopped" || s.reason.is_some(),
                id: s.id,
                peer: s.peer,
                dataset: s.dataset,
                purpose: s.purpose,
                state,
                reason: s.reason.unwrap_or_default(),
                cursor: s.cursor,
                delivered: s.delivered,
                created: when(s.created),
            }
        })
        .collect()
}

/// One referral as a row.
pub fn referral_row(r: &crate::referrals::Referral, now: i64) -> ReferralRow {
    ReferralRow {
        id: r.exchange.clone(),
        party: r.party.as_str().to_owned(),
        peer: r.peer.clone(),
        reference: r.reference.clone(),
        subject: r.subject.clone(),
        state: r.state.as_str().to_owned(),
        deadline: when(r.deadline),
        overdue: r.overdue(now),
        updated: when(r.updated),
    }
}

/// Referrals, overdue first.
pub fn referrals(list: &[crate::referrals::Referral], now: i64) -> Vec<ReferralRow> {
    let mut rows: Vec<ReferralRow> = list.iter().map(|r| referral_row(r, now)).collect();
    rows.sort_by_key(|r| !r.overdue);
    rows
}

/// A referral with its chain (parents up to the first sender, and the referrals it was
/// forwarded to) and steps (blocking).
pub fn referral_detail(
    store: &crate::referrals::ReferralStore,
    id: &str,
    now: i64,
) -> Result<ReferralDetail, crate::referrals::ReferralError> {
    let r = store.get(id)?;
    let mut parents = Vec::new();
    let mut up = r.parent.clone();
    // A chain is as long as the levels it crosses; the bound only guards a corrupt store.
    while let Some(p) = up.take().filter(|_| parents.len() < 16) {
        match store.get(&p) {
            Ok(pr) => {
                up = pr.parent.clone();
                parents.insert(0, referral_row(&pr, now));
            }
            Err(_) => break,
        }
    }
    let children = store.children(id)?.iter().map(|c| referral_row(c, now)).collect();
    let steps = store
        .history(id)?
        .into_iter()
        .map(|s| StepRow {
            seq: s.seq,
            author: s.author,
            at: when(s.at),
            step: s.step.name().to_owned(),
            state: s.state.as_str().to_owned(),
        })
        .collect();
    Ok(ReferralDetail { referral: referral_row(&r, now), parents, children, steps })
}

/// Audit kinds for the search form.
pub fn kinds() -> Vec<&'static str> {
    [
        Kind::RequestIn,
        Kind::RequestOut,
        Kind::Deny,
        Kind::CertReject,
        Kind::TransferEnd,
        Kind::Reload,
        Kind::Start,
        Kind::Stop,
        Kind::Shred,
        Kind::Governance,
        Kind::Referral,
    ]
    .into_iter()
    .map(Kind::as_str)
    .collect()
}

/// True if and only if `e` passes every criterion of `f` that is filled in.
pub fn keeps(f: &AuditFilter, e: &Entry) -> bool {
    let is = |want: &str, got: &Option<String>| want.is_empty() || got.as_deref() == Some(want.trim());
    (f.kind.is_empty() || e.kind.map(Kind::as_str) == Some(f.kind.as_str()))
        && is(&f.peer, &e.counterpart)
        && is(&f.dataset, &e.dataset)
        && is(&f.decision, &e.decision)
        && (f.exchange.is_empty()
            || e.exchange
                .as_deref()
                .is_some_and(|x| x.starts_with(f.exchange.trim().to_lowercase().as_str())))
        && (f.text.is_empty() || serde_json::to_string(e).is_ok_and(|s| s.contains(f.text.trim())))
}

/// An entry as a row of the search list.
pub fn entry_row(e: &Entry) -> EntryRow {
    EntryRow {
        seq: e.seq,
        time: when_ms(e.time_ms),
        kind: e.kind.map(Kind::as_str).unwrap_or("?").to_owned(),
        exchange: e.exchange.as_deref().map(|x| x.chars().take(8).collect()).unwrap_or_default(),
        counterpart: e.counterpart.clone().unwrap_or_default(),
        dataset: e.dataset.clone().unwrap_or_default(),
        purpose: e.purpose.clone().unwrap_or_default(),
        decision: e.decision.clone().unwrap_or_default(),
        records: e.records.map(|r| r.to_string()).unwrap_or_default(),
        note: e.reason.clone().or_else(|| e.detail.clone()).unwrap_or_default().chars().take(80).collect(),
    }
}

/// Searches the log (blocking): up to `max` matching entries, newest first, and how many
/// matched in all.
pub fn search(shared: &Shared, f: &AuditFilter, max: usize) -> Result<(Vec<EntryRow>, u64), String> {
    let cfg = &shared.cfg;
    let reader = audit::AuditKeys::load_reader(&cfg.audit_key).map_err(|e| e.to_string())?;
    let mut ring = std::collections::VecDeque::with_capacity(max);
    let mut matched = 0u64;
    audit::entries(&cfg.audit_dir, &reader, |e| {
        if keeps(f, &e) {
            matched += 1;
            if ring.len() == max {
                ring.pop_front();
            }
            ring.push_back(entry_row(&e));
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok((ring.into_iter().rev().collect(), matched))
}

/// Entry `seq` as (field, value) pairs of every field set (blocking).
pub fn entry(shared: &Shared, seq: u64) -> Result<Option<Vec<(String, String)>>, String> {
    let cfg = &shared.cfg;
    let reader = audit::AuditKeys::load_reader(&cfg.audit_key).map_err(|e| e.to_string())?;
    let mut found = None;
    audit::entries(&cfg.audit_dir, &reader, |e| {
        if e.seq == seq {
            found = Some(e);
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    let Some(e) = found else { return Ok(None) };
    let v = serde_json::to_value(&e).map_err(|e| e.to_string())?;
    let mut out = vec![("time".to_owned(), when_ms(e.time_ms))];
    if let Some(o) = v.as_object() {
        for (k, x) in o {
            let empty = x.is_null() || x.as_array().is_some_and(|a| a.is_empty());
            if !empty {
                out.push((k.clone(), x.as_str().map_or_else(|| x.to_string(), str::to_owned)));
            }
        }
    }
    Ok(Some(out))
}

/// Verifies the whole log as `fedgate audit verify` does (blocking); a one-line summary.
pub fn verify(shared: &Shared) -> Result<String, String> {
    let cfg = &shared.cfg;
    let reader = audit::AuditKeys::load_reader(&cfg.audit_key).map_err(|e| e.to_string())?;
    let verifier = audit::read_verifier(&cfg.audit_dir.join("signing.pub")).map_err(|e| e.to_string())?;
    let v = audit::verify(&cfg.audit_dir, &verifier, Some(&reader), |_| {}).map_err(|e| e.to_string())?;
    Ok(format!(
        "{} entries intact and authentic; {} signed checkpoint(s) valid and consistent, the latest covering {} entries",
        v.entries, v.checkpoints, v.signed_size
    ))
}

/// The inclusion proof of entry `seq` as `fedgate audit prove --entry` prints it (blocking).
pub fn proof(shared: &Shared, seq: u64) -> Result<String, String> {
    let dir = &shared.cfg.audit_dir;
    let verifier = audit::read_verifier(&dir.join("signing.pub")).map_err(|e| e.to_string())?;
    let p = audit::prove(dir, &verifier, seq).map_err(|e| e.to_string())?;
    serde_json::to_string_pretty(&p).map_err(|e| e.to_string())
}

/// This node's objections for the inbox: incoming ones past their answer deadline first, then
/// the open ones, then the rest, newest first. An objection's answer is due after the same
/// working days (`[requests] answer_days`, in the node's calendar) as a sharing request's.
pub fn objections(
    t: &Text,
    filed: Vec<crate::governance::objection_store::Filed>,
    due: impl Fn(i64) -> i64,
    now: i64,
) -> Vec<ObjectionRow> {
    use crate::governance::store::Role;
    let mut rows: Vec<(u8, i64, ObjectionRow)> = filed
        .into_iter()
        .map(|f| {
            let incoming = f.role == Role::Incoming;
            let open = f.state.is_open();
            let deadline = (incoming && open).then(|| due(f.created));
            let overdue = deadline.is_some_and(|d| now > d);
            let rank = if overdue {
                0
            } else if open {
                1
            } else {
                2
            };
            let mut answer =
                f.answer_reason.clone().map(|r| format!("{}: {r}", t.reason)).unwrap_or_default();
            if f.corrected {
                answer = if answer.is_empty() {
                    t.record_corrected.to_owned()
                } else {
                    format!("{} · {answer}", t.record_corrected)
                };
            }
            let row = ObjectionRow {
                direction: if incoming { t.incoming } else { t.outgoing },
                incoming,
                peer: f.peer,
                dataset: f.dataset,
                purpose: f.purpose,
                key: f.key,
                field: f.field,
                reason: f.reason,
                proposed: f.proposed.unwrap_or_default(),
                created: when(f.created),
                deadline: deadline.map(when).unwrap_or_default(),
                overdue,
                state: f.state.as_str().to_owned(),
                open,
                answer,
                id: f.id,
            };
            (rank, -f.created, row)
        })
        .collect();
    rows.sort_by_key(|(rank, newest, _)| (*rank, *newest));
    rows.into_iter().map(|(_, _, r)| r).collect()
}

/// A reconciliation of this node (`own`) with `peer` for the page: the exchanges between the
/// two (disagreements first), how many involve nodes not given, and the witnessed checkpoints.
pub fn reconcile_view(own: &str, peer: String, r: &fedgate_audit::reconcile::Report) -> ReconcileView {
    let between = |x: &fedgate_audit::reconcile::Exchange| {
        !x.one_sided
            && [own, peer.as_str()].contains(&x.provider.as_str())
            && [own, peer.as_str()].contains(&x.consumer.as_str())
    };
    let mut rows: Vec<(bool, ReconcileRow)> = r
        .exchanges
        .iter()
        .filter(|x| between(x))
        .map(|x| {
            let id: String = x.exchange.chars().take(8).collect();
            let row = ReconcileRow {
                exchange: x.batch.as_ref().map_or_else(|| id.clone(), |b| format!("{id} {b}")),
                provider: x.provider.clone(),
                consumer: x.consumer.clone(),
                dataset: x.dataset.clone().unwrap_or_default(),
                provider_says: x.provider_says.clone().unwrap_or_else(|| "-".into()),
                consumer_says: x.consumer_says.clone().unwrap_or_else(|| "-".into()),
                disagreements: x.disagreements.join("; "),
            };
            (x.disagreements.is_empty(), row)
        })
        .collect();
    rows.sort_by_key(|(agrees, _)| *agrees);
    ReconcileView {
        peer,
        reconciled: r.reconciled,
        rows: rows.into_iter().map(|(_, r)| r).collect(),
        one_sided: r.exchanges.iter().filter(|x| x.one_sided).count(),
        checked: r.witnessed.iter().filter(|w| w.consistent.is_some()).count(),
        inconsistent: r
            .witnessed
            .iter()
            .filter(|w| w.consistent == Some(false))
            .map(|w| {
                w.problem.clone().unwrap_or_else(|| format!("{} entry {}", w.consumer, w.consumer_entry))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::objection::State;
    use crate::governance::objection_store::Filed;
    use crate::governance::store::Role;

    fn filed(id: &str, role: Role, state: State, created: i64) -> Filed {
        Filed {
            id: id.into(),
            role,
            peer: "mediation-center@wuxi".into(),
            dataset: "petitions".into(),
            purpose: "dispute-mediation".into(),
            key: "XF-1".into(),
            field: "mobile".into(),
            reason: "wrong".into(),
            proposed: None,
            created,
            state,
            answer_reason: (state == State::Rejected).then(|| "stands".into()),
            corrected: state == State::Accepted,
            answered: None,
            signature: String::new(),
            answer_signature: None,
        }
    }

    #[test]
    fn the_objections_inbox_lists_overdue_then_open_then_the_rest_newest_first() {
        let t = super::super::i18n::Lang::En.text();
        let all = vec![
            filed("decided", Role::Incoming, State::Accepted, 50),
            filed("open-new", Role::Incoming, State::Open, 90),
            filed("overdue", Role::Incoming, State::Open, 10),
            filed("mine", Role::Outgoing, State::Open, 5),
            filed("rejected", Role::Incoming, State::Rejected, 60),
        ];
        // Due 30 s after receipt; now is 100: only the one received at 10 is late. The
        // objection this node filed has no deadline here (its provider's steward answers).
        let rows = objections(t, all, |received| received + 30, 100);
        let order: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(order, ["overdue", "open-new", "mine", "rejected", "decided"]);
        assert!(rows[0].overdue && !rows[1].overdue && !rows[2].overdue);
        assert!(rows[0].incoming && rows[0].open && !rows[2].incoming);
        assert_eq!(rows[2].deadline, "", "no deadline for our own objection");
        assert_eq!(rows[3].answer, "Reason: stands");
        assert_eq!(rows[4].answer, "record corrected");
    }
}
