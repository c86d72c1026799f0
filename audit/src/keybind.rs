//! Binding the audit signing key to the node's identity, so an auditor trusts a log's key
//! through the federation PKI rather than because it sits next to the log.
//!
//! The node's certificate key signs a statement naming the audit verifier key; the gateway
//! writes one when the log is created and whenever its certificate or audit key changes. A
//! statement travels with the certificate chain that certifies the signing key, so an export is
//! checkable with only the federation root. This module is pure: checking the chain and the
//! ECDSA signature is the caller's (the certs crate's) job, handed in as a closure.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::log::AuditError;

/// The file in a log folder that holds the statements, one JSON object per line.
pub const STATEMENTS: &str = "key-statements.jsonl";

/// The first line of every statement: what it is, so a signature over it means nothing else.
const HEADER: &str = "fedgate audit key statement v1";

/// What a node vouches for: "checkpoints of my audit log verify with this key".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The node (its certificate identity).
    pub node: String,
    /// The audit log's note verifier key (`name+hash+base64`, as in `signing.pub`).
    pub verifier_key: String,
    /// Entries the log held when the statement was made.
    pub log_size: u64,
    /// Unix time (seconds) of the statement; the chain is checked as of this time.
    pub time: i64,
}

/// A statement as stored: its exact signed text, the node key's signature and the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedStatement {
    /// The signed text ([`Statement::text`]).
    pub statement: String,
    /// ECDSA P-256 signature (fixed 64 bytes, hex) by the node's certificate key.
    pub signature: String,
    /// The node's certificate chain, PEM, leaf first.
    pub chain: String,
}

impl Statement {
    /// The exact text that is signed.
    pub fn text(&self) -> String {
        format!(
            "{HEADER}\nnode {}\nkey {}\nlog-size {}\ntime {}\n",
            self.node, self.verifier_key, self.log_size, self.time
        )
    }

    /// Parses [`Statement::text`]; refuses anything else, trailing lines included.
    pub fn parse(text: &str) -> Result<Statement, String> {
        let mut lines = text.strip_suffix('\n').ok_or("statement does not end with a newline")?.split('\n');
        if lines.next() != Some(HEADER) {
            return Err(format!("statement does not start with {HEADER:?}"));
        }
        let mut field = |name: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .map(str::to_owned)
                .ok_or_else(|| format!("statement has no `{name}` line where expected"))
        };
        let node = field("node")?;
        let verifier_key = field("key")?;
        let log_size = field("log-size")?.parse().map_err(|_| "statement's log-size is not a number")?;
        let time = field("time")?.parse().map_err(|_| "statement's time is not a number")?;
        if lines.next().is_some() {
            return Err("statement has lines after `time`".into());
        }
        Ok(Statement { node, verifier_key, log_size, time })
    }
}

/// Reads the statements in a log folder (none if the file is absent).
pub fn read(dir: &Path) -> Result<Vec<SignedStatement>, AuditError> {
    let path = dir.join(STATEMENTS);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(AuditError::Io { path, source }),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| AuditError::Key { path: path.clone(), why: format!("line {}: {e}", i + 1) })
        })
        .collect()
}

/// Appends a statement to the folder's file and syncs it.
pub fn append(dir: &Path, s: &SignedStatement) -> Result<(), AuditError> {
    use std::io::Write;
    let path = dir.join(STATEMENTS);
    let io = |source| AuditError::Io { path: path.clone(), source };
    let mut line =
        serde_json::to_string(s).map_err(|e| AuditError::Key { path: path.clone(), why: e.to_string() })?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
    f.write_all(line.as_bytes()).map_err(io)?;
    f.sync_data().map_err(io)
}

/// Whether the latest statement already names `verifier_key` under the certificate `chain`;
/// if not, the gateway signs a new one (a new log, a rotated audit key, a renewed certificate).
pub fn is_current(statements: &[SignedStatement], verifier_key: &str, chain: &str) -> bool {
    statements.last().is_some_and(|s| {
        s.chain == chain && Statement::parse(&s.statement).is_ok_and(|st| st.verifier_key == verifier_key)
    })
}

/// What checking a statement's chain and signature against the federation root established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vouched {
    /// The node id its certificate names.
    pub node: String,
}

/// Finds the statement that vouches for `verifier_key` for `node`, checking each candidate with
/// `check` (chain to the federation root as of the statement's time, then the signature by the
/// leaf's key). Returns the statement, or why no statement vouches for the key.
pub fn trusted<'a>(
    statements: &'a [SignedStatement],
    node: &str,
    verifier_key: &str,
    mut check: impl FnMut(&SignedStatement, &Statement) -> Result<Vouched, String>,
) -> Result<&'a SignedStatement, String> {
    if statements.is_empty() {
        return Err(format!("no key statement: nothing binds this audit key to a certificate ({STATEMENTS} is missing or empty)"));
    }
    let mut why = Vec::new();
    for (i, s) in statements.iter().enumerate() {
        let st = match Statement::parse(&s.statement) {
            Ok(st) => st,
            Err(e) => {
                why.push(format!("statement {}: {e}", i + 1));
                continue;
            }
        };
        if st.verifier_key.trim() != verifier_key.trim() || st.node != node {
            continue;
        }
        match check(s, &st) {
            Ok(v) if v.node == node => return Ok(s),
            Ok(v) => {
                why.push(format!("statement {}: signed by {}'s certificate, not {node}'s", i + 1, v.node))
            }
            Err(e) => why.push(format!("statement {}: {e}", i + 1)),
        }
    }
    if why.is_empty() {
        return Err(format!("no key statement names this audit key for {node}"));
    }
    Err(why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Statement {
        Statement {
            node: "police@wuxi.liangxi".into(),
            verifier_key: "fedgate.audit/police@wuxi.liangxi+0a1b2c3d+AQID".into(),
            log_size: 12,
            time: 1_800_000_000,
        }
    }

    #[test]
    fn statements_round_trip_and_refuse_anything_else() {
        let text = sample().text();
        assert_eq!(Statement::parse(&text).unwrap(), sample());
        assert!(Statement::parse(&format!("{text}extra\n")).is_err());
        assert!(Statement::parse(text.trim_end()).is_err());
        assert!(Statement::parse(&text.replace("v1", "v2")).is_err());
        assert!(Statement::parse(&text.replace("log-size 12", "log-size x")).is_err());
        // Every prefix fails.
        for cut in 0..text.len() {
            assert!(Statement::parse(&text[..cut]).is_err(), "prefix {cut}");
        }
    }

    #[test]
    fn a_key_is_trusted_only_through_a_statement_that_checks() {
        let st = sample();
        let signed = SignedStatement { statement: st.text(), signature: "00".into(), chain: "PEM".into() };
        let all = vec![signed.clone()];
        let ok = |_: &SignedStatement, _: &Statement| Ok(Vouched { node: "police@wuxi.liangxi".into() });
        assert_eq!(trusted(&all, &st.node, &st.verifier_key, ok).unwrap(), &signed);
        // Another key, another node, a failing chain, a certificate of someone else.
        assert!(trusted(&all, &st.node, "fedgate.audit/x+00+AQ", ok).is_err());
        assert!(trusted(&all, "court@wuxi.xinwu", &st.verifier_key, ok).is_err());
        let bad = |_: &SignedStatement, _: &Statement| Err::<Vouched, _>("unknown issuer".to_string());
        assert!(trusted(&all, &st.node, &st.verifier_key, bad).unwrap_err().contains("unknown issuer"));
        let other = |_: &SignedStatement, _: &Statement| Ok(Vouched { node: "court@wuxi.xinwu".into() });
        assert!(trusted(&all, &st.node, &st.verifier_key, other).unwrap_err().contains("court@wuxi.xinwu"));
        assert!(trusted(&[], &st.node, &st.verifier_key, ok).unwrap_err().contains("no key statement"));
    }

    #[test]
    fn a_statement_is_current_for_the_same_key_and_chain_only() {
        let signed =
            SignedStatement { statement: sample().text(), signature: "00".into(), chain: "A".into() };
        let key = sample().verifier_key;
        assert!(is_current(std::slice::from_ref(&signed), &key, "A"));
        assert!(!is_current(std::slice::from_ref(&signed), &key, "B"), "a renewed certificate signs anew");
        assert!(!is_current(&[signed], "other", "A"), "a rotated key is stated anew");
        assert!(!is_current(&[], &key, "A"));
    }
}
