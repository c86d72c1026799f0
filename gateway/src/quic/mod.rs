//! The QUIC drivers of the exchange sessions: they run a [`crate::exchange`] state machine on
//! one quinn stream, moving frames, audit entries, source batches and signatures, and decide
//! nothing themselves.

pub mod consumer;
pub mod directory;
pub mod provider;
pub mod serve;
pub mod subscription;

pub use consumer::Transfer;
