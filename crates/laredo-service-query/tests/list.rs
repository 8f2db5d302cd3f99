//! ListRows: key order, page tokens, paging while rows change, bad tokens.

use laredo_core::{ChangeEvent, Position, row};
use laredo_proto::laredo::v1 as pb;
use laredo_service_query::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_PAGE_TOKEN_LEN};
use laredo_target_memory::IndexedTarget;
use tonic::Code;

use crate::fixture::{
    Client, Fixture, fixture, list_rows, orders, row_of, user, user_named, users,
};

async fn page(client: &mut Client, size: u32, token: &str) -> pb::ListRowsResponse {
    client
        .list_rows(list_rows(&users(), size, token))
        .await
        .unwrap()
        .into_inner()
}

fn ids(page: &pb::ListRowsResponse) -> Vec<i64> {
    page.rows
        .iter()
        .map(|r| row_of(r).get_i64("id").unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_come_in_primary_key_order_until_an_empty_token() {
    // Negative ids and ids of different widths: the order is numeric.
    let all: Vec<i64> = (-20..=229).collect();
    let mut f = fixture(all.iter().rev().copied()).await;

    let first = page(&mut f.client, 100, "").await;
    assert_eq!(ids(&first), (-20..=79).collect::<Vec<_>>());
    assert_eq!(first.total_count, 250);
    assert_eq!(row_of(&first.rows[0]), user(-20), "whole rows are sent");
    assert!(!first.next_page_token.is_empty());

    let second = page(&mut f.client, 100, &first.next_page_token).await;
    assert_eq!(ids(&second), (80..=179).collect::<Vec<_>>());
    let third = page(&mut f.client, 100, &second.next_page_token).await;
    assert_eq!(ids(&third), (180..=229).collect::<Vec<_>>());
    assert_eq!(third.next_page_token, "", "the last page has no token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_size_zero_means_the_default() {
    let mut f = fixture(1..=150).await;
    let first = page(&mut f.client, 0, "").await;
    assert_eq!(first.rows.len(), DEFAULT_PAGE_SIZE);
    assert_eq!(ids(&first), (1..=100).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_ending_at_the_last_row_has_no_token() {
    let mut f = fixture(1..=10).await;
    let only = page(&mut f.client, 10, "").await;
    assert_eq!(ids(&only), (1..=10).collect::<Vec<_>>());
    assert_eq!(only.next_page_token, "");
}

async fn apply(f: &Fixture, events: Vec<ChangeEvent>) {
    let last = f.source.enqueue(events);
    f.applied(last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_while_rows_change_neither_repeats_nor_skips_the_others() {
    let mut f = fixture(1..=250).await;
    let zero = Position::from_u64(0);
    let mut seen = Vec::new();

    let first = page(&mut f.client, 100, "").await;
    seen.extend(ids(&first));
    // Between pages: delete a row already sent, the very row the token names and a row
    // not sent yet; insert one behind the cursor and one ahead; rename one ahead.
    apply(
        &f,
        vec![
            ChangeEvent::delete(users(), zero.clone(), row! {"id" => 50}),
            ChangeEvent::delete(users(), zero.clone(), row! {"id" => 100}),
            ChangeEvent::delete(users(), zero.clone(), row! {"id" => 150}),
            ChangeEvent::insert(users(), zero.clone(), user(0)),
            ChangeEvent::insert(users(), zero.clone(), user(1000)),
            ChangeEvent::update(
                users(),
                zero.clone(),
                user_named(200, "renamed"),
                Some(row! {"id" => 200}),
            ),
        ],
    )
    .await;

    let mut token = first.next_page_token;
    let mut renamed = None;
    while !token.is_empty() {
        let next = page(&mut f.client, 100, &token).await;
        assert_eq!(next.total_count, 249, "250 - 3 deleted + 2 inserted");
        renamed = renamed.or_else(|| {
            next.rows
                .iter()
                .map(row_of)
                .find(|r| r.get_i64("id") == Some(200))
        });
        seen.extend(ids(&next));
        token = next.next_page_token;
    }

    let expected: Vec<i64> = (1..=100)
        .chain((101..=250).filter(|id| *id != 150))
        .chain([1000])
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(renamed, Some(user_named(200, "renamed")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_keys_page_value_by_value() {
    let mut f = fixture(1..=2).await;
    let first = f
        .client
        .list_rows(list_rows(&orders(), 1, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.rows.iter().map(row_of).collect::<Vec<_>>(),
        vec![row! {"region" => "eu", "id" => 1, "total" => 10}]
    );
    let second = f
        .client
        .list_rows(list_rows(&orders(), 1, &first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        second.rows.iter().map(row_of).collect::<Vec<_>>(),
        vec![row! {"region" => "us", "id" => 1, "total" => 20}]
    );
    assert_eq!(second.next_page_token, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_page_token_is_rejected() {
    let mut f = fixture(1..=5).await;
    let status = f
        .client
        .list_rows(list_rows(&users(), 2, "not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "invalid page_token: not a page token");

    // A token of the two-column orders key does not fit the users key.
    let orders_page = f
        .client
        .list_rows(list_rows(&orders(), 1, ""))
        .await
        .unwrap()
        .into_inner();
    let status = f
        .client
        .list_rows(list_rows(&users(), 2, &orders_page.next_page_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "invalid page_token: page token has 2 key value(s), the table key has 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_page_token_is_refused_naming_the_limit() {
    let mut f = fixture(1..=10).await;
    // A 2 MB token: version byte, then what could be a huge numeric key.
    let token = format!("01{}", "3".repeat(2 * 1024 * 1024));
    let refused = f
        .client
        .list_rows(list_rows(&users(), 10, &token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        format!(
            "invalid page_token: longer than the page token limit ({} > {MAX_PAGE_TOKEN_LEN} characters)",
            token.len()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_size_over_the_cap_is_clamped_to_it() {
    let mut f = fixture(1..=1_500).await;
    let first = page(&mut f.client, 1_000_000, "").await;
    assert_eq!(first.rows.len(), MAX_PAGE_SIZE);
    assert_eq!(ids(&first), (1..=1_000).collect::<Vec<_>>());
    let rest = page(&mut f.client, 1_000_000, &first.next_page_token).await;
    assert_eq!(ids(&rest), (1_001..=1_500).collect::<Vec<_>>());
    assert_eq!(rest.next_page_token, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_reads_only_its_rows_however_large_the_table() {
    let mut f = fixture(1..=20_000).await;
    let target = f
        .engine
        .get_target::<IndexedTarget>("main", &users())
        .unwrap();
    // The first page builds the ordered index of the keys (once).
    let first = page(&mut f.client, 10, "").await;
    assert_eq!(first.total_count, 20_000);
    let before = target.rows_read();
    let second = page(&mut f.client, 10, &first.next_page_token).await;
    assert_eq!(ids(&second), (11..=20).collect::<Vec<_>>());
    let read = target.rows_read() - before;
    assert!(read <= 11, "a page of 10 read {read} rows of 20,000");
}
