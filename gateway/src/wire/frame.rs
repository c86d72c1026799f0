//! Frame codec: `u32` big-endian body length, then a CBOR body `{v: version, m: message}`.
//!
//! The decoder takes untrusted bytes. It checks the declared length against [`MAX_FRAME`] before
//! buffering, rejects trailing bytes inside a frame, and reports every failure as a typed
//! [`FrameError`]; it never panics (property tests below, fuzz target in `fuzz/`).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::msg::{ErrorCode, Message};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The largest frame body accepted: bounds what one peer can make us buffer per stream, while
/// leaving room for a batch of a few thousand typical records.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;

const HEADER: usize = 4;

/// Why bytes did not decode into a frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The declared length exceeds [`MAX_FRAME`].
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input ended inside a frame.
    #[error("truncated frame: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The body is not a valid CBOR message.
    #[error("malformed frame body: {0}")]
    Malformed(String),
    /// Bytes left over after the body's CBOR value.
    #[error("{0} trailing bytes after the frame body")]
    Trailing(usize),
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {got} (this gateway speaks {PROTOCOL_VERSION})")]
    Version {
        /// The version in the frame.
        got: u16,
    },
    /// A well-formed envelope carrying a message kind this build does not know.
    #[error("unknown message kind `{kind}`")]
    UnknownKind {
        /// The kind as sent (clipped to a short prefix; it is peer-controlled).
        kind: String,
    },
}

impl FrameError {
    /// True if and only if the bytes were well-formed but speak something this build does not
    /// (another version, an unknown message kind): answered `unsupported`, not `malformed`.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, FrameError::Version { .. } | FrameError::UnknownKind { .. })
    }
}

/// What an asker whose frame failed to decode is answered: another version or kind is
/// `unsupported`, a frame over the cap `bad-request`, bad bytes `malformed`.
impl From<&FrameError> for ErrorCode {
    fn from(e: &FrameError) -> ErrorCode {
        match e {
            FrameError::Version { .. } | FrameError::UnknownKind { .. } => ErrorCode::Unsupported,
            FrameError::TooLarge { .. } => ErrorCode::BadRequest,
            FrameError::Truncated { .. } | FrameError::Malformed(_) | FrameError::Trailing(_) => {
                ErrorCode::Malformed
            }
        }
    }
}

/// Decoder messages can quote peer-supplied text; they are cut to this many characters.
const MAX_ERROR_TEXT: usize = 160;

fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_ERROR_TEXT) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    v: u16,
    m: &'a Message,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    v: u16,
    m: Message,
}

/// Encodes one message as a whole frame (header included).
pub fn encode(msg: &Message) -> Vec<u8> {
    // Sized for a typical batch up front, so large frames are not copied while growing.
    let hint = match msg {
        Message::Batch { records } => records.len() * 640,
        _ => 256,
    };
    let mut out = Vec::with_capacity(HEADER + hint);
    out.resize(HEADER, 0);
    // Writing CBOR into a Vec cannot fail for our types (no maps with non-string keys, no I/O).
    if let Err(e) = ciborium::ser::into_writer(&EnvelopeOut { v: PROTOCOL_VERSION, m: msg }, &mut out) {
        unreachable!("CBOR encoding into memory failed: {e}");
    }
    let len = (out.len() - HEADER) as u32;
    out[..HEADER].copy_from_slice(&len.to_be_bytes());
    out
}

/// Reads the body length from a frame header, checking the limit.
pub fn body_len(header: [u8; HEADER]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len, max: MAX_FRAME });
    }
    Ok(len)
}

/// Decodes a frame body (without header).
pub fn decode_body(body: &[u8]) -> Result<Message, FrameError> {
    let mut rest = body;
    let env: EnvelopeIn = ciborium::de::from_reader(&mut rest).map_err(|e| classify(body, &e.to_string()))?;
    if env.v != PROTOCOL_VERSION {
        return Err(FrameError::Version { got: env.v });
    }
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    Ok(env.m)
}

/// Why a body that failed to decode as a message failed: a version or message kind this build
/// does not speak (checked on the generic CBOR value, since either may change the shape), or
/// plain malformation. Only runs on the error path, so good frames are decoded once.
fn classify(body: &[u8], err: &str) -> FrameError {
    use ciborium::Value;
    let mut rest = body;
    let Ok(Value::Map(env)) = ciborium::de::from_reader::<Value, _>(&mut rest) else {
        return FrameError::Malformed(clip(err));
    };
    if !rest.is_empty() {
        return FrameError::Trailing(rest.len());
    }
    let field = |name: &str| env.iter().find(|(k, _)| k.as_text() == Some(name)).map(|(_, v)| v);
    let version = field("v").and_then(Value::as_integer).and_then(|i| u16::try_from(i).ok());
    if let Some(v) = version.filter(|v| *v != PROTOCOL_VERSION) {
        return FrameError::Version { got: v };
    }
    let kind = match field("m") {
        Some(Value::Text(k)) => Some(k.as_str()),
        Some(Value::Map(m)) if m.len() == 1 => m[0].0.as_text(),
        _ => None,
    };
    match kind {
        Some(k) if !Message::KINDS.contains(&k) => FrameError::UnknownKind { kind: clip(k) },
        _ => FrameError::Malformed(clip(err)),
    }
}

/// Decodes exactly one whole frame; anything after it is an error.
pub fn decode(bytes: &[u8]) -> Result<Message, FrameError> {
    let mut d = FrameDecoder::default();
    d.push(bytes);
    match d.next_message()? {
        Some(m) if d.buffered() == 0 => Ok(m),
        Some(_) => Err(FrameError::Trailing(d.buffered())),
        None => {
            let need = if bytes.len() < HEADER {
                HEADER
            } else {
                HEADER + body_len([bytes[0], bytes[1], bytes[2], bytes[3]])?
            };
            Err(FrameError::Truncated { need, have: bytes.len() })
        }
    }
}

/// An incremental decoder: push bytes as they arrive, take whole messages out.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, `None` if more bytes are needed. An oversized declared length is
    /// an error as soon as the header is in, before any body is buffered.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        let Some(header) = self.buf.first_chunk::<HEADER>() else { return Ok(None) };
        let len = body_len(*header)?;
        let Some(body) = self.buf.get(HEADER..HEADER + len) else { return Ok(None) };
        let msg = decode_body(body)?;
        self.buf.drain(..HEADER + len);
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello {
                version: PROTOCOL_VERSION,
                node: "police@wuxi.liangxi".into(),
                software: "fedgate test".into(),
            },
            Message::Welcome { node: "court@wuxi.xinwu".into(), audit_key: None },
            Message::error(ErrorCode::Denied, "no grant"),
            Message::Referral {
                exchange: "0123456789abcdef0123456789abcdef".into(),
                seq: 1,
                at: 1_790_000_000,
                step: crate::wire::referral::Step::Send {
                    reference: "12345-7".into(),
                    subject: "noise".into(),
                    instructions: "visit".into(),
                    deadline: 1_790_100_000,
                    case: Some(crate::wire::referral::Case {
                        dataset: "tickets".into(),
                        purpose: "dispute-mediation".into(),
                        fields: vec!["id".into()],
                        record: vec![fedgate_catalog::Value::Text("T-1".into())],
                    }),
                    parent: None,
                },
                signature: "ab".into(),
            },
            Message::ReferralAck { exchange: "0123456789abcdef0123456789abcdef".into(), seq: 1 },
        ]
    }

    fn witness() -> Box<fedgate_audit::Witness> {
        let note =
            "fedgate.audit/court@wuxi.xinwu\n8\nAAAA\n\n\u{2014} fedgate.audit/court@wuxi.xinwu AAAA\n";
        Box::new(fedgate_audit::Witness::new(note.into(), 6, &[1; 32], &[[2; 32], [3; 32], [4; 32]]))
    }

    /// The frames that carry what witnessing added: the welcome's audit key, the trailer's and
    /// the error's witness.
    fn witnessing() -> Vec<Message> {
        let audit_key = crate::wire::AuditKey {
            statement: "fedgate audit key statement v1\n".into(),
            signature: "00".into(),
        };
        vec![
            Message::Welcome { node: "court@wuxi.xinwu".into(), audit_key: Some(audit_key) },
            Message::Trailer {
                count: 3,
                digest: "ab".into(),
                signature: "cd".into(),
                audit_seq: Some(6),
                truncated: None,
                witness: Some(witness()),
            },
            Message::Error { code: ErrorCode::Denied, message: "no grant".into(), witness: Some(witness()) },
        ]
    }

    #[test]
    fn witnessing_fields_round_trip_and_older_peers_ignore_them() {
        // What a build before witnessing decodes these frames into: the same message without
        // the new fields (serde skips unknown fields), so old consumers keep working.
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(rename_all = "kebab-case")]
        enum Old {
            Welcome { node: String },
            Trailer { count: u64, digest: String, signature: String, audit_seq: Option<u64> },
            Error { code: ErrorCode, message: String },
        }
        #[derive(Deserialize)]
        struct OldEnvelope {
            m: Old,
        }
        let old: Vec<Old> = witnessing()
            .iter()
            .map(|m| {
                assert_eq!(decode(&encode(m)).unwrap(), *m);
                ciborium::de::from_reader::<OldEnvelope, _>(&encode(m)[4..]).unwrap().m
            })
            .collect();
        assert_eq!(old[0], Old::Welcome { node: "court@wuxi.xinwu".into() });
        assert!(matches!(&old[1], Old::Trailer { count: 3, audit_seq: Some(6), .. }));
        assert!(matches!(&old[2], Old::Error { code: ErrorCode::Denied, .. }));
        // And frames from a provider before witnessing decode here without them.
        let mut plain = witnessing();
        if let Message::Trailer { witness, .. } = &mut plain[1] {
            *witness = None;
        }
        assert!(!encode(&plain[1]).windows(7).any(|w| w == b"witness"));
        assert_eq!(decode(&encode(&plain[1])).unwrap(), plain[1]);
    }

    #[test]
    fn round_trip() {
        for m in samples() {
            assert_eq!(decode(&encode(&m)).unwrap(), m);
        }
    }

    #[test]
    fn every_truncation_fails() {
        for m in samples() {
            let bytes = encode(&m);
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "prefix of {cut} bytes decoded");
            }
        }
    }

    #[test]
    fn oversized_and_trailing_and_version() {
        let mut big = (MAX_FRAME as u32 + 1).to_be_bytes().to_vec();
        big.extend_from_slice(&[0; 8]);
        assert!(matches!(decode(&big), Err(FrameError::TooLarge { .. })));

        let mut two = encode(&samples()[0]);
        two.extend(encode(&samples()[1]));
        assert!(matches!(decode(&two), Err(FrameError::Trailing(_))));

        let mut body = Vec::new();
        ciborium::ser::into_writer(&EnvelopeOut { v: 9, m: &samples()[0] }, &mut body).unwrap();
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend(body);
        assert_eq!(decode(&frame), Err(FrameError::Version { got: 9 }));
    }

    fn frame_of(value: &ciborium::Value) -> Vec<u8> {
        let mut body = Vec::new();
        ciborium::ser::into_writer(value, &mut body).unwrap();
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend(body);
        frame
    }

    fn envelope(v: u64, m: ciborium::Value) -> ciborium::Value {
        use ciborium::Value;
        Value::Map(vec![(Value::Text("v".into()), Value::Integer(v.into())), (Value::Text("m".into()), m)])
    }

    #[test]
    fn unknown_kinds_and_versions_are_unsupported_not_malformed() {
        use ciborium::Value;
        let unit = frame_of(&envelope(1, Value::Text("subscribe".into())));
        assert_eq!(decode(&unit), Err(FrameError::UnknownKind { kind: "subscribe".into() }));
        let tagged =
            frame_of(&envelope(1, Value::Map(vec![(Value::Text("a-future-kind".into()), Value::Null)])));
        assert!(decode(&tagged).unwrap_err().is_unsupported());
        // A future version may reshape a known message: still `unsupported`, naming the version.
        let v2 =
            frame_of(&envelope(2, Value::Map(vec![(Value::Text("hello".into()), Value::Integer(7.into()))])));
        assert_eq!(decode(&v2), Err(FrameError::Version { got: 2 }));
        // A known kind with a bad shape is malformed.
        let bad =
            frame_of(&envelope(1, Value::Map(vec![(Value::Text("query".into()), Value::Integer(7.into()))])));
        assert!(matches!(decode(&bad), Err(FrameError::Malformed(_))));
        // Peer text in an error is clipped.
        let long = frame_of(&envelope(1, Value::Text("k".repeat(10_000))));
        assert!(decode(&long).unwrap_err().to_string().len() < 300);
    }

    #[test]
    fn a_body_with_bytes_after_its_one_value_is_refused() {
        use ciborium::Value;
        let mut body = Vec::new();
        ciborium::ser::into_writer(&envelope(1, Value::Text("catalog-request".into())), &mut body).unwrap();
        for extra in [vec![0u8], vec![0xf6], encode(&Message::CatalogRequest)[4..].to_vec()] {
            let mut b = body.clone();
            b.extend(&extra);
            assert_eq!(decode_body(&b), Err(FrameError::Trailing(extra.len())));
        }
        assert_eq!(decode_body(&body), Ok(Message::CatalogRequest));
    }

    #[test]
    fn every_kind_is_listed() {
        let all = [
            Message::CatalogRequest,
            Message::Query {
                dataset: "d".into(),
                purpose: "p".into(),
                filters: vec![],
                limit: None,
                exchange: None,
            },
            Message::Header { fields: vec![], reason: String::new() },
            Message::Batch { records: vec![] },
            Message::Trailer {
                count: 0,
                digest: String::new(),
                signature: String::new(),
                audit_seq: None,
                truncated: None,
                witness: None,
            },
        ];
        let governance = [
            Message::SharingRequest {
                exchange: "0".repeat(32),
                dataset: "d".into(),
                purpose: "p".into(),
                fields: vec!["f".into()],
                until: Some(1),
                reason: "r".into(),
                signature: "00".into(),
            },
            Message::SharingAnswer {
                exchange: "0".repeat(32),
                state: "pending".into(),
                deadline: 1,
                reason: None,
                grant: None,
                clearance: None,
                until: None,
                quota: None,
                answered: None,
                signature: "00".into(),
                audit_seq: Some(3),
            },
            Message::Objection {
                exchange: "0".repeat(32),
                dataset: "d".into(),
                purpose: "p".into(),
                key: "k".into(),
                field: "f".into(),
                reason: "r".into(),
                proposed: Some("v".into()),
                signature: "00".into(),
            },
            Message::ObjectionAnswer {
                exchange: "0".repeat(32),
                state: "open".into(),
                reason: None,
                corrected: false,
                answered: None,
                signature: "00".into(),
                audit_seq: Some(3),
            },
        ];
        for m in samples().into_iter().chain(all).chain(witnessing()).chain(governance) {
            let v: ciborium::Value = ciborium::de::from_reader(&encode(&m)[4..]).unwrap();
            let inner = v.as_map().unwrap().iter().find(|(k, _)| k.as_text() == Some("m")).unwrap().1.clone();
            let kind = match &inner {
                ciborium::Value::Text(t) => t.clone(),
                other => other.as_map().unwrap()[0].0.as_text().unwrap().to_owned(),
            };
            assert!(Message::KINDS.contains(&kind.as_str()), "{kind}");
        }
    }

    #[test]
    fn error_code_names_match_the_wire() {
        use crate::wire::msg::ErrorCode as C;
        for c in C::ALL {
            let v: ciborium::Value = {
                let mut b = Vec::new();
                ciborium::ser::into_writer(&c, &mut b).unwrap();
                ciborium::de::from_reader(b.as_slice()).unwrap()
            };
            assert_eq!(v.as_text(), Some(c.as_str()));
        }
    }

    #[test]
    fn decoder_is_incremental() {
        let mut all = Vec::new();
        for m in samples() {
            all.extend(encode(&m));
        }
        let mut d = FrameDecoder::default();
        let mut got = Vec::new();
        for b in &all {
            d.push(std::slice::from_ref(b));
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, samples());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            let mut d = FrameDecoder::default();
            d.push(&bytes);
            while let Ok(Some(_)) = d.next_message() {}
        }

        #[test]
        fn mutated_frames_never_panic(idx in 0usize..3, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = encode(&samples()[idx]);
            for (at, x) in flips {
                let n = bytes.len();
                bytes[at % n] ^= x;
            }
            let _ = decode(&bytes);
        }
    }
}
