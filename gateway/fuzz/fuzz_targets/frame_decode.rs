//! Untrusted bytes from a peer into the frame decoder: it must never panic or over-allocate.
#![no_main]

use fedgate_gateway::wire::{decode, FrameDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
    // Also as a stream split at an arbitrary point.
    let cut = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let mut d = FrameDecoder::default();
    d.push(&data[..cut]);
    while let Ok(Some(_)) = d.next_message() {}
    d.push(&data[cut..]);
    while let Ok(Some(_)) = d.next_message() {}
});
