//! gRPC-Web over HTTP/1.1, as a browser sends it, and its CORS answers.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use laredo_proto::laredo::v1 as pb;
use laredo_service::GrpcServer;
use prost::Message;
use tokio_util::bytes::Bytes;

use crate::support::{QUERY, STUB_COUNT, StubQuery, WAIT, fixture, query_server, start};

/// Sends `request` over a fresh HTTP/1.1 connection and returns the response with its
/// whole body.
async fn send(
    addr: SocketAddr,
    request: http::Request<Full<Bytes>>,
) -> hyper::Result<http::Response<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("an HTTP response")?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    drop(sender);
    let _ = connection.await;
    Ok(http::Response::from_parts(parts, body))
}

/// One gRPC-Web frame: flag byte, big-endian length, payload.
fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a gRPC-Web body into (flag, payload) frames.
fn frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 5, "truncated frame header");
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        out.push((body[0], body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    out
}

fn grpc_web_post(
    addr: SocketAddr,
    method: &str,
    message: &impl Message,
) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("/{method}"))
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/grpc-web")
        .header("x-grpc-web", "1")
        .header(http::header::ORIGIN, "http://console.test")
        .body(Full::new(Bytes::from(frame(0, &message.encode_to_vec()))))
        .unwrap()
}

#[tokio::test]
async fn a_grpc_web_post_gets_a_grpc_web_answer() {
    let fixture = fixture();
    let running = start(
        GrpcServer::builder(fixture.engine.clone())
            .add_service(query_server(&StubQuery::new()))
            .grpc_web(true)
            .cors_allowed_origins(["http://console.test"]),
    )
    .await;
    let request = grpc_web_post(
        running.addr,
        &format!("{QUERY}/CountRows"),
        &pb::CountRowsRequest {
            schema: "public".into(),
            table: "users".into(),
        },
    );
    let response = send(running.addr, request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(
        response.headers()[http::header::CONTENT_TYPE],
        "application/grpc-web+proto"
    );
    assert_eq!(
        response.headers()[http::header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://console.test"
    );
    let frames = frames(response.body());
    assert_eq!(frames.len(), 2, "a message and the trailers: {frames:?}");
    assert_eq!(frames[0].0, 0);
    let answer = pb::CountRowsResponse::decode(frames[0].1.as_slice()).unwrap();
    assert_eq!(answer.count, STUB_COUNT);
    assert_eq!(frames[1].0, 0x80, "trailer frame");
    let trailers = String::from_utf8(frames[1].1.clone()).unwrap();
    assert!(trailers.contains("grpc-status:0"), "{trailers:?}");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_grpc_web_admin_call_without_the_token_is_unauthenticated() {
    let fixture = fixture();
    let running = start(
        GrpcServer::builder(fixture.engine.clone())
            .add_service(fixture.oam())
            .admin_token("t0ken")
            .grpc_web(true),
    )
    .await;
    let request = grpc_web_post(
        running.addr,
        "laredo.v1.LaredoOAMService/ReloadTable",
        &pb::ReloadTableRequest::default(),
    );
    let response = send(running.addr, request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    // A trailers-only answer: the status travels in the headers.
    assert_eq!(response.headers()["grpc-status"], "16");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_preflight_request_gets_cors_headers() {
    let fixture = fixture();
    let running = start(
        GrpcServer::builder(fixture.engine.clone())
            .add_service(query_server(&StubQuery::new()))
            .grpc_web(true)
            .cors_allowed_origins(["http://console.test"]),
    )
    .await;
    let preflight = |origin: &str| {
        http::Request::options(format!("/{QUERY}/CountRows"))
            .header(http::header::HOST, running.addr.to_string())
            .header(http::header::ORIGIN, origin)
            .header(http::header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                http::header::ACCESS_CONTROL_REQUEST_HEADERS,
                "content-type,x-grpc-web,authorization",
            )
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let response = send(running.addr, preflight("http://console.test"))
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let headers = response.headers();
    assert_eq!(
        headers[http::header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://console.test"
    );
    assert_eq!(headers[http::header::ACCESS_CONTROL_ALLOW_METHODS], "POST");
    let allowed = headers[http::header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap();
    for header in ["content-type", "x-grpc-web", "authorization"] {
        assert!(allowed.contains(header), "{header} not in {allowed:?}");
    }

    // Another origin gets no permission.
    let response = send(running.addr, preflight("http://elsewhere.test"))
        .await
        .unwrap();
    assert!(
        !response
            .headers()
            .contains_key(http::header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "{response:?}"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn an_empty_origin_list_allows_no_origin() {
    let fixture = fixture();
    let running = start(
        GrpcServer::builder(fixture.engine.clone())
            .add_service(query_server(&StubQuery::new()))
            .grpc_web(true),
    )
    .await;
    let preflight = http::Request::options(format!("/{QUERY}/CountRows"))
        .header(http::header::HOST, running.addr.to_string())
        .header(http::header::ORIGIN, "http://console.test")
        .header(http::header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send(running.addr, preflight).await.unwrap();
    assert!(
        !response
            .headers()
            .contains_key(http::header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "{response:?}"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn without_grpc_web_http1_is_refused() {
    let fixture = fixture();
    let running = start(
        GrpcServer::builder(fixture.engine.clone()).add_service(query_server(&StubQuery::new())),
    )
    .await;
    let request = grpc_web_post(
        running.addr,
        &format!("{QUERY}/CountRows"),
        &pb::CountRowsRequest::default(),
    );
    let result = send(running.addr, request).await;
    assert!(result.is_err(), "{result:?}");
    running.stop().await.unwrap();
}
