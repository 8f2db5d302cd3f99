//! Slow clients under `drop_disconnect` and `slow_down`.

use laredo_core::{Position, row};
use laredo_proto::laredo::replication::v1 as pb;
use laredo_target_fanout::{ClientBufferPolicy, ClientState, FanoutConfig};
use laredo_test_support::wait_until;

use crate::fixture::{Replica, Server, WAIT, assert_consecutive, connect, items, sync_request};

/// A row with a payload big enough to fill HTTP/2 windows quickly.
fn big(id: i64) -> laredo_core::Row {
    row! {"id" => id, "name" => "x".repeat(8 * 1024), "region" => "eu", "score" => id}
}

/// Opens a stream (client `stalled`) on a connection with small HTTP/2 windows and
/// never reads it.
async fn stalled(server: &Server) -> tonic::Streaming<pb::SyncResponse> {
    stalled_with(server, sync_request("stalled")).await
}

async fn stalled_with(
    server: &Server,
    request: pb::SyncRequest,
) -> tonic::Streaming<pb::SyncResponse> {
    let client = connect(server.addr, |e| {
        e.initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
    })
    .await;
    client.clone().sync(request).await.unwrap().into_inner()
}

/// Inserts big rows `ids` and waits until the target applied them.
async fn insert_big(server: &Server, ids: std::ops::Range<i64>) {
    let mut last = Position::from_u64(0);
    for id in ids {
        last = server.source.emit_insert(items(), big(id)).await;
    }
    server.applied(last).await;
}

/// Waits until `n` clients are registered.
async fn clients(server: &Server, what: &str, n: usize) {
    wait_until(what, WAIT, || server.target.client_count() == n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected_without_holding_others_back() {
    let server = Server::start(FanoutConfig::default().client_buffer_max_size(256), []).await;
    let client = server.client().await;
    let fast: Vec<Replica> = futures(&client, 3).await;
    let stalled = stalled(&server).await;
    clients(&server, "four clients", 4).await;
    insert_big(&server, 0..1000).await;
    clients(&server, "the stalled client is dropped", 3).await;
    let expected = server.rows();
    for replica in &fast {
        replica
            .wait_rows("fast replica has every row", || expected.clone())
            .await;
        let state = replica.snapshot();
        assert!(
            state.ended.is_none(),
            "fast replica disconnected: {:?}",
            state.ended
        );
        assert_consecutive(&state, state.snapshot.clone().unwrap().sequence);
    }
    assert!(
        server
            .target
            .clients()
            .iter()
            .all(|c| c.client_id != "stalled")
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalled_while_catching_up_is_disconnected_and_releases_its_pin() {
    // Catching up, a client is far behind by design; one that stops reading there must
    // still go once it falls a buffer further behind, or its pin holds the journal.
    let server = Server::start(FanoutConfig::default().client_buffer_max_size(256), []).await;
    insert_big(&server, 0..1000).await;
    let request = pb::SyncRequest {
        last_known_sequence: 1,
        ..sync_request("stalled")
    };
    let _stream = stalled_with(&server, request).await;
    clients(&server, "the client is registered", 1).await;
    // Never caught up: it stalls in the backlog.
    assert_ne!(server.target.clients()[0].state, ClientState::Live);
    insert_big(&server, 1000..2500).await;
    clients(&server, "the stalled client is dropped", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_slow_to_take_its_snapshot_is_not_disconnected_for_the_changes_meanwhile() {
    // The changes during a long snapshot transfer are the client's catch-up, however
    // many: disconnecting it for them would make a big table's snapshot never finish.
    let server = Server::start(
        FanoutConfig::default().client_buffer_max_size(256),
        (0..1000).map(big),
    )
    .await;
    let mut stream = stalled(&server).await;
    insert_big(&server, 1000..2000).await;
    // Only now does the client read: the snapshot, then every change, then `CaughtUp`.
    let (mut rows, mut entries) = (0, 0);
    loop {
        let message = stream
            .message()
            .await
            .expect("the stream stays up")
            .expect("the stream stays open")
            .message
            .unwrap();
        use pb::sync_response::Message as M;
        match message {
            M::SnapshotRows(batch) => rows += batch.rows.len(),
            M::JournalEntries(batch) => entries += batch.entries.len(),
            M::CaughtUp(_) => break,
            _ => {}
        }
    }
    assert_eq!(rows, 1000);
    assert_eq!(entries, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalled_in_its_snapshot_goes_once_the_changes_outgrow_the_journal() {
    // A client that stops reading mid-snapshot would otherwise pin the journal for as
    // long as its connection lives.
    let server = Server::start(
        FanoutConfig::default()
            .client_buffer_max_size(256)
            .journal_max_entries(300),
        (0..1000).map(big),
    )
    .await;
    let _stream = stalled(&server).await;
    clients(&server, "the client is registered", 1).await;
    insert_big(&server, 1000..2000).await;
    clients(&server, "the stalled client is dropped", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_slow_down_a_stalled_client_is_kept_and_pins_the_journal() {
    let config = FanoutConfig::default()
        .client_buffer_max_size(8)
        .client_buffer_policy(ClientBufferPolicy::SlowDown)
        .journal_max_entries(10);
    let server = Server::start(config, []).await;
    let stalled = stalled(&server).await;
    clients(&server, "one client", 1).await;
    // 16 MiB of changes: far more than the HTTP/2 window, the server's send buffers
    // and the client's queue can absorb, so the client stays behind for good (with
    // 1.6 MiB the buffers could take it all and the client caught up).
    insert_big(&server, 0..2000).await;
    wait_until("the stalled client is backpressured", WAIT, || {
        server.target.clients().first().map(|c| c.state) == Some(ClientState::Backpressured)
    })
    .await;
    let pinned = server.target.clients()[0].current_sequence;
    assert!(pinned < server.target.current_sequence());
    assert!(
        server.target.oldest_sequence() <= pinned + 1,
        "the journal keeps every entry after the pin"
    );
    assert!(server.target.journal_len() > 10);
    drop(stalled);
    clients(&server, "client gone", 0).await;
}

async fn futures(client: &crate::fixture::Client, n: usize) -> Vec<Replica> {
    let mut replicas = Vec::new();
    for idx in 0..n {
        let replica = Replica::start(client, sync_request(&format!("fast-{idx}"))).await;
        replica.wait_caught_up().await;
        replicas.push(replica);
    }
    replicas
}
