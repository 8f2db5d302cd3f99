//! Per-pipeline row processing: [`PipelineFilter`] and [`PipelineTransform`].
//!
//! Filters run first, in declaration order; the first `false` drops the row. Then
//! transforms run in order; `None` drops the row. Filters see baseline rows, the new
//! values of inserts and updates, and the identity of deletes; transforms never see a
//! delete's identity.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use crate::row::Row;
use crate::table::TableIdentifier;

/// Decides whether a row belongs in a pipeline's target.
pub trait PipelineFilter: Send + Sync {
    /// True to keep `row`.
    fn include(&self, table: &TableIdentifier, row: &Row) -> bool;

    /// True to let a delete through, given the identity the source sent (often only the
    /// key columns). The default is [`PipelineFilter::include`]. Field filters answer
    /// `true` when their field is absent from the identity: the target then deletes by
    /// key, a no-op for a row it never held, instead of keeping a stale row.
    fn include_identity(&self, table: &TableIdentifier, identity: &Row) -> bool {
        self.include(table, identity)
    }
}

/// Rewrites a row on its way into a pipeline's target.
pub trait PipelineTransform: Send + Sync {
    /// The rewritten row, or `None` to drop it.
    fn transform(&self, table: &TableIdentifier, row: Row) -> Option<Row>;
}

struct FilterFn<F>(F);

impl<F> PipelineFilter for FilterFn<F>
where
    F: Fn(&TableIdentifier, &Row) -> bool + Send + Sync,
{
    fn include(&self, table: &TableIdentifier, row: &Row) -> bool {
        (self.0)(table, row)
    }
}

struct TransformFn<F>(F);

impl<F> PipelineTransform for TransformFn<F>
where
    F: Fn(&TableIdentifier, Row) -> Option<Row> + Send + Sync,
{
    fn transform(&self, table: &TableIdentifier, row: Row) -> Option<Row> {
        (self.0)(table, row)
    }
}

/// A filter from a closure.
pub fn filter_fn(
    f: impl Fn(&TableIdentifier, &Row) -> bool + Send + Sync + 'static,
) -> Arc<dyn PipelineFilter> {
    Arc::new(FilterFn(f))
}

/// A transform from a closure.
pub fn transform_fn(
    f: impl Fn(&TableIdentifier, Row) -> Option<Row> + Send + Sync + 'static,
) -> Arc<dyn PipelineTransform> {
    Arc::new(TransformFn(f))
}

/// The filters and transforms of one pipeline, applied in order.
#[derive(Clone, Default)]
pub(crate) struct RowChain {
    filters: Vec<Arc<dyn PipelineFilter>>,
    transforms: Vec<Arc<dyn PipelineTransform>>,
}

impl fmt::Debug for RowChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowChain")
            .field("filters", &self.filters.len())
            .field("transforms", &self.transforms.len())
            .finish()
    }
}

impl RowChain {
    pub(crate) fn new(
        filters: Vec<Arc<dyn PipelineFilter>>,
        transforms: Vec<Arc<dyn PipelineTransform>>,
    ) -> Self {
        Self {
            filters,
            transforms,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.filters.is_empty() && self.transforms.is_empty()
    }

    /// Filters, then transforms; `None` when the row is dropped.
    pub(crate) fn apply(&self, table: &TableIdentifier, row: &Row) -> Option<Row> {
        self.apply_borrowed(table, row).map(Cow::into_owned)
    }

    /// As [`RowChain::apply`], borrowing `row` when no transform rewrites it (the hot
    /// path: no reference-count traffic on a row another task created).
    pub(crate) fn apply_borrowed<'a>(
        &self,
        table: &TableIdentifier,
        row: &'a Row,
    ) -> Option<Cow<'a, Row>> {
        if !self.filters.iter().all(|f| f.include(table, row)) {
            return None;
        }
        if self.transforms.is_empty() {
            return Some(Cow::Borrowed(row));
        }
        let mut row = row.clone();
        for t in &self.transforms {
            row = t.transform(table, row)?;
        }
        Some(Cow::Owned(row))
    }

    /// Whether a delete's identity passes the filters (transforms do not apply).
    pub(crate) fn includes_identity(&self, table: &TableIdentifier, identity: &Row) -> bool {
        self.filters
            .iter()
            .all(|f| f.include_identity(table, identity))
    }
}
