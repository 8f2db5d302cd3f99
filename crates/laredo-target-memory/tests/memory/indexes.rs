//! Secondary indexes, the lookup index and their statistics.

use laredo_core::{IndexDefinition, SyncTarget, row};
use laredo_target_memory::{IndexError, IndexInfo, IndexedTarget, PRIMARY_INDEX};
use laredo_test_support::OneChange;

use super::support::*;

fn stats(infos: &[IndexInfo]) -> Vec<(&str, Vec<&str>, bool, usize)> {
    infos
        .iter()
        .map(|i| {
            let fields = i.fields.iter().map(String::as_str).collect();
            (i.name.as_str(), fields, i.unique, i.entry_count)
        })
        .collect()
}

#[tokio::test]
async fn a_non_unique_index_finds_every_matching_row() {
    let target = target().await;
    for (id, team) in [(1, "red"), (2, "red"), (3, "blue"), (4, "red")] {
        target
            .on_insert(&t(), &user(id, &format!("{id}@x"), team))
            .await
            .unwrap();
    }
    assert_eq!(
        by_id(target.lookup_all("by_team", "red").unwrap()),
        vec![
            user(1, "1@x", "red"),
            user(2, "2@x", "red"),
            user(4, "4@x", "red"),
        ]
    );
    assert_eq!(target.lookup_all("by_team", "green").unwrap(), vec![]);

    // Rows leave and join groups as their indexed value changes.
    target
        .on_update(&t(), &user(2, "2@x", "blue"), None)
        .await
        .unwrap();
    target.on_delete(&t(), &row! {"id" => 1}).await.unwrap();
    assert_eq!(
        target.lookup_all("by_team", "red").unwrap(),
        vec![user(4, "4@x", "red")]
    );
    assert_eq!(
        by_id(target.lookup_all("by_team", "blue").unwrap()),
        vec![user(2, "2@x", "blue"), user(3, "3@x", "blue"),]
    );
}

#[tokio::test]
async fn a_unique_secondary_index_keeps_the_last_write() {
    let target = target().await;
    target
        .on_insert(&t(), &user(1, "1@x", "red"))
        .await
        .unwrap();
    target
        .on_insert(&t(), &user(2, "2@x", "red"))
        .await
        .unwrap();
    assert_eq!(
        target.lookup_all("by_team_unique", "red").unwrap(),
        vec![user(2, "2@x", "red")]
    );

    // Rewriting row 1 with the same team makes it the last write.
    target
        .on_update(&t(), &user(1, "1b@x", "red"), None)
        .await
        .unwrap();
    assert_eq!(
        target.lookup_all("by_team_unique", "red").unwrap(),
        vec![user(1, "1b@x", "red")]
    );

    // Deleting a row the key no longer points at leaves the key alone.
    target.on_delete(&t(), &row! {"id" => 2}).await.unwrap();
    assert_eq!(
        target.lookup_all("by_team_unique", "red").unwrap(),
        vec![user(1, "1b@x", "red")]
    );
}

#[tokio::test]
async fn the_lookup_index_is_queryable_as_primary() {
    let target = target().await;
    target
        .on_insert(&t(), &user(1, "1@x", "red"))
        .await
        .unwrap();
    assert_eq!(
        target.lookup_all(PRIMARY_INDEX, "1@x").unwrap(),
        vec![user(1, "1@x", "red")]
    );
    assert_eq!(target.lookup_all("(primary)", "2@x").unwrap(), vec![]);
}

#[tokio::test]
async fn lookup_all_names_an_unknown_index_and_checks_the_key_arity() {
    let target = target().await;
    assert_eq!(
        target.lookup_all("nope", "x"),
        Err(IndexError::UnknownIndex("nope".to_string()))
    );
    assert_eq!(
        target.lookup_all("nope", "x").unwrap_err().to_string(),
        r#"unknown index "nope""#
    );
    assert_eq!(
        target.lookup_all("by_team", ("a", "b")),
        Err(IndexError::KeyArity {
            index: "by_team".to_string(),
            expected: 1,
            got: 2
        })
    );
}

#[tokio::test]
async fn index_stats_count_entries() {
    let target = target().await;
    for (id, team) in [(1, "red"), (2, "red"), (3, "blue")] {
        target
            .on_insert(&t(), &user(id, &format!("{id}@x"), team))
            .await
            .unwrap();
    }
    assert_eq!(
        stats(&target.indexes()),
        vec![
            ("(primary)", vec!["email"], true, 3),
            ("by_team", vec!["team"], false, 3),
            ("by_team_unique", vec!["team"], true, 2),
        ]
    );
}

#[tokio::test]
async fn the_default_lookup_index_is_the_primary_key() {
    let target = IndexedTarget::builder().build();
    assert_eq!(
        target.lookup_fields(),
        Vec::<String>::new(),
        "unknown before on_init"
    );
    init(&target, &columns()).await;
    target
        .on_insert(&t(), &user(1, "1@x", "red"))
        .await
        .unwrap();
    assert_eq!(target.lookup_fields(), vec!["id".to_string()]);
    assert_eq!(
        stats(&target.indexes()),
        vec![("(primary)", vec!["id"], true, 1)]
    );
    assert_eq!(target.lookup(1), target.get(1));
    assert_eq!(target.columns(), columns());
}

#[tokio::test]
async fn lookup_fields_equal_to_the_primary_key_share_its_table() {
    let load = async |target: &IndexedTarget| {
        init(target, &columns()).await;
        let rows: Vec<_> = (0..5000)
            .map(|id| user(id, &format!("{id}@x"), "red"))
            .collect();
        target.on_baseline(&t(), &rows).await.unwrap();
    };
    let shared = IndexedTarget::builder().lookup_fields(["id"]).build();
    let by_email = IndexedTarget::builder().lookup_fields(["email"]).build();
    load(&shared).await;
    load(&by_email).await;

    assert_eq!(shared.lookup(17), Some(user(17, "17@x", "red")));
    assert_eq!(by_email.lookup("17@x"), Some(user(17, "17@x", "red")));
    assert!(
        shared.heap_size() < by_email.heap_size(),
        "one table when the lookup fields are the primary key: {} against {}",
        shared.heap_size(),
        by_email.heap_size()
    );
}

#[tokio::test]
async fn a_multi_field_index_takes_a_tuple_key() {
    let target = IndexedTarget::builder()
        .index(IndexDefinition::new(
            "by_team_email",
            ["team", "email"],
            true,
        ))
        .build();
    init(&target, &columns()).await;
    target
        .on_insert(&t(), &user(1, "1@x", "red"))
        .await
        .unwrap();
    assert_eq!(
        target.lookup_all("by_team_email", ("red", "1@x")).unwrap(),
        vec![user(1, "1@x", "red")]
    );
    assert_eq!(
        target.lookup_all("by_team_email", ("1@x", "red")).unwrap(),
        vec![]
    );
}
