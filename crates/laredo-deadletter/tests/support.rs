//! Fixtures: entries and a target that records what it is asked to apply.

use std::sync::Arc;

use async_trait::async_trait;
use laredo_core::{
    ChangeEvent, ColumnDefinition, DeadLetterEntry, Position, Row, SchemaChangeResponse,
    SnapshotEntry, SyncTarget, TableIdentifier, TableSnapshotInfo, TargetError, row, table,
};
use parking_lot::Mutex;

pub(crate) const PIPELINE: &str = "main:public.users:indexed-memory";
pub(crate) const OTHER_PIPELINE: &str = "main:public.orders:indexed-memory";

pub(crate) fn users() -> TableIdentifier {
    table("public", "users")
}

/// A dead-lettered insert of `{id, name}` into `pipeline`.
pub(crate) fn insert_entry(pipeline: &str, id: i64) -> DeadLetterEntry {
    let change = ChangeEvent::insert(
        users(),
        Position::from_u64(id as u64),
        row! {"id" => id, "name" => format!("user {id}")},
    );
    DeadLetterEntry::new(
        pipeline,
        &change,
        format!("0/{id}"),
        format!("insert {id} failed"),
    )
}

/// `entry` as the store should hand it back: with its id set.
pub(crate) fn with_id(mut entry: DeadLetterEntry, id: u64) -> DeadLetterEntry {
    entry.id = id;
    entry
}

/// One call a [`RecordingTarget`] received.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Call {
    Insert(Row),
    Update(Row, Option<Row>),
    Delete(Row),
    Truncate,
}

/// Records apply calls; any call whose row equals `failing` fails.
#[derive(Default)]
pub(crate) struct RecordingTarget {
    pub(crate) calls: Mutex<Vec<Call>>,
    pub(crate) failing: Mutex<Option<Row>>,
}

impl RecordingTarget {
    pub(crate) fn failing_on(row: Row) -> Arc<Self> {
        Arc::new(Self {
            calls: Mutex::default(),
            failing: Mutex::new(Some(row)),
        })
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.lock().clone()
    }

    fn record(&self, call: Call, row: Option<&Row>) -> Result<(), TargetError> {
        self.calls.lock().push(call);
        match (row, &*self.failing.lock()) {
            (Some(row), Some(failing)) if row == failing => {
                Err(TargetError::new(format!("refusing {row}")))
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl SyncTarget for RecordingTarget {
    fn type_name(&self) -> &str {
        "recording"
    }

    async fn on_init(
        &self,
        _table: &TableIdentifier,
        _columns: &[ColumnDefinition],
    ) -> Result<(), TargetError> {
        Ok(())
    }

    async fn on_baseline_row(
        &self,
        _table: &TableIdentifier,
        _row: &Row,
    ) -> Result<(), TargetError> {
        Err(TargetError::new("replay must not send baseline rows"))
    }

    async fn on_baseline_complete(&self, _table: &TableIdentifier) -> Result<(), TargetError> {
        Err(TargetError::new("replay must not complete a baseline"))
    }

    async fn on_insert(&self, _table: &TableIdentifier, row: &Row) -> Result<(), TargetError> {
        self.record(Call::Insert(row.clone()), Some(row))
    }

    async fn on_update(
        &self,
        _table: &TableIdentifier,
        row: &Row,
        identity: Option<&Row>,
    ) -> Result<(), TargetError> {
        self.record(Call::Update(row.clone(), identity.cloned()), Some(row))
    }

    async fn on_delete(&self, _table: &TableIdentifier, identity: &Row) -> Result<(), TargetError> {
        self.record(Call::Delete(identity.clone()), Some(identity))
    }

    async fn on_truncate(&self, _table: &TableIdentifier) -> Result<(), TargetError> {
        self.record(Call::Truncate, None)
    }

    fn is_durable(&self) -> bool {
        true
    }

    async fn on_schema_change(
        &self,
        _table: &TableIdentifier,
        _old: &[ColumnDefinition],
        _new: &[ColumnDefinition],
    ) -> SchemaChangeResponse {
        SchemaChangeResponse::proceed()
    }

    async fn export_snapshot(&self) -> Result<Vec<SnapshotEntry>, TargetError> {
        Ok(Vec::new())
    }

    async fn restore_snapshot(
        &self,
        _info: &TableSnapshotInfo,
        _entries: Vec<SnapshotEntry>,
    ) -> Result<(), TargetError> {
        Ok(())
    }

    async fn on_close(&self, _table: &TableIdentifier) -> Result<(), TargetError> {
        Ok(())
    }
}
