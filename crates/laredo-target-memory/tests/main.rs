//! IndexedTarget and CompiledTarget driven through the SyncTarget methods.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use laredo_core::{
    ColumnDefinition, IndexDefinition, Row, RowLayout, SchemaChangeAction, SyncTarget,
    TableIdentifier, TableSnapshotInfo, Value, row, table,
};
use laredo_target_memory::{CompiledTarget, IndexError, IndexedTarget};
use parking_lot::Mutex;

fn t() -> TableIdentifier {
    table("public", "users")
}

fn columns() -> Vec<ColumnDefinition> {
    vec![
        ColumnDefinition::new("id", "int8").primary_key(1),
        ColumnDefinition::new("email", "text"),
        ColumnDefinition::new("team", "text"),
    ]
}

fn user(id: i64, email: &str, team: &str) -> Row {
    row! {"id" => id, "email" => email, "team" => team}
}

async fn target() -> Arc<IndexedTarget> {
    let target = IndexedTarget::builder()
        .lookup_fields(["email"])
        .index(IndexDefinition::new("by_team", ["team"], false))
        .index(IndexDefinition::new("by_team_unique", ["team"], true))
        .build();
    target.on_init(&t(), &columns()).await.unwrap();
    target
}

type Seen = Arc<Mutex<Vec<(Option<i64>, Option<i64>)>>>;

fn record(target: &IndexedTarget) -> (Seen, laredo_target_memory::ListenerHandle) {
    let seen: Seen = Arc::default();
    let handle = target.listen({
        let seen = Arc::clone(&seen);
        move |old, new| {
            seen.lock().push((
                old.and_then(|r| r.get_i64("id")),
                new.and_then(|r| r.get_i64("id")),
            ))
        }
    });
    (seen, handle)
}

#[tokio::test]
async fn upsert_update_delete_truncate_and_notifications() {
    let target = target().await;
    let (seen, handle) = record(&target);
    target
        .on_insert(&t(), &user(1, "a@x", "red"))
        .await
        .unwrap();
    target
        .on_insert(&t(), &user(1, "a2@x", "red"))
        .await
        .unwrap(); // upsert by primary key
    assert_eq!(target.count(), 1);
    assert_eq!(target.lookup("a@x"), None, "the old lookup key is gone");
    assert_eq!(target.lookup("a2@x"), Some(user(1, "a2@x", "red")));

    // A key-changing update: identity 1, new row 2.
    target
        .on_update(&t(), &user(2, "b@x", "blue"), Some(&row! {"id" => 1}))
        .await
        .unwrap();
    assert_eq!(target.get(1), None);
    assert_eq!(target.get(2), Some(user(2, "b@x", "blue")));
    target.on_delete(&t(), &row! {"id" => 99}).await.unwrap(); // missing: no notification
    target.on_delete(&t(), &row! {"id" => 2}).await.unwrap();
    target
        .on_insert(&t(), &user(3, "c@x", "red"))
        .await
        .unwrap();
    target.on_truncate(&t()).await.unwrap();
    assert_eq!(target.count(), 0);
    assert_eq!(
        *seen.lock(),
        vec![
            (None, Some(1)),
            (Some(1), Some(1)),
            (Some(1), Some(2)),
            (Some(2), None),
            (None, Some(3)),
            (None, None)
        ]
    );
    handle.unsubscribe();
    target
        .on_insert(&t(), &user(4, "d@x", "red"))
        .await
        .unwrap();
    assert_eq!(
        seen.lock().len(),
        6,
        "unsubscribed listeners are not called"
    );
}

#[tokio::test]
async fn secondary_indexes() {
    let target = target().await;
    for (id, team) in [(1, "red"), (2, "red"), (3, "blue")] {
        target
            .on_insert(&t(), &user(id, &format!("{id}@x"), team))
            .await
            .unwrap();
    }
    let mut red: Vec<i64> = target
        .lookup_all("by_team", "red")
        .unwrap()
        .iter()
        .filter_map(|r| r.get_i64("id"))
        .collect();
    red.sort_unstable();
    assert_eq!(red, vec![1, 2]);
    // Unique index: last write wins.
    assert_eq!(
        target.lookup_all("by_team_unique", "red").unwrap(),
        vec![user(2, "2@x", "red")]
    );
    target
        .on_update(&t(), &user(2, "2@x", "blue"), None)
        .await
        .unwrap();
    assert_eq!(
        target.lookup_all("by_team", "red").unwrap(),
        vec![user(1, "1@x", "red")]
    );
    assert_eq!(target.lookup_all("by_team", "blue").unwrap().len(), 2);
    assert_eq!(
        target.lookup_all("(primary)", "1@x").unwrap(),
        vec![user(1, "1@x", "red")]
    );
    assert_eq!(
        target.lookup_all("nope", "x"),
        Err(IndexError::UnknownIndex("nope".to_string()))
    );
    assert!(matches!(
        target.lookup_all("by_team", ("a", "b")),
        Err(IndexError::KeyArity {
            expected: 1,
            got: 2,
            ..
        })
    ));
    let infos = target.indexes();
    assert_eq!(infos[0].name, "(primary)");
    assert_eq!(infos[0].entry_count, 3);
    assert_eq!(infos[1].entry_count, 3);
}

#[tokio::test]
async fn numeric_keys_normalise() {
    let target = IndexedTarget::builder().build();
    target.on_init(&t(), &columns()).await.unwrap();
    target.on_insert(&t(), &user(7, "a", "b")).await.unwrap();
    assert!(target.lookup(7).is_some());
    assert!(target.lookup(Value::Float64(7.0)).is_some());
    assert!(target.lookup(Value::numeric("7.00")).is_some());
    assert!(target.lookup("7").is_none());
    assert_eq!(target.lookup_fields(), vec!["id".to_string()]);
}

#[tokio::test]
async fn init_checks_fields() {
    let bad = IndexedTarget::builder().lookup_fields(["mail"]).build();
    assert_eq!(
        bad.on_init(&t(), &columns()).await.unwrap_err().to_string(),
        "lookup field mail not found in columns"
    );
    let bad = IndexedTarget::builder()
        .index(IndexDefinition::new("x", ["nope"], false))
        .build();
    assert_eq!(
        bad.on_init(&t(), &columns()).await.unwrap_err().to_string(),
        "index x field nope not found in columns"
    );
    let keyless = IndexedTarget::builder().build();
    let err = keyless
        .on_init(&t(), &[ColumnDefinition::new("a", "text")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no primary key"), "{err}");
}

#[tokio::test]
async fn listeners_may_read_the_target() {
    let target = target().await;
    let ok = Arc::new(AtomicBool::new(false));
    let _handle = target.listen({
        let (target, ok) = (Arc::clone(&target), Arc::clone(&ok));
        move |_, new| {
            if let Some(new) = new {
                ok.store(
                    target.get(new.get_i64("id").unwrap()).as_ref() == Some(new),
                    Ordering::SeqCst,
                );
            }
        }
    });
    target.on_insert(&t(), &user(1, "a", "b")).await.unwrap();
    assert!(
        ok.load(Ordering::SeqCst),
        "the change is visible to the listener"
    );
}

#[tokio::test]
async fn rows_with_other_layouts_keep_their_columns() {
    let target = target().await;
    target
        .on_insert(&t(), &row! {"id" => 1, "email" => "a"})
        .await
        .unwrap();
    target
        .on_insert(
            &t(),
            &row! {"team" => "x", "id" => 2, "email" => "b", "extra" => true},
        )
        .await
        .unwrap();
    assert_eq!(target.get(1), Some(row! {"id" => 1, "email" => "a"}));
    assert_eq!(
        target.get(2),
        Some(row! {"id" => 2, "email" => "b", "team" => "x", "extra" => true})
    );
}

#[tokio::test]
async fn schema_changes() {
    let target = target().await;
    let mut added = columns();
    added.push(ColumnDefinition::new("age", "int4"));
    assert_eq!(
        target
            .on_schema_change(&t(), &columns(), &added)
            .await
            .action,
        SchemaChangeAction::Continue
    );
    // Dropping the non-indexed column again.
    assert_eq!(
        target
            .on_schema_change(&t(), &added, &columns())
            .await
            .action,
        SchemaChangeAction::Continue
    );
    let dropped_indexed: Vec<ColumnDefinition> =
        columns().into_iter().filter(|c| c.name != "team").collect();
    assert_eq!(
        target
            .on_schema_change(&t(), &columns(), &dropped_indexed)
            .await
            .action,
        SchemaChangeAction::ReBaseline
    );
    let mut retyped = columns();
    retyped[1].type_name = "int8".to_string();
    assert_eq!(
        target
            .on_schema_change(&t(), &columns(), &retyped)
            .await
            .action,
        SchemaChangeAction::ReBaseline
    );
}

#[tokio::test]
async fn snapshot_round_trip() {
    let target = target().await;
    for id in 0..50 {
        target
            .on_insert(&t(), &user(id, &format!("{id}@x"), "t"))
            .await
            .unwrap();
    }
    let entries = target.export_snapshot().await.unwrap();
    let copy = IndexedTarget::builder().lookup_fields(["email"]).build();
    copy.on_init(&t(), &columns()).await.unwrap();
    copy.on_insert(&t(), &user(999, "stale", "t"))
        .await
        .unwrap();
    let info = TableSnapshotInfo {
        table: t(),
        row_count: 50,
        columns: columns(),
        target_type: "indexed-memory".to_string(),
        indexes: Vec::new(),
    };
    copy.restore_snapshot(&info, entries).await.unwrap();
    let mut a = target.all();
    let mut b = copy.all();
    a.sort_by_key(|r| r.get_i64("id"));
    b.sort_by_key(|r| r.get_i64("id"));
    assert_eq!(a, b);
    assert_eq!(copy.lookup("7@x"), Some(user(7, "7@x", "t")));
}

#[test]
fn concurrent_readers_see_consistent_rows() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let target = runtime.block_on(target());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (target, done) = (Arc::clone(&target), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut checks = 0u64;
                while !done.load(Ordering::SeqCst) {
                    for team in ["t0", "t1", "t2"] {
                        for row in target.lookup_all("by_team", team).unwrap() {
                            assert_eq!(row.get_str("team"), Some(team), "index and row agree");
                            let by_id = target.get(row.get_i64("id").unwrap());
                            if let Some(by_id) = by_id {
                                assert!(by_id.get_str("email").is_some());
                            }
                            checks += 1;
                        }
                    }
                }
                checks
            })
        })
        .collect();
    runtime.block_on(async {
        for n in 0..100_000i64 {
            let id = n % 500;
            let team = format!("t{}", n % 3);
            if n % 7 == 0 {
                target.on_delete(&t(), &row! {"id" => id}).await.unwrap();
            } else {
                target
                    .on_insert(&t(), &user(id, &format!("{id}@x"), &team))
                    .await
                    .unwrap();
            }
        }
    });
    done.store(true, Ordering::SeqCst);
    let checks: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(checks > 0);
    let expected: usize = target.indexes()[1].entry_count;
    assert_eq!(
        expected,
        target.count(),
        "non-unique index holds one entry per row"
    );
}

#[tokio::test]
async fn memory_per_row_stays_close_to_raw_size() {
    let target = IndexedTarget::builder()
        .lookup_fields(["id"])
        .index(IndexDefinition::new("by_account", ["account_id"], false))
        .build();
    let cols = vec![
        ColumnDefinition::new("id", "int8").primary_key(1),
        ColumnDefinition::new("account_id", "int8"),
        ColumnDefinition::new("email", "text"),
        ColumnDefinition::new("name", "text"),
        ColumnDefinition::new("status", "text"),
        ColumnDefinition::new("score", "float8"),
        ColumnDefinition::new("login_count", "int8"),
        ColumnDefinition::new("active", "bool"),
        ColumnDefinition::new("created_at", "timestamptz"),
        ColumnDefinition::new("updated_at", "timestamptz"),
    ];
    target.on_init(&t(), &cols).await.unwrap();
    let layout = RowLayout::from_columns(&cols);
    let rows = 200_000i64;
    let mut raw = 0usize;
    let batch: Vec<Row> = (0..rows)
        .map(|id| {
            let row = Row::new(
                Arc::clone(&layout),
                vec![
                    Value::Int64(id),
                    Value::Int64(id % 1000),
                    Value::text(format!("user{id:08}@example.com")),
                    Value::text(format!("Name {id:011}")),
                    Value::text("active!"),
                    Value::Float64(id as f64 / 3.0),
                    Value::Int64(id % 5000),
                    Value::Bool(id % 2 == 0),
                    Value::TimestampTz(1_700_000_000_000_000 + id),
                    Value::TimestampTz(1_700_000_100_000_000 + id),
                ],
            );
            raw += row.raw_size();
            row
        })
        .collect();
    target.on_baseline_rows(&t(), &batch).await.unwrap();
    let ratio = target.heap_size() as f64 / raw as f64;
    assert!(
        ratio <= 1.5,
        "held {} bytes for {raw} raw bytes: ratio {ratio:.2}",
        target.heap_size()
    );
    assert_eq!(target.lookup_all("by_account", 7).unwrap().len(), 200);
}

#[tokio::test]
async fn compiled_target_semantics() {
    #[derive(Debug, PartialEq)]
    struct User {
        id: i64,
        email: String,
    }
    let target = CompiledTarget::builder(|row: &Row| -> Result<User, String> {
        Ok(User {
            id: row.get_i64("id").ok_or("no id")?,
            email: row.get_string("email").ok_or("no email")?,
        })
    })
    .key_fields(["id"])
    .filter(|row| row.get_str("team") != Some("hidden"))
    .build();
    assert_eq!(
        target
            .on_init(&t(), &[ColumnDefinition::new("x", "text")])
            .await
            .unwrap_err()
            .to_string(),
        "key field id not found in columns"
    );
    target.on_init(&t(), &columns()).await.unwrap();
    let seen: Seen = Arc::default();
    let _handle = target.listen({
        let seen = Arc::clone(&seen);
        move |old, new| seen.lock().push((old.map(|u| u.id), new.map(|u| u.id)))
    });
    target.on_insert(&t(), &user(1, "a", "red")).await.unwrap();
    target
        .on_insert(&t(), &user(2, "b", "hidden"))
        .await
        .unwrap(); // filtered
    target
        .on_insert(
            &t(),
            &row! {"email" => "no id", "team" => "red", "id" => Value::Null},
        )
        .await
        .unwrap(); // compile error: skipped
    assert_eq!(target.count(), 1);
    assert_eq!(target.get(1).unwrap().email, "a");
    // An update leaving the filter removes the object.
    target
        .on_update(&t(), &user(1, "a", "hidden"), None)
        .await
        .unwrap();
    assert_eq!(target.count(), 0);
    target.on_insert(&t(), &user(3, "c", "red")).await.unwrap();
    target
        .on_update(&t(), &user(4, "c", "red"), Some(&row! {"id" => 3}))
        .await
        .unwrap(); // re-key
    assert!(target.get(3).is_none());
    target.on_delete(&t(), &row! {"id" => 4}).await.unwrap();
    assert_eq!(
        *seen.lock(),
        vec![
            (None, Some(1)),
            (Some(1), None),
            (None, Some(3)),
            (Some(3), Some(4)),
            (Some(4), None)
        ]
    );
    assert_eq!(
        target.on_schema_change(&t(), &[], &[]).await.action,
        SchemaChangeAction::ReBaseline
    );
}
