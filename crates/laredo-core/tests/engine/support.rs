//! Shared fixtures for the engine tests.
//!
//! `FaultTarget` is a real target (it stores rows in an `IndexedTarget`) with fault
//! injection on top: failures, a durability switch, an apply gate and a count offset.
//! Target failures and slowness cannot be produced "for real" by an in-memory target,
//! which is why this wrapper exists.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use laredo_core::{
    ApplyError, Change, ColumnDefinition, Engine, Position, Row, RowAccess, SchemaChangeResponse,
    SnapshotTarget, SyncTarget, TableIdentifier, TargetError, table,
};
use laredo_source_test::TestSource;
use laredo_target_memory::IndexedTarget;
use parking_lot::Mutex;
use tokio::sync::watch;

pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// The cause of the failures `FaultTarget::fail_when` injects.
pub(crate) const INJECTED_CAUSE: &str = "storage refused the row";

pub(crate) fn users() -> TableIdentifier {
    table("public", "users")
}

pub(crate) fn orders() -> TableIdentifier {
    table("public", "orders")
}

pub(crate) fn user(id: i64, name: &str) -> Row {
    laredo_core::row! {"id" => id, "name" => name, "team" => if id % 2 == 0 { "even" } else { "odd" }}
}

pub(crate) fn order(id: i64, user_id: i64) -> Row {
    laredo_core::row! {"id" => id, "user_id" => user_id}
}

/// A test source with `users(id pk, name, team)` and `orders(id pk, user_id)` and the
/// given users in its baseline.
pub(crate) fn source_with_users(ids: impl IntoIterator<Item = i64>) -> Arc<TestSource> {
    let source = TestSource::new();
    source.set_schema(
        users(),
        TestSource::columns(&[
            ("id", "int8", true),
            ("name", "text", false),
            ("team", "text", false),
        ]),
    );
    source.set_schema(
        orders(),
        TestSource::columns(&[("id", "int8", true), ("user_id", "int8", false)]),
    );
    for id in ids {
        source.add_row(users(), user(id, &format!("user-{id}")));
    }
    source
}

pub(crate) fn indexed() -> Arc<IndexedTarget> {
    IndexedTarget::builder().lookup_fields(["id"]).build()
}

/// Rows of an indexed target sorted by `id`.
pub(crate) fn sorted_rows(target: &IndexedTarget) -> Vec<Row> {
    let mut rows = target.all();
    rows.sort_by_key(|r| r.get_i64("id"));
    rows
}

/// The source's current rows of `table`, sorted by `id`.
pub(crate) fn sorted_source_rows(source: &TestSource, table: &TableIdentifier) -> Vec<Row> {
    let mut rows = source.table_rows(table);
    rows.sort_by_key(|r| r.get_i64("id"));
    rows
}

pub(crate) async fn started(engine: &Engine) {
    engine.start().await.expect("engine starts");
    assert!(
        engine.await_ready(WAIT).await,
        "engine did not become ready: {:?}",
        engine.pipelines()
    );
}

/// The largest position the source has been acknowledged at.
pub(crate) fn max_ack(source: &TestSource) -> u64 {
    source.acks().into_iter().max().unwrap_or(0)
}

type RowPredicate = Box<dyn Fn(&Row) -> bool + Send + Sync>;

/// An `IndexedTarget` with injectable faults.
pub(crate) struct FaultTarget {
    pub(crate) inner: Arc<IndexedTarget>,
    type_name: String,
    fail_next: AtomicU32,
    fail_when: Mutex<Option<RowPredicate>>,
    panic_when: Mutex<Option<RowPredicate>>,
    durable: AtomicBool,
    retains_state: AtomicBool,
    gate: watch::Sender<bool>,
    count_offset: AtomicI64,
    schema_response: Mutex<Option<SchemaChangeResponse>>,
    /// Changes applied successfully (insert, update, delete, truncate).
    pub(crate) applied: AtomicU64,
    /// Every applied change as `ACTION id`, in order.
    pub(crate) log: Mutex<Vec<String>>,
}

impl FaultTarget {
    pub(crate) fn new(type_name: &str) -> Arc<Self> {
        Arc::new(Self {
            inner: indexed(),
            type_name: type_name.to_string(),
            fail_next: AtomicU32::new(0),
            fail_when: Mutex::new(None),
            panic_when: Mutex::new(None),
            durable: AtomicBool::new(true),
            retains_state: AtomicBool::new(false),
            gate: watch::Sender::new(true),
            count_offset: AtomicI64::new(0),
            schema_response: Mutex::new(None),
            applied: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        })
    }

    /// Claims (or not) that the rows outlive the engine, like a database target.
    pub(crate) fn set_retains_state(&self, retains: bool) {
        self.retains_state.store(retains, Ordering::SeqCst);
    }

    /// The next `n` change applications fail.
    pub(crate) fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Changes whose row matches fail (until cleared with `None`).
    pub(crate) fn fail_when(&self, predicate: Option<RowPredicate>) {
        *self.fail_when.lock() = predicate;
    }

    /// Applying a change whose row matches panics (a bug in a target, for real: the
    /// engine must contain it).
    pub(crate) fn panic_when(&self, predicate: Option<RowPredicate>) {
        *self.panic_when.lock() = predicate;
    }

    pub(crate) fn set_durable(&self, durable: bool) {
        self.durable.store(durable, Ordering::SeqCst);
    }

    /// While closed, change applications wait.
    pub(crate) fn set_gate(&self, open: bool) {
        self.gate.send_replace(open);
    }

    pub(crate) fn set_count_offset(&self, offset: i64) {
        self.count_offset.store(offset, Ordering::SeqCst);
    }

    pub(crate) fn set_schema_response(&self, response: SchemaChangeResponse) {
        *self.schema_response.lock() = Some(response);
    }

    pub(crate) fn log(&self) -> Vec<String> {
        self.log.lock().clone()
    }

    async fn before_change(&self, row: Option<&Row>) -> Result<(), TargetError> {
        let mut open = self.gate.subscribe();
        open.wait_for(|open| *open)
            .await
            .expect("the gate sender lives in self");
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(TargetError::new("injected failure"));
        }
        if let (Some(row), Some(predicate)) = (row, &*self.fail_when.lock())
            && predicate(row)
        {
            // With a cause, so tests see that the edges print the whole chain.
            return Err(TargetError::with_source(
                format!("injected failure for {row}"),
                std::io::Error::other(INJECTED_CAUSE),
            ));
        }
        let panics = match (row, &*self.panic_when.lock()) {
            (Some(row), Some(predicate)) => predicate(row),
            _ => false,
        };
        assert!(!panics, "target bug on this row");
        Ok(())
    }

    fn record(&self, action: &str, row: Option<&Row>) {
        self.applied.fetch_add(1, Ordering::SeqCst);
        let id = row
            .and_then(|r| r.get_i64("id"))
            .map_or_else(String::new, |id| format!(" {id}"));
        self.log.lock().push(format!("{action}{id}"));
    }
}

#[async_trait]
impl SyncTarget for FaultTarget {
    fn type_name(&self) -> &str {
        &self.type_name
    }

    async fn on_init(
        &self,
        table: &TableIdentifier,
        columns: &[ColumnDefinition],
    ) -> Result<(), TargetError> {
        self.inner.on_init(table, columns).await
    }

    async fn on_baseline(&self, table: &TableIdentifier, rows: &[Row]) -> Result<(), TargetError> {
        self.inner.on_baseline(table, rows).await
    }

    async fn on_baseline_complete(
        &self,
        table: &TableIdentifier,
        position: Option<&Position>,
    ) -> Result<(), TargetError> {
        self.inner.on_baseline_complete(table, position).await
    }

    /// Each change passes the gate and the injected faults, then goes to the inner
    /// target, one by one, so a failure reports exactly the changes applied before it.
    async fn apply(&self, table: &TableIdentifier, batch: &[Change]) -> Result<(), ApplyError> {
        for (n, change) in batch.iter().enumerate() {
            let row = change.identity();
            self.before_change(row)
                .await
                .map_err(|e| ApplyError::at(n, e))?;
            self.inner
                .apply(table, std::slice::from_ref(change))
                .await
                .map_err(|e| ApplyError::at(n, e.error))?;
            self.record(change.action().as_str(), row);
        }
        Ok(())
    }

    fn retains_state(&self) -> bool {
        self.retains_state.load(Ordering::SeqCst)
    }

    fn durable_position(&self, applied: &Position) -> Option<Position> {
        self.durable.load(Ordering::SeqCst).then(|| applied.clone())
    }

    async fn on_schema_change(
        &self,
        table: &TableIdentifier,
        old: &[ColumnDefinition],
        new: &[ColumnDefinition],
    ) -> SchemaChangeResponse {
        let configured = self.schema_response.lock().clone();
        match configured {
            Some(response) => response,
            None => self.inner.on_schema_change(table, old, new).await,
        }
    }

    async fn on_close(&self, table: &TableIdentifier) -> Result<(), TargetError> {
        self.inner.on_close(table).await
    }

    fn snapshots(&self) -> Option<&dyn SnapshotTarget> {
        self.inner.snapshots()
    }

    fn rows(&self) -> Option<&dyn RowAccess> {
        Some(self)
    }
}

/// Counts with the configured offset; scans the inner target. It stands for a target
/// that cannot look a row up by key: `get` answers `None`, so updates with unchanged
/// values are completed from nothing.
impl RowAccess for FaultTarget {
    fn get(&self, _identity: &Row) -> Option<Row> {
        None
    }

    fn count(&self) -> u64 {
        let offset = self.count_offset.load(Ordering::SeqCst);
        (self.inner.count() as u64).saturating_add_signed(offset)
    }

    fn scan(&self) -> Vec<Row> {
        self.inner.all()
    }
}
