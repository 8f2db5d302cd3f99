//! [`PgSource`]: the [`SyncSource`] for PostgreSQL.
//!
//! # Positions
//! A change's position is the pair (the LSN of its transaction's commit record, its
//! sequence number in the transaction, from 1); a commit, and a keepalive while no
//! transaction is open, is the pair (the commit's end LSN or the server's WAL end, 0).
//! Positions grow in commit order, and the same change has the same position when
//! the server sends its transaction again after a reconnect, so the source can skip
//! everything it already delivered.
//!
//! An acknowledged position becomes the slot's confirmed flush LSN: `(lsn, 0)` confirms
//! `lsn`; a position inside a transaction confirms only the end of the transaction
//! before it, because the server resends whole transactions.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::FutureExt;
use laredo_core::{
    BaselineSink, ChangeEvent, ChangeHandler, ColumnDefinition, LagInfo, OrderingGuarantee,
    Position, Row, RowLayout, SourceError, SourceState, SyncSource, TableIdentifier,
    ValidationError, Value,
};
use parking_lot::Mutex;
use pgwire_replication::{
    Lsn, PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent,
};
use tokio::sync::{Notify, watch};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::baseline::TableCopy;
use crate::catalog::{self, quote_ident};
use crate::config::{PgSourceConfig, SlotMode};
use crate::pgoutput::{self, Message, OldTuple, Relation, Tuple, TupleValue};
use crate::replication::{
    self, ConnectionParams, create_slot_with_snapshot, parse_connection_string, session_options,
};
use crate::tls::{self, MakeRustlsConnect, RustlsStream, SslMode};
use crate::types::parse_text;

/// The longest a catalog query on the query connection may take before the connection
/// is presumed dead and opened again.
const QUERY_TIMEOUT: Duration = Duration::from_secs(15);

/// How often the server's WAL end is read for the lag figures.
const LAG_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Events handled in a row from the read-ahead before the stream looks at cancel,
/// pause and acknowledgements again.
const FAST_PATH_BURST: usize = 256;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

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

struct Pending {
    client: ReplicationClient,
}

/// The I/O half of a query connection (plaintext or TLS).
type QueryConnection =
    tokio_postgres::Connection<tokio_postgres::Socket, RustlsStream<tokio_postgres::Socket>>;

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
    /// (see [`catalog::validate_server`]), and that every table exists and is readable.
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
    /// [`pgoutput::decode`]. For tests of faults a real server does not produce, such
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
            return Err(SourceError::msg("connection string is required"));
        }
        if config.publication.name.is_empty() {
            config.publication.name = format!("{}_pub", config.slot_name);
        }
        let params = ConnectionParams::parse(&config.connection_string)
            .map_err(|e| SourceError::with_source("invalid PostgreSQL connection string", e))?;
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

/// Formats an LSN as `%X/%08X` (`16/B374D848`, `0/0000A0F0`); PostgreSQL reads it.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:08X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parses PostgreSQL's LSN text.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
        return None;
    }
    Some(hi << 32 | lo)
}

fn pair(position: &Position) -> (u64, u64) {
    position
        .as_pair()
        .or_else(|| position.as_u64().map(|v| (v, 0)))
        .unwrap_or((0, 0))
}

fn pg_time(micros: i64) -> SystemTime {
    let unix = micros.saturating_add(PG_EPOCH_OFFSET_MICROS);
    match u64::try_from(unix) {
        Ok(us) => UNIX_EPOCH + Duration::from_micros(us),
        Err(_) => UNIX_EPOCH,
    }
}

fn other(what: impl Into<String>, e: impl Into<laredo_core::BoxError>) -> SourceError {
    SourceError::with_source(what, e)
}

/// The SQLSTATE a server error carries in its text, if any.
fn sqlstate(error: &PgWireError) -> Option<String> {
    let PgWireError::Server(text) = error else {
        return None;
    };
    let start = text.rfind("(SQLSTATE ")? + "(SQLSTATE ".len();
    Some(text[start..].trim_end_matches(')').to_string())
}

impl Inner {
    async fn query_client(&self) -> Result<Arc<Client>, SourceError> {
        let mut guard = self.query.lock().await;
        if let Some(client) = guard.as_ref()
            && !client.is_closed()
        {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(self.connect().await?);
        *guard = Some(Arc::clone(&client));
        Ok(client)
    }

    async fn connect(&self) -> Result<Client, SourceError> {
        let (client, connection) = self.connect_unspawned().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    /// A query connection whose I/O future the caller drives (it must be polled for
    /// the client to make progress). TLS as the connection string's `sslmode` says.
    async fn connect_unspawned(&self) -> Result<(Client, QueryConnection), SourceError> {
        let (mut config, settings) = parse_connection_string(&self.config.connection_string)
            .map_err(|e| other("invalid PostgreSQL connection string", e))?;
        config.options(session_options());
        config.application_name("laredo");
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        config.connect_timeout(QUERY_TIMEOUT);
        let failed = |e: tokio_postgres::Error| {
            other(
                format!(
                    "cannot connect to PostgreSQL at {}:{} (sslmode={})",
                    self.params.host, self.params.port, settings.mode
                ),
                e,
            )
        };
        // libpq ignores sslmode on Unix sockets.
        let unix_only = config
            .get_hosts()
            .iter()
            .all(|host| matches!(host, tokio_postgres::config::Host::Unix(_)));
        if settings.mode == SslMode::Disable || (unix_only && !config.get_hosts().is_empty()) {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            return config
                .connect(MakeRustlsConnect::plaintext())
                .await
                .map_err(failed);
        }
        let tls_client = tls::client_config(&settings).await.map_err(|e| {
            other(
                format!(
                    "TLS settings for PostgreSQL at {}:{}",
                    self.params.host, self.params.port
                ),
                e,
            )
        })?;
        let connector = MakeRustlsConnect::new(tls_client);
        if settings.negotiation == tls::SslNegotiation::Direct {
            config.ssl_negotiation(tokio_postgres::config::SslNegotiation::Direct);
        }
        let ssl_mode = match settings.mode {
            SslMode::Disable | SslMode::Allow => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        };
        config.ssl_mode(ssl_mode);
        match config.connect(connector.clone()).await {
            Ok(connected) => Ok(connected),
            Err(plain_error) if settings.mode == SslMode::Allow => {
                // libpq's `allow`: the plaintext attempt failed, try once more with TLS.
                tracing::debug!(error = %plain_error, "plaintext connection refused; sslmode=allow retries with TLS");
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                config.connect(connector).await.map_err(failed)
            }
            Err(e) => Err(failed(e)),
        }
    }

    /// Reads the server's WAL end on the query connection every few seconds, so lag
    /// shows during the baseline and while the replication connection is down or
    /// paused. Started once, by `init`; stopped by `close`.
    fn start_lag_poller(self: &Arc<Self>) {
        let mut poller = self.poller.lock();
        if poller.is_some() {
            return;
        }
        let inner = Arc::downgrade(self);
        *poller = Some(tokio::spawn(async move {
            loop {
                let Some(strong) = inner.upgrade() else {
                    return;
                };
                let read = async {
                    let client = strong.query_client().await.ok()?;
                    let row = client
                        .query_one("SELECT pg_current_wal_lsn()::text", &[])
                        .await
                        .ok()?;
                    parse_lsn(row.get(0))
                };
                if let Ok(Some(lsn)) = tokio::time::timeout(QUERY_TIMEOUT, read).await {
                    strong.server_wal_end.fetch_max(lsn, AtomicOrdering::SeqCst);
                }
                drop(strong);
                tokio::time::sleep(LAG_POLL_INTERVAL).await;
            }
        }));
    }

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

    fn replication_config(&self, slot: &str, start_lsn: u64) -> ReplicationConfig {
        let p = &self.params;
        let mut config = ReplicationConfig::new(
            &p.host,
            &p.user,
            &p.password,
            &p.database,
            quote_ident(slot),
            self.config.publication.name.as_str(),
        );
        config.port = p.port;
        config.start_lsn = Lsn(start_lsn);
        config.ack_lsn = Some(Lsn(self.acked.load(AtomicOrdering::SeqCst)));
        config.options = Some(session_options());
        config.status_interval = self.config.status_interval;
        config.idle_wakeup_interval = self.config.status_interval.max(Duration::from_secs(1));
        config.buffer_events = self.config.read_ahead.max(16);
        config.application_name = Some("laredo".to_string());
        config
    }

    /// Resolves domain OIDs among `columns` to their base types.
    async fn resolve_domains(
        &self,
        client: &Client,
        columns: &mut [ColumnDefinition],
    ) -> Result<(), SourceError> {
        for column in columns.iter_mut() {
            if column.type_oid < 10_000 {
                continue;
            }
            let known = self.base_types.lock().get(&column.type_oid).copied();
            let base = match known {
                Some(base) => base,
                None => {
                    let row = client
                        .query_one(
                            "WITH RECURSIVE d(oid, base, typtype) AS ( \
                               SELECT oid, typbasetype, typtype FROM pg_type WHERE oid = $1::int8::oid \
                               UNION ALL \
                               SELECT t.oid, t.typbasetype, t.typtype FROM pg_type t JOIN d ON t.oid = d.base \
                             ) SELECT oid::int8 FROM d WHERE typtype <> 'd' LIMIT 1",
                            &[&i64::from(column.type_oid)],
                        )
                        .await;
                    let base = match row {
                        Ok(row) => u32::try_from(row.get::<_, i64>(0)).unwrap_or(column.type_oid),
                        Err(_) => column.type_oid,
                    };
                    self.base_types.lock().insert(column.type_oid, base);
                    base
                }
            };
            column.type_oid = base;
        }
        Ok(())
    }

    /// Drops `slot` if it exists, ending the session that holds it first.
    async fn drop_slot(&self, client: &Client, slot: &str) -> Result<bool, SourceError> {
        for _ in 0..50 {
            let row = client
                .query_opt(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await
                .map_err(|e| other(format!("looking up replication slot {slot:?}"), e))?;
            let Some(row) = row else {
                return Ok(false);
            };
            if let Some(pid) = row.get::<_, Option<i32>>(0) {
                let _ = client
                    .execute("SELECT pg_terminate_backend($1)", &[&pid])
                    .await;
            }
            match client
                .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) => {
                    let code = e.code().map(|c| c.code().to_string());
                    match code.as_deref() {
                        // Still active (the terminated session has not ended yet).
                        Some("55006") => tokio::time::sleep(Duration::from_millis(100)).await,
                        Some("42704") => return Ok(false),
                        _ => {
                            return Err(other(format!("dropping replication slot {slot:?}"), e));
                        }
                    }
                }
            }
        }
        Err(SourceError::msg(format!(
            "replication slot {slot:?} stays in use by another session"
        )))
    }

    /// Reads `tables` under `snapshot` (or a fresh snapshot) into `sink`.
    async fn copy_tables(
        &self,
        tables: &[TableIdentifier],
        snapshot: Option<&str>,
        sink: &mut dyn BaselineSink,
    ) -> Result<(), SourceError> {
        // The connection's I/O is driven by this task too (not a spawned one): reading,
        // decoding and applying on one thread keeps rows allocated and freed on the
        // same thread, on the allocator's thread-local fast path. Handing decoded rows
        // or socket buffers to another thread measured 20-30% slower.
        let (client, connection) = self.connect_unspawned().await?;
        let copy = self.copy_on(&client, tables, snapshot, sink);
        tokio::pin!(connection);
        tokio::select! {
            outcome = copy => outcome,
            ended = &mut connection => Err(match ended {
                Ok(()) => SourceError::msg("the baseline connection closed"),
                Err(e) => other("the baseline connection failed", e),
            }),
        }
    }

    /// The baseline transaction of [`Self::copy_tables`] on `client`.
    async fn copy_on(
        &self,
        client: &Client,
        tables: &[TableIdentifier],
        snapshot: Option<&str>,
        sink: &mut dyn BaselineSink,
    ) -> Result<(), SourceError> {
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| other("starting the baseline transaction", e))?;
        if let Some(snapshot) = snapshot {
            client
                .batch_execute(&format!(
                    "SET TRANSACTION SNAPSHOT '{}'",
                    snapshot.replace('\'', "''")
                ))
                .await
                .map_err(|e| other(format!("importing snapshot {snapshot:?}"), e))?;
        }
        let mut jobs = Vec::with_capacity(tables.len());
        for table in tables {
            let columns = self.columns.lock().get(table).cloned().ok_or_else(|| {
                SourceError::msg(format!("{table} was not initialised by this source"))
            })?;
            let filter = self.config.publication.row_filters.get(table).cloned();
            jobs.push((table.clone(), columns, filter));
        }
        // Rows are read, decoded and applied in turn, on this task (see copy_tables).
        let batch_rows = self.config.baseline_batch_rows.max(1);
        for (table, columns, filter) in jobs {
            let mut copy = TableCopy::start_filtered(client, &table, &columns, filter.as_deref())
                .await
                .map_err(|e| other(format!("baseline of {table}"), e))?;
            while let Some(rows) = copy
                .next_batch(batch_rows)
                .await
                .map_err(|e| other(format!("baseline of {table}"), e))?
            {
                sink.on_rows(&table, rows).await?;
            }
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| other("ending the baseline transaction", e))
    }

    /// Moves the persistent slot's confirmed position to the acknowledged LSN while no
    /// session streams from it.
    async fn advance_slot(&self) -> Result<(), SourceError> {
        let lsn = self.acked.load(AtomicOrdering::SeqCst);
        if lsn == 0 {
            return Ok(());
        }
        let client = self.query_client().await?;
        let slot = self.config.slot_name.clone();
        let mut wait = Duration::from_millis(10);
        for _ in 0..40 {
            let result = client
                .query_opt(
                    "SELECT pg_replication_slot_advance(slot_name, $2::text::pg_lsn) \
                     FROM pg_replication_slots \
                     WHERE slot_name = $1 AND confirmed_flush_lsn < $2::text::pg_lsn",
                    &[&slot, &format_lsn(lsn)],
                )
                .await;
            match result {
                Ok(_) => return Ok(()),
                // The walsender that held the slot is still exiting.
                Err(e) if e.code().is_some_and(|c| c.code() == "55006") => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(250));
                }
                Err(e) => {
                    return Err(other(
                        format!("advancing replication slot {slot:?} to {}", format_lsn(lsn)),
                        e,
                    ));
                }
            }
        }
        Err(SourceError::msg(format!(
            "replication slot {slot:?} stayed in use; its position was not advanced to {}",
            format_lsn(lsn)
        )))
    }

    /// Records `position` as delivered when it is past everything delivered so far;
    /// false for a position already delivered (a transaction sent again).
    fn advance_delivered(&self, position: (u64, u64)) -> bool {
        let mut last = self.last_delivered.lock();
        let fresh = position > *last;
        if fresh {
            *last = position;
        }
        fresh
    }

    fn confirm(&self, lsn: u64) {
        let previous = self.acked.fetch_max(lsn, AtomicOrdering::SeqCst);
        if lsn > previous {
            {
                let mut commits = self.commits.lock();
                while commits.front().is_some_and(|&(end, _)| end <= lsn) {
                    commits.pop_front();
                }
            }
            {
                let mut starts = self.tx_starts.lock();
                let keep = starts.split_off(&lsn);
                *starts = keep;
            }
            self.ack_changed.notify_one();
        }
    }
}

/// Tells a quiet replication connection from a dead one. PostgreSQL sends nothing on
/// an idle, caught-up stream, so after half of `receive_timeout` of silence the source
/// writes a non-transactional logical message (`pg_logical_emit_message`), which the
/// server sends down this connection at once; only when that does not arrive either is
/// the connection given up.
struct SilenceWatch {
    timeout: Duration,
    last_heard: tokio::time::Instant,
    probe: Option<tokio::task::JoinHandle<bool>>,
}

enum Silence {
    Probed,
    Dead,
}

impl SilenceWatch {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            last_heard: tokio::time::Instant::now(),
            probe: None,
        }
    }

    fn deadline(&self) -> tokio::time::Instant {
        match self.probe {
            None => self.last_heard + self.timeout / 2,
            Some(_) => self.last_heard + self.timeout,
        }
    }

    fn heard(&mut self) {
        self.last_heard = tokio::time::Instant::now();
        if let Some(probe) = self.probe.take() {
            probe.abort();
        }
    }

    fn expired(&mut self, inner: &Arc<Inner>) -> Silence {
        match self.probe.take() {
            None => {
                let inner = Arc::clone(inner);
                let within = self.timeout / 2;
                self.probe = Some(tokio::spawn(async move {
                    let probe = async {
                        let client = inner.query_client().await.ok()?;
                        client
                            .execute(
                                "SELECT pg_logical_emit_message(false, 'laredo.probe', '')",
                                &[],
                            )
                            .await
                            .ok()
                    };
                    let sent = tokio::time::timeout(within, probe)
                        .await
                        .ok()
                        .flatten()
                        .is_some();
                    if !sent {
                        tracing::debug!("the silence probe could not be written");
                    }
                    sent
                }));
                Silence::Probed
            }
            Some(probe) if probe.is_finished() => {
                // A probe that could not be written (no privilege, server unreachable
                // on the query connection too) proves nothing: give the connection up
                // only when the probe went out and still nothing came back.
                let sent = probe.now_or_never().and_then(Result::ok).unwrap_or(false);
                if sent {
                    Silence::Dead
                } else {
                    self.last_heard = tokio::time::Instant::now();
                    Silence::Probed
                }
            }
            Some(probe) => {
                // The probe itself is stuck: the query connection is as dead as this one.
                probe.abort();
                Silence::Dead
            }
        }
    }
}

/// Why a replication session ended.
enum SessionEnd {
    Cancelled,
    /// The connection failed; `progressed` tells whether anything arrived first.
    Lost {
        error: SourceError,
        progressed: bool,
    },
}

/// Counts decode failures of the replication message at one WAL position across
/// reconnects: the same message failing again and again is a poison message, and the
/// source must stop and say so instead of reconnecting for ever.
#[derive(Debug, Default)]
struct PoisonGuard {
    /// The position of the last failure and how many times in a row it failed.
    last: Option<(u64, u32)>,
}

impl PoisonGuard {
    /// Records a failure at `lsn`; `Some(count)` once it failed `max` times in a row.
    fn record(&mut self, lsn: u64, max: u32) -> Option<u32> {
        let count = match self.last {
            Some((at, count)) if at == lsn => count + 1,
            _ => 1,
        };
        self.last = Some((lsn, count));
        (count >= max).then_some(count)
    }

    /// A message past the failing one decoded: the failure did not repeat.
    fn passed(&mut self, lsn: u64) {
        if self.last.is_some_and(|(at, _)| lsn > at) {
            self.last = None;
        }
    }
}

/// The decoding state of one stream.
struct Decoder {
    /// A replication message that did not decode: its position and why (set by
    /// `handle_event`, taken by the reconnect loop).
    undecodable: Option<(u64, String)>,
    relations: HashMap<u32, RelationInfo>,
    tables: Vec<TableIdentifier>,
    tx: Option<Tx>,
    last_complete: u64,
}

struct Tx {
    final_lsn: u64,
    xid: i64,
    commit_time: SystemTime,
    seq: u64,
    /// Whether a change of ours was delivered (else its `tx_starts` entry goes).
    delivered: bool,
}

struct RelationInfo {
    table: TableIdentifier,
    ours: bool,
    oids: Vec<u32>,
    layout: Arc<RowLayout>,
    key_layout: Arc<RowLayout>,
    key_indexes: Vec<usize>,
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
            .map_err(|e| other("reading wal_level", e))?
            .get(0);
        if wal_level != "logical" {
            return Err(SourceError::msg(format!(
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
                            return Err(SourceError::msg(format!(
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
                Err(e) => return Err(other(format!("reading the columns of {table}"), e)),
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
                other(
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
        let inner = &self.inner;
        let all_tables = {
            let ours = inner.tables.lock();
            ours.iter().all(|t| tables.contains(t))
        };
        if inner.streaming.load(AtomicOrdering::SeqCst) || !all_tables {
            // A reload while the stream runs: a fresh snapshot, no new slot. Changes
            // held while it runs are applied afterwards (they are older than the
            // snapshot, so the table converges as the stream catches up).
            inner.copy_tables(tables, None, sink).await?;
            let (lsn, seq) = *inner.last_delivered.lock();
            return Ok(Position::from_pair(lsn, seq));
        }
        if let Some(mut old) = inner.pending.lock().await.take() {
            let _ = old.client.shutdown().await;
        }
        let client = inner.query_client().await?;
        if inner.config.publication.create {
            // Put back a publication dropped since init (its loss ends the stream).
            let ours = inner.tables.lock().clone();
            catalog::sync_publication(&client, &inner.config.publication, &ours)
                .await
                .map_err(|e| {
                    other(
                        format!("publication {:?}", inner.config.publication.name),
                        e,
                    )
                })?;
        }
        let slot = match inner.config.slot_mode {
            SlotMode::Stateful => {
                let slot = inner.config.slot_name.clone();
                if inner.drop_slot(&client, &slot).await? {
                    tracing::info!(
                        slot,
                        "dropped the old replication slot for a fresh baseline"
                    );
                }
                slot
            }
            SlotMode::Ephemeral => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                format!(
                    "{}_{:x}",
                    inner.config.slot_name,
                    (nanos as u64) ^ u64::from(std::process::id())
                )
            }
        };
        *inner.slot.lock() = slot.clone();
        let (repl, created) = create_slot_with_snapshot(
            &inner.params,
            &slot,
            &inner.config.publication.name,
            inner.config.slot_mode == SlotMode::Ephemeral,
        )
        .await
        .map_err(|e| other(format!("creating replication slot {slot:?}"), e))?;
        tracing::info!(
            slot,
            consistent_point = %format_lsn(created.consistent_point),
            "replication slot created; reading the baseline under its snapshot"
        );
        let mut repl = repl;
        if let Err(e) = inner
            .copy_tables(tables, Some(&created.snapshot_name), sink)
            .await
        {
            let _ = repl.shutdown().await;
            if inner.config.slot_mode == SlotMode::Stateful {
                // A slot whose baseline never completed must not be resumed from.
                if let Err(drop_error) = inner.drop_slot(&client, &slot).await {
                    tracing::warn!(slot, error = %drop_error, "could not drop the slot of a failed baseline");
                }
            }
            return Err(e);
        }
        inner
            .acked
            .store(created.consistent_point, AtomicOrdering::SeqCst);
        *inner.last_delivered.lock() = (created.consistent_point, 0);
        inner.tx_starts.lock().clear();
        inner.commits.lock().clear();
        *inner.pending.lock().await = Some(Pending { client: repl });
        Ok(Position::from_pair(created.consistent_point, 0))
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
                .map_err(|e| other(format!("looking up replication slot {slot_name:?}"), e))
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
            .map_err(|e| other(format!("looking up replication slot {slot:?}"), e))?;
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
            .map_err(|e| other(format!("looking up replication slot {slot:?}"), e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        if !row.get::<_, Option<bool>>(1).unwrap_or(false) {
            return Err(SourceError::msg(format!(
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
        let inner = &self.inner;
        let wal_end = inner.server_wal_end.load(AtomicOrdering::SeqCst);
        let acked = inner.acked.load(AtomicOrdering::SeqCst);
        LagInfo {
            lag_bytes: wal_end.saturating_sub(acked),
            lag_time: Some(
                inner
                    .commits
                    .lock()
                    .front()
                    .and_then(|&(_, at)| SystemTime::now().duration_since(at).ok())
                    .unwrap_or(Duration::ZERO),
            ),
        }
    }

    fn ordering_guarantee(&self) -> OrderingGuarantee {
        OrderingGuarantee::TotalOrder
    }

    fn state(&self) -> SourceState {
        *self.inner.state.lock()
    }

    async fn close(&self) -> Result<(), SourceError> {
        if let Some(mut pending) = self.inner.pending.lock().await.take() {
            let _ = pending.client.shutdown().await;
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
        if let Some(mut pending) = inner.pending.lock().await.take() {
            let _ = pending.client.shutdown().await;
        }
        let client = inner.query_client().await?;
        let slot = inner.slot.lock().clone();
        inner.drop_slot(&client, &slot).await?;
        if drop_publication {
            catalog::drop_publication(&client, &inner.config.publication.name)
                .await
                .map_err(|e| other("dropping the publication", e))?;
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

impl PgSource {
    async fn stream_inner(
        &self,
        from: Position,
        handler: &mut dyn ChangeHandler,
        cancel: CancellationToken,
    ) -> Result<(), SourceError> {
        let inner = &self.inner;
        let (from_lsn, from_seq) = pair(&from);
        inner.advance_delivered((from_lsn, from_seq));
        let mut decoder = Decoder {
            undecodable: None,
            relations: HashMap::new(),
            tables: inner.tables.lock().clone(),
            tx: None,
            last_complete: from_lsn,
        };
        let mut failures = 0u32;
        let mut poison = PoisonGuard::default();
        loop {
            let pending = inner.pending.lock().await.take();
            let client = match pending {
                Some(mut pending) => {
                    pending
                        .client
                        .start()
                        .await
                        .map_err(|e| other("starting replication", e))?;
                    Ok(pending.client)
                }
                None => {
                    if inner.config.slot_mode == SlotMode::Ephemeral {
                        return Err(SourceError::ReBaselineRequired {
                            reason: format!(
                                "the temporary replication slot {:?} ended with its connection",
                                inner.slot.lock().clone()
                            ),
                        });
                    }
                    self.open_stream().await
                }
            };
            let end = match client {
                Ok(client) => {
                    inner.set_streaming();
                    match self
                        .run_session(client, &mut decoder, handler, &cancel)
                        .await
                    {
                        Ok(end) => {
                            poison.passed(decoder.last_complete);
                            end
                        }
                        Err(error) => match decoder.undecodable.take() {
                            // A message that did not decode: maybe damaged on the way,
                            // maybe a poison message. Reconnect and read it again; stop
                            // once it failed max_protocol_failures times in a row.
                            Some((lsn, cause)) => {
                                let max = inner.config.max_protocol_failures;
                                if let Some(count) = poison.record(lsn, max) {
                                    return Err(other(
                                        format!(
                                            "the replication message at {} could not be \
                                             decoded {count} times in a row \
                                             (max_protocol_failures): {cause}; the source \
                                             stops instead of reading it again",
                                            format_lsn(lsn)
                                        ),
                                        error,
                                    ));
                                }
                                tracing::warn!(
                                    position = %format_lsn(lsn),
                                    error = %error,
                                    "an undecodable replication message: reconnecting to read it again"
                                );
                                SessionEnd::Lost {
                                    error,
                                    progressed: false,
                                }
                            }
                            None => return Err(error),
                        },
                    }
                }
                Err(error) if error.is_rebaseline_required() => return Err(error),
                Err(error) => SessionEnd::Lost {
                    error,
                    progressed: false,
                },
            };
            match end {
                SessionEnd::Cancelled => return Ok(()),
                SessionEnd::Lost { error, progressed } => {
                    if cancel.is_cancelled() {
                        return Ok(());
                    }
                    if inner.config.slot_mode == SlotMode::Ephemeral {
                        return Err(SourceError::ReBaselineRequired {
                            reason: format!(
                                "the replication connection of temporary slot {:?} was lost: {error}",
                                inner.slot.lock().clone()
                            ),
                        });
                    }
                    if progressed {
                        failures = 0;
                    }
                    failures += 1;
                    let policy = &inner.config.reconnect;
                    if failures > policy.attempts() {
                        return Err(other(
                            format!(
                                "replication connection lost: exhausted {} reconnect attempts",
                                policy.attempts()
                            ),
                            error,
                        ));
                    }
                    let wait = policy.backoff(failures);
                    tracing::warn!(
                        error = %error, attempt = failures, wait_ms = wait.as_millis(),
                        "replication connection lost; reconnecting"
                    );
                    inner.set_state(SourceState::Reconnecting);
                    decoder.tx = None;
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Opens a streaming session on the persistent slot, checking the slot first so a
    /// missing or invalidated slot is reported as such.
    async fn open_stream(&self) -> Result<ReplicationClient, SourceError> {
        let inner = &self.inner;
        let slot = inner.config.slot_name.clone();
        // The query connection may be down too; a failure here is a lost connection.
        let lookup = async {
            let client = inner.query_client().await?;
            client
                .query_opt(
                    "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await
                .map_err(|e| other(format!("looking up replication slot {slot:?}"), e))
        };
        let row = match tokio::time::timeout(QUERY_TIMEOUT, lookup).await {
            Ok(row) => row?,
            Err(_) => {
                *inner.query.lock().await = None;
                return Err(SourceError::msg(format!(
                    "looking up replication slot {slot:?} took longer than {QUERY_TIMEOUT:?}"
                )));
            }
        };
        match row {
            None => {
                return Err(SourceError::ReBaselineRequired {
                    reason: format!("replication slot {slot:?} does not exist any more (dropped?)"),
                });
            }
            Some(row) if row.get::<_, Option<String>>(0).as_deref() == Some("lost") => {
                return Err(SourceError::ReBaselineRequired {
                    reason: format!(
                        "replication slot {slot:?} was invalidated (wal_status = lost): the WAL it needed is gone"
                    ),
                });
            }
            Some(_) => {}
        }
        let acked = inner.acked.load(AtomicOrdering::SeqCst);
        let mut config = inner.replication_config(&slot, acked);
        replication::route(&inner.params, &mut config)
            .await
            .map_err(|e| {
                other(
                    format!("opening the replication stream of slot {slot:?}"),
                    e,
                )
            })?;
        ReplicationClient::connect(config).await.map_err(|e| {
            other(
                format!("opening the replication stream of slot {slot:?}"),
                e,
            )
        })
    }

    async fn run_session(
        &self,
        mut client: ReplicationClient,
        decoder: &mut Decoder,
        handler: &mut dyn ChangeHandler,
        cancel: &CancellationToken,
    ) -> Result<SessionEnd, SourceError> {
        let inner = &self.inner;
        let mut progressed = false;
        let mut paused = inner.paused.subscribe();
        let mut sent_ack = inner.acked.load(AtomicOrdering::SeqCst);
        client.update_applied_lsn(Lsn(sent_ack));
        let mut silence = SilenceWatch::new(inner.config.receive_timeout);
        loop {
            if *paused.borrow_and_update() {
                tokio::select! {
                    () = cancel.cancelled() => {
                        let _ = client.shutdown().await;
                        return Ok(SessionEnd::Cancelled);
                    }
                    _ = paused.changed() => continue,
                    () = inner.ack_changed.notified() => {
                        client.update_applied_lsn(Lsn(inner.acked.load(AtomicOrdering::SeqCst)));
                        continue;
                    }
                }
            }
            let event = tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    let _ = client.shutdown().await;
                    return Ok(SessionEnd::Cancelled);
                }
                () = inner.ack_changed.notified() => {
                    sent_ack = inner.acked.load(AtomicOrdering::SeqCst);
                    client.update_applied_lsn(Lsn(sent_ack));
                    continue;
                }
                _ = paused.changed() => continue,
                event = tokio::time::timeout_at(silence.deadline(), client.recv()) => match event {
                    Ok(event) => event,
                    Err(_) => match silence.expired(inner) {
                        Silence::Probed => continue,
                        Silence::Dead => {
                            client.abort();
                            return Ok(SessionEnd::Lost {
                                error: SourceError::msg(format!(
                                    "nothing received for {:?}, not even a probe; the connection is presumed dead",
                                    inner.config.receive_timeout
                                )),
                                progressed,
                            });
                        }
                    },
                },
            };
            silence.heard();
            let event = match self.received(event, progressed)? {
                Ok(event) => event,
                Err(end) => return Ok(end),
            };
            progressed = true;
            let gate = inner.gate.lock().await;
            if *inner.paused.borrow() {
                // Paused while waiting for the gate: deliver after resume. The event
                // is held here, not dropped.
                drop(gate);
                while *paused.borrow_and_update() {
                    tokio::select! {
                        () = cancel.cancelled() => {
                            let _ = client.shutdown().await;
                            return Ok(SessionEnd::Cancelled);
                        }
                        _ = paused.changed() => {}
                    }
                }
                let _delivering = inner.gate.lock().await;
                self.handle_event(event, decoder, handler).await?;
                continue;
            }
            self.handle_event(event, decoder, handler).await?;
            // Fast path: events already read ahead are handled without waiting on
            // anything else (a burst at a time, so pause and cancel stay prompt).
            for _ in 0..FAST_PATH_BURST {
                if cancel.is_cancelled() || *inner.paused.borrow() {
                    break;
                }
                let Some(next) = client.recv().now_or_never() else {
                    break;
                };
                let event = match self.received(next, progressed)? {
                    Ok(event) => event,
                    Err(end) => return Ok(end),
                };
                self.handle_event(event, decoder, handler).await?;
            }
            drop(gate);
            let acked = inner.acked.load(AtomicOrdering::SeqCst);
            if acked > sent_ack {
                client.update_applied_lsn(Lsn(acked));
                sent_ack = acked;
            }
        }
    }

    /// Sorts what `recv` returned into an event, the end of the session, or an error
    /// that needs a re-baseline.
    fn received(
        &self,
        result: pgwire_replication::Result<Option<ReplicationEvent>>,
        progressed: bool,
    ) -> Result<Result<ReplicationEvent, SessionEnd>, SourceError> {
        match result {
            Ok(Some(event)) => Ok(Ok(event)),
            Ok(None) => Ok(Err(SessionEnd::Lost {
                error: SourceError::msg("the server ended the replication stream"),
                progressed,
            })),
            Err(e) => {
                let slot = self.inner.slot.lock().clone();
                // Whatever the error (a dropped slot and a dropped publication share
                // SQLSTATE 42704), the next attempt looks the slot up first and asks
                // for a re-baseline only when the slot itself is gone or invalidated;
                // anything else is retried with backoff and fails the source in the end.
                if let Some(code) = sqlstate(&e) {
                    tracing::warn!(slot, code, error = %e, "the server ended the replication stream");
                }
                Ok(Err(SessionEnd::Lost {
                    error: other(format!("replication stream of slot {slot:?}"), e),
                    progressed,
                }))
            }
        }
    }

    async fn handle_event(
        &self,
        event: ReplicationEvent,
        decoder: &mut Decoder,
        handler: &mut dyn ChangeHandler,
    ) -> Result<(), SourceError> {
        let inner = &self.inner;
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => {
                let final_lsn = final_lsn.as_u64();
                // A transaction the server sends again after a reconnect keeps the entry
                // of its first delivery: `last_complete` may have moved past it since.
                inner
                    .tx_starts
                    .lock()
                    .entry(final_lsn)
                    .or_insert(decoder.last_complete);
                decoder.tx = Some(Tx {
                    final_lsn,
                    xid: i64::from(xid),
                    commit_time: pg_time(commit_time_micros),
                    seq: 0,
                    delivered: false,
                });
            }
            ReplicationEvent::Commit {
                end_lsn,
                commit_time_micros,
                ..
            } => {
                let end = end_lsn.as_u64();
                if let Some(tx) = decoder.tx.take()
                    && !tx.delivered
                {
                    inner.tx_starts.lock().remove(&tx.final_lsn);
                }
                decoder.last_complete = end;
                inner.server_wal_end.fetch_max(end, AtomicOrdering::SeqCst);
                if inner.advance_delivered((end, 0)) {
                    {
                        let mut commits = inner.commits.lock();
                        // Bounded: the oldest entries (what lag_time reports) stay; when
                        // full, the newest is replaced, so lag never reads as zero while
                        // commits are unacknowledged.
                        if commits.len() >= 100_000 {
                            commits.pop_back();
                        }
                        commits.push_back((end, pg_time(commit_time_micros)));
                    }
                    handler.on_heartbeat(Position::from_pair(end, 0)).await?;
                }
            }
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                let wal_end = wal_end.as_u64();
                inner
                    .server_wal_end
                    .fetch_max(wal_end, AtomicOrdering::SeqCst);
                if decoder.tx.is_none() && inner.advance_delivered((wal_end, 0)) {
                    decoder.last_complete = decoder.last_complete.max(wal_end);
                    handler
                        .on_heartbeat(Position::from_pair(wal_end, 0))
                        .await?;
                }
            }
            ReplicationEvent::XLogData {
                data,
                wal_start,
                wal_end,
                ..
            } => {
                inner
                    .server_wal_end
                    .fetch_max(wal_end.as_u64(), AtomicOrdering::SeqCst);
                let message = match (inner.decode)(&data) {
                    Ok(message) => message,
                    Err(e) => {
                        decoder.undecodable = Some((wal_start.as_u64(), e.to_string()));
                        return Err(other("undecodable pgoutput message", e));
                    }
                };
                self.handle_message(message, decoder, handler).await?;
            }
            ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
        }
        Ok(())
    }

    async fn handle_message(
        &self,
        message: Message,
        decoder: &mut Decoder,
        handler: &mut dyn ChangeHandler,
    ) -> Result<(), SourceError> {
        match message {
            Message::Relation(relation) => self.on_relation(relation, decoder, handler).await,
            Message::Insert(insert) => {
                let Some((rel, position, tx)) = next_change(decoder, insert.relation, &self.inner)?
                else {
                    return Ok(());
                };
                let row = match tuple_row(rel, &insert.new, None) {
                    Ok(row) => row,
                    Err(e) => {
                        let event = ChangeEvent::insert(
                            rel.table.clone(),
                            position,
                            raw_row(rel, &insert.new),
                        )
                        .with_commit(Some(tx.0), tx.1);
                        return handler.on_change_failed(event, e.to_string()).await;
                    }
                };
                let event = ChangeEvent::insert(rel.table.clone(), position, row)
                    .with_commit(Some(tx.0), tx.1);
                handler.on_change(event).await
            }
            Message::Update(update) => {
                let Some((rel, position, tx)) = next_change(decoder, update.relation, &self.inner)?
                else {
                    return Ok(());
                };
                let decoded = (|| {
                    let (old_row, full_old) = match &update.old {
                        Some(OldTuple::Full(old)) => (Some(tuple_row(rel, old, None)?), Some(old)),
                        Some(OldTuple::Key(key)) => (Some(key_row(rel, key)?), None),
                        None => (None, None),
                    };
                    Ok::<_, SourceError>((tuple_row(rel, &update.new, full_old)?, old_row))
                })();
                let (new_row, old_row) = match decoded {
                    Ok(rows) => rows,
                    Err(e) => {
                        let event = ChangeEvent::update(
                            rel.table.clone(),
                            position,
                            raw_row(rel, &update.new),
                            None,
                        )
                        .with_commit(Some(tx.0), tx.1);
                        return handler.on_change_failed(event, e.to_string()).await;
                    }
                };
                let event = ChangeEvent::update(rel.table.clone(), position, new_row, old_row)
                    .with_commit(Some(tx.0), tx.1);
                handler.on_change(event).await
            }
            Message::Delete(delete) => {
                let Some((rel, position, tx)) = next_change(decoder, delete.relation, &self.inner)?
                else {
                    return Ok(());
                };
                let (decoded, raw) = match &delete.old {
                    OldTuple::Full(old) => (tuple_row(rel, old, None), old),
                    OldTuple::Key(key) => (key_row(rel, key), key),
                };
                let identity = match decoded {
                    Ok(identity) => identity,
                    Err(e) => {
                        let event =
                            ChangeEvent::delete(rel.table.clone(), position, raw_row(rel, raw))
                                .with_commit(Some(tx.0), tx.1);
                        return handler.on_change_failed(event, e.to_string()).await;
                    }
                };
                let event = ChangeEvent::delete(rel.table.clone(), position, identity)
                    .with_commit(Some(tx.0), tx.1);
                handler.on_change(event).await
            }
            Message::Truncate(truncate) => {
                for oid in truncate.relations {
                    let Some((rel, position, tx)) = next_change(decoder, oid, &self.inner)? else {
                        continue;
                    };
                    let event = ChangeEvent::truncate(rel.table.clone(), position)
                        .with_commit(Some(tx.0), tx.1);
                    handler.on_change(event).await?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn on_relation(
        &self,
        relation: Relation,
        decoder: &mut Decoder,
        handler: &mut dyn ChangeHandler,
    ) -> Result<(), SourceError> {
        let inner = &self.inner;
        let namespace = if relation.namespace.is_empty() {
            "pg_catalog"
        } else {
            relation.namespace.as_str()
        };
        let table = TableIdentifier::new(namespace, &relation.name);
        let ours = decoder.tables.contains(&table);
        let mut oids: Vec<u32> = relation.columns.iter().map(|c| c.type_oid).collect();
        for oid in &mut oids {
            if *oid >= 10_000
                && let Some(&base) = inner.base_types.lock().get(oid)
            {
                *oid = base;
            }
        }
        if ours {
            let unresolved = oids
                .iter()
                .any(|&o| o >= 10_000 && !inner.base_types.lock().contains_key(&o));
            let known = inner
                .columns
                .lock()
                .get(&table)
                .cloned()
                .unwrap_or_default();
            let same = known.len() == relation.columns.len()
                && known
                    .iter()
                    .zip(&relation.columns)
                    .all(|(k, c)| k.name == c.name);
            let types_same = same
                && known
                    .iter()
                    .zip(&oids)
                    .all(|(k, &o)| k.type_oid == o || o >= 10_000);
            if unresolved || !same || !types_same {
                let client = inner.query_client().await?;
                let mut new_columns = Vec::with_capacity(relation.columns.len());
                for (idx, c) in relation.columns.iter().enumerate() {
                    let type_name: String = client
                        .query_one(
                            "SELECT format_type($1::int8::oid, NULL)",
                            &[&i64::from(c.type_oid)],
                        )
                        .await
                        .map(|r| r.get(0))
                        .unwrap_or_else(|_| format!("oid {}", c.type_oid));
                    let previous = known.iter().find(|k| k.name == c.name);
                    let mut column = ColumnDefinition::new(&c.name, type_name)
                        .ordinal(u32::try_from(idx + 1).unwrap_or(u32::MAX))
                        .oid(c.type_oid);
                    if let Some(previous) = previous {
                        column.nullable = previous.nullable;
                        if previous.primary_key {
                            column = column.primary_key(previous.primary_key_ordinal);
                        }
                        column.default_value.clone_from(&previous.default_value);
                    }
                    new_columns.push(column);
                }
                inner.resolve_domains(&client, &mut new_columns).await?;
                for (oid, column) in oids.iter_mut().zip(&new_columns) {
                    *oid = column.type_oid;
                }
                let changed = !same
                    || known
                        .iter()
                        .zip(&new_columns)
                        .any(|(k, n)| k.type_oid != n.type_oid);
                inner
                    .columns
                    .lock()
                    .insert(table.clone(), new_columns.clone());
                if changed && !known.is_empty() {
                    tracing::info!(%table, "table columns changed");
                    handler
                        .on_schema_change(table.clone(), known, new_columns)
                        .await?;
                }
            }
        }
        let names: Vec<&str> = relation.columns.iter().map(|c| c.name.as_str()).collect();
        let key_indexes: Vec<usize> = relation
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.key)
            .map(|(i, _)| i)
            .collect();
        let key_layout = RowLayout::new(key_indexes.iter().map(|&i| names[i]));
        decoder.relations.insert(
            relation.oid,
            RelationInfo {
                table,
                ours,
                oids,
                layout: RowLayout::new(names),
                key_layout,
                key_indexes,
            },
        );
        Ok(())
    }
}

/// A change's relation, position and (commit time, xid).
type NextChange<'a> = (&'a RelationInfo, Position, (SystemTime, i64));

/// The relation, position and (commit time, xid) of the next change of `oid`, or
/// `None` when the change is not ours or was delivered before a reconnect.
fn next_change<'a>(
    decoder: &'a mut Decoder,
    oid: u32,
    inner: &Inner,
) -> Result<Option<NextChange<'a>>, SourceError> {
    let Some(tx) = decoder.tx.as_mut() else {
        return Err(SourceError::msg("a change arrived outside a transaction"));
    };
    tx.seq += 1;
    let position = (tx.final_lsn, tx.seq);
    let tx_delivered = &mut tx.delivered;
    let commit = (tx.commit_time, tx.xid);
    let Some(rel) = decoder.relations.get(&oid) else {
        return Err(SourceError::msg(format!(
            "a change of relation {oid} arrived before its relation message"
        )));
    };
    if !rel.ours {
        return Ok(None);
    }
    *tx_delivered = true;
    if !inner.advance_delivered(position) {
        return Ok(None);
    }
    Ok(Some((
        rel,
        Position::from_pair(position.0, position.1),
        commit,
    )))
}

fn value_of(rel: &RelationInfo, idx: usize, value: &TupleValue) -> Result<Value, SourceError> {
    Ok(match value {
        TupleValue::Null => Value::Null,
        TupleValue::UnchangedToast => Value::UnchangedToast,
        TupleValue::Text(bytes) | TupleValue::Binary(bytes) => {
            let text = std::str::from_utf8(bytes).map_err(|e| {
                other(
                    format!(
                        "{}: column {} is not UTF-8",
                        rel.table,
                        rel.layout.names()[idx]
                    ),
                    e,
                )
            })?;
            parse_text(rel.oids[idx], text).map_err(|e| {
                other(
                    format!("{}: column {}", rel.table, rel.layout.names()[idx]),
                    e,
                )
            })?
        }
    })
}

/// A whole row; unchanged TOAST values are taken from `old` when the server sent the
/// whole old row.
fn tuple_row(rel: &RelationInfo, tuple: &Tuple, old: Option<&Tuple>) -> Result<Row, SourceError> {
    if tuple.len() != rel.oids.len() {
        return Err(SourceError::msg(format!(
            "{}: a row of {} columns, the relation has {}",
            rel.table,
            tuple.len(),
            rel.oids.len()
        )));
    }
    let mut values = Vec::with_capacity(tuple.len());
    for (idx, value) in tuple.iter().enumerate() {
        let value = match (value, old.and_then(|o| o.get(idx))) {
            (TupleValue::UnchangedToast, Some(previous)) => value_of(rel, idx, previous)?,
            _ => value_of(rel, idx, value)?,
        };
        values.push(value);
    }
    Ok(Row::new(Arc::clone(&rel.layout), values))
}

/// What could be read of a row that did not decode: each column's text as sent
/// (invalid UTF-8 replaced), for the dead letter store. A key tuple (`K`) carries
/// only the key columns: the others read as NULL.
fn raw_row(rel: &RelationInfo, tuple: &Tuple) -> Row {
    let values = (0..rel.oids.len())
        .map(|idx| match tuple.get(idx) {
            Some(TupleValue::Text(bytes) | TupleValue::Binary(bytes)) => {
                Value::text(String::from_utf8_lossy(bytes).as_ref())
            }
            _ => Value::Null,
        })
        .collect();
    Row::new(Arc::clone(&rel.layout), values)
}

/// The replica identity key columns of a `K` old tuple.
fn key_row(rel: &RelationInfo, tuple: &Tuple) -> Result<Row, SourceError> {
    let mut values = Vec::with_capacity(rel.key_indexes.len());
    for &idx in &rel.key_indexes {
        let value = tuple.get(idx).unwrap_or(&TupleValue::Null);
        values.push(value_of(rel, idx, value)?);
    }
    Ok(Row::new(Arc::clone(&rel.key_layout), values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_message_failing_max_times_in_a_row_is_a_poison_message() {
        let mut guard = PoisonGuard::default();
        assert_eq!(guard.record(100, 3), None);
        assert_eq!(guard.record(100, 3), None);
        assert_eq!(guard.record(100, 3), Some(3));
        // Another position starts over; getting past the failing one clears it.
        let mut guard = PoisonGuard::default();
        assert_eq!(guard.record(100, 3), None);
        assert_eq!(guard.record(200, 3), None);
        assert_eq!(guard.record(200, 3), None);
        guard.passed(250);
        assert_eq!(guard.record(200, 3), None);
        guard.passed(150);
        assert_eq!(guard.record(200, 3), None);
        assert_eq!(guard.record(200, 3), Some(3));
    }

    #[test]
    fn lsns_format_and_parse() {
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(format_lsn(0xA0F0), "0/0000A0F0");
        assert_eq!(parse_lsn("0/0000a0f0"), Some(0xA0F0));
        assert_eq!(parse_lsn("nope"), None);
        assert_eq!(parse_lsn("1/100000000"), None);
    }

    #[test]
    fn positions_round_trip_through_text() {
        let source = PgSource::new(PgSourceConfig::new("postgres://u@localhost/db")).unwrap();
        for position in [
            Position::from_pair(0x16_B374_D848, 0),
            Position::from_pair(42, 7),
        ] {
            let text = source.position_to_string(&position);
            assert_eq!(source.position_from_string(&text).unwrap(), position);
        }
        assert!(source.position_from_string("x").is_err());
        assert_eq!(
            source.compare_positions(&Position::from_pair(5, 9), &Position::from_pair(6, 0)),
            Ordering::Less
        );
    }

    /// Collects what the source hands over.
    #[derive(Default)]
    struct Collect {
        changes: Vec<Position>,
    }

    #[async_trait]
    impl ChangeHandler for Collect {
        async fn on_change(&mut self, event: ChangeEvent) -> Result<(), SourceError> {
            self.changes.push(event.position);
            Ok(())
        }
    }

    fn xlog(message: &Message) -> ReplicationEvent {
        ReplicationEvent::XLogData {
            wal_start: Lsn(0),
            wal_end: Lsn(0),
            server_time_micros: 0,
            data: pgoutput::encode(message).into(),
        }
    }

    #[tokio::test]
    async fn a_resent_transaction_keeps_the_ack_boundary_of_its_first_delivery() {
        let source = PgSource::new(PgSourceConfig::new("postgres://u@localhost/db")).unwrap();
        let t = TableIdentifier::new("public", "t");
        *source.inner.tables.lock() = vec![t.clone()];
        source.inner.columns.lock().insert(
            t.clone(),
            vec![ColumnDefinition::new("id", "int8").primary_key(1).oid(20)],
        );
        let mut decoder = Decoder {
            undecodable: None,
            relations: HashMap::new(),
            tables: vec![t],
            tx: None,
            last_complete: 50,
        };
        let relation = Message::Relation(Relation {
            oid: 7,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: b'd',
            columns: vec![pgoutput::RelationColumn {
                key: true,
                name: "id".into(),
                type_oid: 20,
                type_modifier: -1,
            }],
        });
        let insert = |id: &str| {
            Message::Insert(pgoutput::Insert {
                relation: 7,
                new: vec![TupleValue::Text(id.as_bytes().to_vec())],
            })
        };
        let begin = |final_lsn: u64| ReplicationEvent::Begin {
            final_lsn: Lsn(final_lsn),
            xid: 1,
            commit_time_micros: 0,
        };
        let commit = |lsn: u64, end: u64| ReplicationEvent::Commit {
            lsn: Lsn(lsn),
            end_lsn: Lsn(end),
            commit_time_micros: 0,
        };
        let mut handler = Collect::default();
        let mut feed = Vec::new();
        // T1 (commit at 100, ends 110), T2 (commit at 200, ends 210); then, after a
        // reconnect, the server sends T1 again.
        feed.extend([
            xlog(&relation),
            begin(100),
            xlog(&insert("1")),
            commit(100, 110),
        ]);
        feed.extend([begin(200), xlog(&insert("2")), commit(200, 210)]);
        feed.extend([
            xlog(&relation),
            begin(100),
            xlog(&insert("1")),
            commit(100, 110),
        ]);
        for event in feed {
            source
                .handle_event(event, &mut decoder, &mut handler)
                .await
                .unwrap();
        }
        assert_eq!(
            handler.changes,
            vec![Position::from_pair(100, 1), Position::from_pair(200, 1)],
            "the resent change is skipped"
        );
        // The engine acknowledges the first change of T1 only: nothing after the
        // transaction before T1 may be confirmed.
        source.ack(&Position::from_pair(100, 1)).await.unwrap();
        assert_eq!(source.acknowledged_lsn(), 50);
        source.ack(&Position::from_pair(110, 0)).await.unwrap();
        assert_eq!(source.acknowledged_lsn(), 110);
    }

    #[tokio::test]
    async fn an_undecodable_message_is_recorded_with_its_position_for_the_poison_guard() {
        let source = PgSource::new(PgSourceConfig::new("postgres://u@localhost/db")).unwrap();
        let mut decoder = Decoder {
            undecodable: None,
            relations: HashMap::new(),
            tables: Vec::new(),
            tx: None,
            last_complete: 0,
        };
        let garbage = ReplicationEvent::XLogData {
            wal_start: Lsn(0x16_B374_D848),
            wal_end: Lsn(0x16_B374_D900),
            server_time_micros: 0,
            data: vec![b'Z', 1, 2, 3].into(),
        };
        let error = source
            .handle_event(garbage, &mut decoder, &mut Collect::default())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("undecodable"), "{error}");
        let (lsn, cause) = decoder.undecodable.take().expect("recorded");
        assert_eq!(format_lsn(lsn), "16/B374D848");
        assert!(!cause.is_empty());
    }

    #[test]
    fn server_errors_carry_their_sqlstate() {
        let e =
            PgWireError::Server("replication slot \"x\" does not exist (SQLSTATE 42704)".into());
        assert_eq!(sqlstate(&e).as_deref(), Some("42704"));
        assert_eq!(sqlstate(&PgWireError::Protocol("x".into())), None);
    }
}
