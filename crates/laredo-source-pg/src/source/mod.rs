//! [`PgSource`]: the [`SyncSource`] for PostgreSQL.
//!
//! [`PgSource`] is a handle on [`Inner`], the state shared by the engine's calls and
//! the stream's task. The work is split by concern:
//!
//! - [`connection`]: the query connection (opened again when it is found closed), the
//!   baseline's connection, the replication connection's settings;
//! - [`handoff`]: the baseline under the new slot's exported snapshot, and its handoff
//!   to the stream at the slot's consistent point;
//! - [`slot`]: dropping the replication slot and advancing its confirmed position;
//! - [`reconnect`]: the stream as a loop of replication sessions, with backoff, slot
//!   checks and the poison-message guard;
//! - [`session`]: one replication session: reading, pausing, acknowledging;
//! - [`watchdog`]: telling a quiet replication connection from a dead one;
//! - [`decoder`], [`relations`], [`rows`]: replication events into change events;
//! - [`position`]: positions, LSN text, and what an acknowledgement confirms;
//! - [`lag`]: how far behind the server the acknowledged position is.

mod connection;
mod decoder;
mod errors;
mod handoff;
mod lag;
mod position;
mod reconnect;
mod relations;
mod rows;
mod session;
mod slot;
mod watchdog;

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::time::SystemTime;

use async_trait::async_trait;
use laredo_core::{
    BaselineSink, ChangeHandler, ColumnDefinition, LagInfo, OrderingGuarantee, Position,
    SourceError, SourceState, SyncSource, TableIdentifier, ValidationError,
};
use parking_lot::Mutex;
use pgwire_replication::ReplicationClient;
use tokio::sync::{Notify, watch};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::catalog;
use crate::config::{PgSourceConfig, SlotMode};
use crate::pgoutput::{self, Message};
use crate::replication::ConnectionParams;

use self::errors::failed;
use self::position::pair;
pub use self::position::{format_lsn, parse_lsn};

/// The PostgreSQL source. Cheap to share: the engine holds it in an `Arc`.
pub struct PgSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSource")
            .field("slot", &self.inner.config.slot_name)
            .field("mode", &self.inner.config.slot_mode)
            .finish_non_exhaustive()
    }
}

/// The replication session whose slot the last baseline created, not streaming yet.
struct Pending {
    client: ReplicationClient,
}

/// Ends a replication session that has not started streaming. Dropping the client
/// closes the gate its worker waits on before `START_REPLICATION`, which ends the
/// session; `ReplicationClient::shutdown` would wait for that worker, which does not
/// listen for the stop request until it streams (pgwire-replication 0.5), and so
/// never return.
fn end_unstarted(client: ReplicationClient) {
    drop(client);
}

/// Decodes one pgoutput message (see [`PgSource::with_message_decoder`]).
pub type MessageDecoder = fn(&[u8]) -> Result<Message, pgoutput::DecodeError>;

struct Inner {
    config: PgSourceConfig,
    params: ConnectionParams,
    /// `pgoutput::decode`, unless a test injects a fault.
    decode: MessageDecoder,
    state: Mutex<SourceState>,
    query: tokio::sync::Mutex<Option<Arc<Client>>>,
    tables: Mutex<Vec<TableIdentifier>>,
    /// Columns per table as the stream last described them (from init, then from
    /// relation messages).
    columns: Mutex<HashMap<TableIdentifier, Vec<ColumnDefinition>>>,
    /// Domain OIDs resolved to their base types.
    base_types: Mutex<HashMap<u32, u32>>,
    /// The slot created by the last baseline, waiting for `stream`.
    pending: tokio::sync::Mutex<Option<Pending>>,
    /// The slot in use (ephemeral slots have a suffix).
    slot: Mutex<String>,
    /// The LSN to report as flushed.
    acked: AtomicU64,
    ack_changed: Notify,
    /// Commit-record LSN of each delivered transaction → the end LSN of the transaction
    /// before it.
    tx_starts: Mutex<BTreeMap<u64, u64>>,
    paused: watch::Sender<bool>,
    /// Held by the stream while it delivers one change; `pause` takes it to know that
    /// no delivery is under way.
    gate: tokio::sync::Mutex<()>,
    streaming: AtomicBool,
    last_delivered: Mutex<(u64, u64)>,
    server_wal_end: AtomicU64,
    /// End LSN and commit time of delivered, unacknowledged transactions (oldest first).
    commits: Mutex<VecDeque<(u64, SystemTime)>>,
    poller: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PgSource {
    /// Checks what the server must offer before the source starts, without changing
    /// anything: `wal_level`, the REPLICATION attribute, a free slot, the publication
    /// (`catalog::validate_server`), and that every table exists and is readable.
    /// `laredo-server --validate strict` runs it before listening.
    pub async fn preflight(&self, tables: &[TableIdentifier]) -> Vec<ValidationError> {
        let client = match self.inner.query_client().await {
            Ok(client) => client,
            Err(e) => return vec![ValidationError::new(None, "CONNECTION", e.to_string())],
        };
        let config = &self.inner.config;
        let mut problems =
            catalog::validate_server(&client, &config.slot_name, &config.publication, tables).await;
        problems.extend(catalog::validate_tables(&client, tables).await);
        problems
    }

    /// A source whose replication messages go through `decode` instead of
    /// the `pgoutput` decoder. For tests of faults a real server does not produce, such
    /// as a message that never decodes (a poison message).
    ///
    /// # Errors
    /// As [`PgSource::new`].
    #[doc(hidden)]
    pub fn with_message_decoder(
        config: PgSourceConfig,
        decode: MessageDecoder,
    ) -> Result<Self, SourceError> {
        let mut source = Self::new(config)?;
        Arc::get_mut(&mut source.inner)
            .expect("a new source is not shared yet")
            .decode = decode;
        Ok(source)
    }

    /// A source for `config`. Nothing connects until the engine starts it.
    ///
    /// # Errors
    /// An unusable connection string.
    pub fn new(mut config: PgSourceConfig) -> Result<Self, SourceError> {
        if config.connection_string.trim().is_empty() {
            return Err(SourceError::configuration("connection string is required"));
        }
        if config.publication.name.is_empty() {
            config.publication.name = format!("{}_pub", config.slot_name);
        }
        let params = ConnectionParams::parse(&config.connection_string).map_err(|e| {
            SourceError::Configuration {
                message: "invalid PostgreSQL connection string".to_string(),
                cause: Some(e.into()),
            }
        })?;
        let slot = config.slot_name.clone();
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                params,
                decode: pgoutput::decode,
                state: Mutex::new(SourceState::Closed),
                query: tokio::sync::Mutex::new(None),
                tables: Mutex::new(Vec::new()),
                columns: Mutex::new(HashMap::new()),
                base_types: Mutex::new(HashMap::new()),
                pending: tokio::sync::Mutex::new(None),
                slot: Mutex::new(slot),
                acked: AtomicU64::new(0),
                ack_changed: Notify::new(),
                tx_starts: Mutex::new(BTreeMap::new()),
                paused: watch::Sender::new(false),
                gate: tokio::sync::Mutex::new(()),
                streaming: AtomicBool::new(false),
                last_delivered: Mutex::new((0, 0)),
                server_wal_end: AtomicU64::new(0),
                commits: Mutex::new(VecDeque::new()),
                poller: Mutex::new(None),
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &PgSourceConfig {
        &self.inner.config
    }

    /// The name of the replication slot in use (ephemeral slots carry a suffix).
    pub fn slot_name(&self) -> String {
        self.inner.slot.lock().clone()
    }

    /// The LSN last reported to the server as flushed.
    pub fn acknowledged_lsn(&self) -> u64 {
        self.inner.acked.load(AtomicOrdering::SeqCst)
    }
}

impl Inner {
    fn set_state(&self, state: SourceState) {
        *self.state.lock() = state;
    }

    /// Marks a replication session as started: `Streaming`, or `Paused` when a pause
    /// arrived first (the flag is read under the state lock that `pause` also takes).
    fn set_streaming(&self) {
        let mut state = self.state.lock();
        *state = if *self.paused.borrow() {
            SourceState::Paused
        } else {
            SourceState::Streaming
        };
    }
}

#[async_trait]
impl SyncSource for PgSource {
    fn source_type(&self) -> &str {
        "postgresql"
    }

    async fn init(
        &self,
        tables: &[TableIdentifier],
    ) -> Result<HashMap<TableIdentifier, Vec<ColumnDefinition>>, SourceError> {
        let inner = &self.inner;
        inner.set_state(SourceState::Connecting);
        let client = inner.query_client().await?;
        let wal_level: String = client
            .query_one("SELECT current_setting('wal_level')", &[])
            .await
            .map_err(|e| failed("reading wal_level", e))?
            .get(0);
        if wal_level != "logical" {
            return Err(SourceError::configuration(format!(
                "the server runs with wal_level={wal_level}; logical replication needs wal_level=logical"
            )));
        }
        let mut schemas = HashMap::new();
        for table in tables {
            match catalog::discover_columns(&client, table).await {
                Ok(mut columns) => {
                    // A publication column list narrows what the stream carries; the
                    // baseline reads the same columns.
                    if let Some(list) = inner.config.publication.column_lists.get(table) {
                        if let Some(unknown) = list
                            .iter()
                            .find(|name| !columns.iter().any(|c| &c.name == *name))
                        {
                            return Err(SourceError::configuration(format!(
                                "publication column list of {table} names column {unknown:?}, which the table does not have"
                            )));
                        }
                        columns.retain(|c| list.contains(&c.name));
                    }
                    inner.resolve_domains(&client, &mut columns).await?;
                    schemas.insert(table.clone(), columns);
                }
                // Missing tables are reported by validate_tables.
                Err(catalog::CatalogError::TableNotFound(_)) => {}
                Err(e) => return Err(failed(format!("reading the columns of {table}"), e)),
            }
        }
        let present: Vec<TableIdentifier> = tables
            .iter()
            .filter(|t| schemas.contains_key(*t))
            .cloned()
            .collect();
        catalog::sync_publication(&client, &inner.config.publication, &present)
            .await
            .map_err(|e| {
                failed(
                    format!("publication {:?}", inner.config.publication.name),
                    e,
                )
            })?;
        *inner.tables.lock() = present;
        *inner.columns.lock() = schemas.clone();
        inner.start_lag_poller();
        inner.set_state(SourceState::Connected);
        Ok(schemas)
    }

    async fn validate_tables(&self, tables: &[TableIdentifier]) -> Vec<ValidationError> {
        let client = match self.inner.query_client().await {
            Ok(client) => client,
            Err(e) => return vec![ValidationError::new(None, "CONNECTION", e.to_string())],
        };
        catalog::validate_tables(&client, tables).await
    }

    async fn baseline(
        &self,
        tables: &[TableIdentifier],
        sink: &mut dyn BaselineSink,
    ) -> Result<Position, SourceError> {
        self.run_baseline(tables, sink).await
    }

    async fn stream(
        &self,
        from: Position,
        handler: &mut dyn ChangeHandler,
        cancel: CancellationToken,
    ) -> Result<(), SourceError> {
        let inner = &self.inner;
        inner.streaming.store(true, AtomicOrdering::SeqCst);
        let result = self.stream_inner(from, handler, cancel).await;
        inner.streaming.store(false, AtomicOrdering::SeqCst);
        if result.is_err() {
            inner.set_state(SourceState::Error);
        }
        result
    }

    async fn ack(&self, position: &Position) -> Result<(), SourceError> {
        let (lsn, seq) = pair(position);
        let confirm = if seq == 0 {
            lsn
        } else {
            // Inside a transaction: only the transaction before it is complete.
            match self.inner.tx_starts.lock().get(&lsn) {
                Some(&previous) => previous,
                None => return Ok(()),
            }
        };
        self.inner.confirm(confirm);
        let inner = &self.inner;
        if inner.config.slot_mode == SlotMode::Stateful
            && !inner.streaming.load(AtomicOrdering::SeqCst)
            && inner.pending.lock().await.is_none()
        {
            // No replication session carries the position to the server (the engine
            // acknowledges the last changes after the stream ended): advance the
            // slot directly.
            inner.advance_slot().await?;
        }
        Ok(())
    }

    fn supports_resume(&self) -> bool {
        self.inner.config.slot_mode == SlotMode::Stateful
    }

    async fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::{Value as J, json};
        let inner = &self.inner;
        let config = &inner.config;
        let slot_name = inner.slot.lock().clone();
        let mut slot = serde_json::Map::new();
        slot.insert("name".into(), J::from(slot_name.clone()));
        slot.insert(
            "type".into(),
            J::from(match config.slot_mode {
                SlotMode::Stateful => "persistent",
                SlotMode::Ephemeral => "temporary",
            }),
        );
        slot.insert("plugin".into(), J::from("pgoutput"));
        slot.insert("always_baseline".into(), J::from(config.always_baseline));
        let publication = &config.publication;
        let mut details = serde_json::Map::new();
        details.insert(
            "publication".into(),
            json!({
                "name": publication.name,
                "auto_managed": publication.create,
                "publish": publication.publish,
                "row_filters": publication.row_filters.iter()
                    .map(|(t, f)| (t.to_string(), J::from(f.clone())))
                    .collect::<serde_json::Map<_, _>>(),
                "column_lists": publication.column_lists.iter()
                    .map(|(t, c)| (t.to_string(), J::from(c.clone())))
                    .collect::<serde_json::Map<_, _>>(),
            }),
        );
        let looked_up = async {
            let client = inner.query_client().await?;
            client
                .query_opt(
                    "SELECT active, restart_lsn::text, confirmed_flush_lsn::text, \
                     coalesce(wal_status, ''), temporary \
                     FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot_name],
                )
                .await
                .map_err(|e| failed(format!("looking up replication slot {slot_name:?}"), e))
        }
        .await;
        match looked_up {
            Ok(Some(row)) => {
                slot.insert("exists".into(), J::from(true));
                slot.insert("active".into(), J::from(row.get::<_, bool>(0)));
                for (i, key) in [(1, "restart_lsn"), (2, "confirmed_flush_lsn")] {
                    let lsn: Option<String> = row.get(i);
                    slot.insert(key.into(), lsn.map_or(J::Null, J::from));
                }
                slot.insert("wal_status".into(), J::from(row.get::<_, String>(3)));
            }
            Ok(None) => {
                slot.insert("exists".into(), J::from(false));
            }
            Err(e) => {
                slot.insert("error".into(), J::from(e.to_string()));
            }
        }
        details.insert("slot".into(), J::Object(slot));
        details
    }

    /// True only for a stateful slot (without `always_baseline`) that is still healthy
    /// and not confirmed past `position`: the server never sends what a slot confirmed,
    /// and a temporary slot starts at its creation.
    async fn can_stream_from(&self, position: &Position) -> Result<bool, SourceError> {
        let inner = &self.inner;
        if inner.config.slot_mode != SlotMode::Stateful || inner.config.always_baseline {
            return Ok(false);
        }
        let (lsn, _) = pair(position);
        let client = inner.query_client().await?;
        let slot = &inner.config.slot_name;
        let row = client
            .query_opt(
                "SELECT confirmed_flush_lsn::text, coalesce(wal_status, '') \
                 FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
                &[slot],
            )
            .await
            .map_err(|e| failed(format!("looking up replication slot {slot:?}"), e))?;
        let Some(row) = row else {
            return Ok(false);
        };
        let confirmed = row
            .get::<_, Option<String>>(0)
            .as_deref()
            .and_then(parse_lsn);
        let status: String = row.get(1);
        Ok(status != "lost" && confirmed.is_some_and(|confirmed| confirmed <= lsn))
    }

    async fn last_acked_position(&self) -> Result<Option<Position>, SourceError> {
        let inner = &self.inner;
        if inner.config.slot_mode != SlotMode::Stateful || inner.config.always_baseline {
            return Ok(None);
        }
        let client = inner.query_client().await?;
        let slot = &inner.config.slot_name;
        let row = client
            .query_opt(
                "SELECT confirmed_flush_lsn::text, database = current_database() \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[slot],
            )
            .await
            .map_err(|e| failed(format!("looking up replication slot {slot:?}"), e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        if !row.get::<_, Option<bool>>(1).unwrap_or(false) {
            return Err(SourceError::configuration(format!(
                "replication slot {slot:?} belongs to another database or is not a logical slot"
            )));
        }
        let Some(lsn) = row
            .get::<_, Option<String>>(0)
            .as_deref()
            .and_then(parse_lsn)
        else {
            return Ok(None);
        };
        inner.acked.store(lsn, AtomicOrdering::SeqCst);
        *inner.last_delivered.lock() = (lsn, 0);
        Ok(Some(Position::from_pair(lsn, 0)))
    }

    fn compare_positions(&self, a: &Position, b: &Position) -> Ordering {
        pair(a).cmp(&pair(b))
    }

    fn position_to_string(&self, position: &Position) -> String {
        match pair(position) {
            (lsn, 0) => format_lsn(lsn),
            (lsn, seq) => format!("{}#{seq}", format_lsn(lsn)),
        }
    }

    fn position_from_string(&self, text: &str) -> Result<Position, SourceError> {
        let bad = || SourceError::msg(format!("{text:?} is not a PostgreSQL position"));
        let (lsn, seq) = match text.split_once('#') {
            Some((lsn, seq)) => (lsn, seq.parse::<u64>().map_err(|_| bad())?),
            None => (text, 0),
        };
        Ok(Position::from_pair(parse_lsn(lsn).ok_or_else(bad)?, seq))
    }

    async fn pause(&self) -> Result<(), SourceError> {
        // The flag changes under the state lock so a session starting now sees it.
        drop({
            let state = self.inner.state.lock();
            self.inner.paused.send_replace(true);
            state
        });
        // Wait for a delivery under way to finish.
        drop(self.inner.gate.lock().await);
        let mut state = self.inner.state.lock();
        if *self.inner.paused.borrow()
            && !matches!(*state, SourceState::Closed | SourceState::Error)
        {
            *state = SourceState::Paused;
        }
        Ok(())
    }

    async fn resume(&self) -> Result<(), SourceError> {
        let mut state = self.inner.state.lock();
        self.inner.paused.send_replace(false);
        if *state == SourceState::Paused {
            *state = SourceState::Streaming;
        }
        Ok(())
    }

    fn lag(&self) -> LagInfo {
        self.inner.lag()
    }

    fn ordering_guarantee(&self) -> OrderingGuarantee {
        OrderingGuarantee::TotalOrder
    }

    fn state(&self) -> SourceState {
        *self.inner.state.lock()
    }

    async fn close(&self) -> Result<(), SourceError> {
        if let Some(pending) = self.inner.pending.lock().await.take() {
            end_unstarted(pending.client);
        }
        // The stream has ended: make sure the slot holds the last acknowledged position
        // even if no status update carried it before the session closed.
        let advanced = if self.inner.config.slot_mode == SlotMode::Stateful {
            self.inner.advance_slot().await
        } else {
            Ok(())
        };
        if let Some(poller) = self.inner.poller.lock().take() {
            poller.abort();
        }
        *self.inner.query.lock().await = None;
        self.inner.set_state(SourceState::Closed);
        advanced
    }

    async fn reset(&self, drop_publication: bool) -> Result<(), SourceError> {
        let inner = &self.inner;
        if let Some(pending) = inner.pending.lock().await.take() {
            end_unstarted(pending.client);
        }
        let client = inner.query_client().await?;
        let slot = inner.slot.lock().clone();
        inner.drop_slot(&client, &slot).await?;
        if drop_publication {
            catalog::drop_publication(&client, &inner.config.publication.name)
                .await
                .map_err(|e| failed("dropping the publication", e))?;
        }
        inner.acked.store(0, AtomicOrdering::SeqCst);
        *inner.last_delivered.lock() = (0, 0);
        Ok(())
    }

    async fn count_rows(&self, table: &TableIdentifier) -> Option<u64> {
        let client = self.inner.query_client().await.ok()?;
        let row = client
            .query_one(
                &format!("SELECT count(*) FROM {}", catalog::quote_table(table)),
                &[],
            )
            .await
            .ok()?;
        u64::try_from(row.get::<_, i64>(0)).ok()
    }
}
