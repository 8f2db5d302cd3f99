//! Fixtures: entries and a target that records what it is asked to apply.

use std::sync::Arc;

use async_trait::async_trait;
use laredo_core::{
    ApplyError, Change, ChangeEvent, ChangeKind, DeadLetterEntry, Position, Row, SyncTarget,
    TableIdentifier, TargetError, row, table,
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
    /// The position of every change applied or tried, in order.
    pub(crate) positions: Mutex<Vec<Position>>,
}

impl RecordingTarget {
    pub(crate) fn failing_on(row: Row) -> Arc<Self> {
        Arc::new(Self {
            calls: Mutex::default(),
            failing: Mutex::new(Some(row)),
            positions: Mutex::default(),
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

    async fn on_baseline(
        &self,
        _table: &TableIdentifier,
        _rows: &[Row],
    ) -> Result<(), TargetError> {
        Err(TargetError::new("replay must not send baseline rows"))
    }

    async fn on_baseline_complete(
        &self,
        _table: &TableIdentifier,
        _position: Option<&Position>,
    ) -> Result<(), TargetError> {
        Err(TargetError::new("replay must not complete a baseline"))
    }

    async fn apply(&self, _table: &TableIdentifier, batch: &[Change]) -> Result<(), ApplyError> {
        for (n, change) in batch.iter().enumerate() {
            self.positions.lock().push(change.position.clone());
            let (call, row) = match &change.kind {
                ChangeKind::Insert { row } => (Call::Insert(row.clone()), Some(row)),
                ChangeKind::Update { row, identity } => {
                    (Call::Update(row.clone(), identity.clone()), Some(row))
                }
                ChangeKind::Delete { identity } => (Call::Delete(identity.clone()), Some(identity)),
                ChangeKind::Truncate => (Call::Truncate, None),
            };
            self.record(call, row).map_err(|e| ApplyError::at(n, e))?;
        }
        Ok(())
    }
}
