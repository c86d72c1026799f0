//! Reconciling several nodes' logs: every exchange matched across sides by its id, with what
//! disagrees. Pure: entries in, a report out.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::entry::{Entry, Kind};

/// One exchange as both sides recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exchange {
    /// The exchange id.
    pub exchange: String,
    /// The provider node.
    pub provider: String,
    /// The consumer node.
    pub consumer: String,
    /// The dataset.
    pub dataset: Option<String>,
    /// The provider's final word: `sent`, `aborted`, `deny`, `error`, … (`None`: no entry).
    pub provider_says: Option<String>,
    /// The consumer's final word: `received`, `refused`, `incomplete`, … (`None`: no entry).
    pub consumer_says: Option<String>,
    /// Records sent / received.
    pub records: (Option<u64>, Option<u64>),
    /// What disagrees; empty if the two sides reconcile.
    pub disagreements: Vec<String>,
    /// The other side's log was not among the inputs: nothing to compare with.
    pub one_sided: bool,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Every exchange, by id.
    pub exchanges: Vec<Exchange>,
    /// True if and only if no exchange between two of the given nodes disagrees.
    pub reconciled: bool,
}

#[derive(Default)]
struct Sides {
    provider: Vec<Entry>,
    consumer: Vec<Entry>,
}

fn is_provider_kind(k: Option<Kind>) -> bool {
    matches!(k, Some(Kind::RequestIn | Kind::Deny | Kind::TransferEnd))
}

/// Matches the entries of the given logs (`(node, entries)`) by exchange id.
pub fn reconcile(logs: &[(String, Vec<Entry>)]) -> Report {
    let nodes: Vec<&str> = logs.iter().map(|(n, _)| n.as_str()).collect();
    let mut by_id: BTreeMap<String, Sides> = BTreeMap::new();
    for (_, entries) in logs {
        for e in entries {
            let Some(id) = &e.exchange else { continue };
            let sides = by_id.entry(id.clone()).or_default();
            if is_provider_kind(e.kind) {
                sides.provider.push(e.clone());
            } else if e.kind == Some(Kind::RequestOut) {
                sides.consumer.push(e.clone());
            }
        }
    }
    let exchanges: Vec<Exchange> = by_id.into_iter().map(|(id, s)| judge(id, &s, &nodes)).collect();
    let reconciled = exchanges.iter().all(|x| x.disagreements.is_empty());
    Report { exchanges, reconciled }
}

fn judge(exchange: String, s: &Sides, nodes: &[&str]) -> Exchange {
    let decision = s.provider.iter().find(|e| e.kind != Some(Kind::TransferEnd));
    let end = s.provider.iter().find(|e| e.kind == Some(Kind::TransferEnd));
    let last_p = end.or(decision);
    let receipt = s.consumer.last();
    let any = last_p.or(receipt);
    let (provider, consumer) = match (last_p, receipt) {
        (Some(p), _) => (p.actor.clone(), p.counterpart.clone().unwrap_or_default()),
        (None, Some(c)) => (c.counterpart.clone().unwrap_or_default(), c.actor.clone()),
        (None, None) => (String::new(), String::new()),
    };
    let mut why = Vec::new();
    let have = |n: &str| nodes.contains(&n);
    let one_sided = !(have(&provider) && have(&consumer));
    if !one_sided {
        match (last_p, receipt) {
            (None, _) => why.push(format!("{provider} (provider) has no entry for it")),
            (_, None) => why.push(format!("{consumer} (consumer) has no entry for it")),
            (Some(p), Some(c)) => compare(decision, end, p, c, &mut why),
        }
    }
    Exchange {
        exchange,
        provider,
        consumer,
        dataset: any.and_then(|e| e.dataset.clone()),
        provider_says: last_p.and_then(|e| e.decision.clone()),
        consumer_says: receipt.and_then(|e| e.decision.clone()),
        records: (end.and_then(|e| e.records), receipt.and_then(|e| e.records)),
        disagreements: why,
        one_sided,
    }
}

fn compare(decision: Option<&Entry>, end: Option<&Entry>, p: &Entry, c: &Entry, why: &mut Vec<String>) {
    for (what, a, b) in [("dataset", &p.dataset, &c.dataset), ("purpose", &p.purpose, &c.purpose)] {
        if a != b {
            why.push(format!("{what}: provider {a:?}, consumer {b:?}"));
        }
    }
    let received = c.decision.as_deref().is_some_and(|d| d.starts_with("received"));
    let sent = end.is_some_and(|e| e.decision.as_deref().is_some_and(|d| d.starts_with("sent")));
    match (received, end) {
        (true, None) => why.push("the consumer received records the provider never recorded sending".into()),
        (true, Some(e)) if !sent => why.push(format!(
            "the consumer received, the provider says {:?}",
            e.decision.as_deref().unwrap_or("?")
        )),
        (true, Some(e)) => {
            if e.records != c.records {
                why.push(format!("count: provider sent {:?}, consumer received {:?}", e.records, c.records));
            }
            if e.content_digest != c.content_digest {
                why.push("digest: what the consumer received is not what the provider sent".into());
            }
            if c.provider_entry.is_some_and(|n| n != e.seq) {
                why.push(format!(
                    "the trailer cited provider entry {:?}, its outcome is entry {}",
                    c.provider_entry, e.seq
                ));
            }
            if e.truncated != c.truncated {
                why.push(format!("truncation: provider {:?}, consumer {:?}", e.truncated, c.truncated));
            }
        }
        (false, Some(e)) if sent => why.push(format!(
            "the provider sent {:?} records, the consumer says {:?}",
            e.records,
            c.decision.as_deref().unwrap_or("?")
        )),
        _ => {
            // Neither side claims a completed transfer: a refusal or a failure on both.
            let allowed = decision.is_some_and(|d| d.decision.as_deref() == Some("allow"));
            let refused = c.decision.as_deref() == Some("refused");
            if refused && allowed && end.is_none() {
                why.push("the provider allowed it and recorded no outcome, the consumer was refused".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "hotline12345@wuxi";
    const C: &str = "mediation-center@wuxi";

    fn e(kind: Kind, actor: &str, other: &str, id: &str, decision: &str) -> Entry {
        Entry {
            kind: Some(kind),
            actor: actor.into(),
            counterpart: Some(other.into()),
            dataset: Some("hotline-tickets".into()),
            purpose: Some("dispute-mediation".into()),
            decision: Some(decision.into()),
            exchange: Some(id.into()),
            ..Entry::default()
        }
    }

    fn transfer(id: &str, sent: u64, got: u64, digest_ok: bool) -> (Vec<Entry>, Vec<Entry>) {
        let allow = e(Kind::RequestIn, P, C, id, "allow");
        let end = Entry {
            seq: 7,
            records: Some(sent),
            content_digest: Some("aa".into()),
            ..e(Kind::TransferEnd, P, C, id, "sent")
        };
        let receipt = Entry {
            records: Some(got),
            content_digest: Some(if digest_ok { "aa" } else { "bb" }.into()),
            provider_entry: Some(7),
            ..e(Kind::RequestOut, C, P, id, "received")
        };
        (vec![allow, end], vec![receipt])
    }

    fn run(p: Vec<Entry>, c: Vec<Entry>) -> Report {
        reconcile(&[(P.into(), p), (C.into(), c)])
    }

    #[test]
    fn matching_sides_reconcile_and_each_disagreement_is_named() {
        let (p, c) = transfer("x1", 5, 5, true);
        let r = run(p, c);
        assert!(r.reconciled, "{r:?}");
        assert_eq!(r.exchanges.len(), 1);
        let (p, c) = transfer("x2", 5, 4, true);
        let r = run(p, c);
        assert!(!r.reconciled);
        assert!(r.exchanges[0].disagreements[0].starts_with("count"), "{r:?}");
        let (p, c) = transfer("x3", 5, 5, false);
        assert!(run(p, c).exchanges[0].disagreements[0].starts_with("digest"));
        // The provider's log lost the exchange.
        let (_, c) = transfer("x4", 5, 5, true);
        let r = run(vec![], c);
        assert!(r.exchanges[0].disagreements[0].contains("(provider) has no entry"), "{r:?}");
        // The consumer's lost it.
        let (p, _) = transfer("x5", 5, 5, true);
        let r = run(p, vec![]);
        assert!(r.exchanges[0].disagreements[0].contains("(consumer) has no entry"), "{r:?}");
        // A purpose that differs.
        let (p, mut c) = transfer("x6", 5, 5, true);
        c[0].purpose = Some("statistics".into());
        assert!(run(p, c).exchanges[0].disagreements[0].starts_with("purpose"));
    }

    #[test]
    fn refusals_pair_up_and_one_sided_exchanges_do_not_fail() {
        let deny = e(Kind::Deny, P, C, "d1", "deny");
        let refused = e(Kind::RequestOut, C, P, "d1", "refused");
        assert!(run(vec![deny], vec![refused]).reconciled);
        // An exchange with a node whose log is not among the inputs is listed, not judged.
        let other = e(Kind::RequestOut, C, "court@wuxi.xinwu", "o1", "received");
        let r = reconcile(&[(C.into(), vec![other])]);
        assert!(r.reconciled && r.exchanges[0].one_sided);
        // A transfer the provider says it sent and the consumer says it never got.
        let (p, mut c) = transfer("s1", 5, 0, true);
        c[0].decision = Some("incomplete".into());
        let r = run(p, c);
        assert!(r.exchanges[0].disagreements[0].contains("consumer says \"incomplete\""), "{r:?}");
    }
}
