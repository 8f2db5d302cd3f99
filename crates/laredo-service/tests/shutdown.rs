//! Graceful shutdown: in-flight calls finish, long ones end at the drain deadline.

use std::time::Duration;

use laredo_proto::laredo::v1 as pb;
use laredo_proto::laredo::v1::laredo_query_service_client::LaredoQueryServiceClient;
use laredo_service::GrpcServer;
use laredo_test_support::wait_until_async;

use crate::support::{StubQuery, WAIT, channel, fixture, query_server, start};

#[tokio::test]
async fn an_in_flight_call_completes() {
    let fixture = fixture();
    let stub = StubQuery::new();
    let running =
        start(GrpcServer::builder(fixture.engine.clone()).add_service(query_server(&stub))).await;
    let mut client = LaredoQueryServiceClient::new(channel(running.addr).await);
    let call = tokio::spawn(async move { client.lookup(pb::LookupRequest::default()).await });
    stub.wait_entered(1).await;

    running.shutdown.cancel();
    let addr = running.addr;
    wait_until_async("the listener closes", WAIT, || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    // The call holds its connection open, so serving goes on.
    assert!(!running.handle.is_finished());

    stub.release.add_permits(1);
    let response = tokio::time::timeout(WAIT, call)
        .await
        .expect("the call returned")
        .unwrap()
        .expect("the call succeeded");
    assert!(response.into_inner().found);
    running.finished().await.unwrap();
}

#[tokio::test]
async fn the_drain_deadline_ends_calls_that_do_not_finish() {
    let fixture = fixture();
    let stub = StubQuery::new();
    let running = start(
        GrpcServer::builder(fixture.engine.clone())
            .add_service(query_server(&stub))
            .drain_timeout(Duration::from_millis(100)),
    )
    .await;
    let mut client = LaredoQueryServiceClient::new(channel(running.addr).await);
    // A subscription that never sends anything, and a lookup that is never released.
    let mut events = client
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let lookup = tokio::spawn({
        let mut client = client.clone();
        async move { client.lookup(pb::LookupRequest::default()).await }
    });
    stub.wait_entered(1).await;

    running.stop().await.unwrap();
    let event = tokio::time::timeout(WAIT, events.message())
        .await
        .expect("the stream ended");
    assert!(event.is_err(), "{event:?}");
    let lookup = tokio::time::timeout(WAIT, lookup)
        .await
        .expect("the lookup ended")
        .unwrap();
    assert!(lookup.is_err(), "{lookup:?}");
}
