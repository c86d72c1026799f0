//! fedgate-policy: usage-scope decisions and desensitization.
//!
//! Pure: a request, the peer's node id, the catalog, the grants and the time go in; a
//! [`Decision`] comes out — allow with per-field obligations and a row scope, or deny with a
//! reason. [`grant`] parses the steward's grant files with located errors; [`decide`] matches
//! them with casbin, sharded and cached behind an immutable snapshot; [`plan`] compiles an
//! allow into per-record work with no policy lookup per record; [`explain`] names the grants
//! that almost allowed a denied request, for the steward's dry run; [`mask`] holds the operators
//! and [`pii`] the detectors for free text. No I/O, no clock.
#![warn(missing_docs)]

pub mod decide;
pub mod explain;
pub mod grant;
mod index;
pub mod mask;
pub mod pii;
pub mod plan;
pub mod time;

pub use decide::{Allowed, Decision, DenyReason, EngineError, Obligation, Policy, Request, RowScope};
pub use explain::{near_misses, Miss, NearMiss};
pub use grant::{parse_grants, Action, Grant, GrantSet, Rows, Subject};
pub use plan::Plan;

#[cfg(test)]
mod tests;
