//! The local snapshot store against a real temporary directory.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use laredo_core::{
    SnapshotEntry, SnapshotError, SnapshotFilter, SnapshotMetadata, SnapshotSerializer,
    SnapshotStore, TableEntries, TableSnapshotInfo, Value, row, table,
};
use laredo_snapshot_local::{LocalSnapshotStore, METADATA_FILE};

fn info(schema: &str, name: &str, rows: u64, target: &str) -> TableSnapshotInfo {
    TableSnapshotInfo {
        table: table(schema, name),
        row_count: rows,
        columns: Vec::new(),
        target_type: target.to_string(),
        indexes: Vec::new(),
    }
}

fn metadata(id: &str, created: i64, tables: &TableEntries) -> SnapshotMetadata {
    SnapshotMetadata {
        snapshot_id: id.to_string(),
        created_at_micros: created,
        source_positions: BTreeMap::from([("pg".to_string(), format!("0/{created:X}"))]),
        tables: tables.iter().map(|(i, _)| i.clone()).collect(),
        format: "jsonl".to_string(),
        user_meta: BTreeMap::from([("trigger".to_string(), Value::text("test"))]),
    }
}

fn users(n: i64) -> TableEntries {
    let rows = (1..=n)
        .map(|id| SnapshotEntry {
            row: row! {"id" => id, "name" => format!("user {id}")},
        })
        .collect::<Vec<_>>();
    vec![(
        info("public", "users", n.unsigned_abs(), "indexed-memory"),
        rows,
    )]
}

#[tokio::test]
async fn a_saved_snapshot_loads_back_with_its_metadata_and_size() {
    let dir = tempfile::tempdir().expect("dir");
    let store = LocalSnapshotStore::new(dir.path().join("snaps"));
    let tables = users(50);
    let saved = store
        .save(&metadata("snap-1", 10, &tables), &tables)
        .await
        .expect("save");
    let on_disk: u64 = std::fs::read_dir(dir.path().join("snaps/snap-1"))
        .expect("dir")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    assert_eq!(saved.size_bytes, on_disk);
    assert!(dir.path().join("snaps/snap-1/public.users.jsonl").exists());

    let described = store.describe("snap-1").await.expect("describe");
    assert_eq!(described, saved);
    let (meta, loaded) = store.load("snap-1").await.expect("load");
    assert_eq!(meta, metadata("snap-1", 10, &tables));
    assert_eq!(loaded, tables);
}

#[tokio::test]
async fn two_targets_of_one_table_keep_separate_files() {
    let dir = tempfile::tempdir().expect("dir");
    let store = LocalSnapshotStore::new(dir.path());
    let mut tables = users(2);
    tables.push((
        info("public", "users", 1, "compiled-memory"),
        vec![SnapshotEntry {
            row: row! {"id" => 9i64},
        }],
    ));
    store
        .save(&metadata("snap-2", 1, &tables), &tables)
        .await
        .expect("save");
    let (_, loaded) = store.load("snap-2").await.expect("load");
    assert_eq!(loaded, tables);
    assert!(dir.path().join("snap-2/public.users.1.jsonl").exists());
}

#[tokio::test]
async fn list_is_newest_first_filters_by_table_and_skips_partial_and_broken_directories() {
    let dir = tempfile::tempdir().expect("dir");
    let store = LocalSnapshotStore::new(dir.path());
    for (id, created) in [("a", 3), ("b", 1), ("c", 2)] {
        let tables = users(1);
        store
            .save(&metadata(id, created, &tables), &tables)
            .await
            .expect("save");
    }
    let orders = vec![(info("shop", "orders", 0, "indexed-memory"), Vec::new())];
    store
        .save(&metadata("d", 4, &orders), &orders)
        .await
        .expect("save");
    std::fs::create_dir(dir.path().join(".tmp-e")).expect("tmp");
    std::fs::create_dir(dir.path().join("broken")).expect("broken");
    std::fs::write(dir.path().join("broken").join(METADATA_FILE), b"{").expect("write");

    let ids = |list: Vec<laredo_core::SnapshotDescriptor>| {
        list.into_iter().map(|d| d.snapshot_id).collect::<Vec<_>>()
    };
    let all = store.list(&SnapshotFilter::default()).await.expect("list");
    assert_eq!(ids(all), ["d", "a", "c", "b"]);
    let only_users = store
        .list(&SnapshotFilter {
            table: Some(table("public", "users")),
        })
        .await
        .expect("list");
    assert_eq!(ids(only_users), ["a", "c", "b"]);
}

#[tokio::test]
async fn leftovers_of_a_crashed_save_or_delete_are_removed_by_the_first_operation() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let store = LocalSnapshotStore::new(dir.path());
        let tables = users(2);
        store
            .save(&metadata("kept", 1, &tables), &tables)
            .await
            .expect("save");
    }
    // What a crash leaves: a half-written save and a half-done delete.
    for leftover in [".tmp-crashed", ".del-gone"] {
        let path = dir.path().join(leftover);
        std::fs::create_dir(&path).expect("leftover");
        std::fs::write(path.join("public.users.jsonl"), b"partial").expect("write");
    }
    // A new process's store: its first operation clears them, and keeps the snapshot.
    let store = LocalSnapshotStore::new(dir.path());
    let listed = store.list(&SnapshotFilter::default()).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].snapshot_id, "kept");
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["kept"]);
}

#[tokio::test]
async fn delete_and_prune() {
    let dir = tempfile::tempdir().expect("dir");
    let store = LocalSnapshotStore::new(dir.path());
    for created in 1..=5 {
        let tables = users(1);
        let id = format!("s{created}");
        store
            .save(&metadata(&id, created, &tables), &tables)
            .await
            .expect("save");
    }
    let missing = store.delete("nope").await.expect_err("missing");
    assert!(
        missing.to_string().contains("snapshot nope not found"),
        "{missing}"
    );
    store.delete("s3").await.expect("delete");
    assert!(!dir.path().join("s3").exists());
    assert_eq!(store.prune(2, None).await.expect("prune"), 2);
    let left: Vec<_> = store
        .list(&SnapshotFilter::default())
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.snapshot_id)
        .collect();
    assert_eq!(left, ["s5", "s4"]);
    assert_eq!(
        store
            .prune(0, Some(&table("other", "t")))
            .await
            .expect("prune"),
        0
    );
}

#[tokio::test]
async fn ids_that_are_not_plain_file_names_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let store = LocalSnapshotStore::new(dir.path().join("inner"));
    std::fs::create_dir_all(dir.path().join("victim")).expect("victim");
    for id in ["", "../victim", ".tmp-x", "a/b"] {
        let error = store.delete(id).await.expect_err(id);
        assert!(
            error.to_string().contains("not a valid snapshot id"),
            "{error}"
        );
        assert!(store.describe(id).await.is_err());
    }
    assert!(dir.path().join("victim").exists());
    let tables = users(1);
    assert!(
        store
            .save(&metadata("../victim", 1, &tables), &tables)
            .await
            .is_err()
    );
}

/// A serializer that fails after writing part of a file: a real write failure (a full
/// disk) cannot be produced on demand in a test.
struct FailingSerializer;

impl SnapshotSerializer for FailingSerializer {
    fn format_id(&self) -> &str {
        "jsonl"
    }

    fn write(
        &self,
        _info: &TableSnapshotInfo,
        _entries: &[SnapshotEntry],
        writer: &mut dyn Write,
    ) -> Result<(), SnapshotError> {
        writer
            .write_all(b"partial")
            .map_err(|e| SnapshotError::with_source("write", e))?;
        Err(SnapshotError::new("disk full"))
    }

    fn read(
        &self,
        _reader: &mut dyn Read,
    ) -> Result<(TableSnapshotInfo, Vec<SnapshotEntry>), SnapshotError> {
        Err(SnapshotError::new("unused"))
    }
}

#[tokio::test]
async fn a_failed_save_leaves_nothing_behind_and_an_existing_id_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let failing = LocalSnapshotStore::with_serializer(dir.path(), Arc::new(FailingSerializer));
    let tables = users(3);
    let error = failing
        .save(&metadata("x", 1, &tables), &tables)
        .await
        .expect_err("fails");
    assert!(error.to_string().contains("disk full"), "{error}");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);

    let store = LocalSnapshotStore::new(dir.path());
    store
        .save(&metadata("x", 1, &tables), &tables)
        .await
        .expect("save");
    let again = store
        .save(&metadata("x", 2, &tables), &tables)
        .await
        .expect_err("exists");
    assert!(again.to_string().contains("already exists"), "{again}");
    assert_eq!(store.load("x").await.expect("load").0.created_at_micros, 1);
}
