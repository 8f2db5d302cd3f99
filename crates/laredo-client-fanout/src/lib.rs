//! A client of laredo's replication fan-out: keeps a local, always-current replica of one
//! table served by a `replication-fanout` target (`LaredoReplicationService`).
//!
//! The client connects in the background, receives a snapshot (or, when it already
//! holds rows, only the changes since), then applies live changes as the server pushes
//! them. Reads are local and safe from many tasks at once: [`FanoutClient::get`] by
//! primary key (the key columns come from the server's handshake), lookups by a field or
//! by an index declared with [`ClientOptions::with_index`], [`FanoutClient::all`],
//! [`FanoutClient::count`], and listeners called after each applied change.
//!
//! Resilience:
//! - a lost stream reconnects with exponential backoff (1 s doubling to 30 s, reset after
//!   a session that got its handshake), resuming by the last sequence on the same server
//!   and by source position on another one, so nothing is missed;
//! - silence longer than [`ClientOptions::heartbeat_timeout`] (30 s) counts as a dead
//!   connection;
//! - on `GoAway` (a draining server) the client keeps applying the old stream while it
//!   opens a new one, resuming by source position (against the next endpoint when
//!   several are configured), and switches once the new stream's handshake arrives;
//! - with [`ClientOptions::local_snapshot_path`], the replica is saved on
//!   [`FanoutClient::stop`] (written to a temporary file, then renamed) and loaded on
//!   the next start, which then resumes instead of taking a full snapshot.
//!
//! Changes may be delivered more than once across reconnects and failovers; they are
//! applied by primary key, so a repeat is harmless.
//!
//! Credentials:
//! - **Token.** A laredo server with tokens configured (the default; only
//!   `insecure = true` serves without) refuses `Sync` without one. A *read* token
//!   suffices. [`ClientOptions::token`] sends it as `authorization: Bearer <token>` on
//!   every call; [`ClientOptions::token_file`] reads it from a file, again on every
//!   connection attempt, so a rotated secret is picked up without a restart. The crate
//!   reads no environment variable by itself: a process may hold clients of several
//!   servers, so the application decides (`LAREDO_TOKEN` is the name the `laredo` CLI
//!   uses). The token never appears in `Debug` output or logs.
//! - **TLS** (feature `tls`). [`ClientOptions::tls_ca_file`] or
//!   [`ClientOptions::tls_ca_pem`] give the CA that signed the server's certificate
//!   (operating-system roots are not used), [`ClientOptions::tls_server_name`] the name
//!   to verify when the address is not in the certificate. With TLS options a bare
//!   `host:port` means `https://`; an `http://` endpoint with TLS options, or an
//!   `https://` one without a CA, is refused by [`FanoutClient::new`].
//! - **Refusals.** When the server answers `UNAUTHENTICATED` (no token, or an unknown
//!   one) or `PERMISSION_DENIED` (a read token where the server made `Sync` an admin
//!   method), the replica stays as it is and not ready; the client logs an ERROR with the
//!   server's message (it names the token needed), counts it in
//!   [`ClientStats::auth_failures`], keeps it in [`ClientStats::last_error`], and tries
//!   again after its *longest* backoff (30 s by default) rather than the doubling one: a
//!   token does not fix itself, and quick retries would only fill the server's log.
//!   TLS failures (an unknown CA, a certificate that does not name the server) are
//!   `last_error`s of kind [`SessionErrorKind::Connect`] whose message quotes rustls.
//!
//! | Feature | Default | What it adds |
//! |---|---|---|
//! | `tls` | on | `https://` endpoints, [`ClientOptions::tls_ca_file`], [`ClientOptions::tls_ca_pem`], [`ClientOptions::tls_server_name`]: rustls with the aws-lc-rs provider (tonic's `tls-aws-lc`) |
//!
//! ```no_run
//! use std::time::Duration;
//! use laredo_client_fanout::{ClientOptions, FanoutClient};
//!
//! # async fn run() -> Result<(), laredo_client_fanout::ClientError> {
//! let client = FanoutClient::new(
//!     ClientOptions::new("laredo.internal:4002", "public", "users")
//!         .token_file("/run/secrets/laredo-read-token")
//!         .tls_ca_file("/etc/laredo/ca.pem")
//!         .tls_server_name("laredo.internal")
//!         .client_id("billing-1")
//!         .with_index("by_email", ["email"])
//!         .with_filter_equals("team", laredo_core::Value::text("red"))?,
//! )?;
//! client.start().await?;
//! if client.await_ready(Duration::from_secs(30)).await {
//!     println!("{} rows", client.count());
//!     let _user = client.get(42i64);
//! } else if let Some(error) = client.stats().last_error {
//!     eprintln!("not ready: {error}"); // e.g. a refused token, naming the one needed
//! }
//! client.stop().await?;
//! # Ok(())
//! # }
//! ```

mod connector;
mod failure;
mod options;
mod replica;
mod session;
mod snapshot_file;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use laredo_core::{ColumnDefinition, Row, TableIdentifier, Value};
use laredo_core::{IndexError, ListenerHandle};
use laredo_index::{IndexedRows, IntoKey};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::connector::Connector;
pub use crate::failure::{SessionError, SessionErrorKind};
pub use crate::options::ClientOptions;
use crate::replica::Replica;

/// A client error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The options are invalid, or a file they name (CA, token) cannot be used.
    #[error("invalid client options: {0}")]
    Options(String),
    /// `start` was called twice.
    #[error("{0}")]
    Lifecycle(&'static str),
    /// The local snapshot file could not be written.
    #[error("local snapshot: {0}")]
    SnapshotFile(String),
}

/// Counters of a client's sessions, for monitoring and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Streams opened (each got its handshake).
    pub sessions: u64,
    /// Sessions that started with a full snapshot.
    pub full_snapshots: u64,
    /// Sessions that resumed (delta by sequence, position or snapshot).
    pub resumed: u64,
    /// `GoAway` messages honoured.
    pub go_aways: u64,
    /// The endpoint of the current (or last) stream.
    pub endpoint: String,
    /// Connection attempts the server refused with UNAUTHENTICATED or
    /// PERMISSION_DENIED.
    pub auth_failures: u64,
    /// The last failure since the last stream that got its handshake: why the client is
    /// not streaming (`None` while a stream runs, or before the first attempt ends).
    pub last_error: Option<SessionError>,
}

/// A local replica of one fan-out table (see the crate docs).
#[derive(Clone)]
pub struct FanoutClient {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) options: ClientOptions,
    pub(crate) connector: Connector,
    pub(crate) replica: Replica,
    pub(crate) ready: watch::Sender<bool>,
    pub(crate) stats: Mutex<ClientStats>,
    cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
    started: Mutex<bool>,
}

impl FanoutClient {
    /// A client for the table named in `options`; nothing connects until
    /// [`FanoutClient::start`].
    ///
    /// # Errors
    /// [`ClientError::Options`] when no endpoint or table is given, when the token is
    /// empty or not visible ASCII, when a CA or token file cannot be read or holds no
    /// certificate or token, for an `https://` endpoint without a CA, and for an
    /// `http://` endpoint with TLS options.
    pub fn new(options: ClientOptions) -> Result<Self, ClientError> {
        options.validate()?;
        let connector = Connector::new(&options)?;
        let table = TableIdentifier::new(&options.schema, &options.table);
        let replica = Replica::new(table, &options.indexes);
        Ok(Self {
            inner: Arc::new(Inner {
                options,
                connector,
                replica,
                ready: watch::Sender::new(false),
                stats: Mutex::new(ClientStats::default()),
                cancel: CancellationToken::new(),
                task: Mutex::new(None),
                started: Mutex::new(false),
            }),
        })
    }

    /// Loads the local snapshot (when configured and readable) and starts connecting in
    /// the background; returns at once.
    ///
    /// # Errors
    /// [`ClientError::Lifecycle`] when already started. Must run inside a tokio runtime.
    pub async fn start(&self) -> Result<(), ClientError> {
        {
            let mut started = self.inner.started.lock();
            if *started {
                return Err(ClientError::Lifecycle("already started"));
            }
            *started = true;
        }
        if let Some(path) = &self.inner.options.local_snapshot_path {
            match snapshot_file::load(path) {
                Ok(Some(file)) => {
                    self.inner.replica.load_file(file);
                    tracing::info!(path = %path.display(), rows = self.inner.replica.rows().count(), "loaded the local snapshot");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable local snapshot");
                }
            }
        }
        let inner = Arc::clone(&self.inner);
        *self.inner.task.lock() = Some(tokio::spawn(session::run(inner)));
        Ok(())
    }

    /// Waits until the replica is usable (a snapshot ended, or the first change or the
    /// end of the backlog arrived); false when `timeout` passed first.
    pub async fn await_ready(&self, timeout: Duration) -> bool {
        let mut ready = self.inner.ready.subscribe();
        tokio::time::timeout(timeout, ready.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Whether the replica is ready.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// Disconnects, waits for the background task, and saves the local snapshot when
    /// configured.
    ///
    /// # Errors
    /// [`ClientError::SnapshotFile`] when the snapshot cannot be written.
    pub async fn stop(&self) -> Result<(), ClientError> {
        self.inner.cancel.cancel();
        let task = self.inner.task.lock().take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "fan-out client task panicked");
        }
        if let Some(path) = &self.inner.options.local_snapshot_path {
            let file = self.inner.replica.to_file();
            snapshot_file::save(path, &file).map_err(ClientError::SnapshotFile)?;
        }
        Ok(())
    }

    /// The row with this primary key.
    pub fn get(&self, key: impl IntoKey) -> Option<Row> {
        self.inner.replica.rows().get(key)
    }

    /// Rows whose `field` equals `value`: through an index on exactly that field when
    /// one was declared, else a scan.
    pub fn lookup(&self, field: &str, value: &Value) -> Vec<Row> {
        let target = self.inner.replica.rows();
        if let Some(index) = self
            .inner
            .options
            .indexes
            .iter()
            .find(|i| i.fields.len() == 1 && i.fields[0] == field)
            && let Ok(rows) = target.lookup_all(&index.name, value.clone())
        {
            return rows;
        }
        target
            .all()
            .into_iter()
            .filter(|row| row.get(field).is_some_and(|v| v == value))
            .collect()
    }

    /// Rows of a declared index with this key.
    ///
    /// # Errors
    /// An unknown index, or a key of the wrong arity.
    pub fn lookup_by_index(&self, index: &str, key: impl IntoKey) -> Result<Vec<Row>, IndexError> {
        self.inner.replica.rows().lookup_all(index, key)
    }

    /// Every row (a copy; order unspecified).
    pub fn all(&self) -> Vec<Row> {
        self.inner.replica.rows().all()
    }

    /// The number of rows.
    pub fn count(&self) -> usize {
        self.inner.replica.rows().count()
    }

    /// The table's columns, from the server's handshake.
    pub fn columns(&self) -> Vec<ColumnDefinition> {
        self.inner.replica.state().columns
    }

    /// The sequence of the last change applied (on the server of the current stream).
    pub fn last_sequence(&self) -> u64 {
        self.inner.replica.state().last_seq
    }

    /// The source position of the last change applied, as the server printed it.
    pub fn last_source_position(&self) -> String {
        self.inner.replica.state().last_position
    }

    /// Session counters.
    pub fn stats(&self) -> ClientStats {
        self.inner.stats.lock().clone()
    }

    /// The replica's store (laredo-index's [`IndexedRows`], which is also a
    /// [`RowAccess`](laredo_core::RowAccess)), for what the methods above do not cover.
    pub fn rows(&self) -> Arc<IndexedRows> {
        Arc::clone(self.inner.replica.rows())
    }

    /// Calls `listener(old, new)` after each applied change (see
    /// [`IndexedRows::listen`] for the call shapes); any number may be registered.
    pub fn listen(
        &self,
        listener: impl Fn(Option<&Row>, Option<&Row>) + Send + Sync + 'static,
    ) -> ListenerHandle {
        self.inner.replica.rows().listen(listener)
    }

    /// As [`FanoutClient::listen`], with the source position of the change (empty for
    /// snapshot rows).
    pub fn listen_with_position(
        &self,
        listener: impl Fn(Option<&Row>, Option<&Row>, &str) + Send + Sync + 'static,
    ) -> ListenerHandle {
        let position = self.inner.replica.current_position();
        self.inner
            .replica
            .rows()
            .listen(move |old, new| listener(old, new, &position.lock()))
    }

    /// Where the local snapshot is saved, when configured.
    pub fn local_snapshot_path(&self) -> Option<PathBuf> {
        self.inner.options.local_snapshot_path.clone()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Inner {
    pub(crate) fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }
}
