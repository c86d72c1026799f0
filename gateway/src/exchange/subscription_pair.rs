//! Subscription rounds driven in memory: a provider's [`PublisherSession`] against a
//! subscriber's [`SubscriberSession`], with the real event log and subscription store (SQLite
//! in a temporary folder), real certificates and signatures, and faults where the drivers meet
//! the world (a subscriber killed before or after it stores a batch, frames rewritten on the
//! way).

use std::path::PathBuf;
use std::sync::Arc;

use fedgate_catalog::{Catalog, NodeId, Record, Value};
use fedgate_certs::authority::{Authority, NodeProfile};
use fedgate_certs::sign::NodeSigner;
use fedgate_certs::{Role, TrustStore, VerifiedPeer};
use fedgate_policy::{parse_grants, Policy};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, UnixTime};

use super::pair::{audit_key_pair, audit_public, rows, CATALOG, CENTRE, COMMUNITY, PROVIDER};
use super::subscription::{
    PublisherAction, PublisherSession, SubscriberEvent, SubscriberSession, Subscription, MAX_BATCH,
    ROUND_BATCHES,
};
use super::{ProviderContext, QuotaLedger};
use crate::config::{Pos, SourceConfig, SourceKind};
use crate::events::{Backlog, EventLog, Op};
use crate::sources::SourceGate;
use crate::subscriptions::{SubState, SubscriptionStore};
use crate::wire::{self, ErrorCode, Message};
use fedgate_audit::{Entry, Kind};

/// Grants of the women's federation for subscriptions: the centre in clear, communities masked
/// and row-scoped until mid-2030 with a quota, police allowed to read but not to subscribe.
const GRANTS: &str = r#"
[[grant]]
id = "centre-subscribe"
to = "mediation-center@wuxi"
datasets = ["family-disputes"]
actions = ["read", "subscribe"]
purposes = ["dispute-mediation"]
clearance = 4
rows = "all"

[[grant]]
id = "community-subscribe"
to = { levels = [4, 4] }
datasets = ["family-disputes"]
actions = ["read", "subscribe"]
purposes = ["dispute-mediation"]
clearance = 3
quota = 25
valid_until = 2030-06-30

[[grant]]
id = "police-read"
to = { department = "police" }
datasets = ["family-disputes"]
purposes = ["law-enforcement"]
clearance = 2
"#;

/// 2030-01-01T00:00:00Z: inside the community grant.
const JAN_2030: i64 = 1_893_456_000;
/// 2030-07-01T00:00:00Z: after it.
const JUL_2030: i64 = 1_909_094_400;

#[derive(Default)]
struct Faults {
    /// The subscriber is killed after receiving this many verified batches, before storing
    /// the last.
    killed_before_store: Option<usize>,
    /// The subscriber is killed right after storing this many batches (before it could ask
    /// again, i.e. acknowledge).
    killed_after_store: Option<usize>,
    /// Rewrites the provider's frames on the way.
    tamper: Option<Box<dyn FnMut(Message) -> Message>>,
}

/// How a round ended at the subscriber.
#[derive(Debug, PartialEq)]
enum End {
    Over,
    Refused(ErrorCode, bool),
    Broken(String),
    Killed,
}

struct SubPair {
    _dir: tempfile::TempDir,
    provider: NodeId,
    catalog: Catalog,
    policy: Policy,
    sources: Vec<SourceConfig>,
    gate: SourceGate,
    quotas: Arc<QuotaLedger>,
    pub(crate) marks: crate::governance::objection::Marks,
    signer: NodeSigner,
    provider_peer: VerifiedPeer,
    events: EventLog,
    store: SubscriptionStore,
    provider_log: Vec<Entry>,
    subscriber_log: Vec<Entry>,
    /// The provider's audit checkpoint key and its tree (leaves: each entry's JSON), as in
    /// the query pair.
    audit_signer: ring::signature::Ed25519KeyPair,
    tree: fedgate_audit::merkle::CompactRange,
    /// The verifier the subscriber checks witnesses with (`None`: an old provider).
    audit_key: Option<Arc<(String, Vec<u8>)>>,
    faults: Faults,
    /// Reads of the event log so far (all rounds).
    reads: usize,
    /// At the read with this number, the provider's grants become these.
    rules_changed_at_read: Option<(usize, &'static str)>,
}

impl SubPair {
    fn new(backlog: Backlog) -> SubPair {
        let dir = tempfile::tempdir().unwrap();
        let catalog = fedgate_catalog::parse("family.catalog.toml", CATALOG).unwrap();
        let known: Vec<&str> = catalog.datasets().iter().map(|d| d.id.as_str()).collect();
        let policy = Policy::new(parse_grants(&[("grants.toml", GRANTS)], Some(&known)).unwrap()).unwrap();
        let sources = vec![SourceConfig {
            dataset: "family-disputes".into(),
            kind: SourceKind::Sqlite(PathBuf::from("unused.db")),
            table: "cases".into(),
            dataset_at: Pos::default(),
            kind_at: Pos::default(),
            table_at: Pos::default(),
            cursor: None,
        }];
        let now = time::OffsetDateTime::now_utc();
        let root = Authority::new_root(&"wuxi".parse().unwrap(), now, 10).unwrap();
        let provider: NodeId = PROVIDER.parse().unwrap();
        let issued = root.issue_node(&provider, NodeProfile::gateway(now, 5)).unwrap();
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
        let trust = TrustStore::new(root.root().clone(), &[]).unwrap();
        let provider_peer =
            trust.verify(&issued.chain[0], &issued.chain[1..], Role::Server, UnixTime::now()).unwrap();
        let events = EventLog::open(&dir.path().join("p/state/events.db"), backlog).unwrap();
        let store = SubscriptionStore::open(&dir.path().join("s/state/subscriptions.db")).unwrap();
        let audit_signer = audit_key_pair();
        let audit_key = Some(Arc::new((fedgate_audit::origin(&provider), audit_public(&audit_signer))));
        SubPair {
            _dir: dir,
            provider,
            catalog,
            policy,
            sources,
            gate: SourceGate::default(),
            quotas: Arc::default(),
            marks: Default::default(),
            signer: NodeSigner::new(&key).unwrap(),
            provider_peer,
            events,
            store,
            provider_log: Vec::new(),
            subscriber_log: Vec::new(),
            audit_signer,
            tree: Default::default(),
            audit_key,
            faults: Faults::default(),
            reads: 0,
            rules_changed_at_read: None,
        }
    }

    /// Appends `e` to the provider's log; returns its position with a signed checkpoint
    /// covering it and its inclusion proof.
    fn append(&mut self, mut e: Entry) -> (u64, fedgate_audit::Witness) {
        use fedgate_audit::checkpoint::Checkpoint;
        let seq = self.provider_log.len() as u64;
        e.seq = seq;
        let leaf = fedgate_audit::merkle::leaf_hash(&serde_json::to_vec(&e).unwrap());
        let before = self.tree.clone();
        self.tree.push(leaf);
        self.provider_log.push(e);
        let path = fedgate_audit::merkle::GroupProver::new(&before, &[leaf]).prove(seq).unwrap();
        let head = Checkpoint {
            origin: fedgate_audit::origin(&self.provider),
            size: self.tree.size(),
            root: self.tree.root(),
        };
        (seq, fedgate_audit::Witness::new(head.sign(&self.audit_signer), seq, &leaf, &path))
    }

    fn publish(&self, records: &[Record], now: i64) {
        self.events.publish("family-disputes", Op::Insert, records, now).unwrap();
    }

    fn subscribe(&self, filters: Vec<(String, String)>) -> Subscription {
        let sub = Subscription::create("family-disputes", "dispute-mediation", filters).unwrap();
        self.store.create(&PROVIDER.parse().unwrap(), &sub, JAN_2030).unwrap();
        sub
    }

    fn context(&self) -> ProviderContext<'_> {
        ProviderContext {
            local: &self.provider,
            catalog: &self.catalog,
            policy: &self.policy,
            sources: &self.sources,
            gate: &self.gate,
            masking_secret: b"pair harness masking secret",
            quotas: &self.quotas,
            marks: &self.marks,
            entry: Entry { actor: PROVIDER.into(), ..Entry::default() },
        }
    }

    /// One round of `sub` by `subscriber`, the provider deciding at `now`.
    fn round(&mut self, subscriber: &str, sub: &Subscription, now: i64) -> End {
        let me: NodeId = subscriber.parse().unwrap();
        let held = self.store.get(&sub.exchange).unwrap();
        let template = Entry { actor: subscriber.into(), ..Entry::default() };
        let mut s = SubscriberSession::new(
            self.provider_peer.clone(),
            me.clone(),
            sub.clone(),
            held.cursor,
            template,
        )
        .with_audit_key(self.audit_key.clone());
        // The request crosses the wire.
        let req = wire::decode(&wire::encode(&sub.request(held.cursor, 0))).unwrap();
        let Message::EventsRequest { exchange, dataset, purpose, filters, acked, .. } = req else { panic!() };
        let asked = Subscription { exchange, dataset, purpose, filters };
        let mut p = PublisherSession::new(&self.context(), &me, asked, acked, now);
        let (mut received, mut stored) = (0, 0);
        for _ in 0..10_000 {
            let Some(a) = p.poll_action() else { break };
            match a {
                PublisherAction::Ack { upto } => {
                    self.events.ack(&sub.exchange, subscriber, &sub.dataset, upto, now).unwrap()
                }
                PublisherAction::Read { after, max, .. } => {
                    if let Some(rules) = &self.rules_changed_at_read {
                        if self.reads == rules.0 {
                            self.policy = Policy::new(
                                parse_grants(
                                    &[("grants.toml", rules.1)],
                                    Some(&["family-disputes", "shelters"]),
                                )
                                .unwrap(),
                            )
                            .unwrap();
                        }
                    }
                    self.reads += 1;
                    let slice = self.events.read(&sub.dataset, after, max).unwrap();
                    p.handle_read(&self.context(), slice, now)
                }
                PublisherAction::AppendWitnessed(e) => {
                    let appended = self.append(*e);
                    p.handle_witnessed(Ok(appended));
                }
                PublisherAction::Sign(msg) => {
                    p.handle_signed(self.signer.sign(&msg).map_err(|e| e.to_string()))
                }
                PublisherAction::Send(frame) => {
                    let frame = match &mut self.faults.tamper {
                        Some(t) => wire::encode(&t(wire::decode(&frame).unwrap())),
                        None => frame,
                    };
                    s.handle_frame(&frame[4..]);
                }
                PublisherAction::Finish => s.handle_end(),
            }
            while let Some(ev) = s.poll_event() {
                match ev {
                    SubscriberEvent::Batch(b) => {
                        received += 1;
                        if self.faults.killed_before_store == Some(received) {
                            return End::Killed;
                        }
                        self.store.store_batch(&sub.exchange, &b).unwrap();
                        self.subscriber_log.push(b.receipt.clone());
                        stored += 1;
                        if self.faults.killed_after_store == Some(stored) {
                            return End::Killed;
                        }
                        s.handle_stored(Ok(()));
                    }
                    SubscriberEvent::Over => return End::Over,
                    SubscriberEvent::Refused { code, message, stop } => {
                        if stop {
                            self.store.end(&sub.exchange, SubState::Stopped, &message).unwrap();
                            let mut e = Entry { actor: subscriber.into(), ..Entry::default() };
                            e.kind = Some(Kind::RequestOut);
                            e.exchange = Some(sub.exchange.clone());
                            e.decision = Some("stopped".into());
                            e.code = Some(code.as_str().into());
                            self.subscriber_log.push(e);
                        }
                        return End::Refused(code, stop);
                    }
                    SubscriberEvent::Broken(why) => return End::Broken(why),
                }
            }
        }
        panic!("the round did not end");
    }

    /// Every stored item's id, after the application's cursor.
    fn app_ids(&self, sub: &Subscription) -> Vec<u64> {
        self.store.items(&sub.exchange, 0, 100_000).unwrap().iter().map(|i| i.id).collect()
    }
}

#[test]
fn events_are_desensitized_and_row_scoped_exactly_as_a_query_by_the_same_subscriber() {
    let n = 9;
    let mut sp = SubPair::new(Backlog::default());
    sp.publish(&rows(n), JAN_2030);
    let mut ids = Vec::new();
    for who in [COMMUNITY, CENTRE] {
        let sub = sp.subscribe(vec![]);
        ids.push(sub.exchange.clone());
        assert_eq!(sp.round(who, &sub, JAN_2030), End::Over);
        let items = sp.store.items(&sub.exchange, 0, 100).unwrap();
        // The same rows through the query path (same plan, same masking secret).
        let mut q = super::pair::Pair::new(who, n);
        let run = q.run(super::pair::Pair::query("family-disputes", "dispute-mediation"));
        assert_eq!(items.len(), run.records.len(), "{who}");
        for (item, rec) in items.iter().zip(&run.records) {
            for (f, v) in run.fields.iter().zip(rec) {
                let want = match v {
                    Value::Text(s) => serde_json::Value::from(s.as_str()),
                    Value::Int(i) => serde_json::Value::from(*i),
                    Value::Null => serde_json::Value::Null,
                    Value::Bool(b) => serde_json::Value::from(*b),
                };
                assert_eq!(item.json[f], want, "{who} field {f}");
            }
            assert_eq!(item.json["@op"], "insert");
        }
    }
    // The community saw its own community's rows only, masked; the centre everything, clear.
    let community = sp.store.get(&ids[0]).unwrap();
    let items = sp.store.items(&community.id, 0, 100).unwrap();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|i| i.json["region"] == "wuxi.liangxi.chongan.guangrui"));
    // Grade 4 above clearance 3: never in clear.
    assert!(items[0].json.get("party_id").is_none_or(|v| v != "11010519491231002X"));
    // Cursors cover every id, shown or not, so the next round starts after them.
    assert_eq!(community.cursor, n as u64);
}

#[test]
fn each_batch_is_signed_audited_on_both_sides_and_the_cursor_moves_only_on_the_next_ask() {
    let mut sp = SubPair::new(Backlog::default());
    let sub = sp.subscribe(vec![]);
    // Nothing yet: the round ends without a batch.
    assert_eq!(sp.round(CENTRE, &sub, JAN_2030), End::Over);
    assert!(sp.provider_log.is_empty());
    sp.publish(&rows(3), JAN_2030);
    assert_eq!(sp.round(CENTRE, &sub, JAN_2030), End::Over);
    let (p, s) = (&sp.provider_log[0], &sp.subscriber_log[0]);
    assert_eq!(p.kind, Some(Kind::TransferEnd));
    assert_eq!((p.records, p.detail.as_deref()), (Some(3), Some("events 1..=3")));
    assert_eq!(p.grant.as_deref(), Some("centre-subscribe"));
    assert_eq!(s.kind, Some(Kind::RequestOut));
    assert_eq!((s.exchange.as_ref(), p.exchange.as_ref()), (Some(&sub.exchange), Some(&sub.exchange)));
    assert_eq!(s.content_digest, p.content_digest);
    assert_eq!(s.provider_entry, Some(0));
    assert!(s.signature.is_some());
    // The provider learns of the acknowledgement when the subscriber asks again.
    assert_eq!(sp.events.acked(&sub.exchange).unwrap(), Some(0));
    assert_eq!(sp.round(CENTRE, &sub, JAN_2030), End::Over);
    assert_eq!(sp.events.acked(&sub.exchange).unwrap(), Some(3));
}

#[test]
fn a_subscriber_killed_before_or_after_storing_gets_every_event_once() {
    let mut sp = SubPair::new(Backlog::default());
    let sub = sp.subscribe(vec![]);
    sp.publish(&rows(600), JAN_2030);
    // Killed before storing its second batch: the first is kept, the second asked again.
    sp.faults.killed_before_store = Some(2);
    assert_eq!(sp.round(CENTRE, &sub, JAN_2030), End::Killed);
    assert_eq!(sp.store.get(&sub.exchange).unwrap().cursor, MAX_BATCH as u64);
    sp.faults.killed_before_store = None;
    // Killed right after storing: the provider has not heard the ack, sends from the stored
    // cursor anyway, because the cursor is what the next round asks from.
    sp.faults.killed_after_store = Some(1);
    assert_eq!(sp.round(CENTRE, &sub, JAN_2030), End::Killed);
    sp.faults.killed_after_store = None;
    assert_eq!(sp.round(CENTRE, &sub, JAN_2030), End::Over);
    assert_eq!(sp.app_ids(&sub), (1..=600).collect::<Vec<u64>>());
}

#[test]
fn a_redelivered_batch_is_stored_once() {
    let mut sp = SubPair::new(Backlog::default());
    let sub = sp.subscribe(vec![]);
    sp.publish(&rows(3), JAN_2030);
    assert_eq!(sp.round(CENTRE, &sub, JAN_2030), End::Over);
    // The same batch again, as a provider that never heard the ack would send it.
    let b = super::subscription::VerifiedBatch {
        span: super::subscription::Span { first: 1, last: 3, gap: None },
        fields: vec![],
        events: vec![],
        receipt: Entry::default(),
    };
    assert!(!sp.store.store_batch(&sub.exchange, &b).unwrap());
    assert_eq!(sp.app_ids(&sub), [1, 2, 3]);
}

#[test]
fn an_expired_grant_stops_delivery_at_the_next_round_and_both_sides_audit_it() {
    let mut sp = SubPair::new(Backlog::default());
    let sub = sp.subscribe(vec![]);
    sp.publish(&rows(3), JAN_2030);
    assert_eq!(sp.round(COMMUNITY, &sub, JAN_2030), End::Over);
    sp.publish(&rows(3), JUL_2030);
    assert_eq!(sp.round(COMMUNITY, &sub, JUL_2030), End::Refused(ErrorCode::Denied, true));
    let held = sp.store.get(&sub.exchange).unwrap();
    assert_eq!((held.state, held.cursor), (SubState::Stopped, 3));
    let deny = sp.provider_log.last().unwrap();
    assert_eq!((deny.kind, deny.exchange.as_ref()), (Some(Kind::Deny), Some(&sub.exchange)));
    assert_eq!(sp.subscriber_log.last().unwrap().decision.as_deref(), Some("stopped"));
    // A grant without subscribe (police may only read) never starts one.
    let police = sp.subscribe(vec![]);
    assert_eq!(sp.round("police@wuxi.liangxi", &police, JAN_2030), End::Refused(ErrorCode::Denied, true));
}

#[test]
fn a_subscriber_behind_the_backlog_is_told_the_missing_range() {
    let mut sp = SubPair::new(Backlog { max_age_secs: 86_400, max_count: 5 });
    let sub = sp.subscribe(vec![]);
    sp.publish(&rows(12), JAN_2030);
    assert_eq!(sp.round(CENTRE, &sub, JAN_2030), End::Over);
    let items = sp.store.items(&sub.exchange, 0, 100).unwrap();
    assert_eq!(items[0].json, serde_json::json!({"@id": 1, "@gap": {"from": 1, "to": 7}}));
    assert_eq!(items[1..].iter().map(|i| i.id).collect::<Vec<_>>(), [8, 9, 10, 11, 12]);
    assert!(sp.provider_log[0].detail.as_deref().unwrap().ends_with("gap 1..=7"));
}

#[test]
fn a_tampered_batch_is_never_stored() {
    let mut sp = SubPair::new(Backlog::default());
    let sub = sp.subscribe(vec![]);
    sp.publish(&rows(3), JAN_2030);
    sp.faults.tamper = Some(Box::new(|m| match m {
        Message::Events { first, last, gap, fields, mut events } => {
            events.pop();
            Message::Events { first, last, gap, fields, events }
        }
        other => other,
    }));
    assert!(
        matches!(sp.round(CENTRE, &sub, JAN_2030), End::Broken(w) if w.contains("trailer says 3 events"))
    );
    sp.faults.tamper = Some(Box::new(|m| match m {
        Message::EventsTrailer { count, digest, audit_seq, witness, .. } => {
            Message::EventsTrailer { count, digest, signature: "00".repeat(64), audit_seq, witness }
        }
        other => other,
    }));
    assert!(matches!(sp.round(CENTRE, &sub, JAN_2030), End::Broken(w) if w.contains("signature")));
    assert!(sp.app_ids(&sub).is_empty());
    assert_eq!(sp.store.get(&sub.exchange).unwrap().cursor, 0);
}

#[test]
fn quotas_count_events_and_rounds_are_bounded() {
    let mut sp = SubPair::new(Backlog::default());
    // The community's quota is 25 events a day; a third of the rows are its own.
    let sub = sp.subscribe(vec![]);
    sp.publish(&rows(120), JAN_2030);
    assert_eq!(sp.round(COMMUNITY, &sub, JAN_2030), End::Over);
    assert_eq!(sp.app_ids(&sub).len(), 25);
    assert_eq!(sp.round(COMMUNITY, &sub, JAN_2030), End::Refused(ErrorCode::QuotaExceeded, false));
    assert_eq!(sp.store.get(&sub.exchange).unwrap().state, SubState::Active);
    // A round carries at most ROUND_BATCHES batches; the rest waits for the next ask.
    let centre = sp.subscribe(vec![]);
    sp.publish(&rows(ROUND_BATCHES * MAX_BATCH + 10), JAN_2030);
    assert_eq!(sp.round(CENTRE, &centre, JAN_2030), End::Over);
    assert_eq!(sp.store.get(&centre.exchange).unwrap().cursor, (ROUND_BATCHES * MAX_BATCH) as u64);
    assert_eq!(sp.round(CENTRE, &centre, JAN_2030), End::Over);
    assert_eq!(sp.app_ids(&centre).len(), 120 + ROUND_BATCHES * MAX_BATCH + 10);
}

#[test]
fn filters_apply_to_events_and_only_on_fields_seen_in_clear() {
    let mut sp = SubPair::new(Backlog::default());
    let sub = sp.subscribe(vec![("kind".into(), "赡养".into())]);
    sp.publish(&rows(9), JAN_2030);
    assert_eq!(sp.round(CENTRE, &sub, JAN_2030), End::Over);
    let items = sp.store.items(&sub.exchange, 0, 100).unwrap();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|i| i.json["kind"] == "赡养"));
    let masked = sp.subscribe(vec![("party_id".into(), "11010519491231002X".into())]);
    assert_eq!(sp.round(COMMUNITY, &masked, JAN_2030), End::Refused(ErrorCode::BadFilter, true));
}

#[test]
fn a_grant_revoked_mid_round_stops_the_next_batch() {
    let mut sp = SubPair::new(Backlog::default());
    let sub = sp.subscribe(vec![]);
    sp.publish(&rows(600), JAN_2030);
    // The steward withdraws the centre's grant while the first batch is on its way.
    let without_centre = &GRANTS[GRANTS.find("[[grant]]\nid = \"community").unwrap()..];
    sp.rules_changed_at_read = Some((1, without_centre));
    assert_eq!(sp.round(CENTRE, &sub, JAN_2030), End::Refused(ErrorCode::Denied, true));
    // One batch went out under the grant; nothing after the withdrawal.
    assert_eq!(sp.app_ids(&sub).len(), MAX_BATCH);
    let kinds: Vec<_> = sp.provider_log.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [Some(Kind::TransferEnd), Some(Kind::Deny)]);
    assert_eq!(sp.provider_log[1].grant, None);
}

#[test]
fn every_batch_is_witnessed_and_a_tampered_or_missing_witness_fails_the_batch() {
    let mut sp = SubPair::new(Backlog::default());
    let sub = sp.subscribe(vec![]);
    sp.publish(&rows(3), JAN_2030);
    // A witness for another entry of the provider's log (its proof is genuine, for the wrong
    // entry), one whose proof is bent, and none at all: each fails the batch, nothing stored.
    type Tamper = fn(Box<fedgate_audit::Witness>) -> Option<Box<fedgate_audit::Witness>>;
    let tampers: [(Tamper, &str); 3] = [
        (
            |mut w| {
                w.entry += 1;
                Some(w)
            },
            "witness does not verify",
        ),
        (
            |mut w| {
                w.leaf = "00".repeat(32);
                Some(w)
            },
            "witness does not verify",
        ),
        (|_| None, "witness is missing"),
    ];
    for (tamper, want) in tampers {
        sp.faults.tamper = Some(Box::new(move |m| match m {
            Message::EventsTrailer { count, digest, signature, audit_seq, witness } => {
                Message::EventsTrailer {
                    count,
                    digest,
                    signature,
                    audit_seq,
                    witness: witness.and_then(tamper),
                }
            }
            other => other,
        }));
        let end = sp.round(CENTRE, &sub, JAN_2030);
        assert!(matches!(&end, End::Broken(w) if w.contains(want)), "{want}: {end:?}");
        assert!(sp.app_ids(&sub).is_empty());
    }
    // Untouched, the batch arrives and its receipt keeps the witness, which proves the
    // provider's entry recording the batch.
    sp.faults.tamper = None;
    assert_eq!(sp.round(CENTRE, &sub, JAN_2030), End::Over);
    assert_eq!(sp.app_ids(&sub), [1, 2, 3]);
    let receipt = sp.subscriber_log.last().unwrap();
    let w = receipt.witness.as_ref().expect("the receipt keeps the witness");
    assert_eq!(Some(w.entry), receipt.provider_entry);
    let proved = &sp.provider_log[w.entry as usize];
    assert_eq!(proved.detail.as_deref(), Some("events 1..=3"));
    assert_eq!(proved.content_digest, receipt.content_digest);
    w.check(sp.audit_key.as_deref().unwrap(), Some(w.entry)).unwrap();
    // A provider that announced no audit key (older): witnesses are neither required nor kept.
    sp.audit_key = None;
    sp.publish(&rows(1), JAN_2030);
    assert_eq!(sp.round(CENTRE, &sub, JAN_2030), End::Over);
    assert_eq!(sp.subscriber_log.last().unwrap().witness, None);
}
