//! The QUIC drivers of the exchange sessions: they run a [`crate::exchange`] state machine on
//! one quinn stream, moving frames, audit entries, source batches and signatures, and decide
//! nothing themselves.

pub mod consumer;
pub mod directory;
pub mod objection;
pub mod provider;
pub mod referral;
pub mod request;
pub mod serve;
pub mod subscription;

use fedgate_audit::Kind;
use fedgate_catalog::Catalog;
use fedgate_policy::Policy;

use crate::exchange::ProviderContext;
use crate::state::Shared;

/// What a provider session decides with: the node's rules in force (`catalog`, `policy`, held
/// by the caller for the session's decision) and its sources, quotas and masking secret; its
/// audit entries start as `kind`.
pub(crate) fn provider_context<'a>(
    shared: &'a Shared,
    catalog: &'a Catalog,
    policy: &'a Policy,
    kind: Kind,
) -> ProviderContext<'a> {
    ProviderContext {
        local: shared.link.local(),
        catalog,
        policy,
        sources: &shared.cfg.sources,
        gate: &shared.sources,
        masking_secret: shared.masking_secret(),
        quotas: &shared.quotas,
        entry: shared.audit_entry(kind),
        marks: &shared.marks,
    }
}

pub use consumer::Transfer;
