//! Subscription filters across the snapshot, catch-up and live entries.

use std::collections::HashMap;

use laredo_core::{Position, Row, Value};
use laredo_proto::laredo::replication::v1 as pb;
use laredo_proto::laredo::replication::v1::field_predicate::Match;
use laredo_proto::laredo::v1 as types;
use laredo_target_fanout::FanoutConfig;
use laredo_test_support::wait_until;

use crate::fixture::{Replica, Server, WAIT, item, items, sync_request};

fn predicate(field: &str, test: Match) -> pb::FieldPredicate {
    pb::FieldPredicate {
        field: field.into(),
        r#match: Some(test),
    }
}

fn value(v: impl Into<Value>) -> types::Value {
    types::Value::from(&v.into())
}

struct Case {
    name: &'static str,
    filters: Vec<pb::FieldPredicate>,
    keep: fn(&Row) -> bool,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "equals",
            filters: vec![predicate("region", Match::Equals(value("us-1")))],
            keep: |r| r.get_str("region") == Some("us-1"),
        },
        Case {
            name: "prefix",
            filters: vec![predicate("region", Match::Prefix("eu".into()))],
            keep: |r| r.get_str("region").is_some_and(|s| s.starts_with("eu")),
        },
        Case {
            name: "in",
            // Numbers match across kinds: 2.0 (numeric) matches the int8 2.
            filters: vec![predicate(
                "score",
                Match::In(types::ValueList {
                    values: vec![value(1), value(Value::numeric("2.0")), value(3.0)],
                }),
            )],
            keep: |r| matches!(r.get_i64("score"), Some(1..=3)),
        },
        Case {
            name: "prefix and in",
            filters: vec![
                predicate("region", Match::Prefix("eu".into())),
                predicate(
                    "score",
                    Match::In(types::ValueList {
                        values: vec![value(1), value(2)],
                    }),
                ),
            ],
            keep: |r| {
                r.get_str("region").is_some_and(|s| s.starts_with("eu"))
                    && matches!(r.get_i64("score"), Some(1..=2))
            },
        },
    ]
}

fn filtered(server: &Server, keep: fn(&Row) -> bool) -> HashMap<i64, Row> {
    server.rows().into_iter().filter(|(_, r)| keep(r)).collect()
}

fn request(client_id: &str, filters: &[pb::FieldPredicate]) -> pb::SyncRequest {
    pb::SyncRequest {
        filters: filters.to_vec(),
        ..sync_request(client_id)
    }
}

/// A baseline row (filtered columns never change: they are assumed immutable).
fn base(id: i64) -> Row {
    item(
        id,
        ["eu-1", "us-1", "eu-2"][usize::try_from(id % 3).unwrap()],
        id % 4,
    )
}

/// Inserts rows of every region and score, renames some, deletes others.
async fn changes(server: &Server, round: i64) -> Position {
    let source = &server.source;
    let mut last = Position::from_u64(0);
    for id in 0..12 {
        let region = ["eu-1", "us-1", "eu-2"][usize::try_from((id + round) % 3).unwrap()];
        last = source
            .emit_insert(items(), item(100 * (round + 1) + id, region, id % 4))
            .await;
    }
    for id in 0..6 {
        last = source
            .emit_update(
                items(),
                base(id).with("name", format!("renamed-{round}")),
                None,
            )
            .await;
    }
    for id in 0..3 {
        last = source
            .emit_delete(items(), item(100 * (round + 1) + id, "", 0))
            .await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_apply_to_snapshot_catch_up_and_live_entries() {
    let baseline: Vec<Row> = (0..12).map(base).collect();
    let server = Server::start(FanoutConfig::default(), baseline).await;
    let client = server.client().await;
    for case in cases() {
        // Snapshot: only matching rows, counted after the filter.
        let replica = Replica::start(&client, request(case.name, &case.filters)).await;
        replica.wait_caught_up().await;
        let state = replica.snapshot();
        let expected = filtered(&server, case.keep);
        assert_eq!(state.rows, expected, "{}: snapshot", case.name);
        assert_eq!(
            state.snapshot.as_ref().unwrap().rows_sent as usize,
            expected.len()
        );
        assert!(state.snapshot_rows.iter().all(case.keep), "{}", case.name);
        let before = replica.stop();
        wait_until("client gone", WAIT, || server.target.client_count() == 0).await;

        // Catch-up: changes made while away.
        let last = changes(&server, 1).await;
        server.applied(last).await;
        let resumed = Replica::resume(
            &client,
            pb::SyncRequest {
                last_known_sequence: before.last_sequence,
                ..request(case.name, &case.filters)
            },
            before,
        )
        .await;
        let expected = filtered(&server, case.keep);
        resumed.wait_rows(case.name, || expected.clone()).await;
        assert_eq!(
            resumed.snapshot().handshake.unwrap().mode(),
            pb::SyncMode::Delta
        );

        // Live.
        let last = changes(&server, 2).await;
        server.applied(last).await;
        let expected = filtered(&server, case.keep);
        resumed.wait_rows(case.name, || expected.clone()).await;
        let state = resumed.snapshot();
        assert!(state.violations.is_empty(), "{:?}", state.violations);
        assert!(!state.sequences.is_empty());
        drop(resumed);
        wait_until("client gone", WAIT, || server.target.client_count() == 0).await;
        // Reset the table for the next case.
        let last = server.source.emit_truncate(items()).await;
        server.applied(last).await;
        let mut last = Position::from_u64(0);
        for id in 0..12 {
            last = server.source.emit_insert(items(), base(id)).await;
        }
        // Delivered to the engine is not yet applied: the next snapshot must hold them.
        server.applied(last).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_advance_a_filtered_clients_delivered_sequence() {
    let config = FanoutConfig::default().heartbeat_interval(std::time::Duration::from_millis(50));
    let server = Server::start(config, [item(1, "eu-1", 1)]).await;
    let client = server.client().await;
    let filters = [predicate("region", Match::Equals(value("nowhere")))];
    let replica = Replica::start(&client, request("quiet", &filters)).await;
    replica.wait_caught_up().await;
    let last = changes(&server, 1).await;
    server.applied(last.clone()).await;
    let head = server.target.current_sequence();
    wait_until("a heartbeat at the head", WAIT, || {
        replica
            .snapshot()
            .heartbeats
            .iter()
            .any(|h| h.delivered_sequence == head && h.current_sequence == head)
    })
    .await;
    let state = replica.snapshot();
    assert!(state.rows.is_empty());
    assert!(
        state.sequences.is_empty(),
        "nothing matched: {:?}",
        state.sequences
    );
    let heartbeat = state
        .heartbeats
        .iter()
        .find(|h| h.delivered_sequence == head)
        .unwrap();
    assert_eq!(heartbeat.delivered_source_position, last.to_string());
}
