//! Obligations compiled once per request into a plan applied to each record, with no policy
//! lookup per record.

use fedgate_catalog::{Dataset, Generalize, Record, Region, Rule, Value, DEFAULT_REDACT_TOKEN};
use ring::hmac;

use crate::decide::{Allowed, Obligation, RowScope};
use crate::mask;

#[derive(Debug, Clone)]
enum Op {
    Keep,
    Mask(usize, usize),
    MaskName,
    MaskCard,
    MaskEmail,
    Hash,
    Pseudonym,
    Generalize(Generalize),
    Redact(String),
    Scan,
}

/// What to send of each record: which fields, each transformed how, and which rows.
pub struct Plan {
    steps: Vec<(usize, Op)>,
    names: Vec<String>,
    jurisdiction: Option<usize>,
    rows: RowScope,
    key: hmac::Key,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plan({:?})", self.names)
    }
}

impl Plan {
    /// Compiles `allowed` for `ds`; `key` is the consumer's hashing key
    /// ([`mask::consumer_key`]).
    pub fn new(ds: &Dataset, allowed: &Allowed, key: hmac::Key) -> Plan {
        let mut steps = Vec::new();
        let mut names = Vec::new();
        for (i, (name, ob)) in allowed.fields.iter().enumerate() {
            let op = match ob {
                Obligation::Clear => Op::Keep,
                Obligation::Drop | Obligation::Apply(Rule::Drop) => continue,
                Obligation::Apply(rule) => match rule {
                    Rule::Mask { keep_first, keep_last } => {
                        Op::Mask(usize::from(*keep_first), usize::from(*keep_last))
                    }
                    Rule::MaskName => Op::MaskName,
                    Rule::MaskCard => Op::MaskCard,
                    Rule::MaskEmail => Op::MaskEmail,
                    Rule::Hash => Op::Hash,
                    Rule::Pseudonym => Op::Pseudonym,
                    Rule::Generalize(g) => Op::Generalize(*g),
                    Rule::Redact { token } => Op::Redact(token.clone()),
                    Rule::Scan => Op::Scan,
                    Rule::Drop => continue,
                },
            };
            steps.push((i, op));
            names.push(name.clone());
        }
        Plan { steps, names, jurisdiction: ds.field_index(&ds.jurisdiction), rows: allowed.rows.clone(), key }
    }

    /// The names of the fields sent, in order.
    pub fn fields(&self) -> &[String] {
        &self.names
    }

    /// True if and only if the record lies in the row scope. Sources already filter by scope;
    /// this is the second check, on what is about to leave.
    pub fn in_scope(&self, rec: &Record) -> bool {
        match (&self.rows, self.jurisdiction.and_then(|i| rec.get(i))) {
            (RowScope::All, _) => true,
            (RowScope::Within(scope), Some(Value::Text(r))) => {
                r.parse::<Region>().is_ok_and(|r| scope.covers(&r))
            }
            (RowScope::Within(_), _) => false,
        }
    }

    /// The record as sent: dropped fields removed, the others transformed.
    pub fn apply(&self, rec: &Record) -> Record {
        self.steps.iter().map(|(i, op)| self.apply_one(op, rec.get(*i).unwrap_or(&Value::Null))).collect()
    }

    fn apply_one(&self, op: &Op, v: &Value) -> Value {
        if matches!(v, Value::Null) {
            return Value::Null;
        }
        if let Op::Keep = op {
            return v.clone();
        }
        if let Op::Generalize(g) = op {
            return mask::generalize(g, v, DEFAULT_REDACT_TOKEN);
        }
        let text = match v {
            Value::Text(s) => std::borrow::Cow::Borrowed(s.as_str()),
            other => std::borrow::Cow::Owned(other.to_string()),
        };
        Value::Text(match op {
            Op::Mask(f, l) => mask::mask(&text, *f, *l),
            Op::MaskName => mask::mask_name(&text),
            Op::MaskCard => mask::mask_card(&text),
            Op::MaskEmail => mask::mask_email(&text),
            Op::Hash => mask::keyed_hash(&self.key, &text),
            Op::Pseudonym => mask::pseudonym(&self.key, &text),
            Op::Redact(token) => token.clone(),
            Op::Scan => mask::scan(&text),
            Op::Keep | Op::Generalize(_) => unreachable!("handled above"),
        })
    }
}
