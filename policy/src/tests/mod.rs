//! Tests of the pure policy core: grants, decisions, masking and PII detection.

mod decisions;
mod masking;
mod pii_corpus;
