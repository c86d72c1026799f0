//! Sharing requests (共享申请) and their answers (答复), pure: what each side signs, what a
//! provider accepts for intake, when an answer is due, and the grant an approval becomes.
//!
//! A request is a long-lived exchange (DESIGN §8). The consumer picks its id, signs the request
//! and sends it until the provider has stored it; it then keeps asking with the same signed
//! request, and each time the provider answers with the request's status, signed. So one
//! idempotent message both files the request and polls it, and either side may be killed at any
//! point: the consumer resends what it stored, the provider recognises the id.

use fedgate_catalog::{Catalog, NodeId, Sharing};
use serde::Serialize;

use crate::wire::ErrorCode;

/// A reason, as the consumer gives it or the steward refuses with: short prose.
pub const MAX_REASON: usize = 2048;
/// Fields a request may name: a catalog has a few dozen.
pub const MAX_FIELDS: usize = 64;
/// Longest a request may ask a grant to run (and an approval may give): three years.
pub const MAX_TERM_SECS: i64 = 3 * 366 * 86_400;
/// Default answer time limit for conditional data, in working days (条例: 5 个工作日).
pub const DEFAULT_ANSWER_DAYS: u32 = 5;

/// A sharing request as the consumer signed it; fixed for its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharingRequest {
    /// The exchange id (32 lowercase hex digits), chosen by the consumer.
    pub exchange: String,
    /// Who asks.
    pub consumer: NodeId,
    /// Who is asked.
    pub provider: NodeId,
    /// The dataset.
    pub dataset: String,
    /// The declared purpose.
    pub purpose: String,
    /// Fields the consumer needs (empty: the whole dataset as its grade allows).
    pub fields: Vec<String>,
    /// Unix seconds until which the consumer asks to use the data, if it says.
    pub until: Option<i64>,
    /// Why it needs the data.
    pub reason: String,
}

impl SharingRequest {
    /// What the consumer signs: every field, the exchange id among them, under its own label so
    /// it can never pass for another kind of message.
    pub fn message(&self) -> Vec<u8> {
        let until = self.until.map_or_else(String::new, |u| u.to_string());
        format!(
            "fedgate sharing-request v1\0{}\0{}\0{}\0{}\0{}\0{}\0{until}\0{}",
            self.exchange,
            self.consumer,
            self.provider,
            self.dataset,
            self.purpose,
            self.fields.join(","),
            self.reason
        )
        .into_bytes()
    }

    /// Checks what the provider can check without its catalog: the id, the reason, the sizes,
    /// the term. The message names the field at fault.
    pub fn check(&self, now: i64) -> Result<(), String> {
        if !crate::exchange::valid_exchange_id(&self.exchange) {
            return Err("`exchange` must be 32 lowercase hex digits".into());
        }
        if self.reason.trim().is_empty() {
            return Err("`reason` is required: say why the data is needed".into());
        }
        if self.reason.len() > MAX_REASON {
            return Err(format!("`reason` is {} bytes; the limit is {MAX_REASON}", self.reason.len()));
        }
        if self.fields.len() > MAX_FIELDS {
            return Err(format!("`fields` has {} items; the limit is {MAX_FIELDS}", self.fields.len()));
        }
        match self.until {
            Some(u) if u <= now => Err("`until` is in the past".into()),
            Some(u) if u - now > MAX_TERM_SECS => Err("`until` is more than three years ahead".into()),
            _ => Ok(()),
        }
    }
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Made here, not yet stored by the provider (consumer side only).
    Unsent,
    /// Stored by the provider, not yet answered.
    Pending,
    /// Approved: a grant is in force (until it expires).
    Approved,
    /// Refused, with a reason.
    Refused,
    /// Approved, then the grant was revoked.
    Revoked,
}

impl State {
    /// As stored, sent and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unsent => "unsent",
            State::Pending => "pending",
            State::Approved => "approved",
            State::Refused => "refused",
            State::Revoked => "revoked",
        }
    }

    /// Parses [`State::as_str`].
    pub fn parse(s: &str) -> Option<State> {
        [State::Unsent, State::Pending, State::Approved, State::Refused, State::Revoked]
            .into_iter()
            .find(|k| k.as_str() == s)
    }

    /// True if and only if the provider still owes an answer.
    pub fn awaits_answer(self) -> bool {
        matches!(self, State::Unsent | State::Pending)
    }
}

/// The provider's answer to a request as it stands, as the provider signs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// Where it stands.
    pub state: State,
    /// Unix seconds by which the provider must answer.
    pub deadline: i64,
    /// The steward's reason (required for a refusal and a revocation).
    pub reason: Option<String>,
    /// The grant an approval wrote.
    pub grant: Option<String>,
    /// Highest grade the grant shows in clear.
    pub clearance: Option<u8>,
    /// Unix seconds the grant ends.
    pub until: Option<i64>,
    /// Records per day the grant allows.
    pub quota: Option<u64>,
    /// Unix seconds the state last changed by the steward's hand.
    pub answered: Option<i64>,
}

impl Answer {
    /// What the provider signs for this answer to `req`.
    pub fn message(&self, req: &SharingRequest) -> Vec<u8> {
        let opt = |v: Option<String>| v.unwrap_or_default();
        format!(
            "fedgate sharing-answer v1\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}",
            req.exchange,
            req.provider,
            req.consumer,
            self.state.as_str(),
            self.deadline,
            opt(self.reason.clone()),
            opt(self.grant.clone()),
            opt(self.clearance.map(|c| c.to_string())),
            opt(self.until.map(|u| u.to_string())),
            opt(self.quota.map(|q| q.to_string())),
            opt(self.answered.map(|a| a.to_string())),
        )
        .into_bytes()
    }
}

/// True if and only if an answer due at `deadline` is still owed at `now`.
pub fn overdue(state: State, deadline: Option<i64>, now: i64) -> bool {
    state.awaits_answer() && deadline.is_some_and(|d| now > d)
}

/// What the provider decides on receiving a request it has not seen: the highest grade it
/// covers (for the approval's default clearance), or the refusal. Default deny: only
/// conditional datasets take requests; unconditional ones need none; a dataset that is never
/// shared is answered as an unknown one.
pub fn intake(
    catalog: &Catalog,
    known_purpose: impl Fn(&str) -> bool,
    req: &SharingRequest,
) -> Result<u8, (ErrorCode, String)> {
    let unknown = || (ErrorCode::UnknownDataset, format!("no dataset `{}` is shared here", req.dataset));
    let ds = catalog.get(&req.dataset).ok_or_else(unknown)?;
    match ds.sharing {
        Sharing::None => return Err(unknown()),
        Sharing::Unconditional => {
            return Err((
                ErrorCode::BadRequest,
                format!("dataset `{}` is shared unconditionally: it needs no request, query it", req.dataset),
            ))
        }
        Sharing::Conditional => {}
    }
    if !known_purpose(&req.purpose) {
        return Err((
            ErrorCode::BadRequest,
            format!("purpose `{}` is not one of this federation's purposes", req.purpose),
        ));
    }
    let mut grade = if req.fields.is_empty() { u8::from(ds.grade) } else { 1 };
    for f in &req.fields {
        let field = ds.fields.iter().find(|x| &x.name == f).ok_or_else(|| {
            (ErrorCode::BadRequest, format!("dataset `{}` has no field `{f}`", req.dataset))
        })?;
        grade = grade.max(u8::from(field.grade));
    }
    Ok(grade)
}

/// What a steward grants when approving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// Highest grade shown in clear (1..=4).
    pub clearance: u8,
    /// Unix seconds the grant ends.
    pub until: i64,
    /// Records per day, if limited.
    pub quota: Option<u64>,
    /// Rows: `own` (the consumer's jurisdiction), `all`, or a region path.
    pub rows: String,
}

/// The grant id an approval of request `exchange` writes: the request id in it, so the grant
/// and every exchange it allows lead back to the request.
pub fn grant_id(exchange: &str) -> String {
    format!("request-{exchange}")
}

/// The `[[grant]]` an approval becomes, in the grant file format the steward writes: for this
/// consumer only, this dataset and purpose, reading and subscribing, until the approval's end.
pub fn grant_toml(req: &SharingRequest, a: &Approval) -> String {
    let quota = a.quota.map_or_else(String::new, |q| format!("quota = {q}\n"));
    format!(
        "[[grant]]\nid = \"{}\"\nto = \"{}\"\ndatasets = [\"{}\"]\nactions = [\"read\", \"subscribe\"]\npurposes = [\"{}\"]\nclearance = {}\nrows = {}\nvalid_until = {}\n{quota}",
        grant_id(&req.exchange),
        req.consumer,
        req.dataset,
        req.purpose,
        a.clearance,
        toml_str(&a.rows),
        rfc3339(a.until),
    )
}

fn toml_str(s: &str) -> String {
    // Rows are `own`, `all` or a region path; escaping keeps any other text inert anyway.
    format!("{s:?}")
}

/// Unix seconds as an RFC 3339 UTC datetime (`2026-12-29T06:00:00Z`), as TOML reads it.
pub fn rfc3339(unix: i64) -> String {
    let (y, m, d) = fedgate_policy::time::civil_from_days(unix.div_euclid(86_400));
    let s = unix.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s % 3600 / 60, s % 60)
}

/// Checks what a steward gives before it becomes a grant.
pub fn check_approval(a: &Approval, now: i64) -> Result<(), String> {
    if !(1..=4).contains(&a.clearance) {
        return Err(format!("clearance must be 1 to 4, not {}", a.clearance));
    }
    if a.until <= now {
        return Err("the approval's end is in the past".into());
    }
    if a.until - now > MAX_TERM_SECS {
        return Err("the approval's end is more than three years ahead".into());
    }
    if a.quota == Some(0) {
        return Err("a quota of 0 records a day allows nothing: refuse instead".into());
    }
    let region_ok = a.rows.parse::<fedgate_catalog::Region>().is_ok();
    if !(a.rows == "own" || a.rows == "all" || region_ok) {
        return Err(format!("rows must be own, all or a region path, not {:?}", a.rows));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> SharingRequest {
        SharingRequest {
            exchange: "0123456789abcdef0123456789abcdef".into(),
            consumer: "court@wuxi.xinwu".parse().unwrap(),
            provider: "womens-federation@wuxi".parse().unwrap(),
            dataset: "family-disputes".into(),
            purpose: "dispute-mediation".into(),
            fields: vec!["case_id".into()],
            until: None,
            reason: "case 2026-17".into(),
        }
    }

    #[test]
    fn the_signed_texts_cover_every_field_and_differ_by_kind() {
        let r = req();
        let base = r.message();
        assert!(base.starts_with(b"fedgate sharing-request v1\0"));
        let variants = [
            SharingRequest { exchange: "1".repeat(32), ..r.clone() },
            SharingRequest { dataset: "other".into(), ..r.clone() },
            SharingRequest { purpose: "audit".into(), ..r.clone() },
            SharingRequest { fields: vec![], ..r.clone() },
            SharingRequest { until: Some(5), ..r.clone() },
            SharingRequest { reason: "x".into(), ..r.clone() },
            SharingRequest { consumer: "police@wuxi.liangxi".parse().unwrap(), ..r.clone() },
        ];
        for v in variants {
            assert_ne!(v.message(), base, "{v:?}");
        }
        let a = Answer {
            state: State::Pending,
            deadline: 100,
            reason: None,
            grant: None,
            clearance: None,
            until: None,
            quota: None,
            answered: None,
        };
        let m = a.message(&r);
        assert!(m.starts_with(b"fedgate sharing-answer v1\0"));
        assert_ne!(Answer { state: State::Approved, ..a.clone() }.message(&r), m);
        assert_ne!(Answer { quota: Some(1), ..a.clone() }.message(&r), m);
        assert_ne!(Answer { reason: Some("no".into()), ..a }.message(&r), m);
    }

    #[test]
    fn requests_are_checked_naming_the_field() {
        let now = 1_000_000;
        assert_eq!(req().check(now), Ok(()));
        assert!(SharingRequest { reason: " ".into(), ..req() }.check(now).unwrap_err().contains("`reason`"));
        assert!(SharingRequest { exchange: "ABC".into(), ..req() }
            .check(now)
            .unwrap_err()
            .contains("`exchange`"));
        assert!(SharingRequest { until: Some(now), ..req() }.check(now).unwrap_err().contains("past"));
        let far = Some(now + MAX_TERM_SECS + 1);
        assert!(SharingRequest { until: far, ..req() }.check(now).unwrap_err().contains("three years"));
        let many = (0..=MAX_FIELDS).map(|i| format!("f{i}")).collect();
        assert!(SharingRequest { fields: many, ..req() }.check(now).unwrap_err().contains("`fields`"));
    }

    #[test]
    fn overdue_only_while_an_answer_is_owed() {
        assert!(overdue(State::Pending, Some(10), 11));
        assert!(!overdue(State::Pending, Some(10), 10));
        assert!(!overdue(State::Approved, Some(10), 11));
        assert!(!overdue(State::Refused, Some(10), 11));
        assert!(!overdue(State::Unsent, None, 11));
    }

    #[test]
    fn an_approval_becomes_a_grant_the_policy_parser_accepts() {
        let a = Approval { clearance: 3, until: 1_798_761_600, quota: Some(500), rows: "own".into() };
        let text = grant_toml(&req(), &a);
        let set = fedgate_policy::parse_grants(&[("approved.toml", &text)], Some(&["family-disputes"]))
            .unwrap_or_else(|d| panic!("{d}\n{text}"));
        let g = &set.grants[0];
        assert_eq!(g.id, "request-0123456789abcdef0123456789abcdef");
        assert_eq!(g.valid_until, Some(1_798_761_600));
        assert_eq!(g.quota, Some(500));
        assert_eq!(u8::from(g.clearance), 3);
        assert!(g.to.matches(&"court@wuxi.xinwu".parse().unwrap()));
        assert!(!g.to.matches(&"court@wuxi.liangxi".parse().unwrap()));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_600 + 3661), "2027-01-01T01:01:01Z");
    }

    #[test]
    fn approvals_are_checked() {
        let now = 1_000;
        let ok = Approval { clearance: 2, until: now + 10, quota: None, rows: "all".into() };
        assert_eq!(check_approval(&ok, now), Ok(()));
        assert!(check_approval(&Approval { clearance: 5, ..ok.clone() }, now).is_err());
        assert!(check_approval(&Approval { until: now, ..ok.clone() }, now).is_err());
        assert!(check_approval(&Approval { quota: Some(0), ..ok.clone() }, now).is_err());
        assert!(check_approval(&Approval { rows: "wuxi.xinwu".into(), ..ok.clone() }, now).is_ok());
        assert!(check_approval(&Approval { rows: "every\"thing".into(), ..ok }, now).is_err());
    }
}
