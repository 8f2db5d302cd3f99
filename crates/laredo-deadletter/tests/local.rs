//! What only the local store does: files, permissions, persistence, corrupt lines.

use std::fs;
use std::io::Write;
use std::sync::Arc;

use laredo_core::DeadLetterStore;
use laredo_deadletter::LocalDeadLetterStore;

use crate::support::{PIPELINE, insert_entry, with_id};

fn ids(entries: &[laredo_core::DeadLetterEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.id).collect()
}

fn append_raw(path: &std::path::Path, bytes: &[u8]) {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[tokio::test]
async fn creates_missing_directories_and_one_file_per_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("a").join("b");
    let store = LocalDeadLetterStore::new(&base);
    assert!(!base.exists(), "nothing is created before the first write");
    store.write(insert_entry(PIPELINE, 1)).await.unwrap();

    let path = store.path_for(PIPELINE);
    assert_eq!(path.parent(), Some(base.as_path()));
    let file_name = path.file_name().unwrap().to_str().unwrap();
    assert!(
        file_name.starts_with("main_public.users_indexed-memory-"),
        "{file_name}"
    );
    assert!(file_name.ends_with(".jsonl"), "{file_name}");
    let listed: Vec<_> = fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(listed, [path]);
}

#[tokio::test]
async fn writes_one_json_entry_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDeadLetterStore::new(dir.path());
    let first = insert_entry(PIPELINE, 1);
    let second = insert_entry(PIPELINE, 2);
    store.write(first.clone()).await.unwrap();
    store.write(second.clone()).await.unwrap();

    let text = fs::read_to_string(store.path_for(PIPELINE)).unwrap();
    let lines: Vec<laredo_core::DeadLetterEntry> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, [with_id(first, 1), with_id(second, 2)]);
    assert!(text.ends_with('\n'));
}

#[cfg(unix)]
#[tokio::test]
async fn files_are_private_also_after_a_rewrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDeadLetterStore::new(dir.path());
    store.write(insert_entry(PIPELINE, 1)).await.unwrap();
    store.write(insert_entry(PIPELINE, 2)).await.unwrap();
    let mode = || {
        fs::metadata(store.path_for(PIPELINE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(), 0o600);
    store.remove(PIPELINE, &[1]).await.unwrap();
    assert_eq!(mode(), 0o600);
}

#[tokio::test]
async fn entries_survive_reopening_and_ids_continue() {
    let dir = tempfile::tempdir().unwrap();
    let written = {
        let store = LocalDeadLetterStore::new(dir.path());
        for id in 1..=3 {
            store.write(insert_entry(PIPELINE, id)).await.unwrap();
        }
        store.read(PIPELINE, 0).await.unwrap()
    };
    let reopened = LocalDeadLetterStore::new(dir.path());
    assert_eq!(reopened.read(PIPELINE, 0).await.unwrap(), written);
    assert_eq!(reopened.count(PIPELINE).await.unwrap(), 3);
    assert_eq!(reopened.write(insert_entry(PIPELINE, 4)).await.unwrap(), 4);
}

#[tokio::test]
async fn ids_continue_after_reopening_even_before_any_count() {
    let dir = tempfile::tempdir().unwrap();
    LocalDeadLetterStore::new(dir.path())
        .write(insert_entry(PIPELINE, 1))
        .await
        .unwrap();
    let reopened = LocalDeadLetterStore::new(dir.path());
    assert_eq!(reopened.write(insert_entry(PIPELINE, 2)).await.unwrap(), 2);
}

#[tokio::test]
async fn corrupt_lines_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDeadLetterStore::new(dir.path());
    store.write(insert_entry(PIPELINE, 1)).await.unwrap();
    let path = store.path_for(PIPELINE);
    append_raw(&path, b"{not json}\n\n\xff\xfe\n{\"id\": 7}\n");
    store.write(insert_entry(PIPELINE, 2)).await.unwrap();

    let reopened = LocalDeadLetterStore::new(dir.path());
    assert_eq!(ids(&reopened.read(PIPELINE, 0).await.unwrap()), [1, 2]);
    assert_eq!(reopened.count(PIPELINE).await.unwrap(), 2);
    assert_eq!(reopened.write(insert_entry(PIPELINE, 3)).await.unwrap(), 3);
}

#[tokio::test]
async fn a_torn_last_line_does_not_swallow_the_next_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDeadLetterStore::new(dir.path());
    store.write(insert_entry(PIPELINE, 1)).await.unwrap();
    append_raw(&store.path_for(PIPELINE), b"{\"id\": 2, \"pipeline_");
    store.write(insert_entry(PIPELINE, 2)).await.unwrap();
    assert_eq!(ids(&store.read(PIPELINE, 0).await.unwrap()), [1, 2]);
}

#[tokio::test]
async fn remove_keeps_corrupt_lines_for_inspection() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDeadLetterStore::new(dir.path());
    store.write(insert_entry(PIPELINE, 1)).await.unwrap();
    append_raw(&store.path_for(PIPELINE), b"garbage\n");
    store.write(insert_entry(PIPELINE, 2)).await.unwrap();
    store.remove(PIPELINE, &[1]).await.unwrap();

    let text = fs::read_to_string(store.path_for(PIPELINE)).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.starts_with("garbage\n"), "{text}");
    assert_eq!(ids(&store.read(PIPELINE, 0).await.unwrap()), [2]);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary file left behind: {leftovers:?}"
    );
}

#[tokio::test]
async fn purge_deletes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDeadLetterStore::new(dir.path());
    store.write(insert_entry(PIPELINE, 1)).await.unwrap();
    assert!(store.path_for(PIPELINE).exists());
    store.purge(PIPELINE).await.unwrap();
    assert!(!store.path_for(PIPELINE).exists());
    store.purge(PIPELINE).await.unwrap();
}

#[tokio::test]
async fn removing_every_entry_deletes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDeadLetterStore::new(dir.path());
    store.write(insert_entry(PIPELINE, 1)).await.unwrap();
    store.remove(PIPELINE, &[1]).await.unwrap();
    assert!(!store.path_for(PIPELINE).exists());
}

#[tokio::test]
async fn ids_that_sanitise_alike_do_not_share_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDeadLetterStore::new(dir.path());
    store.write(insert_entry("a:b", 1)).await.unwrap();
    store.write(insert_entry("a_b", 2)).await.unwrap();
    assert_ne!(store.path_for("a:b"), store.path_for("a_b"));
    assert_eq!(
        store.read("a:b", 0).await.unwrap()[0].error,
        "insert 1 failed"
    );
    assert_eq!(
        store.read("a_b", 0).await.unwrap()[0].error,
        "insert 2 failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_get_distinct_ids_and_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDeadLetterStore::new(dir.path()));
    let mut tasks = tokio::task::JoinSet::new();
    for id in 1..=64 {
        let store = Arc::clone(&store);
        tasks.spawn(async move { store.write(insert_entry(PIPELINE, id)).await.unwrap() });
    }
    let mut assigned = Vec::new();
    while let Some(id) = tasks.join_next().await {
        assigned.push(id.unwrap());
    }
    assigned.sort_unstable();
    assert_eq!(assigned, (1..=64).collect::<Vec<u64>>());

    let read = LocalDeadLetterStore::new(dir.path())
        .read(PIPELINE, 0)
        .await
        .unwrap();
    assert_eq!(
        ids(&read),
        (1..=64).collect::<Vec<u64>>(),
        "ids in file order"
    );
}

#[tokio::test]
async fn a_base_path_that_is_a_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("file");
    fs::write(&base, b"").unwrap();
    let store = LocalDeadLetterStore::new(&base);
    let err = store.write(insert_entry(PIPELINE, 1)).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(base.to_str().unwrap()),
        "names the file: {message}"
    );
    assert!(err.cause().is_some(), "keeps the I/O error as its cause");
}
