//! Cross-crate integration tests live in `tests/tests/`. The library holds what the long-running
//! tools beside them share: [`soak`], the judgement of the `fedgate-soak` run.
#![warn(missing_docs)]

pub mod soak;
