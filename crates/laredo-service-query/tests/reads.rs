//! Lookup, LookupAll, GetRow and CountRows, with their error statuses.

use laredo_core::row;
use laredo_proto::laredo::v1 as pb;
use tonic::Code;

use crate::fixture::{
    count_rows, fixture, get_row, int, lookup, lookup_all, orders, row_of, sorted, text, user,
    user_named, users,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_finds_a_row_by_the_lookup_fields() {
    let mut f = fixture(1..=5).await;
    let found = f
        .client
        .lookup(lookup(&users(), "", vec![text("u3@x")]))
        .await
        .unwrap()
        .into_inner();
    assert!(found.found);
    assert_eq!(row_of(&found.row.unwrap()), user(3));

    let missing = f
        .client
        .lookup(lookup(&users(), "", vec![text("nobody@x")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        missing,
        pb::LookupResponse {
            found: false,
            row: None
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_in_a_named_index_returns_its_first_match() {
    let mut f = fixture(1..=5).await;
    let by_name = f
        .client
        .lookup(lookup(&users(), "by_name", vec![text("user-4")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(row_of(&by_name.row.unwrap()), user(4));

    // ids 2 and 5 are blue: either is a first match.
    let by_team = f
        .client
        .lookup(lookup(&users(), "by_team", vec![text("blue")]))
        .await
        .unwrap()
        .into_inner();
    let row = row_of(&by_team.row.unwrap());
    assert!(row == user(2) || row == user(5), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_match_across_kinds() {
    let mut f = fixture(1..=3).await;
    let numeric = pb::Value::from(&laredo_core::Value::numeric("2.0"));
    let found = f
        .client
        .get_row(get_row(&users(), vec![numeric]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(row_of(&found.row.unwrap()), user(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_the_wrong_arity_is_invalid_and_names_the_fields() {
    let mut f = fixture(1..=3).await;
    let status = f
        .client
        .lookup(lookup(&users(), "", vec![text("u1@x"), int(1)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "lookup key of public.users: expected 1 value (email), got 2"
    );

    let status = f
        .client
        .lookup(lookup(&users(), "by_team", vec![]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        r#"index "by_team" of public.users: expected 1 value (team), got 0"#
    );

    let status = f
        .client
        .get_row(get_row(&orders(), vec![text("eu")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "primary key of public.orders: expected 2 values (region, id), got 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_without_kind_is_invalid() {
    let mut f = fixture(1..=3).await;
    let status = f
        .client
        .get_row(get_row(&users(), vec![pb::Value { kind: None }]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "primary_key[0]: value has no kind set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_all_returns_every_row_of_a_non_unique_key() {
    let mut f = fixture(1..=7).await;
    let blue = f
        .client
        .lookup_all(lookup_all(&users(), "by_team", vec![text("blue")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sorted(&blue.rows), vec![user(2), user(5)]);

    let unique = f
        .client
        .lookup_all(lookup_all(&users(), "(primary)", vec![text("u7@x")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sorted(&unique.rows), vec![user(7)]);

    let none = f
        .client
        .lookup_all(lookup_all(&users(), "by_team", vec![text("purple")]))
        .await
        .unwrap()
        .into_inner();
    assert!(none.rows.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_index_is_not_found_and_lists_the_known_ones() {
    let mut f = fixture(1..=3).await;
    for status in [
        f.client
            .lookup_all(lookup_all(&users(), "by_color", vec![text("red")]))
            .await
            .unwrap_err(),
        f.client
            .lookup(lookup(&users(), "by_color", vec![text("red")]))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            status.message(),
            r#"index "by_color" not found on public.users; known indexes: (primary), by_team, by_name"#
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_all_requires_an_index_name() {
    let mut f = fixture(1..=3).await;
    let status = f
        .client
        .lookup_all(lookup_all(&users(), "", vec![text("red")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "index_name is required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_row_finds_rows_by_single_and_composite_primary_keys() {
    let mut f = fixture(1..=3).await;
    let found = f
        .client
        .get_row(get_row(&users(), vec![int(3)]))
        .await
        .unwrap()
        .into_inner();
    assert!(found.found);
    assert_eq!(row_of(&found.row.unwrap()), user(3));

    let composite = f
        .client
        .get_row(get_row(&orders(), vec![text("us"), int(1)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        row_of(&composite.row.unwrap()),
        row! {"region" => "us", "id" => 1, "total" => 20}
    );

    let missing = f
        .client
        .get_row(get_row(&users(), vec![int(99)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        missing,
        pb::GetRowResponse {
            found: false,
            row: None
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_applied_changes() {
    let mut f = fixture(1..=3).await;
    let count = |n| pb::CountRowsResponse { count: n };
    assert_eq!(
        f.client
            .count_rows(count_rows(&users()))
            .await
            .unwrap()
            .into_inner(),
        count(3)
    );
    f.source.emit_insert(users(), user(4)).await;
    f.source
        .emit_update(users(), user_named(1, "ann"), Some(row! {"id" => 1}))
        .await;
    let last = f.source.emit_delete(users(), row! {"id" => 2}).await;
    f.applied(last).await;

    assert_eq!(
        f.client
            .count_rows(count_rows(&users()))
            .await
            .unwrap()
            .into_inner(),
        count(3)
    );
    let renamed = f
        .client
        .lookup(lookup(&users(), "by_name", vec![text("ann")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(row_of(&renamed.row.unwrap()), user_named(1, "ann"));
    let deleted = f
        .client
        .get_row(get_row(&users(), vec![int(2)]))
        .await
        .unwrap()
        .into_inner();
    assert!(!deleted.found);
    assert_eq!(
        f.client
            .count_rows(count_rows(&orders()))
            .await
            .unwrap()
            .into_inner(),
        count(2)
    );
}
