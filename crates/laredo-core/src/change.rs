//! Change events as sources emit them.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::position::Position;
use crate::row::Row;
use crate::table::TableIdentifier;

/// The kind of a change. Wire strings are uppercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeAction {
    /// A new row.
    Insert,
    /// A changed row.
    Update,
    /// A removed row.
    Delete,
    /// Every row removed.
    Truncate,
}

impl ChangeAction {
    /// The wire string: `INSERT`, `UPDATE`, `DELETE`, `TRUNCATE`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeAction::Insert => "INSERT",
            ChangeAction::Update => "UPDATE",
            ChangeAction::Delete => "DELETE",
            ChangeAction::Truncate => "TRUNCATE",
        }
    }
}

impl fmt::Display for ChangeAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChangeAction {
    type Err = String;
    /// Parses a wire string; anything else is an error naming the input (the wire's
    /// `UNKNOWN`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "INSERT" => Ok(ChangeAction::Insert),
            "UPDATE" => Ok(ChangeAction::Update),
            "DELETE" => Ok(ChangeAction::Delete),
            "TRUNCATE" => Ok(ChangeAction::Truncate),
            other => Err(format!("unknown change action {other:?}")),
        }
    }
}

/// One change from a source.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ChangeEvent {
    /// The table changed.
    pub table: TableIdentifier,
    /// What happened.
    pub action: ChangeAction,
    /// The source position of this change.
    pub position: Position,
    /// When the source emitted the event.
    pub timestamp: SystemTime,
    /// The commit time at the origin, when known.
    pub commit_timestamp: Option<SystemTime>,
    /// The origin transaction id (0 when unknown).
    pub xid: i64,
    /// The new row (insert and update).
    pub new_values: Option<Row>,
    /// The old row or its identity (update and delete; may be absent for an update).
    pub old_values: Option<Row>,
}

impl ChangeEvent {
    /// An insert of `row`.
    pub fn insert(table: TableIdentifier, position: Position, row: Row) -> Self {
        Self::new(table, ChangeAction::Insert, position, Some(row), None)
    }

    /// An update to `new`, with the old row or identity if known.
    pub fn update(table: TableIdentifier, position: Position, new: Row, old: Option<Row>) -> Self {
        Self::new(table, ChangeAction::Update, position, Some(new), old)
    }

    /// A delete of the row identified by `identity`.
    pub fn delete(table: TableIdentifier, position: Position, identity: Row) -> Self {
        Self::new(table, ChangeAction::Delete, position, None, Some(identity))
    }

    /// A truncate of `table`.
    pub fn truncate(table: TableIdentifier, position: Position) -> Self {
        Self::new(table, ChangeAction::Truncate, position, None, None)
    }

    fn new(
        table: TableIdentifier,
        action: ChangeAction,
        position: Position,
        new_values: Option<Row>,
        old_values: Option<Row>,
    ) -> Self {
        Self {
            table,
            action,
            position,
            timestamp: SystemTime::now(),
            commit_timestamp: None,
            xid: 0,
            new_values,
            old_values,
        }
    }

    /// Sets the commit timestamp and transaction id.
    #[must_use]
    pub fn with_commit(mut self, commit_timestamp: Option<SystemTime>, xid: i64) -> Self {
        self.commit_timestamp = commit_timestamp;
        self.xid = xid;
        self
    }

    /// The row that identifies the changed row: the old values when present, else the
    /// new values.
    pub fn identity(&self) -> Option<&Row> {
        self.old_values.as_ref().or(self.new_values.as_ref())
    }
}
