//! [`ClientOptions`].

use std::path::PathBuf;
use std::time::Duration;

use laredo_core::{IndexDefinition, Value};
use laredo_proto::laredo::replication::v1 as pb;
use laredo_proto::laredo::v1 as wire;

use crate::ClientError;

/// What a [`FanoutClient`](crate::FanoutClient) replicates, from where, and how.
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
}

impl ClientOptions {
    /// Replicates `schema.table` from the server at `address` (`http://host:4002`; a bare
    /// `host:port` gets `http://`).
    pub fn new(
        address: impl Into<String>,
        schema: impl Into<String>,
        table: impl Into<String>,
    ) -> Self {
        Self {
            endpoints: vec![normalise(address.into())],
            schema: schema.into(),
            table: table.into(),
            client_id: String::new(),
            local_snapshot_path: None,
            indexes: Vec::new(),
            filters: Vec::new(),
            heartbeat_timeout: Duration::from_secs(30),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }

    /// Another server instance fed by the same source; the client fails over to the next
    /// endpoint after a failure or a `GoAway`, resuming by source position.
    #[must_use]
    pub fn endpoint(mut self, address: impl Into<String>) -> Self {
        self.endpoints.push(normalise(address.into()));
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

    pub(crate) fn validate(&self) -> Result<(), ClientError> {
        if self
            .endpoints
            .iter()
            .any(|e| e.trim_start_matches("http://").is_empty())
        {
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

fn normalise(address: String) -> String {
    if address.contains("://") {
        address
    } else {
        format!("http://{address}")
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
