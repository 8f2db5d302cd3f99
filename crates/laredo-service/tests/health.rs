//! grpc.health.v1.Health follows the engine's readiness and shutdown.

use std::time::Duration;

use laredo_service::GrpcServer;
use tonic::Code;
use tonic::codec::Streaming;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::support::{OAM, QUERY, StubQuery, WAIT, channel, fixture, query_server, start};

async fn check(client: &mut HealthClient<Channel>, service: &str) -> ServingStatus {
    let response = client
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .unwrap();
    response.into_inner().status()
}

async fn watch(
    client: &mut HealthClient<Channel>,
    service: &str,
) -> Streaming<HealthCheckResponse> {
    client
        .watch(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn next_status(stream: &mut Streaming<HealthCheckResponse>) -> ServingStatus {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a health update")
        .unwrap()
        .expect("the watch goes on")
        .status()
}

#[tokio::test]
async fn not_serving_until_the_engine_is_ready_then_serving() {
    let fixture = fixture();
    let running = start(
        GrpcServer::builder(fixture.engine.clone())
            .add_service(query_server(&StubQuery::new()))
            .add_service(fixture.oam()),
    )
    .await;
    let mut client = HealthClient::new(channel(running.addr).await);
    for service in ["", QUERY, OAM] {
        assert_eq!(
            check(&mut client, service).await,
            ServingStatus::NotServing,
            "{service:?}"
        );
    }
    let mut overall = watch(&mut client, "").await;
    assert_eq!(next_status(&mut overall).await, ServingStatus::NotServing);

    fixture.engine.start().await.unwrap();
    assert_eq!(next_status(&mut overall).await, ServingStatus::Serving);
    // The overall status changes last: every service is SERVING by now.
    for service in [QUERY, OAM] {
        assert_eq!(
            check(&mut client, service).await,
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    // An open watch is an in-flight call that would hold shutdown until the deadline.
    drop(overall);
    running.stop().await.unwrap();
    fixture.engine.stop().await.unwrap();
}

#[tokio::test]
async fn an_unknown_service_is_not_found() {
    let fixture = fixture();
    let running = start(GrpcServer::builder(fixture.engine.clone())).await;
    let mut client = HealthClient::new(channel(running.addr).await);
    let status = client
        .check(HealthCheckRequest {
            service: "no.such.Service".to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn not_serving_again_when_the_engine_stops_being_ready() {
    let fixture = fixture();
    let running = start(
        GrpcServer::builder(fixture.engine.clone())
            .add_service(query_server(&StubQuery::new()))
            .readiness_poll_interval(Duration::from_millis(20)),
    )
    .await;
    let mut client = HealthClient::new(channel(running.addr).await);
    let mut query = watch(&mut client, QUERY).await;
    assert_eq!(next_status(&mut query).await, ServingStatus::NotServing);
    fixture.engine.start().await.unwrap();
    assert_eq!(next_status(&mut query).await, ServingStatus::Serving);

    // Stopped pipelines are not ready.
    fixture.engine.stop().await.unwrap();
    assert_eq!(next_status(&mut query).await, ServingStatus::NotServing);
    drop(query);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn not_serving_once_shutdown_begins() {
    let fixture = fixture();
    fixture.engine.start().await.unwrap();
    let running = start(
        GrpcServer::builder(fixture.engine.clone())
            .add_service(query_server(&StubQuery::new()))
            // The watches below are calls in flight: end them soon after shutdown.
            .drain_timeout(Duration::from_millis(100)),
    )
    .await;
    let mut client = HealthClient::new(channel(running.addr).await);
    let mut overall = watch(&mut client, "").await;
    let mut query = watch(&mut client, QUERY).await;
    let mut status = next_status(&mut overall).await;
    if status == ServingStatus::NotServing {
        status = next_status(&mut overall).await;
    }
    assert_eq!(status, ServingStatus::Serving);
    let mut status = next_status(&mut query).await;
    if status == ServingStatus::NotServing {
        status = next_status(&mut query).await;
    }
    assert_eq!(status, ServingStatus::Serving);

    running.shutdown.cancel();
    assert_eq!(next_status(&mut overall).await, ServingStatus::NotServing);
    assert_eq!(next_status(&mut query).await, ServingStatus::NotServing);
    running.finished().await.unwrap();
    fixture.engine.stop().await.unwrap();
}
