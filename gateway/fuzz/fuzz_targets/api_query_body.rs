//! Any bytes as the body of `POST /v1/query`, through the handler's own decoding and checks:
//! the answer is a request or a 400 `bad-request`, never a panic and never another status.
#![no_main]

use fedgate_gateway::api::parse_query_body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_query_body(data) {
        Ok(q) => {
            // The peer is a valid node id, so it prints back to what parses to the same id.
            assert_eq!(q.peer.to_string().parse().ok().as_ref(), Some(&q.peer));
        }
        Err(e) => {
            assert_eq!(e.status().as_u16(), 400, "{e:?}");
            assert_eq!(e.code(), "bad-request");
        }
    }
});
