//! `GetReplicationStatus`, `ListSnapshots`, `FetchSnapshot` and `ListJournalEntries`.

use laredo_core::{Position, Row};
use laredo_proto::laredo::replication::v1 as pb;
use laredo_proto::laredo::replication::v1::fetch_snapshot_response::Message;
use laredo_target_fanout::FanoutConfig;

use crate::fixture::{Replica, Server, by_id, item, items, sync_request};

async fn server_with_changes() -> (Server, Position) {
    let server = Server::start(
        FanoutConfig::default().snapshot_keep_count(2),
        (0..3).map(|id| item(id, "eu", id)),
    )
    .await;
    let mut last = Position::from_u64(0);
    for id in 3..6 {
        last = server.source.emit_insert(items(), item(id, "us", id)).await;
    }
    last = server
        .source
        .emit_delete(items(), item(0, "", 0))
        .await
        .max_position(last);
    server.applied(last.clone()).await;
    (server, last)
}

trait MaxPosition {
    fn max_position(self, other: Position) -> Position;
}

impl MaxPosition for Position {
    fn max_position(self, other: Position) -> Position {
        if self.as_u64() >= other.as_u64() {
            self
        } else {
            other
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_journal_rows_clients_and_latest_snapshot() {
    let (server, _) = server_with_changes().await;
    let mut client = server.client().await;
    let replica = Replica::start(&client, sync_request("watcher")).await;
    replica.wait_caught_up().await;
    let status = client
        .get_replication_status(pb::GetReplicationStatusRequest {
            schema: "public".into(),
            table: "items".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.current_sequence, 7,
        "3 baseline rows, 3 inserts, 1 delete"
    );
    assert_eq!(status.journal_oldest_sequence, 1);
    assert_eq!(status.journal_entry_count, 7);
    assert!(status.journal_oldest_at.is_some());
    assert_eq!(status.row_count, 5);
    assert_eq!(status.connected_clients, 1);
    let info = &status.clients[0];
    assert_eq!(info.client_id, "watcher");
    assert_eq!(info.current_sequence, 7);
    assert_eq!(info.behind_count, 0);
    assert!(info.connected_at.is_some());
    assert_eq!(info.state(), pb::ClientState::Live);
    assert_eq!(info.mode(), pb::SyncMode::FullSnapshot);
    let latest = status.latest_snapshot.unwrap();
    assert_eq!((latest.sequence, latest.row_count), (7, 5));
    assert!(!status.draining);
    assert_eq!(status.server_id, server.target.server_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_listed_newest_first_and_fetched_whole() {
    let (server, last) = server_with_changes().await;
    let mut client = server.client().await;
    server.target.take_snapshot();
    let listed = client
        .list_snapshots(pb::ListSnapshotsRequest {
            schema: "public".into(),
            table: "items".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .snapshots;
    // Baseline end (sequence 3) and now (7); keep_count 2.
    let sequences: Vec<u64> = listed.iter().map(|s| s.sequence).collect();
    assert_eq!(sequences, [7, 3]);
    let newest = &listed[0];
    assert_eq!(newest.source_position, last.to_string());
    assert_eq!(newest.row_count, 5);
    assert!(newest.size_bytes > 0 && newest.created_at.is_some());
    let limited = client
        .list_snapshots(pb::ListSnapshotsRequest {
            schema: "public".into(),
            table: "items".into(),
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .snapshots;
    assert_eq!(limited, listed[..1]);

    let mut stream = client
        .fetch_snapshot(pb::FetchSnapshotRequest {
            snapshot_id: newest.snapshot_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut rows = Vec::new();
    let mut begin = None;
    let mut end = None;
    while let Some(message) = stream.message().await.unwrap() {
        match message.message.unwrap() {
            Message::Begin(b) => begin = Some(b),
            Message::Rows(batch) => {
                rows.extend(batch.rows.iter().map(|r| Row::try_from(r).unwrap()))
            }
            Message::End(e) => end = Some(e),
        }
    }
    let begin = begin.unwrap();
    assert_eq!(
        (begin.schema.as_str(), begin.table.as_str()),
        ("public", "items")
    );
    assert_eq!(begin.columns.len(), 4);
    assert_eq!(end.unwrap().rows_sent, 5);
    assert_eq!(by_id(rows), server.rows());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_entries_are_listed_after_a_sequence_or_as_a_tail() {
    let (server, last) = server_with_changes().await;
    let mut client = server.client().await;
    let request = |after_sequence, limit| pb::ListJournalEntriesRequest {
        schema: "public".into(),
        table: "items".into(),
        after_sequence,
        limit,
    };
    let after = client
        .list_journal_entries(request(3, 2))
        .await
        .unwrap()
        .into_inner();
    let sequences: Vec<u64> = after.entries.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [4, 5]);
    let tail = client
        .list_journal_entries(request(0, 2))
        .await
        .unwrap()
        .into_inner();
    let sequences: Vec<u64> = tail.entries.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [6, 7]);
    let delete = &tail.entries[1];
    assert_eq!(
        delete.action(),
        laredo_proto::laredo::v1::ChangeAction::Delete
    );
    assert_eq!(delete.source_position, last.to_string());
    assert_eq!(
        Row::try_from(delete.old_values.as_ref().unwrap()).unwrap(),
        item(0, "eu", 0),
        "the full old row, found by identity"
    );
}
