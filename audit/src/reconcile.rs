//! Reconciling several nodes' logs: every exchange matched across sides by its id, with what
//! disagrees, and every checkpoint a consumer witnessed checked against the provider's log.
//! A subscription is one exchange id with many batches: each batch (the entries whose `detail`
//! is its id range, `events A..=B`) is matched and judged on its own, like a query, and the
//! subscription's own life (`subscribed`, `cancelled`, `stopped`) is the subscriber's record.
//! Pure: entries and tree heads in, a report out.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::entry::{Entry, Kind};
use crate::merkle::Hash;

/// One exchange as both sides recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exchange {
    /// The exchange id.
    pub exchange: String,
    /// For a subscription batch, the ids it covers (`events 1..=256`); for a referral, the
    /// step (`step 3`); `None` for a query or a subscription's decisions.
    pub batch: Option<String>,
    /// The provider node (of a referral step: the node that took the step).
    pub provider: String,
    /// The consumer node (of a referral step: the node it was sent to).
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

/// One checkpoint a consumer witnessed, checked against the provider's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Witnessed {
    /// The provider whose checkpoint it is.
    pub provider: String,
    /// The consumer that witnessed it.
    pub consumer: String,
    /// The consumer's entry that holds it.
    pub consumer_entry: u64,
    /// The exchange it came with.
    pub exchange: Option<String>,
    /// The provider's entry it proves.
    pub provider_entry: u64,
    /// The checkpoint's size.
    pub size: u64,
    /// `Some(true)`: the provider's log reproduces it; `Some(false)`: it does not (see
    /// `problem`); `None`: the provider's log was not among the inputs.
    pub consistent: Option<bool>,
    /// What is wrong, naming the provider and the witnessing entry.
    pub problem: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Every exchange, by id.
    pub exchanges: Vec<Exchange>,
    /// Every checkpoint a consumer witnessed, in the consumers' order.
    pub witnessed: Vec<Witnessed>,
    /// True if and only if no exchange between two of the given nodes disagrees and every
    /// witnessed checkpoint of a given provider is consistent with its log.
    pub reconciled: bool,
}

/// A provider's log as the witness check needs it: its length, its roots at the sizes
/// consumers witnessed ([`witnessed_sizes`]) and its trusted note verifier.
#[derive(Debug, Clone, Default)]
pub struct Heads {
    /// Entries in the log.
    pub entries: u64,
    /// The root at each witnessed size the log reaches.
    pub roots: BTreeMap<u64, Hash>,
    /// The verifier its checkpoints are checked with; `None` checks sizes and roots only.
    pub verifier: Option<(String, Vec<u8>)>,
}

/// The tree sizes at which each provider's log must be reproduced: the sizes of the checkpoints
/// its consumers witnessed.
pub fn witnessed_sizes(logs: &[(String, Vec<Entry>)]) -> BTreeMap<String, BTreeSet<u64>> {
    let mut out: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for (_, entries) in logs {
        for e in entries {
            if let (Some(w), Some(p)) = (&e.witness, &e.counterpart) {
                if let Some((size, _)) = w.claimed_head() {
                    out.entry(p.clone()).or_default().insert(size);
                }
            }
        }
    }
    out
}

#[derive(Default)]
struct Sides {
    provider: Vec<Entry>,
    consumer: Vec<Entry>,
}

fn is_provider_kind(k: Option<Kind>) -> bool {
    matches!(k, Some(Kind::RequestIn | Kind::Deny | Kind::TransferEnd))
}

/// Matches the entries of the given logs (`(node, entries)`) by exchange id; witnessed
/// checkpoints are listed but not checked (see [`reconcile_witnessed`]).
pub fn reconcile(logs: &[(String, Vec<Entry>)]) -> Report {
    reconcile_witnessed(logs, &BTreeMap::new())
}

/// [`reconcile`], and every checkpoint a consumer witnessed is checked against the provider's
/// `heads`: its signature (with the provider's verifier), the provider's log reaching its size
/// with the same root there, and the proved entry being that exchange's. A truncated, rolled
/// back, forked or rewritten log fails, named together with the witnessing consumer's entry.
pub fn reconcile_witnessed(logs: &[(String, Vec<Entry>)], heads: &BTreeMap<String, Heads>) -> Report {
    let nodes: Vec<&str> = logs.iter().map(|(n, _)| n.as_str()).collect();
    let mut by_id: BTreeMap<(String, Option<String>), Sides> = BTreeMap::new();
    let mut steps: BTreeMap<(String, u64, String), Vec<Entry>> = BTreeMap::new();
    for (_, entries) in logs {
        for e in entries {
            let Some(id) = &e.exchange else { continue };
            if e.kind == Some(Kind::Referral) {
                // Only a step is said by both sides; a refused case is the sender's word alone.
                if let Some(step) = &e.step {
                    steps.entry((id.clone(), step.n, step.by.clone())).or_default().push(e.clone());
                }
                continue;
            }
            // Other kinds with an exchange id (a sharing request's `governance` steps) carry
            // no records to reconcile; they must not stand as a transfer with no sides.
            let key = (id.clone(), batch_of(e));
            if is_provider_kind(e.kind) {
                by_id.entry(key).or_default().provider.push(e.clone());
            } else if e.kind == Some(Kind::RequestOut) {
                by_id.entry(key).or_default().consumer.push(e.clone());
            }
        }
    }
    let mut exchanges: Vec<Exchange> =
        by_id.into_iter().map(|((id, batch), s)| judge(id, batch, &s, &nodes)).collect();
    exchanges.extend(steps.into_iter().map(|((id, n, by), es)| judge_step(id, n, by, &es, &nodes)));
    let by_node: BTreeMap<&str, &[Entry]> = logs.iter().map(|(n, e)| (n.as_str(), e.as_slice())).collect();
    let witnessed: Vec<Witnessed> = logs
        .iter()
        .flat_map(|(node, entries)| entries.iter().map(move |e| (node, e)))
        .filter_map(|(node, e)| check_witness(node, e, heads, &by_node))
        .collect();
    let reconciled = exchanges.iter().all(|x| x.disagreements.is_empty())
        && witnessed.iter().all(|w| w.consistent != Some(false));
    Report { exchanges, witnessed, reconciled }
}

fn check_witness(
    consumer: &str,
    e: &Entry,
    heads: &BTreeMap<String, Heads>,
    by_node: &BTreeMap<&str, &[Entry]>,
) -> Option<Witnessed> {
    let w = e.witness.as_ref()?;
    let provider = e.counterpart.clone().unwrap_or_default();
    let mut out = Witnessed {
        provider: provider.clone(),
        consumer: consumer.to_owned(),
        consumer_entry: e.seq,
        exchange: e.exchange.clone(),
        provider_entry: w.entry,
        size: w.claimed_head().map_or(0, |(s, _)| s),
        consistent: None,
        problem: None,
    };
    let Some(h) = heads.get(&provider) else { return Some(out) };
    let x = e.exchange.as_deref().unwrap_or("-");
    let who = format!(
        "{provider}'s log does not hold the checkpoint {consumer} witnessed in its entry {} (exchange {x})",
        e.seq
    );
    let problem = witness_problem(w, h, by_node.get(provider.as_str()).copied(), e.exchange.as_deref());
    out.consistent = Some(problem.is_none());
    out.problem = problem.map(|p| format!("{who}: {p}"));
    Some(out)
}

/// What is wrong with the provider's log against one witness, if anything.
fn witness_problem(
    w: &crate::witness::Witness,
    h: &Heads,
    provider_entries: Option<&[Entry]>,
    exchange: Option<&str>,
) -> Option<String> {
    let (size, root) = match &h.verifier {
        Some(v) => match w.check(v, None) {
            Ok(cp) => (cp.size, cp.root),
            Err(e) => return Some(e.to_string()),
        },
        None => match w.claimed_head() {
            Some(head) => head,
            None => return Some("the witnessed checkpoint does not parse".into()),
        },
    };
    if size > h.entries {
        return Some(format!(
            "it covers {size} entries, the log has only {} (truncated or rolled back)",
            h.entries
        ));
    }
    match h.roots.get(&size) {
        Some(r) if *r == root => {}
        Some(_) => {
            return Some(format!(
                "the log's root at size {size} differs from the signed one (forked or rewritten)"
            ))
        }
        None => return Some(format!("the root at size {size} was not computed")),
    }
    // The proof ties the checkpoint to entry `w.entry`; that entry must be this exchange's.
    let proved = provider_entries.and_then(|es| es.iter().find(|p| p.seq == w.entry));
    match (proved.and_then(|p| p.exchange.as_deref()), exchange) {
        (Some(a), Some(b)) if a != b => {
            Some(format!("the proved entry {} belongs to exchange {a}, not this one", w.entry))
        }
        _ => None,
    }
}

/// The batch a subscription entry records (its id range), if it records one.
fn batch_of(e: &Entry) -> Option<String> {
    let batch = matches!(e.kind, Some(Kind::TransferEnd | Kind::RequestOut))
        && e.detail.as_deref().is_some_and(|d| d.starts_with("events "));
    batch.then(|| e.detail.clone()).flatten()
}

/// True if and only if a subscriber's entry records the subscription's life, which only the
/// subscriber decides (or learns of as a refusal the provider records separately).
fn is_lifecycle(e: &Entry) -> bool {
    matches!(e.decision.as_deref(), Some("subscribed" | "cancelled" | "stopped"))
}

fn judge(exchange: String, batch: Option<String>, s: &Sides, nodes: &[&str]) -> Exchange {
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
            // A subscription the provider never served (or not yet) has only the subscriber's word.
            (None, _) if s.consumer.iter().all(is_lifecycle) => {}
            (None, _) => why.push(format!("{provider} (provider) has no entry for it")),
            (_, None) => why.push(format!("{consumer} (consumer) has no entry for it")),
            (Some(p), Some(c)) => compare(decision, end, p, c, &mut why),
        }
    }
    Exchange {
        exchange,
        batch,
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

/// Judges one referral step: the node that took it and the node it went to must both have
/// recorded it, as the same step with the same digest. (Only the receiver keeps the signature:
/// the author signs each delivery attempt afresh.)
fn judge_step(exchange: String, n: u64, by: String, entries: &[Entry], nodes: &[&str]) -> Exchange {
    let to = entries
        .iter()
        .find_map(|e| if e.actor == by { e.counterpart.clone() } else { Some(e.actor.clone()) })
        .unwrap_or_default();
    let author = entries.iter().find(|e| e.actor == by);
    // A delivery the receiver refused and a later one it took are both in its log; the step
    // stands if it was taken in the end.
    let theirs = || entries.iter().filter(|e| e.actor == to);
    let receiver =
        theirs().find(|e| author.is_some_and(|a| a.decision == e.decision)).or_else(|| theirs().next());
    let one_sided = !(nodes.contains(&by.as_str()) && nodes.contains(&to.as_str()));
    let mut why = Vec::new();
    if !one_sided {
        match (author, receiver) {
            (None, _) => why.push(format!("{by} (who took the step) has no entry for it")),
            (_, None) => why.push(format!("{to} (who the step went to) has no entry for it")),
            (Some(a), Some(r)) => {
                if a.decision != r.decision {
                    why.push(format!("step: {by} says {:?}, {to} says {:?}", a.decision, r.decision));
                }
                if a.content_digest != r.content_digest {
                    why.push("digest: the step received is not the step taken".into());
                }
            }
        }
    }
    Exchange {
        exchange,
        batch: Some(format!("step {n}")),
        provider: by,
        consumer: to,
        dataset: entries.iter().find_map(|e| e.dataset.clone()),
        provider_says: author.and_then(|e| e.decision.clone()),
        consumer_says: receiver.and_then(|e| e.decision.clone()),
        records: (author.and_then(|e| e.records), receiver.and_then(|e| e.records)),
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
    fn each_subscription_batch_is_matched_on_its_own_and_the_subscription_life_needs_no_provider_entry() {
        let batch = |kind, actor, other, span: &str, seq, records, digest: &str, decision| Entry {
            seq,
            records: Some(records),
            content_digest: Some(digest.into()),
            detail: Some(span.into()),
            ..e(kind, actor, other, "s1", decision)
        };
        let p = vec![
            batch(Kind::TransferEnd, P, C, "events 1..=3", 4, 3, "aa", "sent"),
            batch(Kind::TransferEnd, P, C, "events 4..=9, gap 4..=5", 6, 4, "bb", "sent"),
        ];
        let mut c = vec![
            e(Kind::RequestOut, C, P, "s1", "subscribed"),
            Entry {
                provider_entry: Some(4),
                ..batch(Kind::RequestOut, C, P, "events 1..=3", 1, 3, "aa", "received")
            },
            Entry {
                provider_entry: Some(6),
                ..batch(Kind::RequestOut, C, P, "events 4..=9, gap 4..=5", 2, 4, "bb", "received")
            },
            e(Kind::RequestOut, C, P, "s1", "cancelled"),
        ];
        let r = run(p.clone(), c.clone());
        assert!(r.reconciled, "{r:?}");
        let batches: Vec<_> = r.exchanges.iter().map(|x| x.batch.as_deref()).collect();
        assert_eq!(batches, [None, Some("events 1..=3"), Some("events 4..=9, gap 4..=5")]);
        // A batch whose receipt differs from what was sent is named by its range.
        c[2].content_digest = Some("cc".into());
        let r = run(p.clone(), c.clone());
        let bad: Vec<_> = r.exchanges.iter().filter(|x| !x.disagreements.is_empty()).collect();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].batch.as_deref(), Some("events 4..=9, gap 4..=5"));
        // A batch received that the provider never recorded sending.
        let r = run(p[..1].to_vec(), c[..3].to_vec());
        assert!(r.exchanges[2].disagreements[0].contains("(provider) has no entry"), "{r:?}");
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

    #[test]
    fn governance_steps_under_an_exchange_id_are_not_transfers() {
        // A sharing request's steps on both sides: no records moved, nothing to pair.
        let received = e(Kind::Governance, P, C, "g1", "received");
        let requested = e(Kind::Governance, C, P, "g1", "requested");
        let r = run(vec![received], vec![requested]);
        assert!(r.reconciled && r.exchanges.is_empty(), "{r:?}");
    }
    fn step(actor: &str, other: &str, n: u64, by: &str, decision: &str) -> Entry {
        Entry {
            step: Some(crate::entry::Step { n, by: by.into() }),
            content_digest: Some(format!("digest-{n}")),
            ..e(Kind::Referral, actor, other, "r1", decision)
        }
    }

    #[test]
    fn each_referral_step_pairs_its_author_with_its_receiver() {
        let sender = vec![
            step(P, C, 1, P, "referral-send"),
            step(P, C, 2, C, "referral-receive"),
            step(P, C, 3, C, "referral-accept"),
            // A refused case is the sender's word alone: no step, nothing to pair.
            Entry { step: None, ..e(Kind::Referral, P, C, "r2", "deny") },
        ];
        let receiver = vec![
            step(C, P, 1, P, "referral-send"),
            step(C, P, 2, C, "referral-receive"),
            step(C, P, 3, C, "referral-accept"),
        ];
        let r = run(sender.clone(), receiver.clone());
        assert!(r.reconciled, "{r:?}");
        assert_eq!(r.exchanges.len(), 3, "{r:?}");
        let accept = &r.exchanges[2];
        assert_eq!(
            (accept.batch.as_deref(), accept.provider.as_str(), accept.consumer.as_str()),
            (Some("step 3"), C, P)
        );

        // A side lost a step, recorded another one, or refused it: each is named.
        let r = run(sender.clone(), receiver[..2].to_vec());
        assert_eq!(
            r.exchanges[2].disagreements,
            vec![format!("{C} (who took the step) has no entry for it")]
        );
        let r = run(sender[..2].to_vec(), receiver.clone());
        assert_eq!(
            r.exchanges[2].disagreements,
            vec![format!("{P} (who the step went to) has no entry for it")]
        );
        let mut forged = receiver.clone();
        forged[1].content_digest = Some("other".into());
        forged[2] = step(C, P, 3, C, "deny");
        let r = run(sender.clone(), forged);
        assert!(!r.reconciled);
        assert_eq!(r.exchanges[1].disagreements, vec!["digest: the step received is not the step taken"]);
        assert_eq!(r.exchanges[2].disagreements.len(), 1, "{r:?}");
        // A refused delivery followed by the step taken: the step stands.
        let mut retried = sender.clone();
        retried.insert(2, step(P, C, 3, C, "deny"));
        assert!(run(retried, receiver.clone()).reconciled);
        let r = run(vec![], receiver);
        assert!(r.exchanges[0].disagreements[0].contains("(who took the step) has no entry"), "{r:?}");
    }

    /// The provider's heads over `leaves`, at every size, with its verifier.
    fn heads_of(leaves: &[Hash], key: &ring::signature::Ed25519KeyPair) -> BTreeMap<String, Heads> {
        use ring::signature::KeyPair;
        let roots = (1..=leaves.len()).map(|n| (n as u64, crate::merkle::root(&leaves[..n]))).collect();
        let verifier = Some((crate::origin(&P.parse().unwrap()), key.public_key().as_ref().to_vec()));
        BTreeMap::from([(P.to_owned(), Heads { entries: leaves.len() as u64, roots, verifier })])
    }

    #[test]
    fn witnessed_checkpoints_are_checked_against_the_providers_log() {
        use crate::checkpoint::Checkpoint;
        use crate::merkle::{inclusion_proof, leaf_hash, root};
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let key = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let leaves: Vec<Hash> = (0..8u8).map(|b| leaf_hash(&[b])).collect();
        // The consumer witnessed entry 5 ("x1"'s outcome) at size 7.
        let cp = Checkpoint { origin: crate::origin(&P.parse().unwrap()), size: 7, root: root(&leaves[..7]) };
        let w = crate::witness::Witness::new(
            cp.sign(&key),
            5,
            &leaves[5],
            &inclusion_proof(&leaves[..7], 5).unwrap(),
        );
        let (mut p, mut c) = transfer("x1", 5, 5, true);
        p[1].seq = 5;
        c[0].provider_entry = Some(5);
        c[0].seq = 3;
        c[0].witness = Some(w);
        let logs = [(P.to_owned(), p.clone()), (C.to_owned(), c.clone())];
        let r = reconcile_witnessed(&logs, &heads_of(&leaves, &key));
        assert!(r.reconciled, "{r:?}");
        assert_eq!(r.witnessed[0].consistent, Some(true));
        assert_eq!(witnessed_sizes(&logs)[P], BTreeSet::from([7]));
        // Without the provider's heads it is listed, not judged.
        assert_eq!(reconcile(&logs).witnessed[0].consistent, None);
        // Rolled back: the log has 6 entries.
        let r = reconcile_witnessed(&logs, &heads_of(&leaves[..6], &key));
        let problem = r.witnessed[0].problem.clone().unwrap();
        assert!(!r.reconciled && problem.contains("rolled back"), "{problem}");
        assert!(problem.contains(&format!("{C} witnessed in its entry 3 (exchange x1)")), "{problem}");
        // Forked: entry 2 is another one, and the log went on.
        let mut forked = leaves.clone();
        forked[2] = leaf_hash(b"other");
        let r = reconcile_witnessed(&logs, &heads_of(&forked, &key));
        assert!(!r.reconciled && r.witnessed[0].problem.as_ref().unwrap().contains("forked"), "{r:?}");
        // Another key signs the provider's heads now.
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let other = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        assert!(!reconcile_witnessed(&logs, &heads_of(&leaves, &other)).reconciled);
        // The proved entry is another exchange's.
        let mut p2 = p;
        p2[1].exchange = Some("x9".into());
        p2[0].exchange = Some("x9".into());
        let r = reconcile_witnessed(&[(P.to_owned(), p2), (C.to_owned(), c)], &heads_of(&leaves, &key));
        assert!(
            r.witnessed[0].problem.as_ref().is_some_and(|p| p.contains("belongs to exchange x9")),
            "{r:?}"
        );
    }
}
