//! Objections (数据异议), pure: what each side signs, what a provider takes in, where an
//! objection stands, and the marker every delivery of an objected record carries.
//!
//! An objection is a long-lived exchange (DESIGN §8) built like a sharing request: the consumer
//! picks its id, signs it, and keeps sending the same signed objection; the provider stores it
//! once (by id) and every time answers with where it stands, signed. Either side may be killed at
//! any point: the consumer resends what it stored, the provider recognises the id.
//!
//! While an objection is open, the provider marks its record in every delivery (query batches,
//! subscription events, referral cases) with the reserved field [`MARKER_FIELD`]: the lookup is
//! an in-memory set per dataset ([`Marks`]), never SQLite or the policy engine per record.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use fedgate_catalog::{Catalog, FieldType, NodeId, Record, Sharing, Value};
use serde::{Deserialize, Serialize};

use crate::wire::ErrorCode;

/// The reserved field that carries the marker: `@` cannot start a catalog field name.
pub const MARKER_FIELD: &str = "@objection";
/// A reason, as the consumer gives it or the steward rejects with.
pub const MAX_REASON: usize = 2048;
/// A primary key value or a proposed value, as text.
pub const MAX_VALUE: usize = 1024;

/// An objection as the consumer signed it; fixed for its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Objection {
    /// The exchange id (32 lowercase hex digits), chosen by the consumer.
    pub exchange: String,
    /// Who objects.
    pub consumer: NodeId,
    /// Whose record it is.
    pub provider: NodeId,
    /// The dataset.
    pub dataset: String,
    /// The purpose the consumer receives the record for (the provider decides with it).
    pub purpose: String,
    /// The record's primary key, as text.
    pub key: String,
    /// The field held to be wrong.
    pub field: String,
    /// Why it is wrong.
    pub reason: String,
    /// What the consumer holds the right value to be, if it says.
    pub proposed: Option<String>,
}

impl Objection {
    /// What the consumer signs: every field, the exchange id among them, under its own label so
    /// it can never pass for another kind of message.
    pub fn message(&self) -> Vec<u8> {
        let proposed = self.proposed.as_ref().map_or_else(|| "-".to_owned(), |p| format!("+{p}"));
        format!(
            "fedgate objection v1\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{proposed}",
            self.exchange,
            self.consumer,
            self.provider,
            self.dataset,
            self.purpose,
            self.key,
            self.field,
            self.reason
        )
        .into_bytes()
    }

    /// Checks what can be checked without the provider's catalog; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        if !crate::exchange::valid_exchange_id(&self.exchange) {
            return Err("`exchange` must be 32 lowercase hex digits".into());
        }
        if self.reason.trim().is_empty() {
            return Err("`reason` is required: say what is wrong".into());
        }
        if self.reason.len() > MAX_REASON {
            return Err(format!("`reason` is {} bytes; the limit is {MAX_REASON}", self.reason.len()));
        }
        if self.key.is_empty() || self.key.len() > MAX_VALUE {
            return Err(format!("`key` must be the record's primary key, 1 to {MAX_VALUE} bytes"));
        }
        if self.field.is_empty() || self.field.starts_with('@') {
            return Err("`field` must name one of the dataset's fields".into());
        }
        match &self.proposed {
            Some(p) if p.len() > MAX_VALUE => {
                Err(format!("`proposed` is {} bytes; the limit is {MAX_VALUE}", p.len()))
            }
            _ => Ok(()),
        }
    }
}

/// Where an objection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Made here, not yet stored by the provider (consumer side only).
    Unsent,
    /// Stored by the provider, not yet decided: the record is marked.
    Open,
    /// The steward agreed and corrected the source.
    Accepted,
    /// The steward disagreed, saying why.
    Rejected,
    /// The provider would not take it in (no such record the consumer may receive, a field it
    /// is not sent): final, consumer side only.
    Refused,
}

impl State {
    /// As stored, sent and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unsent => "unsent",
            State::Open => "open",
            State::Accepted => "accepted",
            State::Rejected => "rejected",
            State::Refused => "refused",
        }
    }

    /// Parses [`State::as_str`].
    pub fn parse(s: &str) -> Option<State> {
        [State::Unsent, State::Open, State::Accepted, State::Rejected, State::Refused]
            .into_iter()
            .find(|k| k.as_str() == s)
    }

    /// True if and only if the steward has not decided yet.
    pub fn is_open(self) -> bool {
        matches!(self, State::Unsent | State::Open)
    }
}

/// The provider's answer as it stands, as the provider signs it. The corrected value itself is
/// not in it: it reaches consumers only through deliveries, desensitized for each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// Where it stands.
    pub state: State,
    /// The steward's reason (required for a rejection; a note on an acceptance).
    pub reason: Option<String>,
    /// True if and only if accepting it changed the record at the source.
    pub corrected: bool,
    /// Unix seconds of the steward's decision.
    pub answered: Option<i64>,
}

impl Answer {
    /// What the provider signs for this answer to `o`.
    pub fn message(&self, o: &Objection) -> Vec<u8> {
        format!(
            "fedgate objection-answer v1\0{}\0{}\0{}\0{}\0{}\0{}\0{}",
            o.exchange,
            o.provider,
            o.consumer,
            self.state.as_str(),
            self.reason.clone().unwrap_or_default(),
            self.corrected,
            self.answered.map(|a| a.to_string()).unwrap_or_default(),
        )
        .into_bytes()
    }
}

/// What the provider takes in before deciding whether the consumer may receive the record:
/// the dataset must be shared and have the field, and the key must be written as the marker
/// set will hold it (`7`, not `007`, for an integer key: the signature covers the text sent).
/// Returns the key as text and as a value for the source.
pub fn intake(catalog: &Catalog, o: &Objection) -> Result<(String, Value), (ErrorCode, String)> {
    let unknown = || (ErrorCode::UnknownDataset, format!("no dataset `{}` is shared here", o.dataset));
    let ds = catalog.get(&o.dataset).ok_or_else(unknown)?;
    if ds.sharing == Sharing::None {
        return Err(unknown());
    }
    if ds.field(&o.field).is_none() {
        return Err((ErrorCode::BadRequest, format!("dataset `{}` has no field `{}`", o.dataset, o.field)));
    }
    let pk = ds.field(&ds.primary_key).map_or(FieldType::String, |f| f.ty);
    let bad = |why: String| (ErrorCode::BadRequest, why);
    let key = typed(pk, &o.key).ok_or_else(|| bad(format!("`key` {:?} is not a {pk:?} key", o.key)))?;
    let text = key_text(&key).unwrap_or_default();
    if text != o.key {
        return Err(bad(format!("`key` {:?}: write it as {text:?}", o.key)));
    }
    Ok((text, key))
}

/// `text` as a value of type `ty`, as a filter reads it; `None` if it is not one.
pub fn typed(ty: FieldType, text: &str) -> Option<Value> {
    match ty {
        FieldType::Integer => text.trim().parse().ok().map(Value::Int),
        FieldType::Bool => text.parse().ok().map(Value::Bool),
        _ => Some(Value::Text(text.to_owned())),
    }
}

/// A primary key value as the marker set holds it.
pub fn key_text(v: &Value) -> Option<String> {
    match v {
        Value::Text(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => None,
    }
}

/// SHA-256 (hex) of a field's value as the source held it: what the provider keeps of the value
/// objected to, so accepting without a new value can tell whether the source was corrected.
pub fn value_digest(v: &Value) -> String {
    let mut bytes = Vec::new();
    // Writing CBOR into a Vec cannot fail for a plain value.
    let _ = ciborium::into_writer(v, &mut bytes);
    crate::wire::limits::sha256_hex(&bytes)
}

/// Checks a steward's decision text: a rejection needs a reason; any reason is bounded.
pub fn check_reason(reason: Option<&str>, required: bool) -> Result<(), String> {
    match reason {
        None if required => Err("`reason` is required: say why the record stands".into()),
        Some(r) if required && r.trim().is_empty() => Err("`reason` must say why".into()),
        Some(r) if r.len() > MAX_REASON => {
            Err(format!("`reason` is {} bytes; the limit is {MAX_REASON}", r.len()))
        }
        _ => Ok(()),
    }
}

/// The marker a delivered record carries while objections to it are open: the oldest one's id
/// and field, and how many are open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    /// The oldest open objection's id.
    pub id: String,
    /// The field it holds wrong.
    pub field: String,
    /// Always `open`: a decided objection no longer marks the record.
    pub status: String,
    /// Open objections to this record.
    pub open: u32,
}

/// One open objection, as the marker set holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// The objection id.
    pub id: String,
    /// The field objected to.
    pub field: String,
    /// When it was received (orders the marks: the oldest is shown).
    pub received: i64,
}

/// One dataset's open objections by primary key (as text), each record's marker made once.
#[derive(Debug, Default)]
pub struct DatasetMarks {
    by_key: HashMap<String, (Vec<Mark>, Value)>,
}

impl DatasetMarks {
    fn rebuilt(by_key: HashMap<String, Vec<Mark>>) -> DatasetMarks {
        let by_key = by_key
            .into_iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(k, mut marks)| {
                marks.sort_by(|a, b| (a.received, &a.id).cmp(&(b.received, &b.id)));
                let first = &marks[0];
                let m = Marker {
                    id: first.id.clone(),
                    field: first.field.clone(),
                    status: "open".into(),
                    open: u32::try_from(marks.len()).unwrap_or(u32::MAX),
                };
                let text = serde_json::to_string(&m).unwrap_or_default();
                (k, (marks, Value::Text(text)))
            })
            .collect();
        DatasetMarks { by_key }
    }

    /// The marker of the record whose primary key is `key`, if it is objected to.
    pub fn get(&self, key: &Value) -> Option<&Value> {
        let hit = match key {
            Value::Text(s) => self.by_key.get(s.as_str()),
            Value::Int(i) => self.by_key.get(&i.to_string()),
            other => key_text(other).and_then(|k| self.by_key.get(&k)),
        };
        hit.map(|(_, v)| v)
    }

    /// Open objections to this dataset's records.
    pub fn len(&self) -> usize {
        self.by_key.values().map(|(m, _)| m.len()).sum()
    }

    /// True if and only if none is open.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Open objections of every dataset of this node (as the provider). Readers take a snapshot of
/// one dataset's set per delivery decision; changes swap a new set in.
#[derive(Debug, Default)]
pub struct Marks {
    by_dataset: RwLock<HashMap<String, Arc<DatasetMarks>>>,
}

impl Marks {
    /// The set of `open` objections: (dataset, key, mark).
    pub fn load(open: impl IntoIterator<Item = (String, String, Mark)>) -> Marks {
        let mut all: HashMap<String, HashMap<String, Vec<Mark>>> = HashMap::new();
        for (ds, key, mark) in open {
            all.entry(ds).or_default().entry(key).or_default().push(mark);
        }
        let by_dataset =
            all.into_iter().map(|(ds, keys)| (ds, Arc::new(DatasetMarks::rebuilt(keys)))).collect();
        Marks { by_dataset: RwLock::new(by_dataset) }
    }

    /// The open objections of `dataset`, if it has any.
    pub fn for_dataset(&self, dataset: &str) -> Option<Arc<DatasetMarks>> {
        self.by_dataset.read().unwrap_or_else(|p| p.into_inner()).get(dataset).cloned()
    }

    fn change(&self, dataset: &str, key: &str, f: impl FnOnce(&mut Vec<Mark>)) {
        let mut all = self.by_dataset.write().unwrap_or_else(|p| p.into_inner());
        let mut keys: HashMap<String, Vec<Mark>> = all
            .get(dataset)
            .map(|d| d.by_key.iter().map(|(k, (m, _))| (k.clone(), m.clone())).collect())
            .unwrap_or_default();
        f(keys.entry(key.to_owned()).or_default());
        let rebuilt = DatasetMarks::rebuilt(keys);
        if rebuilt.is_empty() {
            all.remove(dataset);
        } else {
            all.insert(dataset.to_owned(), Arc::new(rebuilt));
        }
    }

    /// Marks `key` of `dataset` with an open objection (again: a no-op).
    pub fn add(&self, dataset: &str, key: &str, mark: Mark) {
        self.change(dataset, key, |marks| {
            if !marks.iter().any(|m| m.id == mark.id) {
                marks.push(mark);
            }
        });
    }

    /// Takes objection `id`'s mark off `key` of `dataset`.
    pub fn remove(&self, dataset: &str, key: &str, id: &str) {
        self.change(dataset, key, |marks| marks.retain(|m| m.id != id));
    }
}

/// What a delivery decision carries to mark records: where the primary key is in the record as
/// the source reads it, and the dataset's open objections when the decision was made.
#[derive(Debug, Clone)]
pub struct Marking {
    pk: usize,
    marks: Arc<DatasetMarks>,
}

impl Marking {
    /// For a dataset whose primary key is field `pk` (its index in catalog order) and whose
    /// open objections are `marks`.
    pub fn new(pk: usize, marks: Arc<DatasetMarks>) -> Marking {
        Marking { pk, marks }
    }

    /// The marker column's value for `raw` (a record as the source holds it, before
    /// desensitization, so a masked key still finds its objections): the marker, or null.
    pub fn value(&self, raw: &Record) -> Value {
        raw.get(self.pk).and_then(|k| self.marks.get(k)).cloned().unwrap_or(Value::Null)
    }
}

/// A delivered field as the application reads it in JSON: the marker column as the object it
/// stands for (a value that is not a well-formed marker stays the text it is), every other
/// field as its plain value.
pub fn field_json(field: &str, v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Text(s) if field == MARKER_FIELD => match serde_json::from_str::<Marker>(s) {
            Ok(m) => serde_json::to_value(m).unwrap_or_else(|_| s.as_str().into()),
            Err(_) => s.as_str().into(),
        },
        Value::Text(s) => s.as_str().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn objection() -> Objection {
        Objection {
            exchange: "0123456789abcdef0123456789abcdef".into(),
            consumer: "mediation-center@wuxi".parse().unwrap(),
            provider: "petition@wuxi".parse().unwrap(),
            dataset: "petitions".into(),
            purpose: "dispute-mediation".into(),
            key: "XF-0001".into(),
            field: "address".into(),
            reason: "moved in 2025".into(),
            proposed: Some("梁溪区".into()),
        }
    }

    #[test]
    fn the_signed_texts_cover_every_field_and_differ_by_kind() {
        let o = objection();
        let base = o.message();
        assert!(base.starts_with(b"fedgate objection v1\0"));
        let variants = [
            Objection { exchange: "1".repeat(32), ..o.clone() },
            Objection { dataset: "x".into(), ..o.clone() },
            Objection { purpose: "x".into(), ..o.clone() },
            Objection { key: "x".into(), ..o.clone() },
            Objection { field: "x".into(), ..o.clone() },
            Objection { reason: "x".into(), ..o.clone() },
            Objection { proposed: None, ..o.clone() },
            Objection { proposed: Some(String::new()), ..o.clone() },
            Objection { consumer: "police@wuxi.liangxi".parse().unwrap(), ..o.clone() },
        ];
        for v in variants {
            assert_ne!(v.message(), base, "{v:?}");
        }
        let none = Objection { proposed: None, ..o.clone() }.message();
        let empty = Objection { proposed: Some(String::new()), ..o.clone() }.message();
        assert_ne!(none, empty, "no proposal and an empty one are different messages");
        let a = Answer { state: State::Open, reason: None, corrected: false, answered: None };
        let m = a.message(&o);
        assert!(m.starts_with(b"fedgate objection-answer v1\0"));
        assert_ne!(Answer { state: State::Accepted, ..a.clone() }.message(&o), m);
        assert_ne!(Answer { corrected: true, ..a.clone() }.message(&o), m);
        assert_ne!(Answer { reason: Some("x".into()), ..a.clone() }.message(&o), m);
        assert_ne!(Answer { answered: Some(1), ..a }.message(&o), m);
    }

    #[test]
    fn objections_are_checked_naming_the_field() {
        assert_eq!(objection().check(), Ok(()));
        let err = |o: Objection| o.check().unwrap_err();
        assert!(err(Objection { reason: " ".into(), ..objection() }).contains("`reason`"));
        assert!(err(Objection { exchange: "AB".into(), ..objection() }).contains("`exchange`"));
        assert!(err(Objection { key: String::new(), ..objection() }).contains("`key`"));
        assert!(err(Objection { field: MARKER_FIELD.into(), ..objection() }).contains("`field`"));
        assert!(err(Objection { proposed: Some("x".repeat(MAX_VALUE + 1)), ..objection() })
            .contains("`proposed`"));
        assert!(check_reason(None, true).is_err());
        assert!(check_reason(Some("  "), true).is_err());
        assert!(check_reason(None, false).is_ok());
        assert!(check_reason(Some(&"x".repeat(MAX_REASON + 1)), false).is_err());
    }

    fn mark(id: &str, field: &str, received: i64) -> Mark {
        Mark { id: id.into(), field: field.into(), received }
    }

    #[test]
    fn the_marker_set_marks_the_oldest_open_objection_and_forgets_decided_ones() {
        let marks = Marks::load([("petitions".to_owned(), "7".to_owned(), mark("b", "address", 20))]);
        marks.add("petitions", "7", mark("a", "phone", 10));
        marks.add("petitions", "7", mark("a", "phone", 10));
        let d = marks.for_dataset("petitions").unwrap();
        assert_eq!(d.len(), 2);
        let m = Marking::new(0, d);
        let got = field_json(MARKER_FIELD, &m.value(&vec![Value::Int(7), Value::Null]));
        assert_eq!(got, serde_json::json!({"id": "a", "field": "phone", "status": "open", "open": 2}));
        assert_eq!(m.value(&vec![Value::Int(8)]), Value::Null);
        assert_eq!(m.value(&vec![]), Value::Null, "a record without the key is not marked");
        // A snapshot taken for a delivery does not change under it.
        marks.remove("petitions", "7", "a");
        assert_eq!(field_json(MARKER_FIELD, &m.value(&vec![Value::Int(7)]))["open"], 2);
        let now = Marking::new(0, marks.for_dataset("petitions").unwrap());
        assert_eq!(field_json(MARKER_FIELD, &now.value(&vec![Value::Int(7)]))["id"], "b");
        marks.remove("petitions", "7", "b");
        assert!(marks.for_dataset("petitions").is_none(), "no open objection: no set, no column");
        assert!(marks.for_dataset("other").is_none());
    }

    #[test]
    fn text_keys_match_exactly_and_markers_that_are_not_markers_stay_text() {
        let marks = Marks::load([("d".to_owned(), "XF-1".to_owned(), mark("a", "f", 1))]);
        let m = Marking::new(1, marks.for_dataset("d").unwrap());
        assert_ne!(m.value(&vec![Value::Null, Value::Text("XF-1".into())]), Value::Null);
        assert_eq!(m.value(&vec![Value::Null, Value::Text("xf-1".into())]), Value::Null);
        let forged = Value::Text(r#"{"id":"a","field":"f","status":"open","open":1,"x":1}"#.into());
        assert!(field_json(MARKER_FIELD, &forged).is_string());
        assert!(field_json("name", &Value::Text("{}".into())).is_string());
    }

    #[test]
    fn intake_takes_canonical_keys_and_refuses_unknown_fields() {
        let text = include_str!("../../../deploy/demo/catalogs/petitions.toml");
        let catalog = fedgate_catalog::parse("petitions.toml", text).unwrap();
        let o = Objection { key: "XF-1".into(), field: "mobile".into(), ..objection() };
        assert_eq!(intake(&catalog, &o).unwrap(), ("XF-1".to_owned(), Value::Text("XF-1".into())));
        assert_eq!(typed(FieldType::Integer, " 007"), Some(Value::Int(7)));
        assert_eq!(key_text(&Value::Int(7)).as_deref(), Some("7"));
        let bad = Objection { field: "nope".into(), ..o.clone() };
        assert_eq!(intake(&catalog, &bad).unwrap_err().0, ErrorCode::BadRequest);
        let bad = Objection { dataset: "none".into(), ..o };
        assert_eq!(intake(&catalog, &bad).unwrap_err().0, ErrorCode::UnknownDataset);
    }
}
