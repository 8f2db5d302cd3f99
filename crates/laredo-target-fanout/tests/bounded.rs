//! Bounded memory under any caller: one snapshot build for a flood of `Sync` joins, and
//! the client cap.

use std::collections::HashSet;

use laredo_core::Position;
use laredo_target_fanout::{DEFAULT_SNAPSHOT_KEEP_COUNT, FanoutConfig};
use tokio::task::JoinSet;

use crate::fixture::{Client, Replica, Server, item, items, sync_request};

/// Updates row `step % 20` (the table keeps its 20 rows).
async fn change(server: &Server, step: i64) -> Position {
    let id = step % 20;
    server
        .source
        .emit_update(items(), item(id, "us", step), None)
        .await
}

/// Opens `count` `Sync` streams at once; returns them when every one is caught up.
async fn join(client: &Client, prefix: &str, count: usize) -> Vec<Replica> {
    let mut joins = JoinSet::new();
    for n in 0..count {
        let client = client.clone();
        let id = format!("{prefix}-{n}");
        joins.spawn(async move { Replica::start(&client, sync_request(&id)).await });
    }
    let replicas = joins.join_all().await;
    for replica in &replicas {
        replica.wait_caught_up().await;
    }
    replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_sync_joins_after_changes_builds_one_snapshot() {
    let server = Server::start(
        FanoutConfig::default(),
        (0..20).map(|id| item(id, "eu", id)),
    )
    .await;
    let client = server.client().await;
    // More changes than rows: the baseline's snapshot is not worth reusing.
    let mut last = Position::from_u64(0);
    for step in 0..30 {
        last = change(&server, step).await;
    }
    server.applied(last.clone()).await;
    let taken = server.target.snapshots_taken();

    let mut replicas = join(&client, "first", 25).await;
    // Changes between the waves: each wave sees another version of the table.
    for step in 30..40 {
        last = change(&server, step).await;
    }
    server.applied(last).await;
    replicas.extend(join(&client, "second", 25).await);

    assert_eq!(
        server.target.snapshots_taken(),
        taken + 1,
        "50 joins after a change copy the table once"
    );
    let ids: HashSet<String> = replicas
        .iter()
        .map(|r| r.snapshot().handshake.unwrap().snapshot_id)
        .collect();
    assert_eq!(ids.len(), 1, "every stream shares one snapshot: {ids:?}");
    assert!(server.target.snapshots().len() <= DEFAULT_SNAPSHOT_KEEP_COUNT);
    let expected = server.rows();
    for replica in &replicas {
        replica
            .wait_rows("replica equals the target", || expected.clone())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_past_max_clients_is_refused_naming_it_while_the_others_keep_receiving() {
    let server = Server::start(
        FanoutConfig::default().max_clients(3),
        (0..20).map(|id| item(id, "eu", id)),
    )
    .await;
    let client = server.client().await;
    let replicas = join(&client, "held", 3).await;
    let refused = client
        .clone()
        .sync(sync_request("one-too-many"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused.message().contains("max_clients = 3"),
        "{}",
        refused.message()
    );
    assert_eq!(server.target.client_count(), 3);
    let last = change(&server, 7).await;
    server.applied(last).await;
    let expected = server.rows();
    for replica in &replicas {
        replica
            .wait_rows("a held stream receives the change", || expected.clone())
            .await;
        assert!(replica.snapshot().ended.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_ends_its_connection_while_another_clients_sync_keeps_receiving() {
    use laredo_test_support::RawH2;
    use laredo_test_support::raw_h2::frame_type;

    let server = Server::start(
        FanoutConfig::default(),
        (0..20).map(|id| item(id, "eu", id)),
    )
    .await;
    let client = server.client().await;
    let replicas = join(&client, "bystander", 1).await;

    // Sync streams opened and reset at once, thousands of times (CVE-2023-44487).
    let mut flood = RawH2::connect(server.addr).await.unwrap();
    let mut stream = 1u32;
    'flood: for _ in 0..50 {
        let mut batch = Vec::new();
        for _ in 0..100 {
            RawH2::headers(
                &mut batch,
                stream,
                "/laredo.replication.v1.LaredoReplicationService/Sync",
            );
            RawH2::reset(&mut batch, stream);
            stream += 2;
        }
        if flood.send(&batch).await.is_err() {
            break 'flood;
        }
    }
    // The server ends that connection (GOAWAY, then close).
    let ended = tokio::time::timeout(crate::fixture::WAIT, async {
        loop {
            match flood.read_frame().await {
                Ok(Some(frame)) if frame.kind == frame_type::GOAWAY => {}
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the flooding connection was not closed");

    // The bystander's Sync still receives changes.
    let last = change(&server, 3).await;
    server.applied(last).await;
    let expected = server.rows();
    for replica in &replicas {
        replica
            .wait_rows("the bystander receives the change", || expected.clone())
            .await;
        assert!(replica.snapshot().ended.is_none());
    }
}
