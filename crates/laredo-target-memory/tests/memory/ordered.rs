//! Rows in key order: paging through the ordered index as writes keep it current.

use laredo_core::{SyncTarget, Value};
use laredo_test_support::OneChange;

use super::support::*;

fn ids(rows: &[laredo_core::Row]) -> Vec<i64> {
    rows.iter().filter_map(|r| r.get_i64("id")).collect()
}

#[tokio::test]
async fn pages_follow_the_key_order_and_later_writes() {
    let target = target().await;
    for id in [5, -1, 3, 10, 0, 7] {
        target
            .on_insert(&t(), &user(id, &format!("{id}@x"), "red"))
            .await
            .unwrap();
    }
    let first = target.rows_in_key_order(None, 4);
    assert_eq!(ids(&first), [-1, 0, 3, 5]);
    assert_eq!(first[0], user(-1, "-1@x", "red"), "whole rows");
    // Writes after the index was built: an insert, an update, a delete.
    target
        .on_insert(&t(), &user(6, "6@x", "red"))
        .await
        .unwrap();
    target
        .on_update(&t(), &user(7, "seven@x", "blue"), None)
        .await
        .unwrap();
    target.on_delete(&t(), &user(10, "", "")).await.unwrap();
    let second = target.rows_in_key_order(Some(&[Value::Int64(5)]), 4);
    assert_eq!(second, [user(6, "6@x", "red"), user(7, "seven@x", "blue")]);
    // A key that finds no row still seeks to the next one.
    assert_eq!(
        ids(&target.rows_in_key_order(Some(&[Value::Float64(2.5)]), 1)),
        [3]
    );
    target.on_truncate(&t()).await.unwrap();
    assert!(target.rows_in_key_order(None, 4).is_empty());
    target
        .on_insert(&t(), &user(1, "1@x", "red"))
        .await
        .unwrap();
    assert_eq!(ids(&target.rows_in_key_order(None, 4)), [1]);
}

#[tokio::test]
async fn a_page_reads_only_its_rows() {
    let target = target().await;
    let rows: Vec<_> = (0..5_000)
        .map(|id| user(id, &format!("{id}@x"), "red"))
        .collect();
    target.on_baseline(&t(), &rows).await.unwrap();
    target.rows_in_key_order(None, 10);
    let before = target.rows_read();
    let page = target.rows_in_key_order(Some(&[Value::Int64(2_500)]), 10);
    assert_eq!(ids(&page), (2_501..2_511).collect::<Vec<_>>());
    assert_eq!(target.rows_read() - before, 10);
}
