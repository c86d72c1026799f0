//! Any bytes as a `gateway.toml`: errors are fine, panics are not. Every diagnostic is rendered
//! too, since locating an error inside multi-byte text is where span arithmetic goes wrong.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match fedgate_gateway::config::parse(Path::new("/etc/fedgate/gateway.toml"), text) {
        Ok(cfg) => {
            // A peer listed twice is an error, so a config that parses names each peer once.
            for p in &cfg.peers {
                assert_eq!(cfg.peers.iter().filter(|q| q.node == p.node).count(), 1, "{}", p.node);
            }
        }
        Err(diags) => {
            let _ = diags.to_string();
        }
    }
});
