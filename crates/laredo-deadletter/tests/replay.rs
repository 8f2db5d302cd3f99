//! Replay through the core's default `DeadLetterStore::replay`, against both stores.

use laredo_core::{ChangeEvent, DeadLetterEntry, DeadLetterStore, Position, ReplayOutcome, row};
use laredo_deadletter::{LocalDeadLetterStore, MemoryDeadLetterStore};

use crate::support::{Call, PIPELINE, RecordingTarget, insert_entry, users};

/// One entry of each action, written in order; the second insert's row is `{id: 5}`.
async fn write_one_of_each(store: &dyn DeadLetterStore) {
    let table = users();
    let changes = [
        ChangeEvent::insert(table.clone(), Position::from_u64(1), row! {"id" => 1}),
        ChangeEvent::update(
            table.clone(),
            Position::from_u64(2),
            row! {"id" => 2, "v" => "new"},
            Some(row! {"id" => 2}),
        ),
        ChangeEvent::delete(table.clone(), Position::from_u64(3), row! {"id" => 3}),
        ChangeEvent::truncate(table.clone(), Position::from_u64(4)),
        ChangeEvent::insert(table, Position::from_u64(5), row! {"id" => 5}),
    ];
    for change in &changes {
        store
            .write(DeadLetterEntry::new(PIPELINE, change, "pos", "failed"))
            .await
            .unwrap();
    }
}

async fn replays_every_action_and_keeps_only_failures(store: &dyn DeadLetterStore) {
    write_one_of_each(store).await;
    store.write(insert_entry("other", 9)).await.unwrap();
    let target = RecordingTarget::failing_on(row! {"id" => 5});

    let outcome = store
        .replay(PIPELINE, target.as_ref(), &Position::from_u64(500))
        .await
        .unwrap();

    assert_eq!(
        outcome,
        ReplayOutcome {
            replayed: 5,
            succeeded: 4,
            failed: 1
        }
    );
    // Applied now, after the changes that followed them: at the stream's position.
    assert_eq!(*target.positions.lock(), vec![Position::from_u64(500); 5]);
    assert_eq!(
        target.calls(),
        [
            Call::Insert(row! {"id" => 1}),
            Call::Update(row! {"id" => 2, "v" => "new"}, Some(row! {"id" => 2})),
            Call::Delete(row! {"id" => 3}),
            Call::Truncate,
            Call::Insert(row! {"id" => 5}),
        ]
    );
    let left = store.read(PIPELINE, 0).await.unwrap();
    assert_eq!(left.iter().map(|e| e.id).collect::<Vec<_>>(), [5]);
    assert_eq!(left[0].new_values, Some(row! {"id" => 5}));
    assert_eq!(
        store.count("other").await.unwrap(),
        1,
        "other pipelines untouched"
    );

    // Once the target accepts it, a second replay clears the rest.
    *target.failing.lock() = None;
    let outcome = store
        .replay(PIPELINE, target.as_ref(), &Position::from_u64(0))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        ReplayOutcome {
            replayed: 1,
            succeeded: 1,
            failed: 0
        }
    );
    assert_eq!(store.count(PIPELINE).await.unwrap(), 0);
}

async fn replay_of_an_empty_pipeline_does_nothing(store: &dyn DeadLetterStore) {
    let target = RecordingTarget::default();
    assert_eq!(
        store
            .replay(PIPELINE, &target, &Position::from_u64(0))
            .await
            .unwrap(),
        ReplayOutcome::default()
    );
    assert!(target.calls().is_empty());
}

#[tokio::test]
async fn memory_replays_every_action_and_keeps_only_failures() {
    replays_every_action_and_keeps_only_failures(&MemoryDeadLetterStore::new()).await;
}

#[tokio::test]
async fn local_replays_every_action_and_keeps_only_failures() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDeadLetterStore::new(dir.path());
    replays_every_action_and_keeps_only_failures(&store).await;
}

#[tokio::test]
async fn local_replay_removals_persist() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDeadLetterStore::new(dir.path());
    write_one_of_each(&store).await;
    let target = RecordingTarget::failing_on(row! {"id" => 1});
    store
        .replay(PIPELINE, target.as_ref(), &Position::from_u64(0))
        .await
        .unwrap();
    let reopened = LocalDeadLetterStore::new(dir.path());
    assert_eq!(
        reopened
            .read(PIPELINE, 0)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        [1]
    );
}

#[tokio::test]
async fn memory_replay_of_an_empty_pipeline_does_nothing() {
    replay_of_an_empty_pipeline_does_nothing(&MemoryDeadLetterStore::new()).await;
}

#[tokio::test]
async fn local_replay_of_an_empty_pipeline_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    replay_of_an_empty_pipeline_does_nothing(&LocalDeadLetterStore::new(dir.path())).await;
}
