//! Draining: one `GoAway`, streams closed at the deadline, new streams refused.

use std::time::Duration;

use laredo_proto::laredo::replication::v1 as pb;
use laredo_target_fanout::{DrainReason, FanoutConfig, drain_all};
use laredo_test_support::wait_until;

use crate::fixture::{Replica, Server, WAIT, item, sync_request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_sends_one_go_away_and_closes_at_the_deadline() {
    let server = Server::start(FanoutConfig::default(), [item(1, "eu", 1)]).await;
    let client = server.client().await;
    let replicas = [
        Replica::start(&client, sync_request("a")).await,
        Replica::start(&client, sync_request("b")).await,
    ];
    for replica in &replicas {
        replica.wait_caught_up().await;
    }
    assert_eq!(
        server
            .service
            .drain(DrainReason::Admin, Some(Duration::from_millis(300))),
        1
    );
    assert_eq!(
        drain_all(&server.engine, DrainReason::Shutdown, None),
        0,
        "idempotent"
    );
    for replica in &replicas {
        wait_until("stream closed", WAIT, || replica.snapshot().ended.is_some()).await;
        let state = replica.snapshot();
        assert_eq!(state.go_aways.len(), 1, "{:?}", state.go_aways);
        let go_away = &state.go_aways[0];
        assert_eq!(go_away.reason(), pb::GoAwayReason::Admin);
        let deadline = go_away.drain_deadline.unwrap();
        let drain = server.target.drain_info().unwrap();
        assert_eq!(
            deadline,
            prost_types::Timestamp::from(drain.deadline.unwrap())
        );
        assert!(state.ended.as_ref().unwrap().is_ok(), "{:?}", state.ended);
    }
    wait_until("clients gone", WAIT, || server.target.client_count() == 0).await;

    let refused = client.clone().sync(sync_request("late")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert_eq!(
        refused.message(),
        "the fan-out target for public.items is draining"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_deadline_the_stream_stays_until_the_client_leaves() {
    let server = Server::start(FanoutConfig::default(), [item(1, "eu", 1)]).await;
    let client = server.client().await;
    let replica = Replica::start(&client, sync_request("stays")).await;
    replica.wait_caught_up().await;
    server.target.drain(DrainReason::Shutdown, None);
    wait_until("go away", WAIT, || !replica.snapshot().go_aways.is_empty()).await;
    let go_away = replica.snapshot().go_aways[0].clone();
    assert_eq!(go_away.reason(), pb::GoAwayReason::Draining);
    assert!(go_away.drain_deadline.is_none());
    // Still served: live changes keep arriving after the GoAway.
    let position = server
        .source
        .emit_insert(crate::fixture::items(), item(2, "eu", 2))
        .await;
    server.applied(position).await;
    let expected = server.rows();
    replica
        .wait_rows("live after go away", || expected.clone())
        .await;
    assert!(replica.snapshot().ended.is_none());
    assert_eq!(
        server.target.clients()[0].state,
        laredo_target_fanout::ClientState::Draining
    );
}
