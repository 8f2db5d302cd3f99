//! Field checks at `on_init`.

use laredo_core::{ColumnDefinition, IndexDefinition, SyncTarget};
use laredo_target_memory::IndexedTarget;
use laredo_test_support::OneChange;

use super::support::*;

async fn init_error(target: &IndexedTarget, columns: &[ColumnDefinition]) -> String {
    target.on_init(&t(), columns).await.unwrap_err().to_string()
}

#[tokio::test]
async fn a_missing_lookup_field_is_reported() {
    let target = IndexedTarget::builder().lookup_fields(["mail"]).build();
    assert_eq!(
        init_error(&target, &columns()).await,
        "lookup field mail not found in columns"
    );
}

#[tokio::test]
async fn a_missing_index_field_is_reported() {
    let target = IndexedTarget::builder()
        .index(IndexDefinition::new("by_x", ["team", "nope"], false))
        .build();
    assert_eq!(
        init_error(&target, &columns()).await,
        "index by_x field nope not found in columns"
    );
}

#[tokio::test]
async fn every_problem_is_reported_at_once() {
    let target = IndexedTarget::builder()
        .lookup_fields(["mail"])
        .index(IndexDefinition::new("a", ["x"], false))
        .index(IndexDefinition::new("a", ["team"], true))
        .index(IndexDefinition::new("(primary)", ["team"], true))
        .index(IndexDefinition::new("b", Vec::<String>::new(), false))
        .build();
    assert_eq!(
        init_error(&target, &columns()).await,
        "lookup field mail not found in columns; index a field x not found in columns; \
         index a is defined more than once; index name (primary) is reserved; \
         index b has no fields"
    );
}

#[tokio::test]
async fn a_table_needs_a_primary_key_or_lookup_fields() {
    let target = IndexedTarget::builder().build();
    assert_eq!(
        init_error(&target, &[ColumnDefinition::new("a", "text")]).await,
        "table public.users has no primary key and no lookup_fields are configured"
    );
}

#[tokio::test]
async fn a_second_init_rekeys_the_rows_held() {
    let target = IndexedTarget::builder()
        .index(IndexDefinition::new("by_team", ["team"], false))
        .build();
    init(&target, &columns()).await;
    target
        .on_insert(&t(), &user(1, "a@x", "red"))
        .await
        .unwrap();
    target
        .on_insert(&t(), &user(2, "b@x", "red"))
        .await
        .unwrap();

    // The primary key moves to `email`.
    let rekeyed = vec![
        ColumnDefinition::new("id", "int8"),
        ColumnDefinition::new("email", "text").primary_key(1),
        ColumnDefinition::new("team", "text"),
    ];
    init(&target, &rekeyed).await;
    assert_eq!(target.get("b@x"), Some(user(2, "b@x", "red")));
    assert_eq!(target.get(2), None);
    assert_eq!(target.lookup_all("by_team", "red").unwrap().len(), 2);
}
