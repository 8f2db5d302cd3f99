//! QRY-08: the replication fan-out target is queried like any target with row access:
//! by key, in pages (a sorted scan: it keeps no ordered index), counted, and streamed.

use laredo_core::{ChangeEvent, Engine, PipelineOptions, Position, row};
use laredo_proto::laredo::v1 as pb;
use laredo_proto::laredo::v1::subscribe_response::Event;
use laredo_service_query::QueryService;
use laredo_source_test::TestSource;
use laredo_target_fanout::FanoutTarget;
use tonic::Code;

use crate::fixture::{
    Client, WAIT, count_rows, get_row, int, list_rows, lookup, lookup_all, row_of, serve, source,
    started, subscribe, text, user, users,
};

/// An engine streaming `users` (the given ids) into a fan-out target only, and a
/// client of the Query service over it.
async fn fanout_users(ids: impl IntoIterator<Item = i64>) -> (std::sync::Arc<TestSource>, Client) {
    let source = source(ids);
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline(
            "main",
            users(),
            FanoutTarget::new(),
            PipelineOptions::default(),
        )
        .build()
        .unwrap();
    started(&engine).await;
    (source, serve(QueryService::new(engine)).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanout_targets_rows_are_looked_up_listed_and_counted() {
    let (_source, mut client) = fanout_users([5, -1, 3, 10, 0]).await;

    // No lookup index: a lookup goes by the primary key.
    let found = client
        .lookup(lookup(&users(), "", vec![int(3)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (found.found, found.row.as_ref().map(row_of)),
        (true, Some(user(3)))
    );
    let missing = client
        .lookup(lookup(&users(), "", vec![int(4)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((missing.found, missing.row), (false, None));
    let by_key = client
        .lookup_all(lookup_all(&users(), "(primary)", vec![int(10)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        by_key.rows.iter().map(row_of).collect::<Vec<_>>(),
        vec![user(10)]
    );
    let row = client
        .get_row(get_row(&users(), vec![int(-1)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(row.row.as_ref().map(row_of), Some(user(-1)));

    // Pages in key order, with a token, from a sorted scan.
    let first = client
        .list_rows(list_rows(&users(), 3, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.rows.iter().map(row_of).collect::<Vec<_>>(),
        vec![user(-1), user(0), user(3)]
    );
    assert_eq!(first.total_count, 5);
    let second = client
        .list_rows(list_rows(&users(), 3, &first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        second.rows.iter().map(row_of).collect::<Vec<_>>(),
        vec![user(5), user(10)]
    );
    assert_eq!(second.next_page_token, "");

    let count = client
        .count_rows(count_rows(&users()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count.count, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanout_target_has_only_its_key() {
    let (_source, mut client) = fanout_users([1]).await;
    let status = client
        .lookup_all(lookup_all(&users(), "by_team", vec![text("red")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.message(),
        r#"index "by_team" not found on public.users; known indexes: (primary)"#
    );
    let status = client
        .get_row(get_row(&users(), vec![int(1), int(2)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "primary key of public.users: expected 1 value (id), got 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanout_targets_changes_stream_with_their_position_and_transaction() {
    let (source, mut client) = fanout_users([1, 2]).await;
    let mut stream = client
        .subscribe(subscribe(&users(), true))
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(WAIT, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .event
            .unwrap()
    };
    let mut existing = Vec::new();
    for _ in 0..2 {
        let Event::Change(change) = next().await else {
            panic!("expected a current row")
        };
        assert_eq!((change.existing, change.position.as_str()), (true, ""));
        existing.push(row_of(change.new_values.as_ref().unwrap()));
    }
    existing.sort_by_key(|r| r.get_i64("id"));
    assert_eq!(existing, vec![user(1), user(2)]);
    assert_eq!(
        next().await,
        Event::ReplayComplete(pb::ReplayComplete { rows_sent: 2 })
    );

    let position =
        source.enqueue([
            ChangeEvent::delete(users(), Position::from_u64(0), row! {"id" => 2})
                .with_commit(None, 31),
        ]);
    let Event::Change(delete) = next().await else {
        panic!("expected a change")
    };
    assert_eq!(
        (
            delete.action(),
            delete.old_values.as_ref().map(row_of),
            delete.new_values,
            delete.position,
            delete.xid,
        ),
        (
            pb::ChangeAction::Delete,
            Some(user(2)),
            None,
            position.to_string(),
            31
        )
    );
}
