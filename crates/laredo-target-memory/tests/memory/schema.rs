//! Responses to schema changes (MEM-06, MEM-13).

use laredo_core::{ColumnDefinition, SchemaChangeAction, SyncTarget, row};
use laredo_target_memory::IndexedTarget;
use laredo_test_support::OneChange;

use super::support::*;

/// `columns()` plus a non-indexed `note`.
fn with_note() -> Vec<ColumnDefinition> {
    let mut columns = columns();
    columns.push(ColumnDefinition::new("note", "text"));
    columns
}

async fn response(
    target: &IndexedTarget,
    old: &[ColumnDefinition],
    new: &[ColumnDefinition],
) -> SchemaChangeAction {
    target.on_schema_change(&t(), old, new).await.action
}

fn without(columns: &[ColumnDefinition], name: &str) -> Vec<ColumnDefinition> {
    columns.iter().filter(|c| c.name != name).cloned().collect()
}

fn retyped(columns: &[ColumnDefinition], name: &str) -> Vec<ColumnDefinition> {
    let mut columns = columns.to_vec();
    for c in &mut columns {
        if c.name == name {
            c.type_name = "bytea".to_string();
        }
    }
    columns
}

#[tokio::test]
async fn added_columns_continue_and_new_rows_carry_them() {
    let target = target().await;
    target.on_insert(&t(), &user(1, "a", "red")).await.unwrap();
    assert_eq!(
        response(&target, &columns(), &with_note()).await,
        SchemaChangeAction::Continue
    );
    assert_eq!(target.columns(), with_note());

    let noted = row! {"id" => 2, "email" => "b", "team" => "red", "note" => "hi"};
    target.on_insert(&t(), &noted).await.unwrap();
    assert_eq!(target.get(1), Some(user(1, "a", "red")));
    assert_eq!(target.get(2), Some(noted));
}

#[tokio::test]
async fn a_dropped_plain_column_continues_and_leaves_the_rows() {
    let target = target().await;
    init(&target, &with_note()).await;
    let noted = row! {"id" => 1, "email" => "a", "team" => "red", "note" => "old"};
    target.on_insert(&t(), &noted).await.unwrap();

    assert_eq!(
        response(&target, &with_note(), &columns()).await,
        SchemaChangeAction::Continue
    );
    assert_eq!(target.columns(), columns());
    assert_eq!(
        target.get(1),
        Some(user(1, "a", "red")),
        "the dropped column is gone"
    );
    assert_eq!(target.lookup("a"), Some(user(1, "a", "red")));
    target.on_insert(&t(), &user(2, "b", "red")).await.unwrap();
    assert_eq!(
        by_id(target.lookup_all("by_team", "red").unwrap()),
        vec![user(1, "a", "red"), user(2, "b", "red")]
    );

    // Added again, the column starts empty: the old values do not come back.
    assert_eq!(
        response(&target, &columns(), &with_note()).await,
        SchemaChangeAction::Continue
    );
    assert_eq!(target.get(1), Some(user(1, "a", "red")));
    let renoted = row! {"id" => 3, "email" => "c", "team" => "red", "note" => "new"};
    target.on_insert(&t(), &renoted).await.unwrap();
    assert_eq!(target.get(3), Some(renoted));
    assert_eq!(target.count(), 3);
}

#[tokio::test]
async fn a_retyped_plain_column_continues() {
    let target = target().await;
    init(&target, &with_note()).await;
    assert_eq!(
        response(&target, &with_note(), &retyped(&with_note(), "note")).await,
        SchemaChangeAction::Continue
    );
}

#[tokio::test]
async fn dropping_a_key_lookup_or_indexed_column_rebaselines() {
    let target = target().await;
    init(&target, &with_note()).await;
    // `id` is the primary key, `email` the lookup field, `team` indexed.
    for name in ["id", "email", "team"] {
        let dropped = without(&with_note(), name);
        assert_eq!(
            response(&target, &with_note(), &dropped).await,
            SchemaChangeAction::ReBaseline,
            "dropping {name}"
        );
    }
    assert_eq!(target.columns(), with_note(), "no change was taken");
}

#[tokio::test]
async fn retyping_a_key_lookup_or_indexed_column_rebaselines() {
    let target = target().await;
    for name in ["id", "email", "team"] {
        let change = target
            .on_schema_change(&t(), &columns(), &retyped(&columns(), name))
            .await;
        assert_eq!(
            change.action,
            SchemaChangeAction::ReBaseline,
            "retyping {name}"
        );
        assert!(change.message.unwrap().contains(name));
    }
}

#[tokio::test]
async fn a_changed_primary_key_rebaselines() {
    let target = target().await;
    let mut rekeyed = columns();
    rekeyed[2] = ColumnDefinition::new("team", "text").primary_key(2);
    let change = target.on_schema_change(&t(), &columns(), &rekeyed).await;
    assert_eq!(change.action, SchemaChangeAction::ReBaseline);
    assert_eq!(
        change.message.as_deref(),
        Some("primary key changed from (id) to (id, team)")
    );
}
