//! Fixtures shared by the tests.

use std::sync::Arc;

use laredo_core::{
    ColumnDefinition, IndexDefinition, Row, TableIdentifier, TableSnapshotInfo, row, table,
};
use laredo_target_memory::{IndexedTarget, ListenerHandle};
use parking_lot::Mutex;

pub(crate) fn t() -> TableIdentifier {
    table("public", "users")
}

/// `id` (primary key), `email`, `team`.
pub(crate) fn columns() -> Vec<ColumnDefinition> {
    vec![
        ColumnDefinition::new("id", "int8").primary_key(1),
        ColumnDefinition::new("email", "text"),
        ColumnDefinition::new("team", "text"),
    ]
}

pub(crate) fn user(id: i64, email: &str, team: &str) -> Row {
    row! {"id" => id, "email" => email, "team" => team}
}

/// Lookup by `email`; `by_team` (non-unique) and `by_team_unique` (unique) indexes.
pub(crate) async fn target() -> Arc<IndexedTarget> {
    let target = IndexedTarget::builder()
        .lookup_fields(["email"])
        .index(IndexDefinition::new("by_team", ["team"], false))
        .index(IndexDefinition::new("by_team_unique", ["team"], true))
        .build();
    init(&target, &columns()).await;
    target
}

pub(crate) async fn init(target: &IndexedTarget, columns: &[ColumnDefinition]) {
    laredo_core::SyncTarget::on_init(target, &t(), columns)
        .await
        .unwrap();
}

/// Rows sorted by `id`, for order-independent comparisons.
pub(crate) fn by_id(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by_key(|r| r.get_i64("id"));
    rows
}

pub(crate) type Events = Arc<Mutex<Vec<(Option<Row>, Option<Row>)>>>;

/// Records every `(old, new)` a target reports.
pub(crate) fn record(target: &IndexedTarget) -> (Events, ListenerHandle) {
    let events: Events = Arc::default();
    let handle = target.listen({
        let events = Arc::clone(&events);
        move |old, new| events.lock().push((old.cloned(), new.cloned()))
    });
    (events, handle)
}

pub(crate) fn snapshot_info(row_count: u64, target_type: &str) -> TableSnapshotInfo {
    TableSnapshotInfo {
        table: t(),
        row_count,
        columns: columns(),
        target_type: target_type.to_string(),
        indexes: Vec::new(),
    }
}
