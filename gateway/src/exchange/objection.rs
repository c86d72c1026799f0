//! What a provider decides about an objection's record, sans-IO: whether the objector may
//! receive it at all (the query's own decision, for its grants), and the source reads that find
//! the record as the source holds it (for the objector's scope, and for the steward's check
//! after a correction).

use std::sync::Arc;

use fedgate_catalog::{Catalog, NodeId, Record, Value};
use fedgate_policy::{Action, RowScope};

use super::provider::{decide_for, ProviderContext, Query, Refusal};
use crate::config::{SourceConfig, SourceKind};
use crate::governance::objection::Objection;
use crate::source::{SourceQuery, Transform};
use crate::wire::ErrorCode;

/// A read of one record as the source holds it (no desensitization): what the provider checks
/// and keeps a digest of, never what it sends.
pub struct RecordRead {
    /// Which source.
    pub kind: SourceKind,
    /// The read: the record's primary key, within the rows allowed.
    pub query: SourceQuery,
    /// The field objected to: its index in the record as read.
    pub field: usize,
    transform: Transform,
}

impl RecordRead {
    /// The per-record work on the reading side: rows out of scope dropped, the rest as read.
    pub fn transform(&self) -> Transform {
        self.transform.clone()
    }
}

/// Decides whether `consumer` may object to the record `o` names (primary key `key`, typed) at
/// `now`: only a record it may receive, for the purpose it names, by the decision a query
/// makes (grant, purpose, rows, and the key a filter it may use), and only a field it receives.
/// The read then tells whether such a record exists within its rows. An objection is not a
/// delivery: whatever quota the decision reserved is given back at once.
pub fn decide_record(
    ctx: &ProviderContext<'_>,
    consumer: &NodeId,
    o: &Objection,
    key: &str,
    now: i64,
) -> Result<RecordRead, Refusal> {
    let Some(ds) = ctx.catalog.get(&o.dataset) else {
        return Err(Refusal(ErrorCode::UnknownDataset, format!("no dataset `{}` is shared here", o.dataset)));
    };
    let q = Query {
        dataset: o.dataset.clone(),
        purpose: o.purpose.clone(),
        filters: vec![(ds.primary_key.clone(), key.to_owned())],
        limit: Some(1),
        exchange: Some(o.exchange.clone()),
    };
    let mut a = decide_for(ctx, consumer, &q, Action::Read, now)?;
    if let Some(quota) = a.quota.take() {
        quota.settle(consumer, 0);
    }
    if !a.read.plan.fields().iter().any(|f| f == &o.field) {
        return Err(Refusal(
            ErrorCode::Denied,
            format!(
                "field `{}` of `{}` is not delivered to you: you cannot object to it",
                o.field, o.dataset
            ),
        ));
    }
    let field = ds.fields.iter().position(|f| f.name == o.field).unwrap_or(0);
    let plan = a.read.plan.clone();
    let transform: Transform = Arc::new(move |rec: Record| plan.in_scope(&rec).then_some(rec));
    Ok(RecordRead { kind: a.read.kind, query: a.read.query, field, transform })
}

/// The read of record `key` of `dataset` by its steward: every row, no consumer's scope.
pub fn steward_read(
    catalog: &Catalog,
    sources: &[SourceConfig],
    dataset: &str,
    field: &str,
    key: Value,
) -> Result<RecordRead, String> {
    let ds = catalog.get(dataset).ok_or_else(|| format!("no dataset `{dataset}` in the catalog"))?;
    let src = sources
        .iter()
        .find(|s| s.dataset == dataset)
        .ok_or_else(|| format!("dataset `{dataset}` has no data source configured"))?;
    let field = ds
        .fields
        .iter()
        .position(|f| f.name == field)
        .ok_or_else(|| format!("dataset `{dataset}` has no field `{field}` any more"))?;
    let query = SourceQuery::new(ds, &src.table, RowScope::All, vec![(ds.primary_key.clone(), key)], Some(2));
    Ok(RecordRead { kind: src.kind.clone(), query, field, transform: Arc::new(Some) })
}

/// The record a read found: exactly one, or why not.
pub fn one_record(mut records: Vec<Record>, what: impl FnOnce() -> String) -> Result<Record, String> {
    match records.len() {
        1 => Ok(records.remove(0)),
        0 => Err(format!("no record {}", what())),
        n => Err(format!("{n} records {}: the primary key is not unique at the source", what())),
    }
}
