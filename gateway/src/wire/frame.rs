//! Frame codec: `u32` big-endian body length, then a CBOR body `{v: version, m: message}`.
//!
//! The decoder takes untrusted bytes. It checks the declared length against [`MAX_FRAME`] before
//! buffering, rejects trailing bytes inside a frame, and reports every failure as a typed
//! [`FrameError`]; it never panics (property tests below, fuzz target in `fuzz/`).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::msg::Message;

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
    let env: EnvelopeIn = ciborium::de::from_reader(&mut rest).map_err(|e| {
        // A version mismatch may also change the message shape; report the version if readable.
        match version_of(body) {
            Some(v) if v != PROTOCOL_VERSION => FrameError::Version { got: v },
            _ => FrameError::Malformed(e.to_string()),
        }
    })?;
    if env.v != PROTOCOL_VERSION {
        return Err(FrameError::Version { got: env.v });
    }
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    Ok(env.m)
}

fn version_of(body: &[u8]) -> Option<u16> {
    #[derive(Deserialize)]
    struct V {
        v: u16,
    }
    ciborium::de::from_reader::<V, _>(body).ok().map(|v| v.v)
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
    use crate::wire::msg::ErrorCode;
    use proptest::prelude::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello {
                version: PROTOCOL_VERSION,
                node: "police@wuxi.liangxi".into(),
                software: "fedgate test".into(),
            },
            Message::Welcome { node: "court@wuxi.xinwu".into() },
            Message::Error { code: ErrorCode::Denied, message: "no grant".into() },
        ]
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
