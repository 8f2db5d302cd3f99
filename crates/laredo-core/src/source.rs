//! The source side: [`SyncSource`] and the callbacks a source drives.

use std::cmp::Ordering;
use std::collections::HashMap;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::BoxError;
use crate::change::ChangeEvent;
use crate::position::Position;
use crate::row::Row;
use crate::status::{LagInfo, OrderingGuarantee, SourceState, ValidationError};
use crate::table::{ColumnDefinition, TableIdentifier};

/// A source's error, classified so the engine can choose between re-baselining,
/// stopping and reporting.
///
/// The variants name what a caller acts on: [`SourceError::is_rebaseline_required`]
/// (the position is gone: baseline again), [`SourceError::is_retryable`] (the server
/// could not be reached or the connection dropped: a later attempt may succeed),
/// [`SourceError::needs_operator`] (a permission or setting is wrong: retrying cannot
/// help). A wrapped cause is printed after the message, as with
/// [`SourceError::Other`], and handed back by [`SourceError::cause`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The stream can no longer continue from its position (a lost slot, an expired
    /// iterator): the engine runs a fresh baseline and streams again.
    #[error("re-baseline required: {reason}")]
    ReBaselineRequired {
        /// Why the position is no longer usable.
        reason: String,
    },
    /// The handler refused the change because the engine is stopping or the pipeline
    /// policy stopped the stream. Sources return it unchanged.
    #[error("stream stopped by the engine")]
    Stopped,
    /// The operation is not supported by this source.
    #[error("{operation} is not supported by this source")]
    Unsupported {
        /// The operation asked for.
        operation: &'static str,
    },
    /// The source could not open a connection to its server (refused, unreachable, a
    /// failed TLS handshake). Retryable.
    #[error("cannot connect to {endpoint}{}", crate::Causes(Some(.cause)))]
    Connect {
        /// What was being connected to, as an operator names it (`PostgreSQL at
        /// db:5432 (sslmode=require)`).
        endpoint: String,
        /// The cause.
        cause: BoxError,
    },
    /// An open connection failed, closed, or went silent. Retryable.
    #[error("{message}{}", crate::Causes(.cause.as_ref()))]
    ConnectionLost {
        /// Which connection, and what was under way.
        message: String,
        /// The cause, if there is one.
        cause: Option<BoxError>,
    },
    /// The replication slot (the server-side cursor the stream resumes from) does not
    /// exist any more. The engine re-baselines.
    #[error("re-baseline required: replication slot {slot:?} does not exist any more (dropped?)")]
    SlotMissing {
        /// The slot.
        slot: String,
    },
    /// The server invalidated the replication slot: it can no longer serve changes
    /// from its position. The engine re-baselines.
    #[error("re-baseline required: replication slot {slot:?} was invalidated: {reason}")]
    SlotInvalidated {
        /// The slot.
        slot: String,
        /// Why, as the server reports it.
        reason: String,
    },
    /// The server refused the login or an operation for want of a privilege. An
    /// operator must act; retrying does not help.
    #[error("{message}{}", crate::Causes(.cause.as_ref()))]
    PermissionDenied {
        /// What was refused.
        message: String,
        /// The cause (the server's answer), if there is one.
        cause: Option<BoxError>,
    },
    /// The stream carried something that cannot be decoded, or arrived out of the
    /// protocol's order. Not retryable as such; a source may read the data again a
    /// bounded number of times in case it was damaged on the way.
    #[error("{message}{}", crate::Causes(.cause.as_ref()))]
    Protocol {
        /// What was wrong.
        message: String,
        /// Where the data sits in the stream, when known.
        position: Option<Position>,
        /// The cause (the decoder's error), if there is one.
        cause: Option<BoxError>,
    },
    /// The source's settings, or the server's, do not allow it to run (an invalid
    /// connection string, `wal_level` not `logical`, a column list naming an unknown
    /// column). An operator must act; retrying does not help.
    #[error("{message}{}", crate::Causes(.cause.as_ref()))]
    Configuration {
        /// What is wrong.
        message: String,
        /// The cause, if there is one.
        cause: Option<BoxError>,
    },
    /// Any other failure; its text is the message followed by the cause's chain.
    #[error("{message}{}", crate::Causes(.cause.as_ref()))]
    Other {
        /// What failed.
        message: String,
        /// The cause.
        cause: Option<BoxError>,
    },
}

impl SourceError {
    /// An error with a message and no cause.
    pub fn msg(message: impl Into<String>) -> Self {
        SourceError::Other {
            message: message.into(),
            cause: None,
        }
    }

    /// An error with a message and a cause.
    pub fn with_source(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        SourceError::Other {
            message: message.into(),
            cause: Some(source.into()),
        }
    }

    /// [`SourceError::Connect`]: connecting to `endpoint` failed with `cause`.
    pub fn connect(endpoint: impl Into<String>, cause: impl Into<BoxError>) -> Self {
        SourceError::Connect {
            endpoint: endpoint.into(),
            cause: cause.into(),
        }
    }

    /// [`SourceError::ConnectionLost`] with no cause.
    pub fn connection_lost(message: impl Into<String>) -> Self {
        SourceError::ConnectionLost {
            message: message.into(),
            cause: None,
        }
    }

    /// [`SourceError::Configuration`] with no cause.
    pub fn configuration(message: impl Into<String>) -> Self {
        SourceError::Configuration {
            message: message.into(),
            cause: None,
        }
    }

    /// The wrapped cause, if the error has one.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            SourceError::Connect { cause, .. } => Some(&**cause),
            SourceError::ConnectionLost { cause, .. }
            | SourceError::PermissionDenied { cause, .. }
            | SourceError::Protocol { cause, .. }
            | SourceError::Configuration { cause, .. }
            | SourceError::Other { cause, .. } => cause.as_deref(),
            SourceError::ReBaselineRequired { .. }
            | SourceError::Stopped
            | SourceError::Unsupported { .. }
            | SourceError::SlotMissing { .. }
            | SourceError::SlotInvalidated { .. } => None,
        }
    }

    /// True when the stream cannot continue from its position and a fresh baseline is
    /// the way on: [`SourceError::ReBaselineRequired`], [`SourceError::SlotMissing`],
    /// [`SourceError::SlotInvalidated`].
    pub fn is_rebaseline_required(&self) -> bool {
        matches!(
            self,
            SourceError::ReBaselineRequired { .. }
                | SourceError::SlotMissing { .. }
                | SourceError::SlotInvalidated { .. }
        )
    }

    /// True when the same call may succeed later without anyone acting: the server
    /// could not be reached ([`SourceError::Connect`]) or a connection dropped
    /// ([`SourceError::ConnectionLost`]).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SourceError::Connect { .. } | SourceError::ConnectionLost { .. }
        )
    }

    /// True when an operator must change something before the source can work: a
    /// privilege ([`SourceError::PermissionDenied`]) or a setting
    /// ([`SourceError::Configuration`]).
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            SourceError::PermissionDenied { .. } | SourceError::Configuration { .. }
        )
    }
}

/// Receives the changes of a running stream. The engine implements it; a source calls
/// it from the task that runs [`SyncSource::stream`], so calls are serialized.
#[async_trait]
pub trait ChangeHandler: Send {
    /// Delivers one change, in source order. Returns once the engine has buffered it.
    ///
    /// # Errors
    /// [`SourceError::Stopped`] when the engine no longer accepts changes; the source
    /// should end its stream and return that error (or `Ok`).
    async fn on_change(&mut self, event: ChangeEvent) -> Result<(), SourceError>;

    /// Delivers a change of `event.table` the source could not read in full, in source
    /// order: a value its type mapping refused, say. `event` carries what could be read
    /// (e.g. each column's raw text) and `error` why. The engine applies the error
    /// policy of each of the table's pipelines, as for a change a target refused: with a
    /// dead letter store the change is parked there and the pipeline goes on, otherwise
    /// the pipeline fails. Other tables are not affected. Only for failures tied to one
    /// table's data; a failure of the stream itself is the stream's error.
    ///
    /// The default fails the stream with `error`.
    ///
    /// # Errors
    /// As [`ChangeHandler::on_change`].
    async fn on_change_failed(
        &mut self,
        event: ChangeEvent,
        error: String,
    ) -> Result<(), SourceError> {
        let _ = event;
        Err(SourceError::msg(error))
    }

    /// Reports that the source has consumed everything up to `position` even though no
    /// change matched (a PostgreSQL keepalive or commit of unrelated tables), so the
    /// ACK can move over WAL with no events for us.
    ///
    /// # Errors
    /// As [`ChangeHandler::on_change`].
    async fn on_heartbeat(&mut self, position: Position) -> Result<(), SourceError> {
        let _ = position;
        Ok(())
    }

    /// Reports that `table`'s columns changed. Later changes of that table use the new
    /// columns.
    ///
    /// # Errors
    /// As [`ChangeHandler::on_change`].
    async fn on_schema_change(
        &mut self,
        table: TableIdentifier,
        old_columns: Vec<ColumnDefinition>,
        new_columns: Vec<ColumnDefinition>,
    ) -> Result<(), SourceError> {
        let _ = (table, old_columns, new_columns);
        Ok(())
    }
}

/// Receives baseline rows. Sources send rows in batches of any size, table after table.
#[async_trait]
pub trait BaselineSink: Send {
    /// Delivers baseline rows of `table`.
    ///
    /// # Errors
    /// [`SourceError::Stopped`] when the engine no longer accepts rows.
    async fn on_rows(&mut self, table: &TableIdentifier, rows: Vec<Row>)
    -> Result<(), SourceError>;
}

/// A source of baseline snapshots and change streams, shared by every pipeline that
/// reads from it.
///
/// All methods take `&self`: the engine calls [`SyncSource::ack`], [`SyncSource::pause`]
/// and the monitoring methods while [`SyncSource::stream`] runs on another task.
#[async_trait]
pub trait SyncSource: Send + Sync + 'static {
    /// A short type name for status output (`postgresql`, `test`, ...).
    fn source_type(&self) -> &str;

    /// Connects and returns the columns of each table.
    ///
    /// # Errors
    /// When the source cannot connect or a table is unknown.
    async fn init(
        &self,
        tables: &[TableIdentifier],
    ) -> Result<HashMap<TableIdentifier, Vec<ColumnDefinition>>, SourceError>;

    /// Checks the tables can be served; an empty list means all is well.
    async fn validate_tables(&self, tables: &[TableIdentifier]) -> Vec<ValidationError>;

    /// Takes a consistent snapshot of `tables`, delivers every row to `sink`, and returns
    /// the position the stream must start from so that nothing is missed or repeated.
    ///
    /// # Errors
    /// When the snapshot cannot be read, or `sink` refuses rows.
    async fn baseline(
        &self,
        tables: &[TableIdentifier],
        sink: &mut dyn BaselineSink,
    ) -> Result<Position, SourceError>;

    /// Streams changes after `from` into `handler` until `cancel` fires (then returns
    /// `Ok`) or the stream fails. Reconnects internally before giving up.
    ///
    /// # Errors
    /// An error for which [`SourceError::is_rebaseline_required`] holds when `from` is
    /// no longer available (the engine baselines again); any other error stops the
    /// source's pipelines, so a source retries what it can (a lost connection) itself.
    async fn stream(
        &self,
        from: Position,
        handler: &mut dyn ChangeHandler,
        cancel: CancellationToken,
    ) -> Result<(), SourceError>;

    /// Confirms that every change up to `position` is durable in every target, so the
    /// source may release it.
    ///
    /// # Errors
    /// When the confirmation cannot be recorded.
    async fn ack(&self, position: &Position) -> Result<(), SourceError>;

    /// Whether the source can resume from an acknowledged position after a restart.
    fn supports_resume(&self) -> bool;

    /// The last acknowledged position kept by the source (`None` on a first run).
    ///
    /// # Errors
    /// When the stored position cannot be read.
    async fn last_acked_position(&self) -> Result<Option<Position>, SourceError>;

    /// Orders two positions of this source.
    fn compare_positions(&self, a: &Position, b: &Position) -> Ordering;

    /// The persistent text form of a position.
    fn position_to_string(&self, position: &Position) -> String;

    /// Parses [`SyncSource::position_to_string`]'s output.
    ///
    /// # Errors
    /// When the text is not a position of this source.
    fn position_from_string(&self, text: &str) -> Result<Position, SourceError>;

    /// Stops delivering changes without disconnecting. When it returns, no further
    /// change reaches the handler until [`SyncSource::resume`].
    ///
    /// # Errors
    /// When the source cannot pause.
    async fn pause(&self) -> Result<(), SourceError>;

    /// Resumes delivery after [`SyncSource::pause`].
    ///
    /// # Errors
    /// When the source cannot resume.
    async fn resume(&self) -> Result<(), SourceError>;

    /// How far behind the upstream the source is.
    fn lag(&self) -> LagInfo;

    /// The ordering the source guarantees.
    fn ordering_guarantee(&self) -> OrderingGuarantee;

    /// The current connection state.
    fn state(&self) -> SourceState;

    /// Releases connections. Called once, at engine stop.
    ///
    /// # Errors
    /// When closing fails; the engine reports it and goes on.
    async fn close(&self) -> Result<(), SourceError>;

    /// Forgets the stored position (and, for PostgreSQL, drops the slot and optionally
    /// the publication) so the next start runs a fresh baseline.
    ///
    /// # Errors
    /// [`SourceError::Unsupported`] by default.
    async fn reset(&self, drop_publication: bool) -> Result<(), SourceError> {
        let _ = drop_publication;
        Err(SourceError::Unsupported { operation: "reset" })
    }

    /// Whether [`SyncSource::stream`] from `position` would deliver every change after
    /// it. Called after [`SyncSource::init`], before restoring an engine snapshot taken
    /// at `position`: a source that has already released changes after it (a PostgreSQL
    /// slot confirmed past it, a new temporary slot) answers false and the engine runs a
    /// baseline instead, so a restore never opens a gap. The default is false.
    ///
    /// # Errors
    /// When the source cannot tell; the engine treats it as false.
    async fn can_stream_from(&self, position: &Position) -> Result<bool, SourceError> {
        let _ = position;
        Ok(false)
    }

    /// Source-specific details for operators (OAM `GetSourceInfo`): for PostgreSQL the
    /// slot and the publication. The default has none.
    async fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }

    /// The number of rows in `table` at the source, for post-baseline validation;
    /// `None` when the source cannot count.
    async fn count_rows(&self, table: &TableIdentifier) -> Option<u64> {
        let _ = table;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused")
    }

    #[test]
    fn typed_errors_print_their_cause_as_other_does() {
        assert_eq!(
            SourceError::connect("PostgreSQL at db:5432", refused()).to_string(),
            "cannot connect to PostgreSQL at db:5432: connection refused"
        );
        let lost = SourceError::ConnectionLost {
            message: "replication stream of slot \"s\"".to_string(),
            cause: Some(refused().into()),
        };
        assert_eq!(
            lost.to_string(),
            "replication stream of slot \"s\": connection refused"
        );
        assert_eq!(
            SourceError::SlotMissing {
                slot: "s".to_string()
            }
            .to_string(),
            "re-baseline required: replication slot \"s\" does not exist any more (dropped?)"
        );
        assert_eq!(
            SourceError::SlotInvalidated {
                slot: "s".to_string(),
                reason: "wal_status = lost".to_string()
            }
            .to_string(),
            "re-baseline required: replication slot \"s\" was invalidated: wal_status = lost"
        );
        assert_eq!(
            SourceError::configuration("wal_level is replica").to_string(),
            "wal_level is replica"
        );
        // The cause is printed, and handed back by cause(), not by source(): a chain
        // printer does not repeat it.
        let error = SourceError::connect("db:5432", refused());
        assert_eq!(
            error.cause().map(ToString::to_string).as_deref(),
            Some("connection refused")
        );
        assert!(std::error::Error::source(&error).is_none());
    }

    #[test]
    fn each_variant_says_what_a_caller_does() {
        let cases = [
            (SourceError::connect("db", refused()), "retry"),
            (SourceError::connection_lost("silent"), "retry"),
            (
                SourceError::SlotMissing {
                    slot: "s".to_string(),
                },
                "rebaseline",
            ),
            (
                SourceError::SlotInvalidated {
                    slot: "s".to_string(),
                    reason: "lost".to_string(),
                },
                "rebaseline",
            ),
            (
                SourceError::ReBaselineRequired {
                    reason: "expired".to_string(),
                },
                "rebaseline",
            ),
            (
                SourceError::PermissionDenied {
                    message: "no REPLICATION".to_string(),
                    cause: None,
                },
                "operator",
            ),
            (SourceError::configuration("wal_level"), "operator"),
            (
                SourceError::Protocol {
                    message: "undecodable".to_string(),
                    position: Some(Position::from_u64(7)),
                    cause: None,
                },
                "halt",
            ),
            (SourceError::msg("other"), "halt"),
            (SourceError::Stopped, "halt"),
        ];
        for (error, expected) in cases {
            let does = match (
                error.is_retryable(),
                error.is_rebaseline_required(),
                error.needs_operator(),
            ) {
                (true, false, false) => "retry",
                (false, true, false) => "rebaseline",
                (false, false, true) => "operator",
                (false, false, false) => "halt",
                _ => "more than one class",
            };
            assert_eq!(does, expected, "{error:?}");
        }
    }
}
