//! The `DeadLetterStore` contract, run against both stores.

use laredo_core::DeadLetterStore;
use laredo_deadletter::{LocalDeadLetterStore, MemoryDeadLetterStore};

use crate::support::{OTHER_PIPELINE, PIPELINE, insert_entry, with_id};

/// Runs `check` against a fresh memory store and a fresh local store.
macro_rules! both_stores {
    ($($name:ident => $check:path;)*) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    $check(&laredo_deadletter::MemoryDeadLetterStore::new()).await;
                }
            )*
        }
        mod local {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    $check(&laredo_deadletter::LocalDeadLetterStore::new(dir.path().join("dlq"))).await;
                }
            )*
        }
    };
}

both_stores! {
    write_assigns_increasing_ids_per_pipeline => super::write_assigns_increasing_ids_per_pipeline;
    read_returns_entries_oldest_first => super::read_returns_entries_oldest_first;
    read_limit_zero_is_all_and_limit_caps => super::read_limit_zero_is_all_and_limit_caps;
    unknown_pipeline_is_empty => super::unknown_pipeline_is_empty;
    count_follows_writes_and_removes => super::count_follows_writes_and_removes;
    remove_drops_only_the_given_ids => super::remove_drops_only_the_given_ids;
    purge_empties_one_pipeline => super::purge_empties_one_pipeline;
    ids_keep_increasing_after_purge => super::ids_keep_increasing_after_purge;
}

// Both stores must be usable as the engine's trait object.
const _: fn(MemoryDeadLetterStore, LocalDeadLetterStore) -> [Box<dyn DeadLetterStore>; 2] =
    |m, l| [Box::new(m), Box::new(l)];

async fn write_assigns_increasing_ids_per_pipeline(store: &dyn DeadLetterStore) {
    assert_eq!(store.write(insert_entry(PIPELINE, 10)).await.unwrap(), 1);
    assert_eq!(store.write(insert_entry(PIPELINE, 11)).await.unwrap(), 2);
    assert_eq!(
        store.write(insert_entry(OTHER_PIPELINE, 12)).await.unwrap(),
        1
    );
    assert_eq!(store.write(insert_entry(PIPELINE, 13)).await.unwrap(), 3);
}

async fn read_returns_entries_oldest_first(store: &dyn DeadLetterStore) {
    for id in [3, 1, 2] {
        store.write(insert_entry(PIPELINE, id)).await.unwrap();
    }
    store.write(insert_entry(OTHER_PIPELINE, 9)).await.unwrap();
    let expected = vec![
        with_id(insert_entry(PIPELINE, 3), 1),
        with_id(insert_entry(PIPELINE, 1), 2),
        with_id(insert_entry(PIPELINE, 2), 3),
    ];
    let mut read = store.read(PIPELINE, 0).await.unwrap();
    // Timestamps are taken at construction; align them to compare whole entries.
    for (got, want) in read.iter_mut().zip(&expected) {
        got.timestamp_micros = want.timestamp_micros;
    }
    assert_eq!(read, expected);
}

async fn read_limit_zero_is_all_and_limit_caps(store: &dyn DeadLetterStore) {
    for id in 1..=5 {
        store.write(insert_entry(PIPELINE, id)).await.unwrap();
    }
    let ids = |entries: Vec<laredo_core::DeadLetterEntry>| {
        entries.iter().map(|e| e.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(store.read(PIPELINE, 0).await.unwrap()), [1, 2, 3, 4, 5]);
    assert_eq!(ids(store.read(PIPELINE, 2).await.unwrap()), [1, 2]);
    assert_eq!(ids(store.read(PIPELINE, 5).await.unwrap()), [1, 2, 3, 4, 5]);
    assert_eq!(
        ids(store.read(PIPELINE, 50).await.unwrap()),
        [1, 2, 3, 4, 5]
    );
}

async fn unknown_pipeline_is_empty(store: &dyn DeadLetterStore) {
    store.write(insert_entry(PIPELINE, 1)).await.unwrap();
    assert!(store.read("nope", 0).await.unwrap().is_empty());
    assert_eq!(store.count("nope").await.unwrap(), 0);
    store.remove("nope", &[1]).await.unwrap();
    store.purge("nope").await.unwrap();
    assert_eq!(store.count(PIPELINE).await.unwrap(), 1);
}

async fn count_follows_writes_and_removes(store: &dyn DeadLetterStore) {
    assert_eq!(store.count(PIPELINE).await.unwrap(), 0);
    for id in 1..=3 {
        store.write(insert_entry(PIPELINE, id)).await.unwrap();
    }
    store.write(insert_entry(OTHER_PIPELINE, 1)).await.unwrap();
    assert_eq!(store.count(PIPELINE).await.unwrap(), 3);
    store.remove(PIPELINE, &[2, 99]).await.unwrap();
    assert_eq!(store.count(PIPELINE).await.unwrap(), 2);
    assert_eq!(store.count(OTHER_PIPELINE).await.unwrap(), 1);
}

async fn remove_drops_only_the_given_ids(store: &dyn DeadLetterStore) {
    for id in 1..=4 {
        store.write(insert_entry(PIPELINE, id)).await.unwrap();
    }
    store.write(insert_entry(OTHER_PIPELINE, 1)).await.unwrap();
    store.remove(PIPELINE, &[1, 3]).await.unwrap();
    store.remove(PIPELINE, &[]).await.unwrap();
    let left: Vec<(u64, String)> = store
        .read(PIPELINE, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.id, e.error))
        .collect();
    assert_eq!(
        left,
        [
            (2, "insert 2 failed".to_string()),
            (4, "insert 4 failed".to_string())
        ]
    );
    assert_eq!(
        store.count(OTHER_PIPELINE).await.unwrap(),
        1,
        "other pipelines untouched"
    );

    store.remove(PIPELINE, &[2, 4]).await.unwrap();
    assert!(store.read(PIPELINE, 0).await.unwrap().is_empty());
    assert_eq!(store.count(PIPELINE).await.unwrap(), 0);
}

async fn purge_empties_one_pipeline(store: &dyn DeadLetterStore) {
    for id in 1..=3 {
        store.write(insert_entry(PIPELINE, id)).await.unwrap();
    }
    store.write(insert_entry(OTHER_PIPELINE, 1)).await.unwrap();
    store.purge(PIPELINE).await.unwrap();
    assert!(store.read(PIPELINE, 0).await.unwrap().is_empty());
    assert_eq!(store.count(PIPELINE).await.unwrap(), 0);
    assert_eq!(store.count(OTHER_PIPELINE).await.unwrap(), 1);
    store.purge(PIPELINE).await.unwrap();
}

async fn ids_keep_increasing_after_purge(store: &dyn DeadLetterStore) {
    store.write(insert_entry(PIPELINE, 1)).await.unwrap();
    store.write(insert_entry(PIPELINE, 2)).await.unwrap();
    store.purge(PIPELINE).await.unwrap();
    assert_eq!(store.write(insert_entry(PIPELINE, 3)).await.unwrap(), 3);
    assert_eq!(
        store
            .read(PIPELINE, 0)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        [3]
    );
}
