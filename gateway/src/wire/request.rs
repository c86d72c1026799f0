//! Assembling one request from a stream's bytes, sans-IO: the whole stream is the request.
//!
//! The asker writes exactly one request frame and finishes its side, so the provider reads to
//! the end of the stream and then requires exactly one frame there. The buffer grows as bytes
//! arrive and never beyond [`MAX_REQUEST_FRAME`] plus the header: the declared length is checked
//! as soon as the four header bytes are in, and is never used to allocate.

use thiserror::Error;

use super::frame::{self, FrameError};
use super::limits::{self, RequestError, MAX_REQUEST_FRAME};
use super::msg::{ErrorCode, Message};

const HEADER: usize = 4;

/// Why a stream did not carry one acceptable request.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum Refused {
    /// The bytes did not decode, or speak a version or message kind this build does not.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The request breaks a size cap. `request` is what decoded, if anything did.
    #[error("{error}")]
    Caps {
        /// The cap broken.
        error: RequestError,
        /// The decoded request (for the audit entry, which records oversized values as digests).
        request: Option<Box<Message>>,
    },
    /// The stream ended inside the frame.
    #[error("the stream ended {have} bytes into a {need}-byte request frame")]
    Incomplete {
        /// Bytes received.
        have: usize,
        /// Bytes the frame needs.
        need: usize,
    },
    /// Bytes followed the request frame on the stream.
    #[error("{0} bytes after the request frame (one request per stream)")]
    Trailing(usize),
    /// The connection's or the node's budget for buffered request bytes is used up.
    #[error("too many request bytes in flight ({scope} budget of {budget} bytes); retry later")]
    Busy {
        /// `connection` or `node`.
        scope: &'static str,
        /// That budget.
        budget: usize,
    },
    /// No whole request arrived in time.
    #[error("no whole request within {0:?}")]
    Timeout(std::time::Duration),
    /// The stream failed (reset, connection lost).
    #[error("the request stream failed: {0}")]
    Stream(String),
}

impl Refused {
    /// The error code the asker is answered with (see [`From<&Refused>`](ErrorCode)).
    pub fn code(&self) -> ErrorCode {
        ErrorCode::from(self)
    }
}

/// A refusal at the wire keeps its class: bad bytes are `malformed`, a broken cap
/// `bad-request`, load `busy`, and a request that did not arrive in time `request-timeout` — a
/// slow asker has not sent anything bad.
impl From<&Refused> for ErrorCode {
    fn from(r: &Refused) -> ErrorCode {
        match r {
            Refused::Frame(e) => ErrorCode::from(e),
            Refused::Caps { .. } => ErrorCode::BadRequest,
            Refused::Incomplete { .. } | Refused::Trailing(_) => ErrorCode::Malformed,
            Refused::Busy { .. } => ErrorCode::Busy,
            Refused::Timeout(_) => ErrorCode::RequestTimeout,
            // The asker reset the stream or lost the connection: no answer reaches it; the code
            // only names the QUIC stop.
            Refused::Stream(_) => ErrorCode::Malformed,
        }
    }
}

impl Refused {
    /// True if and only if the refusal is worth an audit entry: not load shedding (which must
    /// not cost disk) and not a stream the peer itself reset.
    pub fn audited(&self) -> bool {
        !matches!(self, Refused::Busy { .. } | Refused::Stream(_))
    }
}

/// The bytes of one request stream, as they arrive.
#[derive(Debug, Default)]
pub struct RequestBuffer {
    buf: Vec<u8>,
}

impl RequestBuffer {
    /// Appends received bytes, refusing as soon as the frame (declared or received) is larger
    /// than a request may be.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), Refused> {
        let room = (HEADER + MAX_REQUEST_FRAME).saturating_sub(self.buf.len());
        if bytes.len() > room {
            // Either the frame is too large or bytes follow it; the header tells which.
            let mut all = self.buf.clone();
            all.extend_from_slice(&bytes[..bytes.len().min(HEADER)]);
            if let Some(len) = self.declared(&all) {
                if len > MAX_REQUEST_FRAME {
                    return Err(too_large(len));
                }
            }
            return Err(Refused::Trailing(self.buf.len() + bytes.len() - HEADER - MAX_REQUEST_FRAME));
        }
        self.buf.extend_from_slice(bytes);
        match self.declared(&self.buf) {
            Some(len) if len > MAX_REQUEST_FRAME => Err(too_large(len)),
            Some(len) if self.buf.len() > HEADER + len => {
                Err(Refused::Trailing(self.buf.len() - HEADER - len))
            }
            _ => Ok(()),
        }
    }

    /// Bytes buffered so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True if and only if nothing has been received.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn declared(&self, bytes: &[u8]) -> Option<usize> {
        bytes.first_chunk::<HEADER>().map(|h| u32::from_be_bytes(*h) as usize)
    }

    /// At the end of the stream: the one request it carried, decoded and checked against every
    /// cap. `Ok(None)` if the stream carried nothing at all.
    pub fn finish(self) -> Result<Option<Message>, Refused> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let need = self.declared(&self.buf).map_or(HEADER, |len| HEADER + len);
        if self.buf.len() < need {
            return Err(Refused::Incomplete { have: self.buf.len(), need });
        }
        let msg = frame::decode_body(&self.buf[HEADER..])?;
        if let Err(error) = limits::check_request(&msg) {
            return Err(Refused::Caps { error, request: Some(Box::new(msg)) });
        }
        Ok(Some(msg))
    }
}

fn too_large(len: usize) -> Refused {
    Refused::Caps { error: RequestError::Frame { len }, request: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::encode;

    fn query(dataset: &str) -> Message {
        Message::Query {
            dataset: dataset.into(),
            purpose: "statistics".into(),
            filters: vec![],
            limit: None,
            exchange: None,
        }
    }

    #[test]
    fn one_frame_then_end_of_stream_is_a_request() {
        let bytes = encode(&query("tickets"));
        let mut b = RequestBuffer::default();
        for byte in &bytes {
            b.push(std::slice::from_ref(byte)).unwrap();
        }
        assert_eq!(b.finish().unwrap(), Some(query("tickets")));
        assert_eq!(RequestBuffer::default().finish().unwrap(), None);
    }

    #[test]
    fn a_large_declared_length_is_refused_at_the_header_without_allocating() {
        let mut b = RequestBuffer::default();
        b.push(&[0, 0x10]).unwrap();
        let err = b.push(&[0xcd, 0x2c]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadRequest);
        assert!(
            matches!(err, Refused::Caps { error: RequestError::Frame { len: 0x0010_cd2c }, .. }),
            "{err:?}"
        );
        assert!(b.buf.capacity() < 64, "buffer grew to {}", b.buf.capacity());
    }

    #[test]
    fn a_big_chunk_past_the_cap_is_refused_before_it_is_copied() {
        let mut frame = (2_000_000u32).to_be_bytes().to_vec();
        frame.extend(vec![0u8; 100_000]);
        let err = RequestBuffer::default().push(&frame).unwrap_err();
        assert!(
            matches!(err, Refused::Caps { error: RequestError::Frame { len: 2_000_000 }, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn trailing_bytes_after_the_frame_are_refused() {
        let mut bytes = encode(&Message::CatalogRequest);
        bytes.push(0);
        assert_eq!(RequestBuffer::default().push(&bytes), Err(Refused::Trailing(1)));
        let mut two = encode(&Message::CatalogRequest);
        two.extend(encode(&Message::CatalogRequest));
        let mut b = RequestBuffer::default();
        assert!(matches!(b.push(&two), Err(Refused::Trailing(_))));
    }

    #[test]
    fn every_truncation_is_incomplete_not_a_request() {
        let bytes = encode(&query("tickets"));
        for cut in 1..bytes.len() {
            let mut b = RequestBuffer::default();
            b.push(&bytes[..cut]).unwrap();
            assert!(matches!(b.finish(), Err(Refused::Incomplete { .. })), "cut {cut}");
        }
    }

    #[test]
    fn oversized_fields_answer_bad_request_and_keep_the_request_for_the_audit() {
        let mut b = RequestBuffer::default();
        b.push(&encode(&query(&"d".repeat(1000)))).unwrap();
        let err = b.finish().unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadRequest);
        assert!(matches!(err, Refused::Caps { request: Some(_), .. }));
    }

    #[test]
    fn each_refusal_is_answered_by_its_blame() {
        let cases = [
            (Refused::Frame(FrameError::Malformed("x".into())), ErrorCode::Malformed),
            (Refused::Frame(FrameError::Trailing(1)), ErrorCode::Malformed),
            (Refused::Frame(FrameError::Truncated { need: 9, have: 4 }), ErrorCode::Malformed),
            (Refused::Frame(FrameError::Version { got: 2 }), ErrorCode::Unsupported),
            (Refused::Frame(FrameError::UnknownKind { kind: "x".into() }), ErrorCode::Unsupported),
            (Refused::Frame(FrameError::TooLarge { len: 9, max: 1 }), ErrorCode::BadRequest),
            (too_large(70_000), ErrorCode::BadRequest),
            (Refused::Incomplete { have: 3, need: 9 }, ErrorCode::Malformed),
            (Refused::Trailing(1), ErrorCode::Malformed),
            (Refused::Busy { scope: "node", budget: 1 }, ErrorCode::Busy),
            (Refused::Timeout(std::time::Duration::from_secs(5)), ErrorCode::RequestTimeout),
        ];
        for (refused, want) in cases {
            assert_eq!(refused.code(), want, "{refused}");
        }
    }
}
