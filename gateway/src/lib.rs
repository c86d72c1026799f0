//! fedgate-gateway: the node, the thin async shell around fedgate's pure cores.
//!
//! Where things are, and the layers (each depends only on the ones above it in this list):
//!
//! - [`wire`]: the frame codec and messages, sans-IO. [`config`], [`source`] (reading SQLite
//!   and PostgreSQL), [`metrics`] and the other leaves sit here too.
//! - [`link`]: the mutual-TLS QUIC endpoint: dialling, accepting, identifying peers.
//! - [`exchange`]: the exchange state machines, sans-IO: a provider and a consumer session
//!   take `now`, frames and source batches and return frames, audit entries and source reads.
//!   Every decision, cap, quota, deadline and trailer check is here; tests drive the two
//!   against each other in memory.
//! - [`directory`]: the federation directory a node holds (verified by `fedgate-certs`),
//!   persisted in its state folder; where peers' addresses come from beside `[[peers]]`.
//! - [`state`]: what a running node's tasks share (rules in force, link, audit log, quotas)
//!   and how it is loaded from the node's files.
//! - [`quic`]: the QUIC drivers: the accept loop and one task per stream, running the
//!   exchange sessions on quinn streams; they move bytes and decide nothing.
//! - [`error`]: errors by blame: wire codes, link, exchange and node errors `From`-converted into
//!   one API code and its HTTP status, the table the API answers with and the CLI reads back.
//! - [`api`]: the local HTTP API for the department's applications and the CLI.
//! - [`node`]: a running gateway: starts the link, the drivers, the API and the reload loops.
//! - The CLI: `src/main.rs` (the `fedgate` binary) with [`client`], [`render`], [`check`],
//!   [`audit_cli`] and [`demo`].
//!
//! The audit log is its own crate, `fedgate-audit`; nothing here is below it.
#![warn(missing_docs)]

pub mod admission;
pub mod api;
pub mod api_body;
pub mod api_code;
pub mod api_events;
pub mod api_objections;
pub mod api_referrals;
pub mod api_requests;
pub mod api_serve;
pub mod api_subscriptions;
pub mod audit_cli;
pub mod audit_trust;
pub mod calendar;
pub mod check;
pub mod client;
pub mod config;
pub mod console;
pub mod contacts;
pub mod demo;
pub mod directory;
pub mod directory_cli;
pub mod error;
pub mod events;
pub mod exchange;
pub mod flood;
pub mod governance;
pub mod identity;
pub mod link;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod objection_cli;
pub mod poller;
pub mod quic;
pub mod referral_cli;
pub mod referral_ops;
pub mod referrals;
pub mod refusal;
pub mod render;
pub mod request_cli;
pub mod secret;
pub mod source;
pub mod source_check;
pub mod sources;
pub mod state;
mod state_db;
pub mod stats_cli;
pub mod subscribe_cli;
pub mod subscriptions;
pub mod user_cli;
pub mod wire;
