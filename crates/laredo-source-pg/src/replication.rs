//! The replication connection: slot creation with an exported snapshot, then streaming.
//!
//! The consistent handoff (PostgreSQL's "exported snapshot" protocol): on a replication
//! session that has not started streaming yet, `CREATE_REPLICATION_SLOT ... (SNAPSHOT
//! 'export')` returns the slot's consistent point and the name of a snapshot that sees
//! exactly the transactions committed before that point. A baseline read under that
//! snapshot (`SET TRANSACTION SNAPSHOT`) plus the stream from the consistent point is
//! every change exactly once. The snapshot lives only until the next command on the
//! replication session, so the baseline must finish before [`ReplicationClient::start`].

use std::net::IpAddr;
use std::str::FromStr;

use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, TlsConfig};

use crate::catalog::quote_ident;
use crate::relay::{self, Route};
use crate::tls::{self, TlsError, TlsSettings};
use crate::types::SESSION_SETTINGS;

/// A replication setup failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// The connection string is not usable.
    #[error("invalid connection string: {0}")]
    ConnectionString(String),
    /// The TLS leg of the replication connection failed (see [`crate::tls`]).
    #[error("opening the replication connection")]
    Tls(#[source] TlsError),
    /// The replication session failed.
    #[error("{what}")]
    Session {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: pgwire_replication::PgWireError,
    },
    /// The server answered something unexpected.
    #[error("unexpected answer to {command}: {detail}")]
    Protocol {
        /// The command.
        command: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// Where to connect, read from a libpq connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionParams {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// Password (empty for trust or peer authentication).
    pub password: String,
    /// Database.
    pub database: String,
    /// `hostaddr`: the address to connect to instead of resolving `host` (which is
    /// still the name TLS verifies).
    pub hostaddr: Option<IpAddr>,
    /// The `ssl*` settings.
    pub tls: TlsSettings,
}

/// Reads a libpq connection string (URI or `key=value`): tokio-postgres's settings and,
/// apart, the TLS settings that laredo implements itself (see [`crate::tls`]).
///
/// # Errors
/// A string that does not parse, or a TLS key with a bad value; the message names the
/// key.
pub(crate) fn parse_connection_string(
    connection_string: &str,
) -> Result<(tokio_postgres::Config, TlsSettings), ReplicationError> {
    let (rest, settings) = tls::split(connection_string)
        .map_err(|e| ReplicationError::ConnectionString(e.to_string()))?;
    let config = tokio_postgres::Config::from_str(&rest)
        .map_err(|e| ReplicationError::ConnectionString(e.to_string()))?;
    Ok((config, settings))
}

impl ConnectionParams {
    /// Reads host, port, user, password and database from a libpq URI or key=value
    /// string (the first host when several are given).
    ///
    /// # Errors
    /// When the string does not parse or names no TCP host.
    pub fn parse(connection_string: &str) -> Result<Self, ReplicationError> {
        let (config, tls) = parse_connection_string(connection_string)?;
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".to_string(),
        };
        let user = config
            .get_user()
            .ok_or_else(|| ReplicationError::ConnectionString("no user given".to_string()))?
            .to_string();
        Ok(Self {
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            password: config
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default(),
            database: config.get_dbname().unwrap_or(&user).to_string(),
            user,
            hostaddr: config.get_hostaddrs().first().copied(),
            tls,
        })
    }
}

/// Points `config` (built for `params`) at the server: directly without TLS, or through
/// a TLS relay when the settings call for TLS (see [`crate::relay`]).
///
/// # Errors
/// The TLS leg cannot be opened: unreachable server, no TLS under `require` or
/// stricter, a failed verification, an unusable certificate file.
pub(crate) async fn route(
    params: &ConnectionParams,
    config: &mut ReplicationConfig,
) -> Result<(), ReplicationError> {
    config.tls = TlsConfig::disabled();
    match relay::open(params).await.map_err(ReplicationError::Tls)? {
        Route::Direct => {
            if let Some(addr) = params.hostaddr {
                config.host = addr.to_string();
            }
        }
        Route::Relay { dir, port } => {
            config.host = dir.display().to_string();
            config.port = port;
        }
    }
    Ok(())
}

/// The `-c name=value` options that pin a session's settings (see
/// [`SESSION_SETTINGS`]).
pub(crate) fn session_options() -> String {
    SESSION_SETTINGS
        .iter()
        .map(|(name, value)| format!("-c {name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A slot just created with an exported snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    /// The slot's name.
    pub slot: String,
    /// The LSN from which the stream continues the snapshot.
    pub consistent_point: u64,
    /// The exported snapshot, for `SET TRANSACTION SNAPSHOT`.
    pub snapshot_name: String,
}

/// Opens a replication session for `slot` and `publication` and creates the slot with
/// an exported snapshot. The session waits: read the baseline under
/// `snapshot_name`, then call [`ReplicationClient::start`] to stream from the slot's
/// consistent point.
///
/// # Errors
/// When the session cannot be opened or the slot cannot be created (it exists, or the
/// server has no free replication slots).
pub async fn create_slot_with_snapshot(
    params: &ConnectionParams,
    slot: &str,
    publication: &str,
    temporary: bool,
) -> Result<(ReplicationClient, CreatedSlot), ReplicationError> {
    let mut config = ReplicationConfig::new(
        &params.host,
        &params.user,
        &params.password,
        &params.database,
        slot,
        publication,
    );
    config.port = params.port;
    config.start_lsn = Lsn(0);
    config.options = Some(session_options());
    route(params, &mut config).await?;
    let mut client = ReplicationClient::connect_gated(config)
        .await
        .map_err(|source| ReplicationError::Session {
            what: format!("opening the replication session for slot {slot:?}"),
            source,
        })?;
    let command = format!(
        "CREATE_REPLICATION_SLOT {}{} LOGICAL pgoutput (SNAPSHOT 'export')",
        quote_ident(slot),
        if temporary { " TEMPORARY" } else { "" }
    );
    let rows = client
        .simple_query(&command)
        .await
        .map_err(|source| ReplicationError::Session {
            what: format!("creating replication slot {slot:?}"),
            source,
        })?;
    let protocol = |detail: String| ReplicationError::Protocol {
        command: "CREATE_REPLICATION_SLOT",
        detail,
    };
    let row = rows.first().ok_or_else(|| protocol("no row".to_string()))?;
    let text = |idx: usize| -> Result<String, ReplicationError> {
        row.get(idx)
            .and_then(Option::as_ref)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .ok_or_else(|| protocol(format!("column {idx} is missing")))
    };
    let consistent_point = Lsn::parse(&text(1)?)
        .map_err(|e| protocol(e.to_string()))?
        .as_u64();
    Ok((
        client,
        CreatedSlot {
            slot: text(0)?,
            consistent_point,
            snapshot_name: text(2)?,
        },
    ))
}
