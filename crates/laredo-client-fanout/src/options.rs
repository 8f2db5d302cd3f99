//! [`ClientOptions`], and the credentials in them: a bearer token (kept out of `Debug`)
//! and, with the `tls` feature, the CA to trust and the server name to verify.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use laredo_core::{IndexDefinition, Value};
use laredo_proto::laredo::replication::v1 as pb;
use laredo_proto::laredo::v1 as wire;

use crate::ClientError;

/// What a [`FanoutClient`](crate::FanoutClient) replicates, from where, and how.
///
/// Its `Debug` output shows a token as `***`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    pub(crate) endpoints: Vec<String>,
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) client_id: String,
    pub(crate) local_snapshot_path: Option<PathBuf>,
    pub(crate) indexes: Vec<IndexDefinition>,
    pub(crate) filters: Vec<pb::FieldPredicate>,
    pub(crate) heartbeat_timeout: Duration,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) token: Option<TokenSource>,
    #[cfg(feature = "tls")]
    pub(crate) tls: TlsOptions,
}

/// Where the bearer token comes from.
#[derive(Clone)]
pub(crate) enum TokenSource {
    /// The token itself.
    Value(String),
    /// A file holding it, read on every connection attempt.
    File(PathBuf),
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Value(***)"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// Client TLS settings; TLS is on when any is set (or an endpoint is `https://`).
#[cfg(feature = "tls")]
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsOptions {
    pub(crate) ca: Option<CaSource>,
    pub(crate) server_name: Option<String>,
}

#[cfg(feature = "tls")]
impl TlsOptions {
    pub(crate) fn is_set(&self) -> bool {
        self.ca.is_some() || self.server_name.is_some()
    }
}

/// Where the CA certificates come from.
#[cfg(feature = "tls")]
#[derive(Clone)]
pub(crate) enum CaSource {
    Pem(Vec<u8>),
    File(PathBuf),
}

#[cfg(feature = "tls")]
impl fmt::Debug for CaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pem(pem) => write!(f, "Pem({} bytes)", pem.len()),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl ClientOptions {
    /// Replicates `schema.table` from the server at `address` (`http://host:4002` or
    /// `https://host:4002`; a bare `host:port` gets `https://` when TLS options are set,
    /// else `http://`).
    pub fn new(
        address: impl Into<String>,
        schema: impl Into<String>,
        table: impl Into<String>,
    ) -> Self {
        Self {
            endpoints: vec![address.into()],
            schema: schema.into(),
            table: table.into(),
            client_id: String::new(),
            local_snapshot_path: None,
            indexes: Vec::new(),
            filters: Vec::new(),
            heartbeat_timeout: Duration::from_secs(30),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            token: None,
            #[cfg(feature = "tls")]
            tls: TlsOptions::default(),
        }
    }

    /// Another server instance fed by the same source; the client fails over to the next
    /// endpoint after a failure or a `GoAway`, resuming by source position.
    #[must_use]
    pub fn endpoint(mut self, address: impl Into<String>) -> Self {
        self.endpoints.push(address.into());
        self
    }

    /// A stable client id (the server generates one when empty).
    #[must_use]
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// Saves the replica here on stop and loads it on start.
    #[must_use]
    pub fn local_snapshot_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.local_snapshot_path = Some(path.into());
        self
    }

    /// A non-unique index of the local replica, for
    /// [`FanoutClient::lookup_by_index`](crate::FanoutClient::lookup_by_index).
    #[must_use]
    pub fn with_index(
        mut self,
        name: impl Into<String>,
        fields: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.indexes.push(IndexDefinition::new(name, fields, false));
        self
    }

    /// Only rows whose `field` equals `value`.
    ///
    /// # Errors
    /// [`ClientError::Options`] for an array, JSON or NULL value.
    pub fn with_filter_equals(
        mut self,
        field: impl Into<String>,
        value: Value,
    ) -> Result<Self, ClientError> {
        let field = field.into();
        scalar(&field, &value)?;
        self.filters.push(pb::FieldPredicate {
            field,
            r#match: Some(pb::field_predicate::Match::Equals(wire::Value::from(
                &value,
            ))),
        });
        Ok(self)
    }

    /// Only rows whose text `field` starts with `prefix`.
    #[must_use]
    pub fn with_filter_prefix(
        mut self,
        field: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        self.filters.push(pb::FieldPredicate {
            field: field.into(),
            r#match: Some(pb::field_predicate::Match::Prefix(prefix.into())),
        });
        self
    }

    /// Only rows whose `field` equals one of `values`.
    ///
    /// # Errors
    /// [`ClientError::Options`] for an array, JSON or NULL value.
    pub fn with_filter_in(
        mut self,
        field: impl Into<String>,
        values: impl IntoIterator<Item = Value>,
    ) -> Result<Self, ClientError> {
        let field = field.into();
        let values: Vec<Value> = values.into_iter().collect();
        for value in &values {
            scalar(&field, value)?;
        }
        self.filters.push(pb::FieldPredicate {
            field,
            r#match: Some(pb::field_predicate::Match::In(wire::ValueList {
                values: values.iter().map(wire::Value::from).collect(),
            })),
        });
        Ok(self)
    }

    /// Silence (no data, no heartbeat) after which the stream counts as dead (30 s).
    #[must_use]
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }

    /// The reconnect delay: `initial`, doubling to `max` (1 s and 30 s).
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Sends `authorization: Bearer <token>` on every call. A server with tokens
    /// configured refuses `Sync` without one: a read token suffices (an admin token works
    /// too). Visible ASCII without spaces, as the server requires.
    ///
    /// The crate reads no environment variable by itself (a process may run clients of
    /// several servers); pass `std::env::var("LAREDO_TOKEN")` here, or use
    /// [`ClientOptions::token_file`].
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(TokenSource::Value(token.into()));
        self
    }

    /// As [`ClientOptions::token`], from a file (surrounding whitespace is trimmed, so a
    /// trailing newline is fine). The file is read when the client is created (a missing
    /// or empty file is an error then) and again on every connection attempt, so a
    /// rotated secret (a Kubernetes secret volume, for one) is picked up without a
    /// restart.
    #[must_use]
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token = Some(TokenSource::File(path.into()));
        self
    }

    /// Trusts the CA certificates in this PEM data (instead of none) to verify the
    /// server's certificate, and turns TLS on. Operating-system roots are not used.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.ca = Some(CaSource::Pem(pem.into()));
        self
    }

    /// As [`ClientOptions::tls_ca_pem`], from a PEM file read when the client is
    /// created.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca = Some(CaSource::File(path.into()));
        self
    }

    /// The name the server's certificate must carry (by default the endpoint's host),
    /// for a server reached by an address its certificate does not name (an IP
    /// address, a load balancer); also the SNI name sent. Turns TLS on.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls.server_name = Some(name.into());
        self
    }

    /// Whether TLS options are set.
    pub(crate) fn tls_is_set(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_set();
        #[cfg(not(feature = "tls"))]
        return false;
    }

    /// The endpoints as URLs: a bare `host:port` gets `https://` when TLS options are
    /// set, else `http://`.
    pub(crate) fn endpoint_urls(&self) -> Vec<String> {
        let scheme = if self.tls_is_set() { "https" } else { "http" };
        self.endpoints
            .iter()
            .map(|address| {
                if address.contains("://") {
                    address.clone()
                } else {
                    format!("{scheme}://{address}")
                }
            })
            .collect()
    }

    pub(crate) fn validate(&self) -> Result<(), ClientError> {
        if self.endpoints.iter().any(|e| {
            e.trim_start_matches("http://")
                .trim_start_matches("https://")
                .is_empty()
        }) {
            return Err(ClientError::Options("a server address is required".into()));
        }
        if self.schema.is_empty() || self.table.is_empty() {
            return Err(ClientError::Options("schema and table are required".into()));
        }
        if self.heartbeat_timeout.is_zero() || self.initial_backoff.is_zero() {
            return Err(ClientError::Options(
                "heartbeat_timeout and backoff must be positive".into(),
            ));
        }
        Ok(())
    }
}

fn scalar(field: &str, value: &Value) -> Result<(), ClientError> {
    if matches!(value, Value::Null | Value::Array(_) | Value::Json(_)) {
        return Err(ClientError::Options(format!(
            "filter on {field}: only scalar values can be compared, not {value}"
        )));
    }
    Ok(())
}
