//! fedgate-gateway: the node, the thin async shell around fedgate's pure cores.
//!
//! It wires the certs crate's verification into a quinn endpoint ([`link`]), speaks the
//! length-prefixed CBOR protocol ([`wire`]) between gateways, reads a node's `gateway.toml`
//! ([`config`]) and runs the node ([`node`]): serving peers, reloading revocation lists. The
//! `fedgate` binary (src/main.rs) is the command-line front end over all of it.
#![warn(missing_docs)]

pub mod admission;
pub mod api;
pub mod api_body;
pub mod api_serve;
pub mod audit_cli;
pub mod audit_trust;
pub mod check;
pub mod client;
pub mod config;
pub mod demo;
pub mod error;
pub mod exchange;
pub mod flood;
pub mod identity;
pub mod link;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod quic;
pub mod refusal;
pub mod render;
pub mod secret;
pub mod source;
pub mod source_check;
pub mod sources;
pub mod wire;
