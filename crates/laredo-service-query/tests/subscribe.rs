//! Subscribe: live changes, the replay of current rows, slow subscribers, and the end of
//! a subscription.

use laredo_core::{ChangeEvent, Position, Row, row};
use laredo_proto::laredo::v1 as pb;
use laredo_proto::laredo::v1::subscribe_response::Event;
use laredo_test_support::wait_until;
use tonic::Streaming;

use crate::fixture::{WAIT, fixture, fixture_with, row_of, subscribe, user, user_named, users};

async fn next(stream: &mut Streaming<pb::SubscribeResponse>) -> Event {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a message in time")
        .expect("no stream error")
        .expect("the stream is open")
        .event
        .expect("an event")
}

fn change(event: Event) -> pb::RowChange {
    match event {
        Event::Change(change) => change,
        other => panic!("expected a change, got {other:?}"),
    }
}

/// `(action, old, new, existing)` of a change, rows converted.
fn summary(change: &pb::RowChange) -> (pb::ChangeAction, Option<Row>, Option<Row>, bool) {
    (
        change.action(),
        change.old_values.as_ref().map(row_of),
        change.new_values.as_ref().map(row_of),
        change.existing,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_changes_carry_their_source_position_and_transaction_id() {
    let mut f = fixture(1..=3).await;
    let mut stream = f
        .client
        .subscribe(subscribe(&users(), true))
        .await
        .unwrap()
        .into_inner();
    // Replayed current rows are no source change: no position, no transaction.
    for _ in 1..=3 {
        let existing = change(next(&mut stream).await);
        assert_eq!((existing.position.as_str(), existing.xid), ("", 0));
    }
    assert!(matches!(next(&mut stream).await, Event::ReplayComplete(_)));

    let position = f.source.enqueue([
        ChangeEvent::insert(users(), Position::from_u64(0), user(4)).with_commit(None, 777)
    ]);
    let insert = change(next(&mut stream).await);
    assert_eq!(
        (insert.position.as_str(), insert.xid),
        (position.to_string().as_str(), 777)
    );
    assert!(!insert.position.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_of_a_batch_carries_its_own_position_and_transaction_id() {
    let mut f = fixture(1..=3).await;
    let mut stream = f
        .client
        .subscribe(subscribe(&users(), false))
        .await
        .unwrap()
        .into_inner();
    // Queued at once: the engine hands them to the target in as few batches as it can,
    // and each change still carries its own position and transaction.
    let zero = Position::from_u64(0);
    let last = f.source.enqueue((4..=9).map(|id| {
        ChangeEvent::insert(users(), zero.clone(), user(id)).with_commit(None, 100 + id)
    }));
    let first = last.as_u64().unwrap() - 5;
    let mut received = Vec::new();
    for _ in 4..=9 {
        let insert = change(next(&mut stream).await);
        received.push((
            insert.position.clone(),
            insert.xid,
            insert.new_values.as_ref().map(row_of),
        ));
    }
    let expected: Vec<_> = (4..=9)
        .map(|id| {
            let position = first + u64::try_from(id - 4).unwrap();
            (position.to_string(), 100 + id, Some(user(id)))
        })
        .collect();
    assert_eq!(received, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_inserts_updates_deletes_and_truncates_arrive_in_order() {
    let mut f = fixture(1..=3).await;
    let mut stream = f
        .client
        .subscribe(subscribe(&users(), false))
        .await
        .unwrap()
        .into_inner();

    f.source.emit_insert(users(), user(4)).await;
    f.source
        .emit_update(users(), user_named(1, "ann"), Some(row! {"id" => 1}))
        .await;
    f.source.emit_delete(users(), row! {"id" => 2}).await;
    f.source.emit_truncate(users()).await;

    let insert = change(next(&mut stream).await);
    assert_eq!(
        summary(&insert),
        (pb::ChangeAction::Insert, None, Some(user(4)), false)
    );
    assert!(insert.timestamp.is_some(), "stamped when applied");
    assert_eq!(
        summary(&change(next(&mut stream).await)),
        (
            pb::ChangeAction::Update,
            Some(user(1)),
            Some(user_named(1, "ann")),
            false
        )
    );
    assert_eq!(
        summary(&change(next(&mut stream).await)),
        (pb::ChangeAction::Delete, Some(user(2)), None, false)
    );
    assert_eq!(
        summary(&change(next(&mut stream).await)),
        (pb::ChangeAction::Truncate, None, None, false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_existing_sends_current_rows_then_a_marker_then_live_changes() {
    let mut f = fixture(1..=3).await;
    let mut stream = f
        .client
        .subscribe(subscribe(&users(), true))
        .await
        .unwrap()
        .into_inner();

    let mut existing = Vec::new();
    for _ in 0..3 {
        let row = change(next(&mut stream).await);
        assert_eq!(row.action(), pb::ChangeAction::Insert);
        assert!(row.existing && row.old_values.is_none() && row.timestamp.is_none());
        existing.push(row_of(row.new_values.as_ref().unwrap()));
    }
    existing.sort_by_key(|r| r.get_i64("id"));
    assert_eq!(existing, vec![user(1), user(2), user(3)]);
    assert_eq!(
        next(&mut stream).await,
        Event::ReplayComplete(pb::ReplayComplete { rows_sent: 3 })
    );

    f.source.emit_insert(users(), user(4)).await;
    assert_eq!(
        summary(&change(next(&mut stream).await)),
        (pb::ChangeAction::Insert, None, Some(user(4)), false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_an_empty_table_sends_just_the_marker() {
    let mut f = fixture([]).await;
    let mut stream = f
        .client
        .subscribe(subscribe(&users(), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next(&mut stream).await,
        Event::ReplayComplete(pb::ReplayComplete { rows_sent: 0 })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_loses_changes_with_a_marker_and_never_blocks_the_engine() {
    const CHANGES: i64 = 3000;
    // A small queue, and an HTTP/2 window so small that a client that does not read
    // stops the server from sending after a few messages.
    let mut f = fixture_with(
        [],
        |service| service.subscriber_buffer(8),
        |endpoint| endpoint.initial_stream_window_size(4096),
    )
    .await;
    let mut stream = f
        .client
        .subscribe(subscribe(&users(), false))
        .await
        .unwrap()
        .into_inner();

    // The engine applies every change although nobody reads the stream.
    let zero = Position::from_u64(0);
    let last = f
        .source
        .enqueue((1..=CHANGES).map(|id| ChangeEvent::insert(users(), zero.clone(), user(id))));
    f.applied(last).await;

    let (mut received, mut dropped, mut markers) = (Vec::new(), 0, 0);
    while i64::try_from(received.len()).unwrap() + dropped < CHANGES {
        match next(&mut stream).await {
            Event::Change(change) => {
                received.push(
                    row_of(change.new_values.as_ref().unwrap())
                        .get_i64("id")
                        .unwrap(),
                );
            }
            Event::EventsDropped(marker) => {
                assert!(marker.count > 0);
                dropped += i64::try_from(marker.count).unwrap();
                markers += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(dropped > 0, "the queue of 8 overflowed");
    assert!(markers >= 1);
    assert!(
        received.windows(2).all(|pair| pair[0] < pair[1]),
        "what arrives keeps the change order"
    );
    assert_eq!(received.first(), Some(&1), "the first changes were queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_going_away_ends_its_subscription() {
    let mut f = fixture(1..=3).await;
    let stream = f
        .client
        .subscribe(subscribe(&users(), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(f.service.subscriber_count(), 1);
    drop(stream);
    wait_until("subscription closed", WAIT, || {
        f.service.subscriber_count() == 0
    })
    .await;

    // The engine goes on applying changes.
    let last = f.source.emit_insert(users(), user(4)).await;
    f.applied(last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_ends_when_the_target_closes() {
    let mut f = fixture(1..=3).await;
    let mut stream = f
        .client
        .subscribe(subscribe(&users(), false))
        .await
        .unwrap()
        .into_inner();
    f.engine.stop().await.unwrap();
    let end = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the stream ends in time")
        .unwrap();
    assert_eq!(end, None);
    wait_until("subscription closed", WAIT, || {
        f.service.subscriber_count() == 0
    })
    .await;
}
