//! The wire protocol between gateways: length-prefixed CBOR frames on QUIC streams.
//!
//! [`frame`] is the sans-IO codec (bytes in, messages out, never a panic); [`msg`] the messages.
//! Each request opens one bidirectional stream: the asker writes one request frame and finishes
//! its side; the provider answers with one or more frames and finishes.

pub mod frame;
pub mod limits;
pub mod msg;
pub mod referral;
pub mod request;

pub use frame::{decode, encode, FrameDecoder, FrameError, MAX_FRAME, PROTOCOL_VERSION};
pub use msg::{AuditKey, ErrorCode, Message, Truncation};
