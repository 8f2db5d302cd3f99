//! A scriptable, consistent in-process source for engine tests, examples and benchmarks.
//!
//! [`TestSource`] behaves like a small database with a replication log: it keeps each
//! table's current rows and a history of changes with increasing `u64` positions.
//! Emitting a change updates the table and appends to the history atomically, so a
//! baseline (the current rows at the last position) plus the stream from that position
//! is exactly the table, with nothing missed or repeated. Acknowledging a position
//! releases the history up to it, like a replication slot releasing WAL; streaming from
//! a released position asks for a re-baseline.
//!
//! Faults can be injected: init, baseline and stream errors, delays, and schema changes.
//!
//! ```
//! use laredo_core::{row, table, SyncSource};
//! use laredo_source_test::TestSource;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let source = TestSource::new();
//! let users = table("public", "users");
//! source.set_schema(users.clone(), TestSource::columns(&[("id", "int8", true), ("name", "text", false)]));
//! source.add_row(users.clone(), row! {"id" => 1, "name" => "ann"});
//! assert_eq!(source.table_rows(&users), vec![row! {"id" => 1, "name" => "ann"}]);
//! assert_eq!(source.source_type(), "test");
//! # }
//! ```

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::Duration;

use async_trait::async_trait;
use laredo_core::{
    BaselineSink, ChangeAction, ChangeEvent, ChangeHandler, ColumnDefinition, LagInfo,
    OrderingGuarantee, Position, Row, SourceError, SourceState, SyncSource, TableIdentifier,
    ValidationError, primary_key_columns,
};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// Rows per baseline batch.
const BASELINE_BATCH: usize = 1024;
/// History entries taken per lock by the stream loop.
const STREAM_CHUNK: usize = 1024;

#[derive(Debug, Clone)]
enum Entry {
    Change(ChangeEvent),
    /// A change the source could not read, and why (not applied to the table's rows).
    Unreadable(ChangeEvent, String),
    Heartbeat,
    Schema {
        table: TableIdentifier,
        old_columns: Vec<ColumnDefinition>,
        new_columns: Vec<ColumnDefinition>,
    },
}

#[derive(Default)]
struct TableState {
    rows: HashMap<Vec<u8>, Row>,
}

#[derive(Default)]
struct State {
    schemas: HashMap<TableIdentifier, Vec<ColumnDefinition>>,
    tables: HashMap<TableIdentifier, TableState>,
    /// Entries with positions greater than `released`, in order.
    history: VecDeque<(u64, Entry)>,
    last_position: u64,
    released: u64,
    acks: Vec<u64>,
    acked: Option<u64>,
    fail_init: Option<String>,
    fail_baseline: Option<String>,
    fail_stream: Option<SourceError>,
    supports_resume: Option<bool>,
    ordering: Option<OrderingGuarantee>,
    lag: LagInfo,
    baseline_row_delay: Duration,
    event_delay: Duration,
    baseline_calls: usize,
    init_calls: usize,
    stream_calls: usize,
    reset_calls: Vec<bool>,
    state: Option<SourceState>,
}

impl State {
    fn key_of(&self, table: &TableIdentifier, row: &Row) -> Vec<u8> {
        let columns = self
            .schemas
            .get(table)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let keys = primary_key_columns(columns);
        if keys.is_empty() {
            let mut names: Vec<&str> = row.columns().iter().map(|n| &**n).collect();
            names.sort_unstable();
            row.key_bytes(&names)
        } else {
            row.key_bytes(&keys)
        }
    }

    fn apply(&mut self, event: &ChangeEvent) {
        let table = &event.table;
        let new_key = event.new_values.as_ref().map(|r| self.key_of(table, r));
        let old_key = event.old_values.as_ref().map(|r| self.key_of(table, r));
        let rows = &mut self.tables.entry(table.clone()).or_default().rows;
        match event.action {
            ChangeAction::Insert | ChangeAction::Update => {
                if let Some(old_key) = old_key {
                    rows.remove(&old_key);
                }
                if let (Some(key), Some(row)) = (new_key, &event.new_values) {
                    rows.insert(key, row.clone());
                }
            }
            ChangeAction::Delete => {
                if let Some(key) = old_key.or(new_key) {
                    rows.remove(&key);
                }
            }
            ChangeAction::Truncate => rows.clear(),
        }
    }

    fn push(&mut self, entry: Entry) -> u64 {
        self.last_position += 1;
        let position = self.last_position;
        let entry = match entry {
            Entry::Change(mut event) => {
                event.position = Position::from_u64(position);
                self.apply(&event);
                Entry::Change(event)
            }
            Entry::Unreadable(mut event, error) => {
                event.position = Position::from_u64(position);
                Entry::Unreadable(event, error)
            }
            other => other,
        };
        self.history.push_back((position, entry));
        position
    }
}

/// A scriptable source; see the crate docs.
pub struct TestSource {
    state: Mutex<State>,
    /// Woken when history grows, a failure is injected or the source closes.
    changed: Notify,
    /// The last position handed to a handler.
    delivered: watch::Sender<u64>,
    /// `true` while delivery is allowed; `running_now` mirrors it for the per-entry check.
    running: watch::Sender<bool>,
    running_now: AtomicBool,
    /// Held by the stream loop while it delivers; `pause` takes it to wait out an
    /// in-flight delivery.
    delivering: tokio::sync::Mutex<()>,
    close: Mutex<CancellationToken>,
}

impl std::fmt::Debug for TestSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("TestSource")
            .field("tables", &state.schemas.keys().collect::<Vec<_>>())
            .field("last_position", &state.last_position)
            .field("acked", &state.acked)
            .finish()
    }
}

impl TestSource {
    /// A source with no tables.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            delivered: watch::Sender::new(0),
            running: watch::Sender::new(true),
            running_now: AtomicBool::new(true),
            delivering: tokio::sync::Mutex::new(()),
            close: Mutex::new(CancellationToken::new()),
        })
    }

    /// Column definitions from `(name, type, is_primary_key)`; key ordinals follow the
    /// order given, ordinal positions are 1..n.
    pub fn columns(spec: &[(&str, &str, bool)]) -> Vec<ColumnDefinition> {
        let mut key_ordinal = 0;
        spec.iter()
            .zip(1u32..)
            .map(|(&(name, type_name, pk), ordinal)| {
                let column = ColumnDefinition::new(name, type_name).ordinal(ordinal);
                if pk {
                    key_ordinal += 1;
                    column.primary_key(key_ordinal)
                } else {
                    column
                }
            })
            .collect()
    }

    /// Declares (or replaces) a table's columns.
    pub fn set_schema(&self, table: TableIdentifier, columns: Vec<ColumnDefinition>) {
        let mut state = self.state.lock();
        state.schemas.insert(table.clone(), columns);
        state.tables.entry(table).or_default();
    }

    /// Adds a row to a table's current state (part of the next baseline), without a
    /// change event.
    pub fn add_row(&self, table: TableIdentifier, row: Row) {
        let mut state = self.state.lock();
        let key = state.key_of(&table, &row);
        state.tables.entry(table).or_default().rows.insert(key, row);
    }

    /// The table's current rows (order unspecified).
    pub fn table_rows(&self, table: &TableIdentifier) -> Vec<Row> {
        self.state
            .lock()
            .tables
            .get(table)
            .map(|t| t.rows.values().cloned().collect())
            .unwrap_or_default()
    }

    fn append(&self, entry: Entry) -> u64 {
        let position = self.state.lock().push(entry);
        self.changed.notify_one();
        position
    }

    async fn append_and_wait(&self, entry: Entry) -> Position {
        let position = self.append(entry);
        self.wait_delivered(Position::from_u64(position)).await;
        Position::from_u64(position)
    }

    /// Emits an insert; returns its position once a stream handed it to its handler.
    pub async fn emit_insert(&self, table: TableIdentifier, row: Row) -> Position {
        self.append_and_wait(Entry::Change(ChangeEvent::insert(
            table,
            Position::from_u64(0),
            row,
        )))
        .await
    }

    /// Emits an update; returns its position once delivered.
    pub async fn emit_update(
        &self,
        table: TableIdentifier,
        new: Row,
        old: Option<Row>,
    ) -> Position {
        self.append_and_wait(Entry::Change(ChangeEvent::update(
            table,
            Position::from_u64(0),
            new,
            old,
        )))
        .await
    }

    /// Emits a delete of the row identified by `identity`; returns its position once
    /// delivered.
    pub async fn emit_delete(&self, table: TableIdentifier, identity: Row) -> Position {
        self.append_and_wait(Entry::Change(ChangeEvent::delete(
            table,
            Position::from_u64(0),
            identity,
        )))
        .await
    }

    /// Emits a truncate; returns its position once delivered.
    pub async fn emit_truncate(&self, table: TableIdentifier) -> Position {
        self.append_and_wait(Entry::Change(ChangeEvent::truncate(
            table,
            Position::from_u64(0),
        )))
        .await
    }

    /// Emits an insert the source could not read (a value it cannot decode, say) with
    /// `error`: handed to [`ChangeHandler::on_change_failed`], and not part of the
    /// table's rows. Returns its position once delivered.
    ///
    /// [`ChangeHandler::on_change_failed`]: laredo_core::ChangeHandler::on_change_failed
    pub async fn emit_unreadable_insert(
        &self,
        table: TableIdentifier,
        raw: Row,
        error: impl Into<String>,
    ) -> Position {
        self.append_and_wait(Entry::Unreadable(
            ChangeEvent::insert(table, Position::from_u64(0), raw),
            error.into(),
        ))
        .await
    }

    /// Emits a heartbeat at a new position (the source moved on with nothing for us);
    /// returns it once delivered.
    pub async fn emit_heartbeat(&self) -> Position {
        self.append_and_wait(Entry::Heartbeat).await
    }

    /// Adds a column to a table and streams the schema change in order with the
    /// changes; returns its position once delivered.
    pub async fn add_column(&self, table: TableIdentifier, column: ColumnDefinition) -> Position {
        let position = {
            let mut state = self.state.lock();
            let old_columns = state.schemas.get(&table).cloned().unwrap_or_default();
            let mut new_columns = old_columns.clone();
            let ordinal = u32::try_from(new_columns.len() + 1).unwrap_or(u32::MAX);
            new_columns.push(column.ordinal(ordinal));
            state.schemas.insert(table.clone(), new_columns.clone());
            state.push(Entry::Schema {
                table,
                old_columns,
                new_columns,
            })
        };
        self.changed.notify_one();
        self.wait_delivered(Position::from_u64(position)).await;
        Position::from_u64(position)
    }

    /// Queues changes without waiting (positions are reassigned in order and tables
    /// updated); returns the last position.
    pub fn enqueue(&self, events: impl IntoIterator<Item = ChangeEvent>) -> Position {
        let last = {
            let mut state = self.state.lock();
            for event in events {
                state.push(Entry::Change(event));
            }
            state.last_position
        };
        self.changed.notify_one();
        Position::from_u64(last)
    }

    /// Waits until a stream has handed every entry up to `position` to its handler.
    pub async fn wait_delivered(&self, position: Position) {
        let want = position.as_u64().unwrap_or(u64::MAX);
        let mut rx = self.delivered.subscribe();
        let _ = rx.wait_for(|delivered| *delivered >= want).await;
    }

    /// Makes `init` fail with `message` (or succeed again with `None`).
    pub fn fail_init(&self, message: Option<String>) {
        self.state.lock().fail_init = message;
    }

    /// Makes `baseline` fail with `message` (or succeed again with `None`).
    pub fn fail_baseline(&self, message: Option<String>) {
        self.state.lock().fail_baseline = message;
    }

    /// Makes the running (or next) stream return `error` once.
    pub fn fail_stream(&self, error: SourceError) {
        self.state.lock().fail_stream = Some(error);
        self.changed.notify_one();
    }

    /// Overrides `supports_resume` (`None`: true once something was acknowledged).
    pub fn set_supports_resume(&self, value: Option<bool>) {
        self.state.lock().supports_resume = value;
    }

    /// Overrides the ordering guarantee (default total order).
    pub fn set_ordering(&self, ordering: OrderingGuarantee) {
        self.state.lock().ordering = Some(ordering);
    }

    /// Sets the lag the source reports.
    pub fn set_lag(&self, lag: LagInfo) {
        self.state.lock().lag = lag;
    }

    /// Delays each baseline row.
    pub fn set_baseline_row_delay(&self, delay: Duration) {
        self.state.lock().baseline_row_delay = delay;
    }

    /// Delays each streamed entry.
    pub fn set_event_delay(&self, delay: Duration) {
        self.state.lock().event_delay = delay;
    }

    /// Every acknowledged position, in order.
    pub fn acks(&self) -> Vec<u64> {
        self.state.lock().acks.clone()
    }

    /// The last acknowledged position.
    pub fn acked_position(&self) -> Option<u64> {
        self.state.lock().acked
    }

    /// How many baselines ran.
    pub fn baseline_calls(&self) -> usize {
        self.state.lock().baseline_calls
    }

    /// How many times `init` ran.
    pub fn init_calls(&self) -> usize {
        self.state.lock().init_calls
    }

    /// How many streams started.
    pub fn stream_calls(&self) -> usize {
        self.state.lock().stream_calls
    }

    /// The `drop_publication` argument of every `reset` call.
    pub fn reset_calls(&self) -> Vec<bool> {
        self.state.lock().reset_calls.clone()
    }

    fn publish_delivered(&self, position: u64) {
        self.delivered.send_if_modified(|d| {
            let newer = *d < position;
            *d = (*d).max(position);
            newer
        });
    }

    fn set_state(&self, state: SourceState) {
        self.state.lock().state = Some(state);
    }

    /// Takes up to a chunk of entries after `cursor`; `Err(position)` when `cursor` was
    /// already released.
    fn take_chunk(&self, cursor: u64, out: &mut Vec<(u64, Entry)>) -> Result<(), u64> {
        let mut state = self.state.lock();
        if cursor < state.released {
            return Err(state.released);
        }
        let released = state.released;
        let trim = state
            .history
            .partition_point(|(position, _)| *position <= released);
        drop(state.history.drain(..trim));
        let start = state
            .history
            .partition_point(|(position, _)| *position <= cursor);
        out.extend(state.history.range(start..).take(STREAM_CHUNK).cloned());
        Ok(())
    }
}

#[async_trait]
impl SyncSource for TestSource {
    fn source_type(&self) -> &str {
        "test"
    }

    async fn init(
        &self,
        tables: &[TableIdentifier],
    ) -> Result<HashMap<TableIdentifier, Vec<ColumnDefinition>>, SourceError> {
        let mut state = self.state.lock();
        state.init_calls += 1;
        state.state = Some(SourceState::Connecting);
        if let Some(message) = &state.fail_init {
            return Err(SourceError::msg(message.clone()));
        }
        let mut schemas = HashMap::new();
        for table in tables {
            let columns = state.schemas.get(table).ok_or_else(|| {
                SourceError::msg(format!("table {table} not configured via set_schema"))
            })?;
            schemas.insert(table.clone(), columns.clone());
        }
        state.state = Some(SourceState::Connected);
        Ok(schemas)
    }

    async fn validate_tables(&self, tables: &[TableIdentifier]) -> Vec<ValidationError> {
        let state = self.state.lock();
        tables
            .iter()
            .filter(|t| !state.schemas.contains_key(*t))
            .map(|t| {
                ValidationError::new(
                    Some(t.clone()),
                    ValidationError::TABLE_NOT_FOUND,
                    "not configured via set_schema",
                )
            })
            .collect()
    }

    async fn baseline(
        &self,
        tables: &[TableIdentifier],
        sink: &mut dyn BaselineSink,
    ) -> Result<Position, SourceError> {
        let (snapshot, position, delay) = {
            let mut state = self.state.lock();
            state.baseline_calls += 1;
            if let Some(message) = &state.fail_baseline {
                return Err(SourceError::msg(message.clone()));
            }
            let snapshot: Vec<(TableIdentifier, Vec<Row>)> = tables
                .iter()
                .map(|t| {
                    (
                        t.clone(),
                        state
                            .tables
                            .get(t)
                            .map(|s| s.rows.values().cloned().collect())
                            .unwrap_or_default(),
                    )
                })
                .collect();
            (snapshot, state.last_position, state.baseline_row_delay)
        };
        for (table, rows) in snapshot {
            if delay.is_zero() {
                for chunk in rows.chunks(BASELINE_BATCH) {
                    sink.on_rows(&table, chunk.to_vec()).await?;
                }
            } else {
                for row in rows {
                    tokio::time::sleep(delay).await;
                    sink.on_rows(&table, vec![row]).await?;
                }
            }
        }
        Ok(Position::from_u64(position))
    }

    async fn stream(
        &self,
        from: Position,
        handler: &mut dyn ChangeHandler,
        cancel: CancellationToken,
    ) -> Result<(), SourceError> {
        let closed = self.close.lock().clone();
        {
            let mut state = self.state.lock();
            state.stream_calls += 1;
            state.state = Some(SourceState::Streaming);
        }
        let mut cursor = from
            .as_u64()
            .ok_or_else(|| SourceError::msg(format!("not a test-source position: {from}")))?;
        let mut running = self.running.subscribe();
        let mut chunk = Vec::with_capacity(STREAM_CHUNK);
        loop {
            if cancel.is_cancelled() || closed.is_cancelled() {
                return Ok(());
            }
            let injected = self.state.lock().fail_stream.take();
            if let Some(error) = injected {
                self.set_state(SourceState::Error);
                return Err(error);
            }
            if !*running.borrow_and_update() {
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = closed.cancelled() => return Ok(()),
                    _ = running.changed() => continue,
                }
            }
            let notified = self.changed.notified();
            chunk.clear();
            if let Err(released) = self.take_chunk(cursor, &mut chunk) {
                return Err(SourceError::ReBaselineRequired {
                    reason: format!(
                        "position {cursor} was released (history starts after {released})"
                    ),
                });
            }
            if chunk.is_empty() {
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = closed.cancelled() => return Ok(()),
                    () = notified => {}
                    _ = running.changed() => {}
                }
                continue;
            }
            let delay = self.state.lock().event_delay;
            let _delivering = self.delivering.lock().await;
            for (position, entry) in chunk.drain(..) {
                if !self.running_now.load(AtomicOrdering::Acquire) || cancel.is_cancelled() {
                    break;
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                match entry {
                    Entry::Change(event) => handler.on_change(event).await?,
                    Entry::Unreadable(event, error) => {
                        handler.on_change_failed(event, error).await?;
                    }
                    Entry::Heartbeat => handler.on_heartbeat(Position::from_u64(position)).await?,
                    Entry::Schema {
                        table,
                        old_columns,
                        new_columns,
                    } => {
                        handler
                            .on_schema_change(table, old_columns, new_columns)
                            .await?
                    }
                }
                cursor = position;
                // Publish per entry only while someone waits; otherwise once per chunk.
                if self.delivered.receiver_count() > 0 {
                    self.publish_delivered(cursor);
                }
            }
            self.publish_delivered(cursor);
        }
    }

    async fn ack(&self, position: &Position) -> Result<(), SourceError> {
        let value = position
            .as_u64()
            .ok_or_else(|| SourceError::msg(format!("not a test-source position: {position}")))?;
        let mut state = self.state.lock();
        state.acks.push(value);
        state.acked = Some(state.acked.map_or(value, |a| a.max(value)));
        // Entries up to `released` are dropped by the stream loop (`take_chunk`), so an
        // ack stays cheap for the engine task that calls it.
        state.released = state.released.max(value);
        Ok(())
    }

    async fn can_stream_from(&self, position: &Position) -> Result<bool, SourceError> {
        let value = position
            .as_u64()
            .ok_or_else(|| SourceError::msg(format!("not a test-source position: {position}")))?;
        // The history after `released` is kept, so any later position can be replayed.
        Ok(value >= self.state.lock().released)
    }

    fn supports_resume(&self) -> bool {
        let state = self.state.lock();
        state.supports_resume.unwrap_or(state.acked.is_some())
    }

    async fn last_acked_position(&self) -> Result<Option<Position>, SourceError> {
        Ok(self.state.lock().acked.map(Position::from_u64))
    }

    fn compare_positions(&self, a: &Position, b: &Position) -> Ordering {
        a.as_u64().cmp(&b.as_u64())
    }

    fn position_to_string(&self, position: &Position) -> String {
        position.to_string()
    }

    fn position_from_string(&self, text: &str) -> Result<Position, SourceError> {
        text.parse::<u64>()
            .map(Position::from_u64)
            .map_err(|_| SourceError::msg(format!("invalid test-source position {text:?}")))
    }

    async fn pause(&self) -> Result<(), SourceError> {
        self.running_now.store(false, AtomicOrdering::Release);
        self.running.send_replace(false);
        // Wait out a delivery in flight: after this, nothing reaches the handler.
        drop(self.delivering.lock().await);
        self.set_state(SourceState::Paused);
        Ok(())
    }

    async fn resume(&self) -> Result<(), SourceError> {
        self.running_now.store(true, AtomicOrdering::Release);
        self.running.send_replace(true);
        self.set_state(SourceState::Streaming);
        Ok(())
    }

    fn lag(&self) -> LagInfo {
        self.state.lock().lag
    }

    fn ordering_guarantee(&self) -> OrderingGuarantee {
        self.state
            .lock()
            .ordering
            .unwrap_or(OrderingGuarantee::TotalOrder)
    }

    fn state(&self) -> SourceState {
        self.state.lock().state.unwrap_or(SourceState::Connecting)
    }

    async fn close(&self) -> Result<(), SourceError> {
        let token = std::mem::take(&mut *self.close.lock());
        token.cancel();
        self.set_state(SourceState::Closed);
        Ok(())
    }

    async fn reset(&self, drop_publication: bool) -> Result<(), SourceError> {
        let mut state = self.state.lock();
        state.reset_calls.push(drop_publication);
        state.acked = None;
        state.history.clear();
        state.released = state.last_position;
        Ok(())
    }

    async fn count_rows(&self, table: &TableIdentifier) -> Option<u64> {
        self.state
            .lock()
            .tables
            .get(table)
            .map(|t| t.rows.len() as u64)
    }
}
