//! Counters for Prometheus (`GET /metrics`): totals only, nothing about records' contents.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $help:literal),+ $(,)?) => {
        /// The node's counters.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(#[doc = $help] pub $name: AtomicU64,)+
        }

        impl Metrics {
            /// Prometheus text exposition format.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    let _ = writeln!(out, "# HELP fedgate_{} {}", stringify!($name), $help);
                    let _ = writeln!(out, "# TYPE fedgate_{} counter", stringify!($name));
                    let _ = writeln!(out, "fedgate_{} {}", stringify!($name), self.$name.load(Ordering::Relaxed));
                )+
                out
            }
        }
    };
}

counters! {
    queries_served_total: "Queries this node answered with a complete, signed transfer.",
    queries_refused_total: "Queries this node refused (denied, unknown dataset, bad filter, quota, source down).",
    records_sent_total: "Records this node sent to peers.",
    transfers_received_total: "Transfers this node received and verified.",
    transfers_failed_total: "Transfers this node asked for that failed or arrived incomplete.",
    records_received_total: "Records this node received from peers.",
    peer_certificates_rejected_total: "Peer certificates refused at the handshake.",
    connections_accepted_total: "Authenticated inbound connections.",
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
