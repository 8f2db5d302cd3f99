//! `Sync`: concurrent replicas, resume by sequence and by position, re-snapshots.

use laredo_core::Position;
use laredo_proto::laredo::replication::v1 as pb;
use laredo_target_fanout::FanoutConfig;
use laredo_test_support::wait_until;

use crate::fixture::{
    Replica, Server, WAIT, assert_consecutive, by_id, compact_request, item, items, sync_request,
};

/// Applies change `step` of a deterministic mix of inserts, updates and deletes.
async fn change(server: &Server, step: i64) -> Position {
    let source = &server.source;
    let id = step % 40;
    match step % 5 {
        0 | 1 => {
            source
                .emit_insert(items(), item(100 + step, "eu-1", step))
                .await
        }
        2 => {
            source
                .emit_update(items(), item(id, "us-1", step), Some(item(id, "", 0)))
                .await
        }
        3 => {
            source
                .emit_delete(items(), item(100 + step - 3, "", 0))
                .await
        }
        _ => {
            source
                .emit_update(items(), item(id, "eu-2", -step), None)
                .await
        }
    }
}

fn baseline() -> Vec<laredo_core::Row> {
    (0..40).map(|id| item(id, "eu-1", id)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_replicas_end_equal_to_the_target() {
    let server = Server::start(FanoutConfig::default(), baseline()).await;
    let client = server.client().await;
    let mut replicas = Vec::new();
    for n in 0..25 {
        replicas.push(Replica::start(&client, sync_request(&format!("early-{n}"))).await);
    }
    let mut last = Position::from_u64(0);
    for step in 0..300 {
        last = change(&server, step).await;
        // Half of the replicas connect while the changes stream in.
        if step % 12 == 0 && replicas.len() < 50 {
            let n = replicas.len();
            replicas.push(Replica::start(&client, sync_request(&format!("late-{n}"))).await);
        }
    }
    assert_eq!(replicas.len(), 50);
    server.applied(last).await;
    let expected = server.rows();
    assert_eq!(expected, by_id(server.source.table_rows(&items())));
    for replica in &replicas {
        replica
            .wait_rows("replica equals the target", || expected.clone())
            .await;
        let state = replica.snapshot();
        let handshake = state.handshake.clone().unwrap();
        assert_eq!(handshake.mode(), pb::SyncMode::FullSnapshot);
        let snapshot = state.snapshot.clone().unwrap();
        assert_eq!(snapshot.sequence, handshake.resume_from_sequence);
        assert_eq!(snapshot.rows_sent as usize, state.snapshot_rows.len());
        assert_consecutive(&state, snapshot.sequence);
        assert_eq!(state.last_sequence, server.target.current_sequence());
    }
    assert_eq!(server.target.client_count(), 50);
    drop(replicas);
    wait_until("clients unregistered", WAIT, || {
        server.target.client_count() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_replica_resumes_by_delta_without_gap_or_duplicate() {
    let server = Server::start(FanoutConfig::default(), baseline()).await;
    let client = server.client().await;
    let replica = Replica::start(&client, sync_request("resumer")).await;
    let mut last = Position::from_u64(0);
    for step in 0..20 {
        last = change(&server, step).await;
    }
    server.applied(last).await;
    let at = server.target.current_sequence();
    wait_until("replica at the head", WAIT, || {
        replica.snapshot().last_sequence == at
    })
    .await;
    let before = replica.stop();
    wait_until("client gone", WAIT, || server.target.client_count() == 0).await;

    let mut last = Position::from_u64(0);
    for step in 20..60 {
        last = change(&server, step).await;
    }
    let request = pb::SyncRequest {
        last_known_sequence: before.last_sequence,
        ..sync_request("resumer")
    };
    let resumed = Replica::resume(&client, request, before.clone()).await;
    // Changes keep coming while it catches up.
    for step in 60..80 {
        last = change(&server, step).await;
    }
    server.applied(last).await;
    let expected = server.rows();
    resumed
        .wait_rows("resumed replica equals the target", || expected.clone())
        .await;
    let state = resumed.snapshot();
    let handshake = state.handshake.clone().unwrap();
    assert_eq!(handshake.mode(), pb::SyncMode::Delta);
    assert_eq!(handshake.resume_from_sequence, before.last_sequence);
    assert!(state.snapshot.is_none());
    assert_consecutive(&state, before.last_sequence);
    assert_eq!(state.last_sequence, server.target.current_sequence());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_journal_gets_a_full_snapshot() {
    let server = Server::start(FanoutConfig::default().journal_max_entries(5), baseline()).await;
    let client = server.client().await;
    let replica = Replica::start(&client, sync_request("stale")).await;
    replica.wait_caught_up().await;
    let before = replica.stop();
    wait_until("client gone", WAIT, || server.target.client_count() == 0).await;
    let mut last = Position::from_u64(0);
    for step in 0..20 {
        last = change(&server, step).await;
    }
    server.applied(last).await;
    assert!(server.target.oldest_sequence() > before.last_sequence + 1);
    assert!(server.target.journal_len() <= 5);

    let request = pb::SyncRequest {
        last_known_sequence: before.last_sequence,
        ..sync_request("stale")
    };
    let resumed = Replica::resume(&client, request, before).await;
    let expected = server.rows();
    resumed
        .wait_rows("re-snapshotted replica equals the target", || {
            expected.clone()
        })
        .await;
    let state = resumed.snapshot();
    assert_eq!(state.handshake.unwrap().mode(), pb::SyncMode::FullSnapshot);
    assert_eq!(
        state.snapshot.unwrap().sequence,
        server.target.current_sequence()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_resumes_from_a_held_snapshot_id() {
    let server = Server::start(FanoutConfig::default(), baseline()).await;
    let client = server.client().await;
    let replica = Replica::start(&client, sync_request("by-snapshot")).await;
    replica.wait_caught_up().await;
    let before = replica.stop();
    let snapshot = before.snapshot.clone().unwrap();
    let mut last = Position::from_u64(0);
    for step in 0..10 {
        last = change(&server, step).await;
    }
    server.applied(last).await;
    let request = pb::SyncRequest {
        last_snapshot_id: snapshot.snapshot_id.clone(),
        ..sync_request("by-snapshot")
    };
    let resumed = Replica::resume(&client, request, before).await;
    let expected = server.rows();
    resumed
        .wait_rows("replica equals the target", || expected.clone())
        .await;
    let state = resumed.snapshot();
    let handshake = state.handshake.clone().unwrap();
    assert_eq!(handshake.mode(), pb::SyncMode::DeltaFromSnapshot);
    assert_eq!(handshake.snapshot_id, snapshot.snapshot_id);
    assert_consecutive(&state, snapshot.sequence);
}

/// Two engines tail identical test sources (same baseline, same changes, so the same
/// positions): a replica fails over from one to the other by source position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_fails_over_to_another_instance_by_source_position() {
    let first = Server::start(FanoutConfig::default(), baseline()).await;
    let second = Server::start(FanoutConfig::default(), baseline()).await;
    let both = |step| {
        let (first, second) = (&first, &second);
        async move {
            let a = change(first, step).await;
            let b = change(second, step).await;
            assert_eq!(a, b, "identical sources give identical positions");
            a
        }
    };
    let replica = Replica::start(&first.client().await, sync_request("failover")).await;
    let mut last = Position::from_u64(0);
    for step in 0..30 {
        last = both(step).await;
    }
    first.applied(last.clone()).await;
    wait_until("replica at the head of the first", WAIT, || {
        replica.snapshot().last_position == last.to_string()
    })
    .await;
    let before = replica.stop();
    for step in 30..60 {
        last = both(step).await;
    }
    second.applied(last.clone()).await;

    let request = pb::SyncRequest {
        last_known_source_position: before.last_position.clone(),
        ..sync_request("failover")
    };
    // Sequences are per instance: the new stream's are checked on their own.
    let previous = crate::fixture::ReplicaState {
        last_sequence: 0,
        ..before.clone()
    };
    let moved = Replica::resume(&second.client().await, request, previous).await;
    let expected = second.rows();
    moved
        .wait_rows("replica equals the second instance", || expected.clone())
        .await;
    let state = moved.snapshot();
    assert!(state.violations.is_empty(), "{:?}", state.violations);
    assert_eq!(state.handshake.unwrap().mode(), pb::SyncMode::Delta);
    // The entry at the replica's position comes again (at-least-once across
    // instances), then every later position, without a gap.
    let positions: Vec<u64> = state.positions.iter().map(|p| p.parse().unwrap()).collect();
    let from: u64 = before.last_position.parse().unwrap();
    let expected_positions: Vec<u64> = (from..=last.as_u64().unwrap()).collect();
    assert_eq!(positions, expected_positions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_small_flow_control_windows_gets_every_row_and_change() {
    // 2,000 rows: the snapshot alone is many times the client's 4 KiB stream window, so
    // the server sends it in window-sized pieces as the client reads.
    let rows: Vec<_> = (0..2_000).map(|id| item(id, "eu-1", id)).collect();
    let server = Server::start(FanoutConfig::default(), rows).await;
    let client = crate::fixture::connect(server.addr, |endpoint| {
        endpoint.initial_stream_window_size(4 * 1024)
    })
    .await;
    let replica = Replica::start(&client, sync_request("narrow")).await;
    let mut last = Position::from_u64(0);
    for step in 0..300 {
        last = change(&server, step).await;
    }
    server.applied(last).await;
    let expected = server.rows();
    replica
        .wait_rows("replica equals the target", || expected.clone())
        .await;
    let state = replica.snapshot();
    let snapshot = state.snapshot.clone().unwrap();
    assert_eq!(snapshot.rows_sent as usize, state.snapshot_rows.len());
    assert_eq!(state.snapshot_rows.len(), 2_000);
    assert_consecutive(&state, snapshot.sequence);
    assert_eq!(state.last_sequence, server.target.current_sequence());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_reaches_named_replicas_live_and_on_a_resume_from_before_it() {
    schema_change_live_and_on_a_resume(sync_request).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_reaches_compact_replicas_live_and_on_a_resume_from_before_it() {
    // Positional rows must be read against the columns of their time, also by a
    // replica that resumes from before the change.
    schema_change_live_and_on_a_resume(compact_request).await;
}

async fn schema_change_live_and_on_a_resume(request: fn(&str) -> pb::SyncRequest) {
    let server = Server::start(FanoutConfig::default(), baseline()).await;
    let client = server.client().await;
    let live = Replica::start(&client, request("live")).await;
    let resumer = Replica::start(&client, request("resumer")).await;
    let mut last = Position::from_u64(0);
    for step in 0..10 {
        last = change(&server, step).await;
    }
    server.applied(last.clone()).await;
    let at = server.target.current_sequence();
    wait_until("resumer at the head", WAIT, || {
        resumer.snapshot().last_sequence == at
    })
    .await;
    let before = resumer.stop();

    // Changes under the old columns, the schema change, changes under the new ones.
    for step in 10..20 {
        change(&server, step).await;
    }
    let column = laredo_core::ColumnDefinition::new("note", "text");
    server.source.add_column(items(), column).await;
    for id in 0..10 {
        let row = laredo_core::row! {
            "id" => id, "name" => format!("item-{id}"), "region" => "eu-3",
            "score" => 1000 + id, "note" => format!("n{id}")
        };
        last = server.source.emit_update(items(), row, None).await;
    }
    server.applied(last).await;
    let expected = server.rows();
    assert_eq!(expected[&3].get_str("note"), Some("n3"));

    let resume = pb::SyncRequest {
        last_known_sequence: before.last_sequence,
        ..request("resumer")
    };
    let compact = resume.row_encoding() == pb::RowEncoding::Compact;
    let resumed = Replica::resume(&client, resume, before.clone()).await;
    for replica in [&live, &resumed] {
        replica
            .wait_rows("replica equals the target", || expected.clone())
            .await;
        let state = replica.snapshot();
        assert!(state.violations.is_empty(), "{:?}", state.violations);
    }
    let state = resumed.snapshot();
    let handshake = state.handshake.clone().unwrap();
    assert_eq!(handshake.mode(), pb::SyncMode::Delta);
    assert_consecutive(&state, before.last_sequence);
    assert_eq!(server.target.columns().len(), 5);
    assert_eq!(handshake.columns.len(), 5, "the current columns");
    if compact {
        // Positional rows after the resume point follow the columns of that time.
        assert_eq!(handshake.row_encoding(), pb::RowEncoding::Compact);
        assert_eq!(handshake.row_columns.len(), 4);
        assert!(state.positional_rows > 10, "{}", state.positional_rows);
    } else {
        assert!(handshake.row_columns.is_empty());
        assert_eq!(state.positional_rows, 0);
        assert_eq!(live.snapshot().positional_rows, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_and_compact_replicas_of_one_table_end_equal() {
    // Both encodings read the same shared journal: each entry is encoded once per
    // encoding, and neither stream may see the other's rows.
    let server = Server::start(FanoutConfig::default(), baseline()).await;
    let client = server.client().await;
    let named = Replica::start(&client, sync_request("named")).await;
    let compact = Replica::start(&client, compact_request("compact")).await;
    let mut last = Position::from_u64(0);
    for step in 0..200 {
        last = change(&server, step).await;
    }
    server.applied(last).await;
    let expected = server.rows();
    for replica in [&named, &compact] {
        replica
            .wait_rows("replica equals the target", || expected.clone())
            .await;
        let state = replica.snapshot();
        assert!(state.violations.is_empty(), "{:?}", state.violations);
    }
    assert_eq!(named.snapshot().positional_rows, 0);
    assert!(compact.snapshot().positional_rows >= 120);

    // The journal as each encoding sends it: COMPACT has no names on full rows and
    // only the key in old rows.
    let mut listing = client.clone();
    let entries = listing
        .list_journal_entries(pb::ListJournalEntriesRequest {
            schema: "public".into(),
            table: "items".into(),
            after_sequence: 40,
            limit: 200,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(entries.len(), 200);
    for entry in &entries {
        for row in [&entry.old_values, &entry.new_values].into_iter().flatten() {
            assert_eq!(row.columns.len(), row.values.len(), "listing keeps names");
        }
        if entry.action() == laredo_proto::laredo::v1::ChangeAction::Update {
            assert_eq!(entry.old_values.as_ref().unwrap().columns.len(), 4);
        }
    }
}
