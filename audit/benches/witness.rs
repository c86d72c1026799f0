//! What witnessing costs per query: the provider signs one checkpoint per group commit and
//! proves each witnessed entry from the compact range and the group's leaf hashes; the consumer
//! checks the signature and the proof; the witness travels in the trailer.
//!
//! Run: cargo bench -p fedgate-audit --bench witness   (a log of 1,000,000 entries)

use std::hint::black_box;
use std::time::Instant;

use fedgate_audit::checkpoint::Checkpoint;
use fedgate_audit::merkle::{leaf_hash, CompactRange, GroupProver, Hash};
use fedgate_audit::Witness;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// Median µs of `f` over `n` runs.
fn micros(n: usize, mut f: impl FnMut()) -> f64 {
    let mut xs: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    xs.sort_by(f64::total_cmp);
    xs[n / 2]
}

fn main() {
    let size: u64 = 1_000_000;
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("key");
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
    let origin = "fedgate.audit/hotline12345@wuxi".to_owned();
    let verifier = (origin.clone(), key.public_key().as_ref().to_vec());
    let mut before = CompactRange::default();
    for i in 0..size {
        before.push(leaf_hash(&i.to_be_bytes()));
    }
    println!("a log of {size} entries; medians of 2,000 runs");
    for group in [1usize, 16, 64] {
        let new: Vec<Hash> = (0..group as u64).map(|i| leaf_hash(&(size + i).to_be_bytes())).collect();
        let mut after = before.clone();
        new.iter().for_each(|h| after.push(*h));
        let cp = Checkpoint { origin: origin.clone(), size: after.size(), root: after.root() };
        // The writer's whole cost for a group: one signature, one proof per entry.
        let provider = micros(2000, || {
            let note = cp.sign(&key);
            let mut prover = GroupProver::new(&before, &new);
            for (i, h) in new.iter().enumerate() {
                let seq = size + i as u64;
                black_box(Witness::new(note.clone(), seq, h, &prover.prove(seq).expect("prove")));
            }
        });
        let note = cp.sign(&key);
        let w =
            Witness::new(note, size, &new[0], &GroupProver::new(&before, &new).prove(size).expect("prove"));
        let consumer = micros(2000, || {
            black_box(w.check(&verifier, Some(size)).expect("check"));
        });
        // In the trailer the witness is one more map entry: its CBOR plus the key "witness".
        let bytes = w.wire_len() + 1 + "witness".len();
        println!(
            "group of {group:>2}: provider {:>6.1} µs per exchange ({provider:.1} µs per group: 1 signature, {group} proofs); consumer check {consumer:.1} µs; {bytes} bytes on the wire ({} proof hashes)",
            provider / group as f64,
            w.path.len()
        );
    }
    let sign = micros(2000, || {
        black_box(Checkpoint { origin: origin.clone(), size, root: before.root() }.sign(&key));
    });
    println!("one Ed25519 checkpoint signature alone: {sign:.1} µs");
}
