//! CompiledTarget: filter, compile, key, and what listeners hear (MEM-10..MEM-13).

use std::sync::Arc;

use laredo_core::{
    ColumnDefinition, Position, Row, SchemaChangeAction, SnapshotEntry, SnapshotTarget, SyncTarget,
    Value, row,
};
use laredo_target_memory::{CompiledTarget, ListenerHandle};
use laredo_test_support::OneChange;
use parking_lot::Mutex;

use super::support::*;

#[derive(Debug, Clone, PartialEq)]
struct User {
    id: i64,
    email: String,
}

fn compile(row: &Row) -> Result<User, String> {
    Ok(User {
        id: row.get_i64("id").ok_or("no id")?,
        email: row.get_str("email").ok_or("no email")?.to_string(),
    })
}

fn u(id: i64, email: &str) -> User {
    User {
        id,
        email: email.to_string(),
    }
}

/// Keyed by `id`; rows of team `hidden` are filtered out.
async fn users() -> Arc<CompiledTarget<User>> {
    let target = CompiledTarget::builder(compile)
        .key_fields(["id"])
        .filter(|row| row.get_str("team") != Some("hidden"))
        .build();
    target.on_init(&t(), &columns()).await.unwrap();
    target
}

type Events = Arc<Mutex<Vec<(Option<User>, Option<User>)>>>;

fn record(target: &CompiledTarget<User>) -> (Events, ListenerHandle) {
    let events: Events = Arc::default();
    let handle = target.listen({
        let events = Arc::clone(&events);
        move |old, new| {
            events
                .lock()
                .push((old.map(|o| (**o).clone()), new.map(|n| (**n).clone())))
        }
    });
    (events, handle)
}

fn sorted(mut objects: Vec<Arc<User>>) -> Vec<User> {
    objects.sort_by_key(|o| o.id);
    objects.into_iter().map(|o| (*o).clone()).collect()
}

#[tokio::test]
async fn key_fields_are_checked_at_init() {
    let target = CompiledTarget::builder(compile)
        .key_fields(["id", "nope"])
        .build();
    let err = target
        .on_init(&t(), &[ColumnDefinition::new("x", "text")])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "key field id not found in columns; key field nope not found in columns"
    );
    let keyless = CompiledTarget::builder(compile).build();
    let err = keyless
        .on_init(&t(), &[ColumnDefinition::new("x", "text")])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "table public.users has no primary key and no key_fields are configured"
    );
}

#[tokio::test]
async fn the_default_key_is_the_primary_key() {
    let target = CompiledTarget::builder(compile).build();
    target.on_init(&t(), &columns()).await.unwrap();
    target.on_insert(&t(), &user(1, "a", "red")).await.unwrap();
    assert_eq!(target.key_fields(), vec!["id".to_string()]);
    assert_eq!(target.get(1).as_deref(), Some(&u(1, "a")));
    assert_eq!(target.get((1, "a")), None, "wrong key arity");
}

#[tokio::test]
async fn inserts_are_filtered_compiled_and_stored() {
    let target = users().await;
    let (events, _handle) = record(&target);
    target.on_insert(&t(), &user(1, "a", "red")).await.unwrap();
    target
        .on_insert(&t(), &user(2, "b", "hidden"))
        .await
        .unwrap();
    // No email: the compiler fails and the row is skipped.
    target
        .on_insert(
            &t(),
            &row! {"id" => 3, "team" => "red", "email" => Value::Null},
        )
        .await
        .unwrap();

    assert_eq!(target.count(), 1);
    assert_eq!(sorted(target.all()), vec![u(1, "a")]);
    assert_eq!(target.get(2), None);
    assert_eq!(target.get(3), None);
    assert_eq!(*events.lock(), vec![(None, Some(u(1, "a")))]);
}

#[tokio::test]
async fn an_update_leaving_the_filter_deletes_the_object() {
    let target = users().await;
    target.on_insert(&t(), &user(1, "a", "red")).await.unwrap();
    let (events, _handle) = record(&target);
    target
        .on_update(&t(), &user(1, "a", "hidden"), None)
        .await
        .unwrap();
    // Filtered with no object: nothing to report.
    target
        .on_update(&t(), &user(1, "a2", "hidden"), None)
        .await
        .unwrap();
    // Back in the filter: a new object.
    target
        .on_update(&t(), &user(1, "a3", "red"), None)
        .await
        .unwrap();

    assert_eq!(sorted(target.all()), vec![u(1, "a3")]);
    assert_eq!(
        *events.lock(),
        vec![(Some(u(1, "a")), None), (None, Some(u(1, "a3"))),]
    );
}

#[tokio::test]
async fn an_update_changing_the_key_rekeys_the_object() {
    let target = users().await;
    target.on_insert(&t(), &user(3, "c", "red")).await.unwrap();
    let (events, _handle) = record(&target);
    target
        .on_update(&t(), &user(4, "c", "red"), Some(&row! {"id" => 3}))
        .await
        .unwrap();

    assert_eq!(target.get(3), None);
    assert_eq!(target.get(4).as_deref(), Some(&u(4, "c")));
    assert_eq!(target.count(), 1);
    assert_eq!(*events.lock(), vec![(Some(u(3, "c")), Some(u(4, "c")))]);
}

#[tokio::test]
async fn an_update_changing_the_key_and_leaving_the_filter_deletes_the_old_object() {
    let target = users().await;
    target.on_insert(&t(), &user(3, "c", "red")).await.unwrap();
    let (events, _handle) = record(&target);
    target
        .on_update(&t(), &user(4, "c", "hidden"), Some(&row! {"id" => 3}))
        .await
        .unwrap();

    assert_eq!(target.count(), 0);
    assert_eq!(*events.lock(), vec![(Some(u(3, "c")), None)]);
}

#[tokio::test]
async fn an_update_that_fails_to_compile_removes_the_stale_object() {
    let target = users().await;
    target.on_insert(&t(), &user(1, "a", "red")).await.unwrap();
    let (events, _handle) = record(&target);
    target
        .on_update(&t(), &row! {"id" => 1, "team" => "red", "email" => 5}, None)
        .await
        .unwrap();

    assert_eq!(target.get(1), None);
    assert_eq!(*events.lock(), vec![(Some(u(1, "a")), None)]);
}

#[tokio::test]
async fn deletes_notify_only_held_objects_and_truncate_clears() {
    let target = users().await;
    target.on_insert(&t(), &user(1, "a", "red")).await.unwrap();
    target.on_insert(&t(), &user(2, "b", "red")).await.unwrap();
    let (events, _handle) = record(&target);
    target.on_delete(&t(), &row! {"id" => 9}).await.unwrap();
    target.on_delete(&t(), &row! {"id" => 1}).await.unwrap();
    target.on_truncate(&t()).await.unwrap();

    assert_eq!(target.count(), 0);
    assert_eq!(*events.lock(), vec![(Some(u(1, "a")), None), (None, None)]);
}

#[tokio::test]
async fn a_baseline_batch_is_applied_in_order() {
    let target = users().await;
    let (events, handle) = record(&target);
    let batch = [
        user(1, "a", "red"),
        user(2, "b", "hidden"),
        user(1, "a2", "red"),
    ];
    target.on_baseline(&t(), &batch).await.unwrap();
    target.on_baseline_complete(&t(), None).await.unwrap();
    handle.unsubscribe();
    target.on_insert(&t(), &user(5, "e", "red")).await.unwrap();

    assert_eq!(sorted(target.all()), vec![u(1, "a2"), u(5, "e")]);
    assert_eq!(
        *events.lock(),
        vec![(None, Some(u(1, "a"))), (Some(u(1, "a")), Some(u(1, "a2"))),]
    );
}

#[tokio::test]
async fn snapshots_export_the_rows_and_restore_recompiles_through_the_filter() {
    let target = users().await;
    target.on_insert(&t(), &user(1, "a", "red")).await.unwrap();
    target.on_insert(&t(), &user(2, "b", "blue")).await.unwrap();
    let mut exported: Vec<Row> = target
        .export_snapshot()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.row)
        .collect();
    exported.sort_by_key(|r| r.get_i64("id"));
    assert_eq!(exported, vec![user(1, "a", "red"), user(2, "b", "blue")]);

    let copy = users().await;
    copy.on_insert(&t(), &user(9, "stale", "red"))
        .await
        .unwrap();
    let (events, _handle) = record(&copy);
    let mut entries: Vec<SnapshotEntry> = exported
        .into_iter()
        .map(|row| SnapshotEntry { row })
        .collect();
    entries.push(SnapshotEntry {
        row: user(3, "c", "hidden"),
    });
    copy.restore_snapshot(&snapshot_info(3, "compiled-memory"), entries)
        .await
        .unwrap();

    assert_eq!(sorted(copy.all()), vec![u(1, "a"), u(2, "b")]);
    assert_eq!(events.lock().first(), Some(&(None, None)));
    assert_eq!(events.lock().len(), 3);
}

#[tokio::test]
async fn schema_changes_rebaseline_and_the_target_is_durable() {
    let target = users().await;
    assert_eq!(
        target
            .on_schema_change(&t(), &columns(), &columns())
            .await
            .action,
        SchemaChangeAction::ReBaseline
    );
    assert_eq!(target.type_name(), "compiled-memory");
    let applied = Position::from_u64(7);
    assert_eq!(target.durable_position(&applied), Some(applied));
    assert!(
        target
            .snapshots()
            .expect("snapshot capable")
            .supports_consistent_snapshot()
    );
}

#[tokio::test]
async fn on_close_removes_every_listener() {
    let target = users().await;
    let (events, _handle) = record(&target);
    target.on_close(&t()).await.unwrap();
    target.on_insert(&t(), &user(1, "a", "red")).await.unwrap();
    assert_eq!(events.lock().len(), 0);
    assert_eq!(target.count(), 1);
}
