//! The queryable tables: a target's [`RowAccess`], or a reader registered for the table
//! ([`QueryService::with_rows`](crate::QueryService::with_rows)).
//!
//! Every read goes through the capability, so the service serves any target that has
//! it (indexed, compiled, fan-out, or one of the application's) without knowing its
//! type. What a target does not offer is made up here: a target that lists no lookup
//! index is looked up by its key, and one without an ordered index is paged from a
//! sorted scan (`page`).
//!
//! Errors are gRPC statuses already, naming the table: this module is the one that
//! knows the fields, indexes and arities the messages talk about.

use std::sync::{Arc, Weak};

use laredo_core::{
    IndexError, IndexInfo, PRIMARY_INDEX, Row, RowAccess, RowChange, RowLayout, SyncSource,
    SyncTarget, TableIdentifier, Value,
};
use tonic::Status;

use crate::subscription::{Producer, Queue, SubscribeStream, SubscriberGuard, Subscription};

/// Where a table's rows come from.
enum Rows {
    /// A target the engine runs, read through [`SyncTarget::rows`].
    Target(Arc<dyn SyncTarget>),
    /// A reader the application registered for the table.
    Registered(Arc<dyn RowAccess>),
}

/// One table as a request resolved it: its rows and the source that prints its
/// positions.
pub(crate) struct Served {
    table: TableIdentifier,
    rows: Rows,
    /// Held weakly: a subscription does not keep the engine's source alive.
    source: Option<Weak<dyn SyncSource>>,
}

/// `INVALID_ARGUMENT` unless `key` has one value per field.
fn check_arity(
    what: &str,
    table: &TableIdentifier,
    fields: &[String],
    key: &[Value],
) -> Result<(), Status> {
    if fields.len() == key.len() {
        return Ok(());
    }
    let plural = if fields.len() == 1 { "" } else { "s" };
    Err(Status::invalid_argument(format!(
        "{what} of {table}: expected {} value{plural} ({}), got {}",
        fields.len(),
        fields.join(", "),
        key.len()
    )))
}

fn not_initialised(table: &TableIdentifier) -> Status {
    Status::unavailable(format!("the target of {table} is not initialised yet"))
}

fn unknown_index(table: &TableIdentifier, index: &str, known: &[String]) -> Status {
    Status::not_found(format!(
        "index {index:?} not found on {table}; known indexes: {}",
        known.join(", ")
    ))
}

impl Served {
    /// A target the engine runs; `None` when it has no row access.
    pub(crate) fn target(
        table: TableIdentifier,
        target: Arc<dyn SyncTarget>,
        source: Option<&Arc<dyn SyncSource>>,
    ) -> Option<Self> {
        target.rows()?;
        Some(Self {
            table,
            rows: Rows::Target(target),
            source: source.map(Arc::downgrade),
        })
    }

    /// A reader registered for the table.
    pub(crate) fn registered(
        table: TableIdentifier,
        rows: Arc<dyn RowAccess>,
        source: Option<&Arc<dyn SyncSource>>,
    ) -> Self {
        Self {
            table,
            rows: Rows::Registered(rows),
            source: source.map(Arc::downgrade),
        }
    }

    fn access(&self) -> Result<&dyn RowAccess, Status> {
        match &self.rows {
            Rows::Registered(rows) => Ok(rows.as_ref()),
            // Checked when resolved; a target's capabilities do not come and go.
            Rows::Target(target) => target.rows().ok_or_else(|| {
                Status::not_found(format!("the target of {} has no rows", self.table))
            }),
        }
    }

    /// The columns identifying a row (`GetRow`'s key, `ListRows`' order).
    ///
    /// # Errors
    /// `UNAVAILABLE` while the target is not initialised.
    pub(crate) fn key_fields(&self) -> Result<Vec<String>, Status> {
        let fields = self.access()?.key_fields();
        if fields.is_empty() {
            return Err(not_initialised(&self.table));
        }
        Ok(fields)
    }

    /// The row whose key ([`Served::key_fields`]) is `key`; `what` names the key in an
    /// arity error.
    fn by_key(&self, what: &str, key: Vec<Value>) -> Result<Option<Row>, Status> {
        let fields = self.key_fields()?;
        check_arity(what, &self.table, &fields, &key)?;
        let identity = Row::new(RowLayout::new(&fields), key);
        Ok(self.access()?.get(&identity))
    }

    /// The index `name` as the target lists it, if it does.
    fn listed(rows: &dyn RowAccess, name: &str) -> (Option<IndexInfo>, Vec<IndexInfo>) {
        let indexes = rows.indexes();
        let found = indexes.iter().find(|info| info.name == name).cloned();
        (found, indexes)
    }

    /// The rows of `key` in the listed index `info`; `what` names the key in an arity
    /// error.
    fn by_index(&self, info: &IndexInfo, what: &str, key: Vec<Value>) -> Result<Vec<Row>, Status> {
        let index = info.name.as_str();
        if info.fields.is_empty() {
            return Err(not_initialised(&self.table));
        }
        check_arity(what, &self.table, &info.fields, &key)?;
        self.access()?
            .lookup(index, &key)
            .map_err(|error| match error {
                // The index set is fixed at build time and the arity was checked: these
                // only happen if the target changed in between, reported as it says.
                IndexError::UnknownIndex(_) => unknown_index(&self.table, index, &[]),
                other => Status::invalid_argument(format!("{}: {other}", self.table)),
            })
    }

    /// Every row of `key` in the named index; [`PRIMARY_INDEX`] is the lookup index,
    /// or the key for a target that lists none.
    pub(crate) fn lookup_all(&self, index: &str, key: Vec<Value>) -> Result<Vec<Row>, Status> {
        let (found, indexes) = Self::listed(self.access()?, index);
        match found {
            Some(info) => self.by_index(&info, &format!("index {index:?}"), key),
            None if index == PRIMARY_INDEX => Ok(self
                .by_key(&format!("index {index:?}"), key)?
                .into_iter()
                .collect()),
            None => {
                let mut known: Vec<String> = indexes.into_iter().map(|info| info.name).collect();
                if !known.iter().any(|name| name == PRIMARY_INDEX) {
                    known.insert(0, PRIMARY_INDEX.to_string());
                }
                Err(unknown_index(&self.table, index, &known))
            }
        }
    }

    /// The row of `key` in the lookup index (`index` `None`: the target's
    /// [`PRIMARY_INDEX`], else its key) or the first row of `key` in the named index.
    pub(crate) fn lookup(
        &self,
        index: Option<&str>,
        key: Vec<Value>,
    ) -> Result<Option<Row>, Status> {
        if let Some(index) = index {
            return Ok(self.lookup_all(index, key)?.into_iter().next());
        }
        let (found, _) = Self::listed(self.access()?, PRIMARY_INDEX);
        match found {
            Some(info) => Ok(self.by_index(&info, "lookup key", key)?.into_iter().next()),
            None => self.by_key("lookup key", key),
        }
    }

    /// The row whose key ([`Served::key_fields`]) is `key`.
    pub(crate) fn get(&self, key: Vec<Value>) -> Result<Option<Row>, Status> {
        self.by_key("primary key", key)
    }

    /// Every row (order unspecified).
    pub(crate) fn rows(&self) -> Result<Vec<Row>, Status> {
        Ok(self.access()?.scan())
    }

    /// Up to `limit` rows in key order after `after`, or `None` when the target keeps
    /// no ordered index (the caller then selects the page from [`Served::rows`]).
    pub(crate) fn rows_after(
        &self,
        after: Option<&[Value]>,
        limit: usize,
    ) -> Result<Option<Vec<Row>>, Status> {
        Ok(self.access()?.rows_after(after, limit))
    }

    /// The number of rows.
    pub(crate) fn count(&self) -> Result<u64, Status> {
        Ok(self.access()?.count())
    }

    /// A change stream: subscribes to the rows, then (with `replay`) reads the current
    /// rows, so a change made meanwhile is sent after them. Changes carry the position
    /// and transaction id of the change that made them.
    ///
    /// # Errors
    /// `UNIMPLEMENTED` when the target does not report its changes.
    pub(crate) fn subscribe(
        &self,
        replay: bool,
        capacity: usize,
        guard: SubscriberGuard,
    ) -> Result<SubscribeStream, Status> {
        let rows = self.access()?;
        let queue = Queue::new(capacity);
        let producer = Producer::new(&queue, guard);
        let listener = rows
            .subscribe(Arc::new(move |change: &RowChange<'_>| {
                producer.push(change)
            }))
            .ok_or_else(|| {
                Status::unimplemented(format!(
                    "the target of {} does not report its changes",
                    self.table
                ))
            })?;
        let existing = replay.then(|| rows.scan());
        Ok(Subscription::new(existing, queue, self.source.clone(), listener).boxed())
    }
}
