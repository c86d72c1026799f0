//! The pair harness: a provider session driven against a consumer session in memory, on
//! virtual time, with a real SQLite source, real certificates and real signatures, and faults
//! injected where the drivers would meet the world (the source, the audit log, the signer, the
//! stream). As quinn-proto's `Pair`: no sockets, no tasks, deterministic.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedgate_catalog::{Catalog, NodeId, Record, Value};
use fedgate_certs::authority::{Authority, NodeProfile};
use fedgate_certs::sign::NodeSigner;
use fedgate_certs::{Role, TrustStore, VerifiedPeer};
use fedgate_policy::{parse_grants, Policy};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, UnixTime};

use super::{
    ConsumerEvent, ConsumerSession, Deadlines, ExchangeError, Outcome, ProviderAction, ProviderContext,
    ProviderSession, Query, QuotaLedger, TransferSummary,
};
use crate::config::{Pos, SourceConfig, SourceKind};
use crate::source::{self, SourceError};
use crate::sources::SourceGate;
use crate::wire::{self, Message};
use fedgate_audit::{Entry, Kind};

pub(crate) const CATALOG: &str = include_str!("../../../testdata/family.catalog.toml");

/// Grants that show every outcome: clear (the centre), masked (police), masked and quota-bound
/// (a community).
pub(crate) const GRANTS: &str = include_str!("../../../testdata/family.grants.toml");

pub(crate) const PROVIDER: &str = "womens-federation@wuxi";
pub(crate) const CENTRE: &str = "mediation-center@wuxi";
pub(crate) const COMMUNITY: &str = "mediation@wuxi.liangxi.chongan.guangrui";

const REGIONS: &[&str] =
    &["wuxi.liangxi.chongan.guangrui", "wuxi.liangxi.chongan.huangnichao", "wuxi.xinwu.meicun.taibo"];

/// Source rows, deterministic, with PII in every sensitive column.
pub(crate) fn rows(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let t = |s: String| Value::Text(s);
            vec![
                t(format!("C{i:06}")),
                t(REGIONS[i % REGIONS.len()].to_owned()),
                t(format!("欧阳{}", ["娜娜", "修", "明"][i % 3])),
                t("11010519491231002X".to_owned()),
                t(format!("139{i:08}")),
                t(format!("当事人电话139{i:08}，请回访。")),
                Value::Int(20 + (i % 50) as i64),
                t(["婚姻", "赡养", "抚养"][i % 3].to_owned()),
            ]
        })
        .collect()
}

fn write_db(path: &Path, rows: &[Record]) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE cases (case_id TEXT PRIMARY KEY, region TEXT, party_name TEXT, party_id TEXT, mobile TEXT, notes TEXT, age INTEGER, kind TEXT);",
    )
    .unwrap();
    let tx = conn.transaction().unwrap();
    for r in rows {
        let vals: Vec<rusqlite::types::Value> = r
            .iter()
            .map(|v| match v {
                Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
                Value::Int(i) => rusqlite::types::Value::Integer(*i),
                _ => rusqlite::types::Value::Null,
            })
            .collect();
        tx.execute(
            "INSERT INTO cases VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params_from_iter(vals),
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// A fault at one of the places a driver meets the world.
#[derive(Default)]
pub(crate) struct Faults {
    /// The source fails with this error after yielding this many batches.
    pub(crate) source_fails_after: Option<(usize, SourceError)>,
    /// The provider's audit append number `n` (0-based) fails.
    pub(crate) append_fails: Option<usize>,
    /// Signing fails.
    pub(crate) sign_fails: bool,
    /// Writing the provider's frame number `n` (0-based) fails: the consumer went away.
    pub(crate) consumer_gone_at: Option<usize>,
    /// The provider goes silent (writes nothing more, never finishes) after this many frames.
    pub(crate) silent_after: Option<usize>,
    /// The stream ends (finished) after this many frames, whatever the provider had left.
    pub(crate) cut_after: Option<usize>,
    /// Rewrites the provider's frames on the way (an attacker or a bug between the two).
    pub(crate) tamper: Option<Box<dyn FnMut(Message) -> Message>>,
}

/// What one exchange did on both sides.
pub(crate) struct Run {
    /// What the consumer ended with.
    pub(crate) result: Result<TransferSummary, ExchangeError>,
    /// The records the consumer received, in order.
    pub(crate) records: Vec<Record>,
    /// The header's fields (empty if none arrived).
    pub(crate) fields: Vec<String>,
    /// The provider's outcome.
    pub(crate) outcome: Outcome,
    /// The provider's audit entries, in order, `seq` set.
    pub(crate) provider_log: Vec<Entry>,
    /// The consumer's receipt.
    pub(crate) receipt: Entry,
    /// The provider's actions in order, by kind (`read`, `append`, `send:<kind>`, `sign`, …).
    pub(crate) trace: Vec<String>,
    /// Virtual time from start to end.
    pub(crate) elapsed: Duration,
    /// The frame bodies the consumer received, in order.
    pub(crate) frames: Vec<Vec<u8>>,
}

/// A provider node and a consumer node, in memory.
pub(crate) struct Pair {
    _dir: tempfile::TempDir,
    pub(crate) db: PathBuf,
    pub(crate) provider: NodeId,
    pub(crate) consumer: NodeId,
    catalog: Catalog,
    policy: Policy,
    sources: Vec<SourceConfig>,
    pub(crate) gate: SourceGate,
    pub(crate) quotas: Arc<QuotaLedger>,
    pub(crate) marks: crate::governance::objection::Marks,
    signer: NodeSigner,
    /// The provider as the consumer verified it from its certificate.
    provider_peer: VerifiedPeer,
    pub(crate) deadlines: Deadlines,
    pub(crate) faults: Faults,
    /// Unix time the provider decides at.
    pub(crate) unix_now: i64,
    provider_log: Vec<Entry>,
    /// The provider's audit checkpoint key and its tree (leaves: each entry's JSON, as a
    /// stand-in for the sealed entry), for the witnesses its answers carry.
    audit_signer: ring::signature::Ed25519KeyPair,
    tree: fedgate_audit::merkle::CompactRange,
    /// The provider's audit key as the consumer learnt it from the welcome.
    pub(crate) audit_key: Option<Arc<(String, Vec<u8>)>>,
    /// The consumer's memo of verified checkpoints, as its connection keeps one.
    pub(crate) notes: Option<Arc<fedgate_audit::checkpoint::NoteMemo>>,
}

impl Pair {
    /// A women's federation provider with `n` source rows and a consumer `consumer`.
    pub(crate) fn new(consumer: &str, n: usize) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wf.db");
        write_db(&db, &rows(n));
        let catalog = fedgate_catalog::parse("family.catalog.toml", CATALOG).unwrap();
        let known: Vec<&str> = catalog.datasets().iter().map(|d| d.id.as_str()).collect();
        let policy = Policy::new(parse_grants(&[("grants.toml", GRANTS)], Some(&known)).unwrap()).unwrap();
        let sources = vec![SourceConfig {
            dataset: "family-disputes".into(),
            kind: SourceKind::Sqlite(db.clone()),
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
        let audit_signer = audit_key_pair();
        let audit_key = Some(Arc::new((fedgate_audit::origin(&provider), audit_public(&audit_signer))));
        Pair {
            _dir: dir,
            db,
            provider,
            consumer: consumer.parse().unwrap(),
            catalog,
            policy,
            sources,
            gate: SourceGate::default(),
            quotas: Arc::default(),
            marks: Default::default(),
            signer: NodeSigner::new(&key).unwrap(),
            provider_peer,
            deadlines: Deadlines::default(),
            faults: Faults::default(),
            unix_now: now.unix_timestamp(),
            provider_log: Vec::new(),
            audit_signer,
            tree: Default::default(),
            audit_key,
            notes: None,
        }
    }

    /// Appends to the provider's log (or fails as the faults say); with `witnessed`, also the
    /// signed head right after it and its inclusion proof, as the audit log makes them.
    fn append(&mut self, mut e: Entry, n: usize) -> Result<(u64, fedgate_audit::Witness), String> {
        use fedgate_audit::checkpoint::Checkpoint;
        if self.faults.append_fails == Some(n) {
            return Err("disk full".into());
        }
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
        Ok((seq, fedgate_audit::Witness::new(head.sign(&self.audit_signer), seq, &leaf, &path)))
    }

    /// Asks for `dataset` for `purpose`, no filters, no limit.
    pub(crate) fn query(dataset: &str, purpose: &str) -> Query {
        Query::asked(dataset, purpose, vec![], None).unwrap()
    }

    fn context(&self) -> ProviderContext<'_> {
        let mut entry = Entry { actor: self.provider.to_string(), ..Entry::default() };
        entry.policy_digest = Some(self.policy.digest().to_owned());
        ProviderContext {
            local: &self.provider,
            catalog: &self.catalog,
            policy: &self.policy,
            sources: &self.sources,
            gate: &self.gate,
            masking_secret: b"pair harness masking secret",
            quotas: &self.quotas,
            marks: &self.marks,
            entry,
        }
    }

    /// The whole source read, as the SQLite reader yields it, with the fault applied.
    fn read(&mut self, r: &super::SourceRead) -> VecDeque<Result<Vec<Record>, SourceError>> {
        let SourceKind::Sqlite(path) = &r.kind else { panic!("the pair harness reads SQLite") };
        let mut batches = VecDeque::new();
        let read = source::read_sqlite_with(path, &r.query, &r.transform(), &mut |b| {
            batches.push_back(Ok(b));
            true
        });
        if let Err(e) = read {
            batches.push_back(Err(e));
        }
        if let Some((after, e)) = self.faults.source_fails_after.clone() {
            batches.truncate(after);
            batches.push_back(Err(e));
        }
        batches
    }

    /// Runs one exchange to its end on both sides (bounded: a session that never ends fails
    /// the test).
    pub(crate) fn run(&mut self, query: Query) -> Run {
        let start = Instant::now();
        let mut now = start;
        // As the QUIC driver does: the asker's id if it sent one.
        let exchange =
            query.exchange.clone().unwrap_or_else(|| format!("{:032x}", self.provider_log.len() + 1));
        let ctx = self.context();
        let mut p = ProviderSession::new(&ctx, &self.consumer, query.clone(), exchange, self.unix_now);
        let mut c = ConsumerSession::new(
            self.provider_peer.clone(),
            self.consumer.clone(),
            query,
            self.deadlines,
            now,
        )
        .with_audit_key(self.audit_key.clone());
        if let Some(memo) = &self.notes {
            c = c.with_note_memo(memo.clone());
        }
        let mut received = Vec::new();
        let mut wire_frames: VecDeque<Vec<u8>> = VecDeque::new();
        let mut source: VecDeque<Result<Vec<Record>, SourceError>> = VecDeque::new();
        let (mut trace, mut records, mut appends, mut sent) = (Vec::new(), Vec::new(), 0, 0);
        let mut finished = false;
        let mut result = None;
        // The request crossing: the provider decodes what the consumer encoded.
        let req = c.request();
        assert_eq!(wire::decode(&req).unwrap(), query_message(p.query()));
        for _ in 0..100_000 {
            while let Some(a) = p.poll_action() {
                match a {
                    ProviderAction::Read(r) => {
                        trace.push("read".to_owned());
                        source = self.read(&r);
                    }
                    ProviderAction::StopRead => {
                        trace.push("stop-read".to_owned());
                        source.clear();
                    }
                    ProviderAction::Append(e) => {
                        trace.push(format!("append:{}", e.kind.map_or("?", Kind::as_str)));
                        appends += 1;
                        p.handle_appended(self.append(*e, appends - 1).map(|(seq, _)| seq));
                    }
                    ProviderAction::AppendWitnessed(e) => {
                        trace.push(format!("append:{}", e.kind.map_or("?", Kind::as_str)));
                        appends += 1;
                        p.handle_witnessed(self.append(*e, appends - 1));
                    }
                    ProviderAction::Send(frame) => {
                        let kind = wire::decode(&frame).map(|m| m.kind()).unwrap_or("?");
                        trace.push(format!("send:{kind}"));
                        let n = sent;
                        sent += 1;
                        if self.faults.consumer_gone_at == Some(n) {
                            p.handle_send_failed("connection lost".into());
                            finished = true;
                        } else if self.faults.silent_after.is_none_or(|k| n < k)
                            && self.faults.cut_after.is_none_or(|k| n < k)
                        {
                            wire_frames.push_back(self.tampered(frame));
                        } else if self.faults.cut_after.is_some() {
                            finished = true;
                        }
                    }
                    ProviderAction::Sign(msg) => {
                        trace.push("sign".to_owned());
                        let signed = if self.faults.sign_fails {
                            Err("the key file went away".into())
                        } else {
                            self.signer.sign(&msg).map_err(|e| e.to_string())
                        };
                        p.handle_signed(signed);
                    }
                    ProviderAction::Finish => {
                        trace.push("finish".to_owned());
                        if self.faults.silent_after.is_none() {
                            finished = true;
                        }
                    }
                }
            }
            // The consumer gets what crossed, one frame per step of virtual time.
            while let Some(frame) = wire_frames.pop_front() {
                now += Duration::from_millis(1);
                let (len, body) = frame.split_at(4);
                assert_eq!(u32::from_be_bytes(len.try_into().unwrap()) as usize, body.len());
                c.handle_ready(now);
                c.handle_frame(now, body);
                received.push(body.to_vec());
            }
            if finished && !c.is_over() {
                c.handle_end();
            }
            while let Some(ev) = c.poll_event() {
                match ev {
                    ConsumerEvent::Records(r) => records.extend(r),
                    ConsumerEvent::Done(s) => result = Some(Ok(s)),
                    ConsumerEvent::Failed(e) => result = Some(Err(e)),
                    ConsumerEvent::Header => {}
                }
            }
            // The provider runs to its own end, whatever became of the stream.
            if p.wants_source() {
                now += Duration::from_millis(1);
                p.handle_source(source.pop_front());
                continue;
            }
            assert!(p.is_done(), "the provider waits for nothing yet is not done: {trace:?}");
            if let Some(result) = result.take() {
                // Each run starts a fresh provider log, its tree included.
                self.tree = Default::default();
                return Run {
                    result,
                    records,
                    fields: c.fields().to_vec(),
                    outcome: p.outcome().cloned().expect("the provider session ended without an outcome"),
                    provider_log: std::mem::take(&mut self.provider_log),
                    receipt: c.receipt(Entry { actor: self.consumer.to_string(), ..Entry::default() }),
                    trace,
                    elapsed: now - start,
                    frames: received,
                };
            }
            // Nothing moves: jump virtual time to the consumer's next deadline.
            match c.poll_timeout() {
                Some(at) => {
                    now = now.max(at);
                    c.handle_timeout(now);
                }
                None => panic!("both sessions are stuck: {trace:?}"),
            }
        }
        panic!("the exchange did not end within the step bound: {trace:?}");
    }

    fn tampered(&mut self, frame: Vec<u8>) -> Vec<u8> {
        let Some(tamper) = self.faults.tamper.as_mut() else { return frame };
        let m = wire::decode(&frame).unwrap();
        wire::encode(&tamper(m))
    }
}

pub(crate) fn audit_key_pair() -> ring::signature::Ed25519KeyPair {
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

pub(crate) fn audit_public(k: &ring::signature::Ed25519KeyPair) -> Vec<u8> {
    ring::signature::KeyPair::public_key(k).as_ref().to_vec()
}

fn query_message(q: &Query) -> Message {
    Message::Query {
        dataset: q.dataset.clone(),
        purpose: q.purpose.clone(),
        filters: q.filters.clone(),
        limit: q.limit,
        exchange: q.exchange.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ErrorCode, Truncation};
    use fedgate_audit::checkpoint::NoteMemo;

    fn filtered(dataset: &str, purpose: &str, filters: &[(&str, &str)], limit: Option<u64>) -> Query {
        let filters = filters.iter().map(|(f, v)| (f.to_string(), v.to_string())).collect();
        Query::asked(dataset, purpose, filters, limit).unwrap()
    }

    fn family() -> Query {
        Pair::query("family-disputes", "dispute-mediation")
    }

    fn remote_code(r: &Run) -> ErrorCode {
        match &r.result {
            Err(ExchangeError::Remote { code, .. }) => *code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn incomplete(r: &Run) -> String {
        match &r.result {
            Err(e @ ExchangeError::Incomplete { .. }) => e.to_string(),
            other => panic!("expected an incomplete transfer, got {other:?}"),
        }
    }

    fn bad_trailer(r: &Run) -> String {
        match &r.result {
            Err(e @ ExchangeError::BadTrailer { .. }) => e.to_string(),
            other => panic!("expected a failed verification, got {other:?}"),
        }
    }

    #[test]
    fn a_whole_result_arrives_verified_and_both_sides_record_the_same_exchange() {
        let mut pair = Pair::new(CENTRE, 600);
        let r = pair.run(family());
        let s = r.result.as_ref().unwrap();
        assert_eq!(r.records, rows(600));
        assert_eq!((s.count, s.truncated), (600, None));
        let [decided, ended] = &r.provider_log[..] else { panic!("{:?}", r.provider_log) };
        assert_eq!((decided.kind, decided.decision.as_deref()), (Some(Kind::RequestIn), Some("allow")));
        assert_eq!((ended.kind, ended.decision.as_deref()), (Some(Kind::TransferEnd), Some("sent")));
        assert_eq!(decided.exchange, ended.exchange);
        assert!(decided.exchange.is_some());
        // The trailer cites the provider's outcome entry; the receipt carries what was verified.
        assert_eq!(s.audit_seq, Some(ended.seq));
        assert_eq!(ended.content_digest.as_ref(), Some(&s.digest));
        assert_eq!(r.receipt.decision.as_deref(), Some("received"));
        assert_eq!(r.receipt.content_digest.as_ref(), Some(&s.digest));
        assert_eq!(r.receipt.records, Some(600));
        // One id for the exchange on both sides, chosen by the consumer; structured fields.
        assert_eq!(r.receipt.exchange, decided.exchange);
        assert_eq!(decided.exchange, family_exchange(&r));
        assert_eq!(r.receipt.provider_entry, Some(ended.seq));
        assert_eq!(r.receipt.signature.as_ref(), Some(&s.signature));
        assert!(
            decided.grant.is_some() && decided.clearance.is_some() && decided.rows.is_some(),
            "{decided:?}"
        );
        assert_eq!(ended.grant, decided.grant);
    }

    #[test]
    fn records_under_an_open_objection_carry_the_marker_and_only_they() {
        use crate::governance::objection::{field_json, Mark, MARKER_FIELD};
        let mut pair = Pair::new(CENTRE, 6);
        let r = pair.run(family());
        assert_eq!(r.fields.last().map(String::as_str), Some("kind"), "no open objection: no column");
        let id = "a".repeat(32);
        pair.marks.add(
            "family-disputes",
            "C000001",
            Mark { id: id.clone(), field: "mobile".into(), received: 1 },
        );
        let r = pair.run(family());
        assert!(r.result.is_ok(), "{:?}", r.result);
        assert_eq!(r.fields.last().map(String::as_str), Some(MARKER_FIELD));
        assert_eq!(r.records.len(), 6);
        for rec in &r.records {
            let marker = field_json(MARKER_FIELD, rec.last().unwrap());
            if rec[0] == Value::Text("C000001".into()) {
                assert_eq!(marker["id"], id.as_str());
                assert_eq!(
                    (marker["field"].as_str(), marker["status"].as_str()),
                    (Some("mobile"), Some("open"))
                );
            } else {
                assert!(marker.is_null(), "{rec:?}");
            }
            assert_eq!(rec.len(), r.fields.len());
        }
        pair.marks.remove("family-disputes", "C000001", &id);
        assert_eq!(pair.run(family()).fields.last().map(String::as_str), Some("kind"), "decided: gone");
    }

    #[test]
    fn only_a_record_the_objector_may_receive_can_be_objected_to() {
        use crate::exchange::objection::decide_record;
        use crate::governance::objection::Objection;
        let pair = Pair::new(CENTRE, 6);
        let objection = |consumer: &str, key: &str| Objection {
            exchange: "b".repeat(32),
            consumer: consumer.parse().unwrap(),
            provider: PROVIDER.parse().unwrap(),
            dataset: "family-disputes".into(),
            purpose: "dispute-mediation".into(),
            key: key.into(),
            field: "mobile".into(),
            reason: "wrong".into(),
            proposed: None,
        };
        let found = |consumer: &str, key: &str| {
            let o = objection(consumer, key);
            let read = decide_record(&pair.context(), &o.consumer, &o, key, pair.unix_now)?;
            let mut got = Vec::new();
            crate::source::read_sqlite_with(&pair.db, &read.query, &read.transform(), &mut |b| {
                got.extend(b);
                true
            })
            .unwrap();
            Ok::<_, super::super::provider::Refusal>(got)
        };
        // The centre sees every row: its record is found, as the source holds it.
        let got = found(CENTRE, "C000001").unwrap();
        assert_eq!(got, rows(6)[1..2]);
        // The community sees only its own region: a record elsewhere is not found for it.
        assert_eq!(found(COMMUNITY, "C000000").unwrap().len(), 1);
        assert!(found(COMMUNITY, "C000002").unwrap().is_empty());
        // No grant at all: refused as a query would be.
        let refused = found("court@wuxi.xinwu", "C000001").unwrap_err();
        assert_eq!(refused.0, ErrorCode::Denied);
    }

    fn family_exchange(r: &Run) -> Option<String> {
        r.receipt.exchange.clone().filter(|x| super::super::valid_exchange_id(x))
    }

    #[test]
    fn refusals_carry_the_consumers_exchange_id_and_code_on_both_sides() {
        let mut pair = Pair::new(CENTRE, 10);
        let q = Pair::query("family-disputes", "statistics");
        let id = q.exchange.clone();
        let r = pair.run(q);
        assert_eq!(remote_code(&r), ErrorCode::Denied);
        let [denied] = &r.provider_log[..] else { panic!("{:?}", r.provider_log) };
        assert_eq!(denied.kind, Some(Kind::Deny));
        assert_eq!(denied.exchange, id);
        assert_eq!(denied.code.as_deref(), Some("denied"));
        assert_eq!(r.receipt.exchange, id);
        assert_eq!(r.receipt.code.as_deref(), Some("denied"));
        assert_eq!(r.receipt.decision.as_deref(), Some("refused"));
        // A malformed id is refused as a bad request, before any decision.
        let mut bad = family();
        bad.exchange = Some("NOT-HEX".into());
        let r = pair.run(bad);
        assert_eq!(remote_code(&r), ErrorCode::BadRequest);
    }

    #[test]
    fn an_asker_without_an_exchange_id_still_verifies_and_gets_one_in_the_provider_log() {
        let mut pair = Pair::new(CENTRE, 5);
        let q = family();
        let v1 = Query { exchange: None, ..q };
        let r = pair.run(v1);
        assert!(r.result.is_ok(), "an asker without an id still verifies the v1 summary");
        assert!(r
            .provider_log
            .iter()
            .all(|e| e.exchange.as_deref().is_some_and(super::super::valid_exchange_id)));
    }

    #[test]
    fn nothing_leaves_before_the_decision_is_durable_and_the_trailer_waits_for_the_outcome() {
        let mut pair = Pair::new(CENTRE, 300);
        let r = pair.run(family());
        assert!(r.result.is_ok());
        let t: Vec<&str> = r.trace.iter().map(String::as_str).collect();
        // The read starts first (overlapping the fsync), but the header waits for the append.
        assert_eq!(t[..3], ["read", "append:request-in", "send:header"]);
        let end = t.iter().position(|a| *a == "append:transfer-end").unwrap();
        assert_eq!(t[end..], ["append:transfer-end", "sign", "send:trailer", "finish"]);
        assert!(t[3..end].iter().all(|a| *a == "send:batch"), "{t:?}");
    }

    #[test]
    fn rows_and_fields_follow_the_grant() {
        let mut pair = Pair::new(COMMUNITY, 90);
        let r = pair.run(filtered("family-disputes", "dispute-mediation", &[], Some(1000)));
        assert!(r.result.is_ok(), "{:?}", r.result);
        assert_eq!(
            r.fields,
            ["case_id", "region", "party_name", "party_id", "mobile", "notes", "age", "kind"]
        );
        assert!(!r.records.is_empty());
        for rec in &r.records {
            assert_eq!(rec[1], Value::Text(COMMUNITY.split_once('@').unwrap().1.into()));
            // Clearance 3: the grade-4 resident id never leaves in clear.
            assert_eq!(rec[3], Value::Text("110***********002X".into()));
        }
    }

    #[test]
    fn denials_unknown_datasets_and_bad_filters_are_refusals_with_their_code_and_an_entry() {
        let mut pair = Pair::new("court@wuxi.xinwu", 10);
        let r = pair.run(family());
        assert_eq!(remote_code(&r), ErrorCode::Denied);
        assert!(r.result.as_ref().unwrap_err().to_string().contains("no grant allows court@wuxi.xinwu"));
        assert_eq!(r.trace, ["append:deny", "send:error", "finish"]);
        assert_eq!(r.provider_log[0].decision.as_deref(), Some("deny"));
        assert_eq!(r.receipt.decision.as_deref(), Some("refused"));
        assert_eq!(r.outcome.metric_code(), Some("denied"));

        // Sharing type none: not admitted to exist, even to the fully cleared centre.
        let mut pair = Pair::new(CENTRE, 10);
        let r = pair.run(Pair::query("shelters", "dispute-mediation"));
        assert_eq!(remote_code(&r), ErrorCode::UnknownDataset);
        // ... but the provider's auditor sees the probe as what it was: a policy denial.
        assert_eq!(r.trace, ["append:deny", "send:error", "finish"]);
        assert_eq!(r.provider_log[0].decision.as_deref(), Some("deny"));

        // Filters: on a clear field they narrow; on a masked or unknown field they are refused.
        let mut pair = Pair::new(COMMUNITY, 90);
        let r = pair.run(filtered("family-disputes", "dispute-mediation", &[("kind", "婚姻")], None));
        assert!(!r.records.is_empty() && r.records.iter().all(|x| x[7] == Value::Text("婚姻".into())));
        let r = pair.run(filtered(
            "family-disputes",
            "dispute-mediation",
            &[("party_id", "11010519491231002X")],
            None,
        ));
        assert_eq!(remote_code(&r), ErrorCode::BadFilter);
        let r = pair.run(filtered("family-disputes", "dispute-mediation", &[("nope", "1")], None));
        assert!(r.result.as_ref().unwrap_err().to_string().contains("has no field `nope`"));
        let r = pair.run(filtered("family-disputes", "dispute-mediation", &[("age", "old")], None));
        assert_eq!(remote_code(&r), ErrorCode::BadFilter);
    }

    #[test]
    fn the_consumers_limit_cuts_and_is_signed_but_a_result_that_fits_exactly_is_whole() {
        let mut pair = Pair::new(CENTRE, 40);
        for (limit, want, cut) in [
            (Some(10), 10, Some(Truncation::Limit)),
            (Some(40), 40, None),
            (Some(41), 40, None),
            // The largest limit the wire allows: the probe row must not push LIMIT past i64.
            (Some(i64::MAX as u64), 40, None),
            (Some(u64::MAX), 40, None),
        ] {
            let r = pair.run(filtered("family-disputes", "dispute-mediation", &[], limit));
            let s = r.result.as_ref().unwrap();
            assert_eq!((r.records.len(), s.count, s.truncated), (want, want as u64, cut), "limit {limit:?}");
            let end = r.provider_log.last().unwrap();
            assert_eq!(end.truncated, cut.map(|t| t.as_str().to_owned()));
        }
    }

    #[test]
    fn a_quota_cuts_the_result_short_signs_it_and_then_refuses() {
        let mut pair = Pair::new(COMMUNITY, 300);
        let r = pair.run(filtered("family-disputes", "dispute-mediation", &[], Some(15)));
        assert_eq!(r.records.len(), 15);
        assert_eq!(r.result.as_ref().unwrap().truncated, Some(Truncation::Limit));
        let r = pair.run(family());
        let s = r.result.as_ref().unwrap();
        assert_eq!((s.count, s.truncated), (10, Some(Truncation::Quota)));
        assert_eq!(r.receipt.decision.as_deref(), Some("received, truncated by quota"));
        assert_eq!(r.provider_log.last().unwrap().decision.as_deref(), Some("sent, truncated by quota"));
        let r = pair.run(family());
        assert_eq!(remote_code(&r), ErrorCode::QuotaExceeded);
        assert_eq!(r.trace, ["append:request-in", "send:error", "finish"]);
    }

    #[test]
    fn a_quota_reservation_not_sent_is_refunded() {
        // Three community rows match the filter; the reservation was the whole quota of 25.
        let mut pair = Pair::new(COMMUNITY, 9);
        let r = pair.run(family());
        assert_eq!(r.result.as_ref().unwrap().count, 3);
        // A transfer that failed part way pays only for what was sent.
        pair.faults.source_fails_after = Some((0, SourceError::Query("disk on fire".into())));
        let r = pair.run(family());
        assert_eq!(remote_code(&r), ErrorCode::SourceUnavailable);
        pair.faults = Faults::default();
        let day = fedgate_policy::time::cst_day(pair.unix_now);
        assert_eq!(pair.quotas.reserve("community", &pair.consumer, day, 25, None), 22);
    }

    #[test]
    fn a_result_exactly_at_the_quota_is_whole() {
        // 25 of the 75 rows are the community's, and its quota is 25: everything was sent.
        let mut pair = Pair::new(COMMUNITY, 75);
        let r = pair.run(family());
        let s = r.result.as_ref().unwrap();
        assert_eq!((s.count, s.truncated), (25, None));
        assert_eq!(r.receipt.decision.as_deref(), Some("received"));
    }

    #[test]
    fn a_source_failing_before_its_first_batch_is_a_refusal_without_a_header() {
        let mut pair = Pair::new(CENTRE, 10);
        std::fs::rename(&pair.db, pair.db.with_extension("gone")).unwrap();
        let r = pair.run(family());
        assert_eq!(remote_code(&r), ErrorCode::SourceUnavailable);
        let msg = r.result.as_ref().unwrap_err().to_string();
        // The consumer learns that the source failed, not where it lives.
        assert!(msg.contains("cannot read dataset `family-disputes`") && !msg.contains("wf.db"), "{msg}");
        assert!(!r.trace.iter().any(|a| a == "send:header"), "{:?}", r.trace);
        let end = r.provider_log.last().unwrap();
        assert_eq!(end.decision.as_deref(), Some("aborted"));
        assert!(end.detail.as_deref().unwrap().contains("wf.db"), "{end:?}");
        assert!(msg.contains(&format!("provider audit entry {}", end.seq)), "{msg}");
        assert!(matches!(r.outcome, Outcome::SourceFailed { count: 0, .. }));
    }

    #[test]
    fn a_source_failing_mid_stream_is_an_incomplete_transfer_and_an_aborted_entry() {
        let mut pair = Pair::new(CENTRE, 1000);
        pair.faults.source_fails_after = Some((2, SourceError::Query("no such table: cases".into())));
        let r = pair.run(family());
        let msg = incomplete(&r);
        assert!(msg.contains("after 512 records") && msg.contains("SourceUnavailable"), "{msg}");
        assert!(!msg.contains("no such table"), "{msg}");
        let end = r.provider_log.last().unwrap();
        assert_eq!((end.decision.as_deref(), end.records), (Some("aborted"), Some(512)));
        assert_eq!(r.receipt.decision.as_deref(), Some("incomplete"));
        assert_eq!(r.outcome.metric_code(), Some("source-unavailable"));
    }

    #[test]
    fn an_unchecked_source_is_refused_and_only_the_provider_keeps_why() {
        let mut pair = Pair::new(CENTRE, 10);
        pair.gate.reset(&[("family-disputes".into(), "PostgreSQL: connection refused at 10.0.0.9".into())]);
        let r = pair.run(family());
        assert_eq!(remote_code(&r), ErrorCode::SourceUnavailable);
        assert!(!r.result.as_ref().unwrap_err().to_string().contains("10.0.0.9"));
        assert!(r.provider_log[0].detail.as_deref().unwrap().contains("10.0.0.9"));
        assert!(!r.trace.iter().any(|a| a == "read"), "an unchecked source is never read");
    }

    #[test]
    fn a_tampered_batch_fails_the_digest() {
        let mut pair = Pair::new(CENTRE, 300);
        pair.faults.tamper = Some(Box::new(|m| match m {
            Message::Batch { mut records } => {
                records[0][2] = Value::Text("someone else".into());
                Message::Batch { records }
            }
            other => other,
        }));
        let r = pair.run(family());
        assert!(bad_trailer(&r).contains("content digest does not match"), "{:?}", r.result);
        // Told apart from a transfer that merely broke off: the auditor's cue to look for tampering.
        assert_eq!(r.receipt.decision.as_deref(), Some("unverified"));
        // Its code is the one the API and the metrics use for it.
        assert_eq!(r.receipt.code.as_deref(), Some("unverified"));
    }

    #[test]
    fn a_trailer_that_miscounts_or_is_not_the_providers_fails_verification() {
        type Tamper = fn(&mut Message);
        let cases: [(Tamper, &str); 4] = [
            (
                |m| {
                    if let Message::Trailer { count, .. } = m {
                        *count += 1
                    }
                },
                "trailer says 301 records, received 300",
            ),
            (
                |m| {
                    if let Message::Trailer { digest, .. } = m {
                        *digest = "00".repeat(32)
                    }
                },
                "content digest",
            ),
            (
                |m| {
                    if let Message::Trailer { signature, .. } = m {
                        let flipped = if signature.starts_with('0') { "1" } else { "0" };
                        signature.replace_range(..1, flipped);
                    }
                },
                "signature does not verify",
            ),
            // A provider that cut the result cannot pass it off as whole: truncation is signed.
            (
                |m| {
                    if let Message::Trailer { truncated, .. } = m {
                        *truncated = Some(Truncation::Quota)
                    }
                },
                "signature does not verify",
            ),
        ];
        for (tamper, want) in cases {
            let mut pair = Pair::new(CENTRE, 300);
            pair.faults.tamper = Some(Box::new(move |mut m| {
                tamper(&mut m);
                m
            }));
            let r = pair.run(family());
            assert!(bad_trailer(&r).contains(want), "{want}: {:?}", r.result);
        }
    }

    #[test]
    fn a_record_wider_than_the_header_fails_verification() {
        let mut pair = Pair::new(CENTRE, 10);
        pair.faults.tamper = Some(Box::new(|m| match m {
            Message::Batch { mut records } => {
                records[0].push(Value::Int(1));
                Message::Batch { records }
            }
            other => other,
        }));
        let r = pair.run(family());
        assert!(bad_trailer(&r).contains("does not match the header's fields"), "{:?}", r.result);
    }

    #[test]
    fn a_stream_that_ends_without_a_trailer_is_incomplete_never_a_short_success() {
        let mut pair = Pair::new(CENTRE, 1000);
        pair.faults.cut_after = Some(2); // the header and one batch
        let r = pair.run(family());
        assert!(
            incomplete(&r).contains("after 256 records: the stream ended without a trailer"),
            "{:?}",
            r.result
        );
        let mut pair = Pair::new(CENTRE, 10);
        pair.faults.cut_after = Some(0);
        let r = pair.run(family());
        assert!(incomplete(&r).contains("the stream ended before any answer"), "{:?}", r.result);
        assert_eq!(r.receipt.decision.as_deref(), Some("refused"));
    }

    #[test]
    fn a_consumer_gone_mid_stream_ends_the_read_and_is_recorded() {
        let mut pair = Pair::new(CENTRE, 3000);
        pair.faults.consumer_gone_at = Some(2); // after the header and one batch
        let r = pair.run(family());
        assert!(matches!(r.outcome, Outcome::ConsumerGone { count: 256, .. }), "{:?}", r.outcome);
        let end = r.provider_log.last().unwrap();
        assert_eq!(end.decision.as_deref(), Some("aborted"));
        assert!(end.detail.as_deref().unwrap().starts_with("sending failed"), "{end:?}");
        assert_eq!(end.records, Some(r.outcome.count()));
        assert!(r.trace.contains(&"stop-read".to_owned()));
        assert!(!r.trace.iter().any(|a| a == "sign"), "no trailer for a transfer that did not arrive");
    }

    #[test]
    fn an_audit_log_that_cannot_record_the_decision_sends_nothing_and_refunds() {
        let mut pair = Pair::new(COMMUNITY, 30);
        pair.faults.append_fails = Some(0);
        let r = pair.run(family());
        assert_eq!(remote_code(&r), ErrorCode::Internal);
        assert!(!r.trace.iter().any(|a| a == "send:header" || a == "send:batch"), "{:?}", r.trace);
        assert!(matches!(r.outcome, Outcome::NotRecorded { .. }));
        let day = fedgate_policy::time::cst_day(pair.unix_now);
        assert_eq!(pair.quotas.reserve("community", &pair.consumer, day, 25, None), 25);
    }

    #[test]
    fn an_outcome_that_cannot_be_recorded_or_signed_gets_no_trailer() {
        let mut pair = Pair::new(CENTRE, 30);
        pair.faults.append_fails = Some(1);
        let r = pair.run(family());
        assert!(incomplete(&r).contains("could not record this transfer"), "{:?}", r.result);
        assert!(!r.trace.iter().any(|a| a == "sign"));

        let mut pair = Pair::new(CENTRE, 30);
        pair.faults.sign_fails = true;
        let r = pair.run(family());
        let msg = incomplete(&r);
        assert!(msg.contains("could not sign this transfer (provider audit entry 1)"), "{msg}");
        assert!(!msg.contains("key file"), "{msg}");
        assert!(matches!(r.outcome, Outcome::NotSigned { audit_seq: 1, .. }));
    }

    #[test]
    fn a_silent_provider_times_out_at_the_first_answer_or_stalls_mid_stream() {
        let wait = Duration::from_secs(30);
        let mut pair = Pair::new(CENTRE, 1000);
        pair.deadlines = Deadlines { answer_by: Some((Instant::now() + wait, wait)), stall: Some(wait) };
        pair.faults.silent_after = Some(0);
        let r = pair.run(family());
        assert!(matches!(r.result, Err(ExchangeError::TimedOut { .. })), "{:?}", r.result);
        assert!(r
            .result
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("the first answer to the query took longer than 30 s"));

        let mut pair = Pair::new(CENTRE, 1000);
        pair.deadlines = Deadlines { answer_by: None, stall: Some(wait) };
        pair.faults.silent_after = Some(2);
        let r = pair.run(family());
        assert!(incomplete(&r).contains("after 256 records: stalled: no data for 30 s"), "{:?}", r.result);
        // Virtual time: the stall limit counts from the last frame, not from the start.
        assert!(r.elapsed >= wait && r.elapsed < wait + Duration::from_secs(1), "{:?}", r.elapsed);
    }

    #[test]
    fn a_slow_but_moving_transfer_is_never_cut() {
        let mut pair = Pair::new(CENTRE, 3000);
        // Each frame arrives 1 ms after the last in virtual time: far over 5 ms in total.
        pair.deadlines = Deadlines { answer_by: None, stall: Some(Duration::from_millis(5)) };
        let r = pair.run(family());
        assert_eq!(r.result.as_ref().unwrap().count, 3000);
        assert!(r.elapsed > Duration::from_millis(5));
    }
    /// The witness a frame carries, to tamper with.
    fn witness_of(m: &mut Message) -> Option<&mut fedgate_audit::Witness> {
        match m {
            Message::Trailer { witness, .. } | Message::Error { witness, .. } => witness.as_deref_mut(),
            _ => None,
        }
    }

    #[test]
    fn transfers_and_refusals_carry_a_witness_the_consumer_checks_and_records() {
        let mut pair = Pair::new(CENTRE, 30);
        let key = pair.audit_key.clone().unwrap();
        let r = pair.run(family());
        let ended = r.provider_log.last().unwrap();
        let w = r.receipt.witness.as_ref().expect("the receipt keeps the witness");
        // The head covers the outcome entry (and the decision before it) and proves the outcome.
        let cp = w.check(&key, Some(ended.seq)).unwrap();
        assert_eq!((w.entry, cp.size), (ended.seq, ended.seq + 1));
        // A refusal proves its deny entry, and the consumer's receipt cites it.
        let r = pair.run(Pair::query("family-disputes", "statistics"));
        assert_eq!(remote_code(&r), ErrorCode::Denied);
        let deny = &r.provider_log[0];
        assert_eq!(deny.kind, Some(Kind::Deny));
        let w = r.receipt.witness.as_ref().expect("a refusal's witness is kept");
        assert_eq!(w.check(&key, Some(deny.seq)).unwrap().size, deny.seq + 1);
        assert_eq!(r.receipt.provider_entry, Some(deny.seq));
        assert_eq!(r.receipt.decision.as_deref(), Some("refused"));
    }

    #[test]
    fn a_witness_that_does_not_verify_fails_the_transfer() {
        type Tamper = fn(&mut fedgate_audit::Witness);
        let cases: [(Tamper, &str); 4] = [
            // A root the log never had: the path no longer leads to the signed root.
            (|w| w.path[0] = "11".repeat(32), "does not lead to the checkpoint's root"),
            // The proof of another entry (the decision), passed off as the outcome's.
            (|w| w.entry -= 1, "the proof is for provider entry"),
            (|w| w.leaf = "22".repeat(32), "does not lead to the checkpoint's root"),
            (|w| w.checkpoint = w.checkpoint.replacen('\n', "\n9", 1), "does not verify with"),
        ];
        for (tamper, want) in cases {
            let mut pair = Pair::new(CENTRE, 30);
            pair.faults.tamper = Some(Box::new(move |mut m| {
                if let Some(w) = witness_of(&mut m) {
                    tamper(w);
                }
                m
            }));
            let r = pair.run(family());
            assert!(bad_trailer(&r).contains(want), "{want}: {:?}", r.result);
            assert_eq!(r.receipt.decision.as_deref(), Some("unverified"));
            assert!(r.receipt.witness.is_none(), "a witness that failed is not kept as one");
        }
        // Checked against a key that is not the provider's audit key.
        let mut pair = Pair::new(CENTRE, 30);
        pair.audit_key =
            Some(Arc::new((fedgate_audit::origin(&pair.provider), audit_public(&audit_key_pair()))));
        assert!(bad_trailer(&pair.run(family())).contains("does not verify with"));
        // A provider that announced its key but leaves the witness out.
        let mut pair = Pair::new(CENTRE, 30);
        pair.faults.tamper = Some(Box::new(|m| match m {
            Message::Trailer { count, digest, signature, audit_seq, truncated, .. } => {
                Message::Trailer { count, digest, signature, audit_seq, truncated, witness: None }
            }
            other => other,
        }));
        assert!(bad_trailer(&pair.run(family())).contains("witness is missing"));
        // A refusal whose witness fails is unverified, not a refusal.
        let mut pair = Pair::new(CENTRE, 30);
        pair.faults.tamper = Some(Box::new(|mut m| {
            if let Some(w) = witness_of(&mut m) {
                w.entry += 1;
            }
            m
        }));
        let r = pair.run(Pair::query("family-disputes", "statistics"));
        assert!(bad_trailer(&r).contains("the refusal's witness does not verify"), "{:?}", r.result);
        assert_eq!(r.receipt.decision.as_deref(), Some("unverified"));
    }

    /// Feeds `frames` to a fresh consumer session for `query` that keeps `memo`; its end.
    fn replay(pair: &Pair, query: Query, frames: &[Vec<u8>], memo: &Arc<NoteMemo>) -> Result<(), String> {
        let now = Instant::now();
        let mut c = ConsumerSession::new(
            pair.provider_peer.clone(),
            pair.consumer.clone(),
            query,
            Deadlines::default(),
            now,
        )
        .with_audit_key(pair.audit_key.clone())
        .with_note_memo(memo.clone());
        for body in frames {
            c.handle_frame(now, body);
        }
        c.handle_end();
        while let Some(ev) = c.poll_event() {
            match ev {
                ConsumerEvent::Done(_) => return Ok(()),
                ConsumerEvent::Failed(e) => return Err(e.to_string()),
                _ => {}
            }
        }
        Err("no end".into())
    }

    #[test]
    fn a_checkpoint_verified_on_the_connection_is_taken_from_memory_but_its_proof_is_checked() {
        let mut pair = Pair::new(CENTRE, 30);
        let memo = Arc::new(NoteMemo::new(4));
        pair.notes = Some(memo.clone());
        let q = family();
        let r = pair.run(q.clone());
        assert!(r.result.is_ok(), "{:?}", r.result);
        assert_eq!(memo.hits(), 0);
        // The same signed note again, as every exchange of one group commit carries it.
        replay(&pair, q.clone(), &r.frames, &memo).unwrap();
        assert_eq!(memo.hits(), 1, "the note was not verified twice");
        // The remembered note with a proof of another leaf: refused.
        let mut forged = r.frames.clone();
        let last = forged.last_mut().unwrap();
        let mut m = wire::frame::decode_body(last).unwrap();
        witness_of(&mut m).unwrap().leaf = "22".repeat(32);
        *last = wire::encode(&m)[4..].to_vec();
        let e = replay(&pair, q.clone(), &forged, &memo).unwrap_err();
        assert!(e.contains("does not lead to the checkpoint's root"), "{e}");
        assert_eq!(memo.hits(), 2);
        // The same note against another audit key is verified afresh, and refused.
        let mut other = Pair::new(CENTRE, 30);
        other.provider_peer = pair.provider_peer.clone();
        let e = replay(&other, q, &r.frames, &memo).unwrap_err();
        assert!(e.contains("does not verify with"), "{e}");
        assert_eq!(memo.hits(), 2);
    }

    #[test]
    fn a_provider_that_predates_witnessing_still_verifies() {
        let mut pair = Pair::new(CENTRE, 30);
        pair.audit_key = None;
        let r = pair.run(family());
        assert!(r.result.is_ok(), "{:?}", r.result);
        assert!(r.receipt.witness.is_none());
    }
}
