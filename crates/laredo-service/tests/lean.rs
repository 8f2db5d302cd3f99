//! The lean HTTP/2 transport: the same services through tonic clients, flow control in
//! both directions, shutdown, and the protocol edges seen with raw frames.

use std::time::Duration;

use laredo_proto::laredo::v1 as pb;
use laredo_proto::laredo::v1::laredo_oam_service_client::LaredoOamServiceClient;
use laredo_proto::laredo::v1::laredo_query_service_client::LaredoQueryServiceClient;
use laredo_service::{GrpcServer, GrpcServerBuilder, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1;

use crate::support::{STUB_COUNT, StubQuery, WAIT, channel, fixture, query_server, start};

fn lean(builder: GrpcServerBuilder) -> GrpcServerBuilder {
    builder.transport(Transport::Lean)
}

#[tokio::test]
async fn health_watch_auth_and_unary_calls_work() {
    let fixture = fixture();
    let stub = StubQuery::new();
    let running = start(lean(
        GrpcServer::builder(fixture.engine.clone())
            .add_service(query_server(&stub))
            .add_service(fixture.oam())
            .admin_token("t0ken")
            .readiness_poll_interval(Duration::from_millis(20)),
    ))
    .await;
    let channel = channel(running.addr).await;

    // A server stream: the watch sees NOT_SERVING, then SERVING once the engine is ready.
    let mut health = HealthClient::new(channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap().status();
    assert_eq!(first, ServingStatus::NotServing);
    fixture.engine.start().await.unwrap();
    let next = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("a health update")
        .unwrap()
        .unwrap()
        .status();
    assert_eq!(next, ServingStatus::Serving);

    // A trailers-only answer from the auth layer, with its message intact.
    let mut oam = LaredoOamServiceClient::new(channel.clone());
    let status = oam
        .reload_table(pb::ReloadTableRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("is an admin method"),
        "{status:?}"
    );

    // Many unary calls at once on the one connection.
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let mut query = LaredoQueryServiceClient::new(channel.clone());
            tokio::spawn(async move { query.count_rows(pb::CountRowsRequest::default()).await })
        })
        .collect();
    for call in calls {
        let response = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
        assert_eq!(response.unwrap().into_inner().count, STUB_COUNT);
    }
    drop(watch);
    fixture.engine.stop().await.unwrap();
    running.stop().await.unwrap();
}

#[tokio::test]
async fn requests_larger_than_the_flow_control_window_and_bidirectional_streams_pass() {
    let fixture = fixture();
    let running = start(lean(
        GrpcServer::builder(fixture.engine.clone())
            .add_service(query_server(&StubQuery::new()))
            .add_service(fixture.oam()),
    ))
    .await;
    let channel = channel(running.addr).await;
    // 300 KiB: over four of the 64 KiB windows the server gives back as it reads.
    let mut query = LaredoQueryServiceClient::new(channel.clone());
    let response = query
        .count_rows(pb::CountRowsRequest {
            schema: "s".repeat(300 * 1024),
            table: "users".to_string(),
        })
        .await
        .unwrap();
    assert_eq!(response.into_inner().count, STUB_COUNT);

    // A bidirectional stream: two requests, two answers, on one stream.
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let requests = [
        v1::server_reflection_request::MessageRequest::ListServices(String::new()),
        v1::server_reflection_request::MessageRequest::FileContainingSymbol(
            "laredo.v1.LaredoOAMService".to_string(),
        ),
    ]
    .map(|request| v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    });
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut answers = Vec::new();
    while let Some(response) = tokio::time::timeout(WAIT, responses.message())
        .await
        .expect("an answer")
        .unwrap()
    {
        answers.push(response.message_response);
    }
    assert_eq!(answers.len(), 2, "{answers:?}");
    match &answers[0] {
        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
            assert!(
                list.service
                    .iter()
                    .any(|s| s.name == "laredo.v1.LaredoOAMService")
            );
        }
        other => panic!("expected the services, got {other:?}"),
    }
    match &answers[1] {
        Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) => {
            assert!(!files.file_descriptor_proto.is_empty());
        }
        other => panic!("expected the file, got {other:?}"),
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn tls_and_grpc_web_need_the_standard_transport() {
    let fixture = fixture();
    let error = lean(GrpcServer::builder(fixture.engine.clone()))
        .grpc_web(true)
        .listen("127.0.0.1:0".parse().unwrap())
        .bind()
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("transport"), "{text}");
    assert!(text.contains("gRPC-Web"), "{text}");
}

/// One frame read off a raw connection: type, flags, stream id, payload.
async fn read_frame(stream: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    tokio::time::timeout(WAIT, stream.read_exact(&mut head))
        .await
        .expect("a frame or the end")
        .ok()?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some((head[3], head[4], id, payload))
}

async fn lean_server() -> (crate::support::Fixture, crate::support::Running) {
    let fixture = fixture();
    let running = start(lean(
        GrpcServer::builder(fixture.engine.clone()).add_service(fixture.oam()),
    ))
    .await;
    (fixture, running)
}

#[tokio::test]
async fn a_client_that_does_not_speak_http2_gets_goaway_protocol_error() {
    let (_fixture, running) = lean_server().await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut goaway = None;
    while let Some((ty, _, _, payload)) = read_frame(&mut stream).await {
        if ty == 0x7 {
            goaway = Some(payload);
        }
    }
    let payload = goaway.expect("a GOAWAY before the connection closed");
    assert_eq!(&payload[4..8], &1u32.to_be_bytes(), "PROTOCOL_ERROR");
    assert!(
        String::from_utf8_lossy(&payload[8..]).contains("preface"),
        "{payload:?}"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn settings_are_acknowledged_and_pings_answered() {
    let (_fixture, running) = lean_server().await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // empty SETTINGS
    hello.extend_from_slice(&[0, 0, 8, 0x6, 0, 0, 0, 0, 0]); // PING
    hello.extend_from_slice(b"12345678");
    stream.write_all(&hello).await.unwrap();
    let (mut server_settings, mut settings_ack, mut pong) = (false, false, None);
    while pong.is_none() || !settings_ack || !server_settings {
        let (ty, flags, id, payload) = read_frame(&mut stream).await.expect("a frame");
        assert_eq!(id, 0);
        match (ty, flags) {
            (0x4, 0) => server_settings = true,
            (0x4, 1) => settings_ack = true,
            (0x6, 1) => pong = Some(payload),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert_eq!(pong.unwrap(), b"12345678");
    // A frame on stream 0 that may not be there ends the connection.
    stream
        .write_all(&[0, 0, 0, 0x0, 0, 0, 0, 0, 0]) // DATA on stream 0
        .await
        .unwrap();
    let (ty, _, _, payload) = read_frame(&mut stream).await.expect("GOAWAY");
    assert_eq!(ty, 0x7);
    assert_eq!(&payload[4..8], &1u32.to_be_bytes(), "PROTOCOL_ERROR");
    assert!(read_frame(&mut stream).await.is_none(), "then the close");
    running.stop().await.unwrap();
}

/// Preface and an empty SETTINGS, then reads until the server's SETTINGS and the ACK of
/// ours have arrived.
async fn handshake(stream: &mut TcpStream) {
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    stream.write_all(&hello).await.unwrap();
    let (mut settings, mut ack) = (false, false);
    while !(settings && ack) {
        let (ty, flags, _, _) = read_frame(stream).await.expect("a frame");
        match (ty, flags) {
            (0x4, 0) => settings = true,
            (0x4, 1) => ack = true,
            _ => {}
        }
    }
}

fn frame(ty: u8, flags: u8, id: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], ty, flags];
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn headers_over_the_limit_fail_that_call_only() {
    let (_fixture, running) = lean_server().await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    handshake(&mut stream).await;
    // POST http /laredo.v1.LaredoOAMService/GetStatus with a 20,000-byte header: over the
    // 16 KiB the server advertises, so a HEADERS frame and a CONTINUATION.
    let mut block = vec![0x83, 0x86, 0x04];
    let path = b"/laredo.v1.LaredoOAMService/GetStatus";
    block.push(u8::try_from(path.len()).unwrap());
    block.extend_from_slice(path);
    block.extend_from_slice(&[0x00, 5]);
    block.extend_from_slice(b"x-big");
    // Length 20,000 as an HPACK integer with a 7-bit prefix: 127, then 19,873 in 7-bit
    // groups, least significant first.
    block.extend_from_slice(&[0x7f, 0xa1, 0x9b, 0x01]);
    block.extend(std::iter::repeat_n(b'v', 20_000));
    let (first, rest) = block.split_at(16_000);
    let mut request = frame(0x1, 0x1, 1, first); // HEADERS, END_STREAM
    request.extend(frame(0x9, 0x4, 1, rest)); // CONTINUATION, END_HEADERS
    stream.write_all(&request).await.unwrap();
    let (ty, flags, id, payload) = read_frame(&mut stream).await.expect("an answer");
    assert_eq!((ty, id), (0x1, 1), "HEADERS on the stream");
    assert_eq!(flags & 0x1, 0x1, "trailers-only: END_STREAM");
    let text = String::from_utf8_lossy(&payload);
    assert!(
        text.contains("grpc-status\u{1}8"),
        "RESOURCE_EXHAUSTED: {text:?}"
    );
    // The connection goes on.
    stream
        .write_all(&frame(0x6, 0, 0, b"still-up"))
        .await
        .unwrap();
    let (ty, flags, _, payload) = read_frame(&mut stream).await.expect("the PING ACK");
    assert_eq!(
        (ty, flags, payload.as_slice()),
        (0x6, 0x1, &b"still-up"[..])
    );
    // (This raw client would not answer the drain's PING.)
    drop(stream);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn drain_sends_goaway_twice_around_a_ping() {
    let (_fixture, running) = lean_server().await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    handshake(&mut stream).await;
    running.shutdown.cancel();
    // First: GOAWAY admitting any stream still on its way, and a PING.
    let (ty, _, _, first) = read_frame(&mut stream).await.expect("GOAWAY");
    assert_eq!(ty, 0x7);
    assert_eq!(&first[..4], &0x7fff_ffffu32.to_be_bytes());
    assert_eq!(&first[4..8], &0u32.to_be_bytes(), "NO_ERROR");
    let (ty, flags, _, ping) = read_frame(&mut stream).await.expect("PING");
    assert_eq!((ty, flags), (0x6, 0));
    // Its ACK brings the final GOAWAY (no stream accepted), then the close.
    stream.write_all(&frame(0x6, 0x1, 0, &ping)).await.unwrap();
    let (ty, _, _, last) = read_frame(&mut stream).await.expect("the final GOAWAY");
    assert_eq!(ty, 0x7);
    assert_eq!(&last[..8], &[0u8; 8], "last stream 0, NO_ERROR");
    assert!(read_frame(&mut stream).await.is_none(), "then the close");
    running.finished().await.unwrap();
}
