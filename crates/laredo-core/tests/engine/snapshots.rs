//! Engine snapshots through a real local snapshot store: create, list, inspect, delete,
//! prune, the schedule, the shutdown snapshot and restores (at startup and at runtime),
//! including the cases where a restore would lose changes and is refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use laredo_core::{
    Engine, EngineError, ErrorChain, PipelineOptions, RestoreMismatch, SnapshotFilter,
    SnapshotOptions, SnapshotStore, Value,
};
use laredo_snapshot_local::LocalSnapshotStore;
use laredo_test_support::OneChange;
use laredo_test_support::{TestObserver, wait_until};

use super::support::*;

fn store(dir: &tempfile::TempDir) -> Arc<LocalSnapshotStore> {
    Arc::new(LocalSnapshotStore::new(dir.path().join("snapshots")))
}

fn engine_with(
    source: Arc<laredo_source_test::TestSource>,
    target: Arc<laredo_target_memory::IndexedTarget>,
    options: SnapshotOptions,
    observer: Arc<TestObserver>,
) -> Engine {
    Engine::builder()
        .source("main", source)
        .pipeline("main", users(), target, PipelineOptions::default())
        .snapshots(options)
        .observer(observer)
        .build()
        .unwrap()
}

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), Value::text(*v)))
        .collect()
}

#[tokio::test]
async fn a_snapshot_holds_every_row_and_the_acknowledged_position() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let source = source_with_users(1..=3);
    let target = indexed();
    let observer = TestObserver::new();
    let engine = engine_with(
        source.clone(),
        target.clone(),
        SnapshotOptions::new(store.clone()).user_meta(meta(&[("schema_version", "7")])),
        observer.clone(),
    );
    started(&engine).await;
    let position = source.emit_insert(users(), user(4, "d")).await;
    wait_until("insert acknowledged", WAIT, || {
        max_ack(&source) >= position.as_u64().unwrap()
    })
    .await;

    let descriptor = engine
        .create_snapshot(meta(&[("trigger", "test")]))
        .await
        .unwrap();
    assert!(descriptor.snapshot_id.starts_with("snap-"));
    assert_eq!(descriptor.tables.len(), 1);
    assert_eq!(descriptor.tables[0].row_count, 4);
    assert_eq!(descriptor.tables[0].target_type, "indexed-memory");
    assert!(!descriptor.tables[0].columns.is_empty(), "columns recorded");
    let completed = observer.wait_for_event("SnapshotCompleted", WAIT).await;
    assert_eq!(completed.field("rows"), Some("4"), "{completed:?}");

    let (metadata, described) = engine
        .inspect_snapshot(&descriptor.snapshot_id)
        .await
        .unwrap();
    assert_eq!(described.size_bytes, descriptor.size_bytes);
    assert_eq!(
        metadata.source_positions.get("main").map(String::as_str),
        Some(max_ack(&source).to_string().as_str())
    );
    assert_eq!(
        metadata.user_meta,
        meta(&[("schema_version", "7"), ("trigger", "test")])
    );
    let (_, tables) = store.load(&descriptor.snapshot_id).await.unwrap();
    let mut rows: Vec<_> = tables[0].1.iter().map(|e| e.row.clone()).collect();
    rows.sort_by_key(|r| r.get_i64("id"));
    assert_eq!(rows, sorted_rows(&target));

    // The sources were paused only for the export: streaming goes on.
    source.emit_insert(users(), user(5, "e")).await;
    wait_until("streaming after the snapshot", WAIT, || {
        target.lookup(5).is_some()
    })
    .await;
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn a_shutdown_snapshot_restores_at_the_next_start_and_streaming_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_with_users(1..=3);
    let first = indexed();
    let engine = engine_with(
        source.clone(),
        first.clone(),
        SnapshotOptions::new(store(&dir)).on_shutdown(true),
        TestObserver::new(),
    );
    started(&engine).await;
    source.emit_update(users(), user(2, "renamed"), None).await;
    source.emit_delete(users(), user(3, "")).await;
    let last = source.emit_insert(users(), user(9, "i")).await;
    wait_until("changes acknowledged", WAIT, || {
        max_ack(&source) >= last.as_u64().unwrap()
    })
    .await;
    engine.stop().await.unwrap();
    let held = sorted_rows(&first);
    assert_eq!(held.len(), 3);

    // A new process: an empty target, the same source and store.
    let second = indexed();
    let observer = TestObserver::new();
    let baselines_before = source.baseline_calls();
    let engine = engine_with(
        source.clone(),
        second.clone(),
        SnapshotOptions::new(store(&dir)),
        observer.clone(),
    );
    started(&engine).await;
    assert!(observer.has_event("SnapshotRestoreCompleted"));
    assert_eq!(source.baseline_calls(), baselines_before, "no baseline");
    assert_eq!(sorted_rows(&second), held);
    source.emit_insert(users(), user(10, "j")).await;
    wait_until("streaming after the restore", WAIT, || {
        second.lookup(10).is_some()
    })
    .await;
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn a_snapshot_the_source_cannot_stream_from_falls_back_to_a_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_with_users(1..=3);
    let engine = engine_with(
        source.clone(),
        indexed(),
        SnapshotOptions::new(store(&dir)),
        TestObserver::new(),
    );
    started(&engine).await;
    engine.create_snapshot(BTreeMap::new()).await.unwrap();
    // Acknowledged past the snapshot: the source released what came after it.
    let last = source.emit_insert(users(), user(4, "d")).await;
    wait_until("released", WAIT, || {
        max_ack(&source) >= last.as_u64().unwrap()
    })
    .await;
    engine.stop().await.unwrap();

    source.set_supports_resume(Some(false));
    let target = indexed();
    let observer = TestObserver::new();
    let engine = engine_with(
        source.clone(),
        target.clone(),
        SnapshotOptions::new(store(&dir)),
        observer.clone(),
    );
    started(&engine).await;
    let failed = observer.wait_for_event("SnapshotFailed", WAIT).await;
    assert!(
        failed
            .field("error")
            .unwrap_or_default()
            .contains("cannot stream from"),
        "{failed:?}"
    );
    assert!(!observer.has_event("SnapshotRestoreCompleted"));
    assert_eq!(sorted_rows(&target), sorted_source_rows(&source, &users()));
    assert_eq!(
        target.count(),
        4,
        "the baseline has the row the snapshot lacks"
    );
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn a_user_metadata_mismatch_is_rejected_or_warned_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_with_users(1..=2);
    let engine = engine_with(
        source.clone(),
        indexed(),
        SnapshotOptions::new(store(&dir))
            .on_shutdown(true)
            .user_meta(meta(&[("schema_version", "1")])),
        TestObserver::new(),
    );
    started(&engine).await;
    engine.stop().await.unwrap();

    let observer = TestObserver::new();
    let rejecting = engine_with(
        source.clone(),
        indexed(),
        SnapshotOptions::new(store(&dir))
            .user_meta(meta(&[("schema_version", "2")]))
            .on_mismatch(RestoreMismatch::Reject),
        observer.clone(),
    );
    started(&rejecting).await;
    let failed = observer.wait_for_event("SnapshotFailed", WAIT).await;
    assert!(
        failed
            .field("error")
            .unwrap_or_default()
            .contains("schema_version"),
        "{failed:?}"
    );
    assert!(!observer.has_event("SnapshotRestoreStarted"));
    let id = rejecting
        .list_snapshots(&SnapshotFilter::default())
        .await
        .unwrap()[0]
        .snapshot_id
        .clone();
    let refused = rejecting.restore_snapshot(&id, false).await.unwrap_err();
    assert!(
        matches!(refused, EngineError::SnapshotRefused(_)),
        "{refused}"
    );
    let forced = rejecting.restore_snapshot(&id, true).await.unwrap();
    assert_eq!(forced.warnings.len(), 1, "{:?}", forced.warnings);
    rejecting.stop().await.unwrap();

    let observer = TestObserver::new();
    let warning = engine_with(
        source.clone(),
        indexed(),
        SnapshotOptions::new(store(&dir)).user_meta(meta(&[("schema_version", "2")])),
        observer.clone(),
    );
    started(&warning).await;
    let outcome = warning.restore_snapshot(&id, false).await.unwrap();
    assert_eq!(outcome.warnings.len(), 1, "{:?}", outcome.warnings);
    assert!(
        outcome.warnings[0].starts_with("schema_version: configured"),
        "{:?}",
        outcome.warnings
    );
    warning.stop().await.unwrap();
}

#[tokio::test]
async fn a_runtime_restore_replaces_the_rows_and_streams_on_or_is_refused_when_it_would_lose_changes()
 {
    let dir = tempfile::tempdir().unwrap();
    let source = source_with_users(1..=3);
    let target = indexed();
    let observer = TestObserver::new();
    let engine = engine_with(
        source.clone(),
        target.clone(),
        SnapshotOptions::new(store(&dir)),
        observer.clone(),
    );
    started(&engine).await;
    let snapshot = engine.create_snapshot(BTreeMap::new()).await.unwrap();
    let expected = sorted_rows(&target);
    // Damage the target behind the engine's back (an operator's reason to restore).
    target.on_delete(&users(), &user(1, "")).await.unwrap();
    target
        .on_insert(&users(), &user(77, "stray"))
        .await
        .unwrap();

    let outcome = engine
        .restore_snapshot(&snapshot.snapshot_id, false)
        .await
        .unwrap();
    assert_eq!(outcome.snapshot_id, snapshot.snapshot_id);
    assert!(outcome.warnings.is_empty());
    assert_eq!(sorted_rows(&target), expected);
    assert!(engine.is_ready());
    let last = source.emit_insert(users(), user(4, "d")).await;
    wait_until("streaming after the restore", WAIT, || {
        target.lookup(4).is_some()
    })
    .await;
    wait_until("acknowledged", WAIT, || {
        max_ack(&source) >= last.as_u64().unwrap()
    })
    .await;

    // The source released change 4: the snapshot is now too old to restore.
    let refused = engine
        .restore_snapshot(&snapshot.snapshot_id, false)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, EngineError::SnapshotRefused(m) if m.contains("cannot stream from")),
        "{refused}"
    );
    assert!(
        target.lookup(4).is_some(),
        "a refused restore touches nothing"
    );
    let missing = engine.restore_snapshot("snap-0", false).await.unwrap_err();
    assert!(
        matches!(missing, EngineError::SnapshotNotFound(_)),
        "{missing}"
    );
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn scheduled_snapshots_are_pruned_to_the_retention_and_delete_works() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_with_users(1..=2);
    let observer = TestObserver::new();
    let engine = engine_with(
        source.clone(),
        indexed(),
        SnapshotOptions::new(store(&dir))
            .schedule(Duration::from_millis(50))
            .keep(2),
        observer.clone(),
    );
    started(&engine).await;
    observer
        .wait_for_event_count("SnapshotCompleted", 4, WAIT)
        .await;
    let summary = engine.snapshot_summary().await.unwrap().unwrap();
    assert!(summary.next_scheduled_at.is_some());
    engine.stop().await.unwrap();
    let listed = engine
        .list_snapshots(&SnapshotFilter::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), 2, "pruned to keep = 2");
    let scheduled = engine
        .inspect_snapshot(&listed[0].snapshot_id)
        .await
        .unwrap()
        .0;
    assert_eq!(scheduled.user_meta, meta(&[("trigger", "scheduled")]));
    engine
        .delete_snapshot(&listed[0].snapshot_id)
        .await
        .unwrap();
    assert_eq!(engine.prune_snapshots(0, None).await.unwrap(), 1);
    assert!(
        engine
            .list_snapshots(&SnapshotFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn without_a_store_every_snapshot_call_says_so() {
    let source = source_with_users(1..=2);
    let engine = Engine::builder()
        .source("main", source)
        .pipeline("main", users(), indexed(), PipelineOptions::default())
        .build()
        .unwrap();
    started(&engine).await;
    assert!(matches!(
        engine.list_snapshots(&SnapshotFilter::default()).await,
        Err(EngineError::NoSnapshotStore)
    ));
    assert!(matches!(
        engine.restore_snapshot("snap-1", false).await,
        Err(EngineError::NoSnapshotStore)
    ));
    assert!(engine.snapshot_summary().await.unwrap().is_none());
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_store_is_reported_once_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the store's directory should be: creating it fails.
    let base = dir.path().join("file");
    std::fs::write(&base, b"").unwrap();
    let cause = std::fs::create_dir_all(&base).unwrap_err().to_string();
    let observer = TestObserver::new();
    let engine = engine_with(
        source_with_users(1..=1),
        indexed(),
        SnapshotOptions::new(Arc::new(LocalSnapshotStore::new(&base))),
        observer.clone(),
    );
    started(&engine).await;

    let err = engine.create_snapshot(BTreeMap::new()).await.unwrap_err();
    let expected = format!("snapshot: creating {}: {cause}", base.display());
    assert!(matches!(err, EngineError::Snapshot(_)), "{err:?}");
    assert_eq!(ErrorChain(&err).to_string(), expected);
    let failed = observer.wait_for_event("SnapshotFailed", WAIT).await;
    assert_eq!(failed.field("error"), Some(expected.as_str()));
    engine.stop().await.unwrap();
}
