//! The connections to the server: the shared query connection (catalog work, slot
//! management, probes), the baseline's own connection, and the settings of the
//! replication connection.
//!
//! The query connection is opened lazily and opened again when it was found closed,
//! so a server restart costs one failed call, not the source. Query connections use
//! TLS as the connection string's `sslmode` says ([`crate::tls`]); the replication
//! connection gets its TLS from [`crate::replication::route`].

use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use laredo_core::SourceError;
use pgwire_replication::{Lsn, ReplicationConfig};
use tokio_postgres::Client;

use super::Inner;
use super::errors::connect_failed;
use crate::catalog::quote_ident;
use crate::replication::{parse_connection_string, session_options};
use crate::tls::{self, MakeRustlsConnect, RustlsStream, SslMode};

/// The longest a catalog query on the query connection may take before the connection
/// is presumed dead and opened again.
pub(super) const QUERY_TIMEOUT: Duration = Duration::from_secs(15);

/// The I/O half of a query connection (plaintext or TLS).
pub(super) type QueryConnection =
    tokio_postgres::Connection<tokio_postgres::Socket, RustlsStream<tokio_postgres::Socket>>;

impl Inner {
    /// The shared query connection, opened (again) when there is none or it closed.
    pub(super) async fn query_client(&self) -> Result<Arc<Client>, SourceError> {
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

    /// A query connection whose I/O runs on a task of its own.
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
    pub(super) async fn connect_unspawned(&self) -> Result<(Client, QueryConnection), SourceError> {
        let (mut config, settings) = parse_connection_string(&self.config.connection_string)
            .map_err(|e| SourceError::Configuration {
                message: "invalid PostgreSQL connection string".to_string(),
                cause: Some(e.into()),
            })?;
        config.options(session_options());
        config.application_name("laredo");
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        config.connect_timeout(QUERY_TIMEOUT);
        let failed = |e: tokio_postgres::Error| {
            connect_failed(
                format!(
                    "PostgreSQL at {}:{} (sslmode={})",
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
        let tls_client =
            tls::client_config(&settings)
                .await
                .map_err(|e| SourceError::Configuration {
                    message: format!(
                        "TLS settings for PostgreSQL at {}:{}",
                        self.params.host, self.params.port
                    ),
                    cause: Some(e.into()),
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

    pub(super) fn replication_config(&self, slot: &str, start_lsn: u64) -> ReplicationConfig {
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
}
