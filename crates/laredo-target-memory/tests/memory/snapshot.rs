//! Snapshot export and restore.

use laredo_core::{Position, SnapshotEntry, SnapshotTarget, SyncTarget};
use laredo_target_memory::IndexedTarget;
use laredo_test_support::OneChange;

use super::support::*;

#[tokio::test]
async fn export_then_restore_rebuilds_rows_and_indexes() {
    let source = target().await;
    for id in 0..50 {
        let team = if id % 2 == 0 { "even" } else { "odd" };
        source
            .on_insert(&t(), &user(id, &format!("{id}@x"), team))
            .await
            .unwrap();
    }
    let entries = source.export_snapshot().await.unwrap();
    assert_eq!(entries.len(), 50);

    let copy = target().await;
    copy.on_insert(&t(), &user(999, "stale@x", "even"))
        .await
        .unwrap();
    copy.restore_snapshot(&snapshot_info(50, "indexed-memory"), entries)
        .await
        .unwrap();

    assert_eq!(by_id(copy.all()), by_id(source.all()));
    assert_eq!(copy.get(999), None, "restore replaces what was held");
    assert_eq!(copy.lookup("stale@x"), None);
    assert_eq!(copy.lookup("7@x"), Some(user(7, "7@x", "odd")));
    assert_eq!(copy.lookup_all("by_team", "even").unwrap().len(), 25);
    assert_eq!(
        copy.indexes()
            .iter()
            .map(|i| i.entry_count)
            .collect::<Vec<_>>(),
        vec![50, 50, 2]
    );
}

#[tokio::test]
async fn a_restore_is_reported_as_a_truncate_then_inserts() {
    let target = target().await;
    target.on_insert(&t(), &user(1, "a", "red")).await.unwrap();
    let (events, _handle) = record(&target);
    let entries = vec![SnapshotEntry {
        row: user(2, "b", "red"),
    }];
    target
        .restore_snapshot(&snapshot_info(1, "indexed-memory"), entries)
        .await
        .unwrap();
    assert_eq!(
        *events.lock(),
        vec![(None, None), (None, Some(user(2, "b", "red")))]
    );
}

#[tokio::test]
async fn a_restore_before_on_init_takes_the_snapshots_columns() {
    let target = IndexedTarget::builder().lookup_fields(["email"]).build();
    let entries = vec![SnapshotEntry {
        row: user(2, "b", "red"),
    }];
    target
        .restore_snapshot(&snapshot_info(1, "indexed-memory"), entries)
        .await
        .unwrap();
    assert_eq!(target.columns(), columns());
    assert_eq!(target.lookup("b"), Some(user(2, "b", "red")));
    assert_eq!(target.get(2), Some(user(2, "b", "red")));
}

#[tokio::test]
async fn the_target_declares_itself_durable_and_snapshot_capable() {
    let target = target().await;
    target.on_insert(&t(), &user(1, "a", "red")).await.unwrap();
    assert_eq!(target.type_name(), "indexed-memory");
    let applied = Position::from_u64(7);
    assert_eq!(target.durable_position(&applied), Some(applied));
    let snapshots = target.snapshots().expect("snapshot capable");
    assert!(snapshots.supports_consistent_snapshot());
    let rows = target.rows().expect("row access");
    assert_eq!(rows.count(), 1);
    assert_eq!(rows.scan(), vec![user(1, "a", "red")]);
    assert_eq!(
        rows.get(&user(1, "", "")),
        Some(user(1, "a", "red")),
        "found by the identity's key"
    );
}
