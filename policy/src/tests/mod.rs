//! Tests of the pure policy core: grants, decisions, masking and PII detection.

mod decisions;
mod fuzz_seeds;
mod masking;
mod pii_corpus;
