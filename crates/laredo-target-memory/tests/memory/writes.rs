//! Inserts, updates, deletes and truncates: the stored rows and what listeners hear.

use laredo_core::{ColumnDefinition, IndexDefinition, Row, SyncTarget, Value, row};
use laredo_target_memory::IndexedTarget;
use laredo_test_support::OneChange;

use super::support::*;

#[tokio::test]
async fn an_insert_of_an_existing_key_replaces_the_row() {
    let target = target().await;
    let (events, _handle) = record(&target);
    target
        .on_insert(&t(), &user(1, "a@x", "red"))
        .await
        .unwrap();
    target
        .on_insert(&t(), &user(1, "b@x", "blue"))
        .await
        .unwrap();

    assert_eq!(target.all(), vec![user(1, "b@x", "blue")]);
    assert_eq!(target.lookup("a@x"), None, "the old lookup key is gone");
    assert_eq!(target.lookup("b@x"), Some(user(1, "b@x", "blue")));
    assert_eq!(target.lookup_all("by_team", "red").unwrap(), vec![]);
    assert_eq!(
        *events.lock(),
        vec![
            (None, Some(user(1, "a@x", "red"))),
            (Some(user(1, "a@x", "red")), Some(user(1, "b@x", "blue"))),
        ]
    );
}

#[tokio::test]
async fn a_baseline_batch_upserts_every_row_in_order() {
    let target = target().await;
    let (events, _handle) = record(&target);
    let batch = [
        user(1, "a@x", "red"),
        user(2, "b@x", "red"),
        user(1, "c@x", "blue"),
    ];
    target.on_baseline(&t(), &batch).await.unwrap();
    target.on_baseline_complete(&t(), None).await.unwrap();

    assert_eq!(
        by_id(target.all()),
        vec![user(1, "c@x", "blue"), user(2, "b@x", "red")]
    );
    assert_eq!(
        *events.lock(),
        vec![
            (None, Some(user(1, "a@x", "red"))),
            (None, Some(user(2, "b@x", "red"))),
            (Some(user(1, "a@x", "red")), Some(user(1, "c@x", "blue"))),
        ]
    );
}

#[tokio::test]
async fn an_update_without_identity_replaces_the_row_with_the_new_rows_key() {
    let target = target().await;
    target
        .on_insert(&t(), &user(1, "a@x", "red"))
        .await
        .unwrap();
    let (events, _handle) = record(&target);
    target
        .on_update(&t(), &user(1, "a@x", "blue"), None)
        .await
        .unwrap();

    assert_eq!(target.get(1), Some(user(1, "a@x", "blue")));
    assert_eq!(
        *events.lock(),
        vec![(Some(user(1, "a@x", "red")), Some(user(1, "a@x", "blue")))]
    );
}

#[tokio::test]
async fn an_update_that_changes_the_key_moves_the_row() {
    let target = target().await;
    target
        .on_insert(&t(), &user(1, "a@x", "red"))
        .await
        .unwrap();
    let (events, _handle) = record(&target);
    target
        .on_update(&t(), &user(2, "b@x", "blue"), Some(&row! {"id" => 1}))
        .await
        .unwrap();

    assert_eq!(target.get(1), None);
    assert_eq!(target.get(2), Some(user(2, "b@x", "blue")));
    assert_eq!(target.lookup("a@x"), None);
    assert_eq!(target.lookup("b@x"), Some(user(2, "b@x", "blue")));
    assert_eq!(target.lookup_all("by_team", "red").unwrap(), vec![]);
    assert_eq!(target.count(), 1);
    assert_eq!(
        *events.lock(),
        vec![(Some(user(1, "a@x", "red")), Some(user(2, "b@x", "blue")))]
    );
}

#[tokio::test]
async fn an_update_moving_onto_a_held_key_reports_the_displaced_row_deleted() {
    let target = target().await;
    target
        .on_insert(&t(), &user(1, "a@x", "red"))
        .await
        .unwrap();
    target
        .on_insert(&t(), &user(2, "b@x", "red"))
        .await
        .unwrap();
    let (events, _handle) = record(&target);
    target
        .on_update(&t(), &user(2, "c@x", "blue"), Some(&user(1, "a@x", "red")))
        .await
        .unwrap();

    assert_eq!(target.all(), vec![user(2, "c@x", "blue")]);
    assert_eq!(target.lookup("b@x"), None);
    assert_eq!(
        *events.lock(),
        vec![
            (Some(user(2, "b@x", "red")), None),
            (Some(user(1, "a@x", "red")), Some(user(2, "c@x", "blue"))),
        ]
    );
}

#[tokio::test]
async fn an_update_of_a_missing_row_inserts_it() {
    let target = target().await;
    let (events, _handle) = record(&target);
    target
        .on_update(&t(), &user(3, "c@x", "red"), Some(&row! {"id" => 3}))
        .await
        .unwrap();

    assert_eq!(target.get(3), Some(user(3, "c@x", "red")));
    assert_eq!(*events.lock(), vec![(None, Some(user(3, "c@x", "red")))]);
}

#[tokio::test]
async fn a_delete_notifies_only_when_the_row_existed() {
    let target = target().await;
    target
        .on_insert(&t(), &user(1, "a@x", "red"))
        .await
        .unwrap();
    let (events, _handle) = record(&target);
    target.on_delete(&t(), &row! {"id" => 99}).await.unwrap();
    target.on_delete(&t(), &row! {"id" => 1}).await.unwrap();
    target.on_delete(&t(), &row! {"id" => 1}).await.unwrap();

    assert_eq!(target.count(), 0);
    assert_eq!(target.lookup("a@x"), None);
    assert_eq!(target.lookup_all("by_team", "red").unwrap(), vec![]);
    assert_eq!(*events.lock(), vec![(Some(user(1, "a@x", "red")), None)]);
}

#[tokio::test]
async fn a_truncate_clears_rows_and_indexes() {
    let target = target().await;
    for id in 0..10 {
        target
            .on_insert(&t(), &user(id, &format!("{id}@x"), "red"))
            .await
            .unwrap();
    }
    let (events, _handle) = record(&target);
    target.on_truncate(&t()).await.unwrap();

    assert_eq!((target.count(), target.all()), (0, vec![]));
    assert_eq!(target.lookup_all("by_team", "red").unwrap(), vec![]);
    let counts: Vec<usize> = target.indexes().iter().map(|i| i.entry_count).collect();
    assert_eq!(counts, vec![0, 0, 0]);
    assert_eq!(*events.lock(), vec![(None, None)]);

    target
        .on_insert(&t(), &user(4, "d@x", "red"))
        .await
        .unwrap();
    assert_eq!(
        target.lookup_all("by_team", "red").unwrap(),
        vec![user(4, "d@x", "red")]
    );
}

#[tokio::test]
async fn writes_before_on_init_fail() {
    let target = IndexedTarget::builder().build();
    let err = target
        .on_insert(&t(), &user(1, "a@x", "red"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "indexed-memory target is not initialised: on_init was not called"
    );
    assert!(target.on_delete(&t(), &row! {"id" => 1}).await.is_err());
    assert!(
        target
            .on_update(&t(), &user(1, "a", "b"), None)
            .await
            .is_err()
    );
    assert_eq!(target.count(), 0);
}

#[tokio::test]
async fn keys_with_the_wrong_number_of_values_find_nothing() {
    let target = target().await;
    target
        .on_insert(&t(), &user(1, "a@x", "red"))
        .await
        .unwrap();
    assert_eq!(target.get(1), Some(user(1, "a@x", "red")));
    assert_eq!(target.get((1, "a@x")), None);
    assert_eq!(target.lookup(("a@x", 1)), None);
    assert_eq!(target.lookup(Vec::<Value>::new()), None);
}

#[tokio::test]
async fn numeric_keys_normalise() {
    let target = IndexedTarget::builder().build();
    init(&target, &columns()).await;
    target.on_insert(&t(), &user(7, "a", "b")).await.unwrap();
    target
        .on_insert(&t(), &row! {"id" => 8.0, "email" => "f", "team" => "b"})
        .await
        .unwrap();

    assert_eq!(target.lookup(7), Some(user(7, "a", "b")));
    assert_eq!(target.lookup(Value::Float64(7.0)), Some(user(7, "a", "b")));
    assert_eq!(
        target.lookup(Value::numeric("7.00")),
        Some(user(7, "a", "b"))
    );
    assert_eq!(target.lookup("7"), None, "text does not match a number");
    assert_eq!(
        target.lookup(8i64),
        Some(row! {"id" => 8.0, "email" => "f", "team" => "b"}),
        "an integer finds an integral float"
    );
    // The float row and an int8 row with the same value are the same key.
    target.on_insert(&t(), &user(8, "g", "b")).await.unwrap();
    assert_eq!(target.count(), 2);
    assert_eq!(target.get(8), Some(user(8, "g", "b")));
}

#[tokio::test]
async fn a_composite_primary_key_is_the_default_lookup() {
    let target = IndexedTarget::builder()
        .index(IndexDefinition::new("by_name", ["name"], false))
        .build();
    let columns = vec![
        ColumnDefinition::new("name", "text"),
        ColumnDefinition::new("id", "int8").primary_key(2),
        ColumnDefinition::new("tenant", "text").primary_key(1),
    ];
    init(&target, &columns).await;
    let row_a = row! {"name" => "x", "id" => 1, "tenant" => "t1"};
    let row_b = row! {"name" => "x", "id" => 1, "tenant" => "t2"};
    target.on_insert(&t(), &row_a).await.unwrap();
    target.on_insert(&t(), &row_b).await.unwrap();

    assert_eq!(
        target.lookup_fields(),
        vec!["tenant".to_string(), "id".to_string()]
    );
    assert_eq!(target.lookup(("t1", 1)), Some(row_a.clone()));
    assert_eq!(
        target.get([Value::text("t2"), Value::Int64(1)].as_slice()),
        Some(row_b)
    );
    assert_eq!(target.lookup((1, "t1")), None, "key values go in key order");
    assert_eq!(target.lookup_all("by_name", "x").unwrap().len(), 2);

    target
        .on_delete(&t(), &row! {"tenant" => "t2", "id" => 1})
        .await
        .unwrap();
    assert_eq!(target.all(), vec![row_a]);
}

#[tokio::test]
async fn a_table_without_primary_key_is_keyed_by_the_lookup_fields() {
    let target = IndexedTarget::builder().lookup_fields(["email"]).build();
    let columns = vec![
        ColumnDefinition::new("email", "text"),
        ColumnDefinition::new("name", "text"),
    ];
    init(&target, &columns).await;
    target
        .on_insert(&t(), &row! {"email" => "a@x", "name" => "ann"})
        .await
        .unwrap();
    target
        .on_insert(&t(), &row! {"email" => "a@x", "name" => "anne"})
        .await
        .unwrap();

    assert_eq!(
        target.all(),
        vec![row! {"email" => "a@x", "name" => "anne"}]
    );
    assert_eq!(target.get("a@x"), target.lookup("a@x"));
}

#[tokio::test]
async fn rows_keep_exactly_their_own_columns() {
    let target = target().await;
    target
        .on_insert(&t(), &row! {"id" => 1, "email" => "a"})
        .await
        .unwrap();
    let wide = row! {"team" => "x", "id" => 2, "email" => "b", "extra" => true};
    target.on_insert(&t(), &wide).await.unwrap();
    target.on_insert(&t(), &user(3, "c", "y")).await.unwrap();

    assert_eq!(target.get(1), Some(row! {"id" => 1, "email" => "a"}));
    assert_eq!(target.get(2), Some(wide));
    assert_eq!(target.get(3), Some(user(3, "c", "y")));
    assert_eq!(target.lookup_all("by_team", "x").unwrap().len(), 1);
}

#[tokio::test]
async fn every_value_kind_survives_storage() {
    let target = IndexedTarget::builder().build();
    init(
        &target,
        &[ColumnDefinition::new("id", "int8").primary_key(1)],
    )
    .await;
    let values = vec![
        ("id", Value::Int64(-5)),
        ("null", Value::Null),
        ("yes", Value::Bool(true)),
        ("no", Value::Bool(false)),
        ("float", Value::Float64(-0.5)),
        ("nan", Value::Float64(f64::NAN)),
        ("numeric", Value::numeric("-12.500")),
        ("text", Value::text("héllo")),
        ("bytes", Value::bytes([0, 255, 7])),
        ("json", Value::json(r#"{"a":[1,2]}"#)),
        ("uuid", Value::Uuid([9; 16])),
        ("date", Value::Date(-719_162)),
        ("time", Value::Time(86_399_999_999)),
        (
            "timetz",
            Value::TimeTz {
                micros: 1,
                offset_seconds: -3600,
            },
        ),
        ("ts", Value::Timestamp(i64::MIN)),
        ("tstz", Value::TimestampTz(i64::MAX)),
        (
            "interval",
            Value::Interval {
                months: -1,
                days: 2,
                micros: -3,
            },
        ),
        (
            "array",
            Value::array([
                Value::array([Value::Int64(1), Value::Null]),
                Value::array([]),
            ]),
        ),
    ];
    let stored = Row::from_pairs(values);
    target.on_insert(&t(), &stored).await.unwrap();
    assert_eq!(target.get(-5), Some(stored));
}
