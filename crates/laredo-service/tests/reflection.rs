//! Server reflection (v1 and v1alpha) lists the hosted services and serves their files.

use laredo_service::GrpcServer;
use prost::Message;
use prost_types::FileDescriptorProto;
use tonic_reflection::pb::{v1, v1alpha};

use crate::support::{OAM, QUERY, StubQuery, WAIT, channel, fixture, query_server, start};

async fn ask_v1(
    addr: std::net::SocketAddr,
    request: v1::server_reflection_request::MessageRequest,
) -> v1::server_reflection_response::MessageResponse {
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel(addr).await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(WAIT, responses.message())
        .await
        .expect("a reflection answer")
        .unwrap()
        .expect("one response")
        .message_response
        .expect("a message")
}

fn server_builder() -> (crate::support::Fixture, laredo_service::GrpcServerBuilder) {
    let fixture = fixture();
    let builder = GrpcServer::builder(fixture.engine.clone())
        .add_service(query_server(&StubQuery::new()))
        .add_service(fixture.oam());
    (fixture, builder)
}

#[tokio::test]
async fn v1_lists_the_hosted_services() {
    let (_fixture, builder) = server_builder();
    let running = start(builder).await;
    let response = ask_v1(
        running.addr,
        v1::server_reflection_request::MessageRequest::ListServices(String::new()),
    )
    .await;
    let v1::server_reflection_response::MessageResponse::ListServicesResponse(list) = response
    else {
        panic!("not a service list: {response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    // Not the replication service: it is in the descriptor set but not hosted here.
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            OAM,
            QUERY
        ]
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn v1_returns_the_file_that_defines_a_symbol() {
    let (_fixture, builder) = server_builder();
    let running = start(builder).await;
    let response = ask_v1(
        running.addr,
        v1::server_reflection_request::MessageRequest::FileContainingSymbol(format!(
            "{QUERY}.Lookup"
        )),
    )
    .await;
    let v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files) = response
    else {
        panic!("not a file descriptor: {response:?}");
    };
    let file = FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(file.name(), "laredo/v1/query.proto");
    assert_eq!(file.package(), "laredo.v1");
    let service = file
        .service
        .iter()
        .find(|s| s.name() == "LaredoQueryService")
        .expect("the service is in its file");
    assert!(service.method.iter().any(|m| m.name() == "Lookup"));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn v1_knows_the_health_service() {
    let (_fixture, builder) = server_builder();
    let running = start(builder).await;
    let response = ask_v1(
        running.addr,
        v1::server_reflection_request::MessageRequest::FileContainingSymbol(
            "grpc.health.v1.Health".to_string(),
        ),
    )
    .await;
    let v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files) = response
    else {
        panic!("not a file descriptor: {response:?}");
    };
    let file = FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(file.package(), "grpc.health.v1");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn v1alpha_lists_the_hosted_services() {
    let (_fixture, builder) = server_builder();
    let running = start(builder).await;
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(running.addr).await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap().message_response;
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response
    else {
        panic!("not a service list: {response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
            OAM,
            QUERY
        ]
    );
    running.stop().await.unwrap();
}
