//! Status codes and messages.

use laredo_proto::laredo::replication::v1 as pb;
use laredo_proto::laredo::replication::v1::field_predicate::Match;
use laredo_target_fanout::FanoutConfig;
use laredo_test_support::wait_until;

use crate::fixture::{Replica, Server, WAIT, item, sync_request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_clients_reached_is_resource_exhausted() {
    let server = Server::start(FanoutConfig::default().max_clients(1), [item(1, "eu", 1)]).await;
    let client = server.client().await;
    let first = Replica::start(&client, sync_request("first")).await;
    first.wait_caught_up().await;
    let refused = client
        .clone()
        .sync(sync_request("second"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        refused.message(),
        "the fan-out target for public.items serves max_clients = 1 clients already"
    );
    drop(first);
    wait_until("slot freed", WAIT, || server.target.client_count() == 0).await;
    let again = Replica::start(&client, sync_request("second")).await;
    again.wait_caught_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status() {
    let server = Server::start(FanoutConfig::default(), [item(1, "eu", 1)]).await;
    let mut client = server.client().await;

    let unknown = client
        .sync(pb::SyncRequest {
            table: "nope".into(),
            ..sync_request("x")
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert_eq!(unknown.message(), "no fan-out target for public.nope");

    let missing = client
        .sync(pb::SyncRequest {
            schema: String::new(),
            ..sync_request("x")
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::InvalidArgument);
    assert_eq!(missing.message(), "schema and table are required");

    let filter = client
        .sync(pb::SyncRequest {
            filters: vec![pb::FieldPredicate {
                field: String::new(),
                r#match: Some(Match::Prefix("a".into())),
            }],
            ..sync_request("x")
        })
        .await
        .unwrap_err();
    assert_eq!(filter.code(), tonic::Code::InvalidArgument);
    assert_eq!(filter.message(), "filter[0]: field is required");

    let status = client
        .get_replication_status(pb::GetReplicationStatusRequest {
            schema: "public".into(),
            table: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let list = client
        .list_snapshots(pb::ListSnapshotsRequest {
            schema: "other".into(),
            table: "items".into(),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(list.code(), tonic::Code::NotFound);

    let empty = client
        .fetch_snapshot(pb::FetchSnapshotRequest {
            snapshot_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    let gone = client
        .fetch_snapshot(pb::FetchSnapshotRequest {
            snapshot_id: "fanout-9-9".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    assert_eq!(gone.message(), "snapshot fanout-9-9 not found");
    assert_eq!(server.target.client_count(), 0);
}
