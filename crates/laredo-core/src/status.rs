//! States, policies and small status records shared by the engine and its plugins.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::table::{ColumnDefinition, TableIdentifier};

macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $( $(#[$vmeta])* $variant ),* }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The string form.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(format!(
                        "unknown {} {other:?}, expected one of: {}",
                        stringify!($name),
                        [$($text),*].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum! {
    /// The connection state of a source.
    pub enum SourceState {
        /// Opening connections.
        Connecting = "CONNECTING",
        /// Connected, not yet streaming.
        Connected = "CONNECTED",
        /// Streaming changes.
        Streaming = "STREAMING",
        /// Lost the connection; retrying.
        Reconnecting = "RECONNECTING",
        /// Delivery paused on request.
        Paused = "PAUSED",
        /// Failed; needs intervention.
        Error = "ERROR",
        /// Closed.
        Closed = "CLOSED",
    }
}

string_enum! {
    /// How a source orders the changes it emits.
    pub enum OrderingGuarantee {
        /// Commit order across all tables.
        TotalOrder = "total",
        /// Ordered within each table.
        PerTableOrder = "per-table",
        /// Ordered within each partition (shard).
        PerPartitionOrder = "per-partition",
        /// No ordering promise.
        BestEffort = "best-effort",
    }
}

string_enum! {
    /// The state of a pipeline (one source table into one target).
    pub enum PipelineState {
        /// Created; the source has not initialised it yet.
        Initializing = "INITIALIZING",
        /// Loading the baseline.
        Baselining = "BASELINING",
        /// Applying changes.
        Streaming = "STREAMING",
        /// Paused: changes are held in its buffer.
        Paused = "PAUSED",
        /// Failed: changes for it are ignored and the ACK skips it.
        Error = "ERROR",
        /// Closed.
        Stopped = "STOPPED",
    }
}

impl PipelineState {
    /// The numeric form used as a metric value: INITIALIZING 0 … STOPPED 5.
    pub fn as_number(self) -> u8 {
        match self {
            PipelineState::Initializing => 0,
            PipelineState::Baselining => 1,
            PipelineState::Streaming => 2,
            PipelineState::Paused => 3,
            PipelineState::Error => 4,
            PipelineState::Stopped => 5,
        }
    }

    /// The state for a numeric form.
    pub fn from_number(value: u8) -> Option<Self> {
        Self::ALL.get(usize::from(value)).copied()
    }

    /// True for ERROR and STOPPED, which bulk transitions never leave.
    pub fn is_terminal(self) -> bool {
        matches!(self, PipelineState::Error | PipelineState::Stopped)
    }
}

string_enum! {
    /// What a pipeline's buffer does when it is full.
    #[derive(Default, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum BufferPolicy {
        /// The dispatcher waits for room: no loss, but a slow target slows its source.
        #[default]
        Block = "block",
        /// The oldest buffered change is discarded (latest-state-wins targets only).
        DropOldest = "drop_oldest",
        /// The change fails and the pipeline's error policy applies.
        Error = "error",
    }
}

string_enum! {
    /// What a pipeline failure does to its neighbours.
    #[derive(Default, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum ErrorPolicy {
        /// Only the failing pipeline goes to ERROR; its source and siblings go on.
        #[default]
        Isolate = "isolate",
        /// Every pipeline of the source goes to ERROR and its stream stops.
        StopSource = "stop_source",
        /// Every pipeline goes to ERROR and the engine stops streaming.
        StopAll = "stop_all",
    }
}

string_enum! {
    /// What a row-count mismatch does.
    #[derive(Default, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum ValidationAction {
        /// Report it and continue.
        #[default]
        Warn = "warn",
        /// Reload the table.
        ReBaseline = "re_baseline",
        /// Move the pipeline to ERROR.
        Error = "error",
    }
}

string_enum! {
    /// A target's answer to a schema change.
    pub enum SchemaChangeAction {
        /// Keep streaming.
        Continue = "CONTINUE",
        /// Reload the table.
        ReBaseline = "RE_BASELINE",
        /// Move the pipeline to ERROR.
        Error = "ERROR",
    }
}

string_enum! {
    /// How a fan-out client is brought up to date.
    pub enum SyncMode {
        /// A full snapshot, then the journal.
        FullSnapshot = "FULL_SNAPSHOT",
        /// Journal entries since the client's sequence.
        Delta = "DELTA",
        /// A delta from a snapshot the client holds.
        DeltaFromSnapshot = "DELTA_FROM_SNAPSHOT",
        /// Replay from an archive.
        ReplayArchive = "REPLAY_ARCHIVE",
    }
}

string_enum! {
    /// Snapshot replay pacing.
    pub enum ReplaySpeed {
        /// As fast as possible.
        Full = "full",
        /// Paced by the recorded timestamps.
        Realtime = "realtime",
    }
}

/// A target's response to a schema change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaChangeResponse {
    /// What to do.
    pub action: SchemaChangeAction,
    /// Why, for the logs and the error state.
    pub message: Option<String>,
}

impl SchemaChangeResponse {
    /// Keep streaming.
    pub fn proceed() -> Self {
        Self {
            action: SchemaChangeAction::Continue,
            message: None,
        }
    }

    /// Reload the table, with a reason.
    pub fn re_baseline(message: impl Into<String>) -> Self {
        Self {
            action: SchemaChangeAction::ReBaseline,
            message: Some(message.into()),
        }
    }

    /// Fail the pipeline, with a reason.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            action: SchemaChangeAction::Error,
            message: Some(message.into()),
        }
    }
}

/// A column change of a table, as a source reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaChangeEvent {
    /// The columns before.
    pub old_columns: Vec<ColumnDefinition>,
    /// The columns after.
    pub new_columns: Vec<ColumnDefinition>,
}

/// How far a source is behind its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LagInfo {
    /// Bytes (or records) not yet consumed.
    pub lag_bytes: u64,
    /// Age of the oldest unconsumed change, when known.
    pub lag_time: Option<Duration>,
}

/// A problem with a configured table, found by
/// [`SyncSource::validate_tables`](crate::SyncSource::validate_tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The table, when the problem is specific to one.
    pub table: Option<TableIdentifier>,
    /// A stable code: `TABLE_NOT_FOUND`, `PERMISSION_DENIED`, `SLOT_INVALID`, `TABLE_NOT_SERVED`.
    pub code: String,
    /// A human description.
    pub message: String,
    /// A warning: the table is served, with a caveat the operator should know (the
    /// engine logs it and tells the observer); otherwise the table's pipelines fail.
    pub warning: bool,
}

impl ValidationError {
    /// The code for a table that does not exist.
    pub const TABLE_NOT_FOUND: &'static str = "TABLE_NOT_FOUND";
    /// The code for a table the source may not read.
    pub const PERMISSION_DENIED: &'static str = "PERMISSION_DENIED";
    /// The code for an unusable replication slot.
    pub const SLOT_INVALID: &'static str = "SLOT_INVALID";
    /// The code for a table an upstream does not serve.
    pub const TABLE_NOT_SERVED: &'static str = "TABLE_NOT_SERVED";
    /// The code (a warning) for a table whose deletes and updates cannot be told apart
    /// by key: no primary key and no full replica identity.
    pub const NO_ROW_IDENTITY: &'static str = "NO_ROW_IDENTITY";

    /// Builds a validation error.
    pub fn new(
        table: Option<TableIdentifier>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            table,
            code: code.into(),
            message: message.into(),
            warning: false,
        }
    }

    /// Builds a warning: the table is still served.
    pub fn warning(
        table: Option<TableIdentifier>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            warning: true,
            ..Self::new(table, code, message)
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.table {
            Some(t) => write!(f, "{t}: {}: {}", self.code, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

impl std::error::Error for ValidationError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_strings_round_trip() {
        for s in PipelineState::ALL {
            assert_eq!(s.as_str().parse::<PipelineState>().unwrap(), *s);
            assert_eq!(PipelineState::from_number(s.as_number()), Some(*s));
        }
        assert_eq!(
            OrderingGuarantee::PerPartitionOrder.to_string(),
            "per-partition"
        );
        let err = "sideways".parse::<BufferPolicy>().unwrap_err();
        assert!(err.contains("block, drop_oldest, error"), "{err}");
    }

    #[test]
    fn validation_error_display() {
        let e = ValidationError::new(
            Some(crate::table("public", "t")),
            "TABLE_NOT_FOUND",
            "missing",
        );
        assert_eq!(e.to_string(), "public.t: TABLE_NOT_FOUND: missing");
        let e = ValidationError::new(None, "SLOT_INVALID", "lost");
        assert_eq!(e.to_string(), "SLOT_INVALID: lost");
    }
}
