//! A single-entry cache from an input row layout to what a transform derived from it.
//!
//! Every row a source emits for one table shares one `Arc<RowLayout>`, so remembering
//! the last input layout turns "build an output layout per row" into a pointer
//! comparison per row. A transform shared by pipelines of different tables alternates
//! between layouts and rebuilds on each switch: correct, just slower.

use std::fmt;
use std::sync::Arc;

use laredo_core::{Row, RowLayout, Value};
use parking_lot::Mutex;

/// The derived value for the last input layout seen.
pub(crate) struct LayoutCache<P> {
    /// The input layout is held strongly, so its address cannot be reused by another
    /// layout while it is cached.
    slot: Mutex<Option<(Arc<RowLayout>, Arc<P>)>>,
}

impl<P> LayoutCache<P> {
    pub(crate) fn new() -> Self {
        Self {
            slot: Mutex::new(None),
        }
    }

    /// The value derived from `input`: the cached one when `input` is the cached layout
    /// (same pointer, or equal names), else `build(input)`, which is then cached.
    pub(crate) fn get_or_build(
        &self,
        input: &Arc<RowLayout>,
        build: impl FnOnce(&RowLayout) -> P,
    ) -> Arc<P> {
        if let Some((cached, plan)) = &*self.slot.lock() {
            // A source that builds a layout per row still hits on the name comparison,
            // which is cheaper than building a new layout.
            if Arc::ptr_eq(cached, input) || cached.names() == input.names() {
                return Arc::clone(plan);
            }
        }
        // Built outside the lock: a concurrent caller at worst builds the same plan too.
        let plan = Arc::new(build(input));
        *self.slot.lock() = Some((Arc::clone(input), Arc::clone(&plan)));
        plan
    }
}

impl<P> fmt::Debug for LayoutCache<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayoutCache").finish_non_exhaustive()
    }
}

/// A row rewrite that keeps some input columns, in order, under possibly new names.
#[derive(Debug)]
pub(crate) enum Projection {
    /// The row passes through untouched.
    Unchanged,
    /// Output column `i` is input column `keep[i]`, named by `layout`.
    Columns {
        keep: Vec<usize>,
        layout: Arc<RowLayout>,
    },
}

impl Projection {
    /// A projection keeping the input columns at `keep`, named `names`; `Unchanged` when
    /// that is the input as it is.
    pub(crate) fn new(input: &RowLayout, keep: Vec<usize>, names: Vec<&str>) -> Self {
        let identity = keep.len() == input.len()
            && keep.iter().enumerate().all(|(out, &idx)| out == idx)
            && names
                .iter()
                .zip(input.names())
                .all(|(new, old)| *new == &**old);
        if identity {
            return Projection::Unchanged;
        }
        Projection::Columns {
            keep,
            layout: RowLayout::new(names),
        }
    }

    pub(crate) fn apply(&self, row: Row) -> Row {
        match self {
            Projection::Unchanged => row,
            Projection::Columns { keep, layout } => {
                let values: Vec<Value> = keep
                    .iter()
                    .map(|&idx| row.value(idx).cloned().unwrap_or_default())
                    .collect();
                Row::new(Arc::clone(layout), values)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_the_plan_for_the_same_layout() {
        let cache = LayoutCache::new();
        let layout = RowLayout::new(["a", "b"]);
        let mut builds = 0;
        let first = cache.get_or_build(&layout, |l| {
            builds += 1;
            l.len()
        });
        let second = cache.get_or_build(&layout, |_| {
            builds += 1;
            0
        });
        assert_eq!(builds, 1);
        assert!(Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn reuses_the_plan_for_an_equal_layout() {
        let cache = LayoutCache::new();
        let first = cache.get_or_build(&RowLayout::new(["a", "b"]), |_| 1);
        let second = cache.get_or_build(&RowLayout::new(["a", "b"]), |_| 2);
        assert!(Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn rebuilds_for_another_layout() {
        let cache = LayoutCache::new();
        assert_eq!(*cache.get_or_build(&RowLayout::new(["a"]), |l| l.len()), 1);
        assert_eq!(
            *cache.get_or_build(&RowLayout::new(["a", "b"]), |l| l.len()),
            2
        );
        assert_eq!(*cache.get_or_build(&RowLayout::new(["a"]), |l| l.len()), 1);
    }
}
