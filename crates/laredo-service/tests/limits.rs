//! The port's limits, each met by a real client: a raw HTTP/2 client where a client
//! library would refuse to misbehave, tonic clients otherwise.

use std::time::{Duration, Instant};

use laredo_proto::laredo::v1 as pb;
use laredo_proto::laredo::v1::laredo_query_service_client::LaredoQueryServiceClient;
use laredo_service::{GrpcServer, Limits};
use laredo_test_support::raw_h2::frame_type;
use laredo_test_support::{RawH2, wait_until_async};
use tonic::Code;

use crate::support::{STUB_COUNT, StubQuery, WAIT, channel, fixture, query_server, start};

const LOOKUP: &str = "/laredo.v1.LaredoQueryService/Lookup";

/// HTTP/2 error codes.
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn limits(edit: impl FnOnce(&mut Limits)) -> Limits {
    let mut limits = Limits::default();
    edit(&mut limits);
    limits
}

/// A Lookup call on `stream`: HEADERS and an empty request message.
fn lookup_call(out: &mut Vec<u8>, stream: u32) {
    RawH2::headers(out, stream, LOOKUP);
    RawH2::data(out, stream, &[]);
}

#[tokio::test]
async fn streams_beyond_max_concurrent_streams_are_refused() {
    let fixture = fixture();
    let stub = StubQuery::new();
    let running = start(
        GrpcServer::builder(fixture.engine.clone())
            .insecure(true)
            .limits(limits(|l| l.max_concurrent_streams = 2))
            .add_service(query_server(&stub)),
    )
    .await;
    let mut client = RawH2::connect(running.addr).await.unwrap();
    let mut calls = Vec::new();
    lookup_call(&mut calls, 1);
    lookup_call(&mut calls, 3);
    client.send(&calls).await.unwrap();
    stub.wait_entered(2).await;

    // A third stream while two are open: the client ignores the advertised limit.
    let mut third = Vec::new();
    lookup_call(&mut third, 5);
    client.send(&third).await.unwrap();
    let refused = client
        .read_until(WAIT, |f| f.kind == frame_type::RST_STREAM && f.stream == 5)
        .await
        .unwrap()
        .expect("the third stream is reset, the connection stays");
    assert_eq!(refused.error_code(), Some(REFUSED_STREAM));
    assert_eq!(*stub.entered.borrow(), 2, "the third call never ran");

    // The two within the limit still complete on the same connection.
    stub.release.add_permits(2);
    for stream in [1, 3] {
        client
            .read_until(WAIT, |f| {
                f.kind == frame_type::HEADERS && f.stream == stream && f.flags & 0x1 != 0
            })
            .await
            .unwrap()
            .expect("the call's trailers");
    }
    drop(client);
    running.stop().await.unwrap();
}

/// Reads until the server ends the connection: `Some(code)` of its GOAWAY, if it sent
/// one, `None` when it just closed.
async fn goaway_or_close(client: &mut RawH2) -> Option<u32> {
    let goaway = client
        .read_until(WAIT, |f| f.kind == frame_type::GOAWAY)
        .await;
    match goaway {
        Ok(Some(frame)) => {
            // GOAWAY, then the close.
            let rest = client.read_until(WAIT, |_| false).await;
            assert!(matches!(rest, Ok(None) | Err(_)), "{rest:?}");
            frame.error_code()
        }
        Ok(None) => None,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            panic!("the connection was not ended")
        }
        Err(_) => None,
    }
}

/// A well-behaved client with a call in flight, and how to check it is still served.
async fn bystander(
    addr: std::net::SocketAddr,
    stub: &std::sync::Arc<StubQuery>,
) -> (
    LaredoQueryServiceClient<tonic::transport::Channel>,
    tokio::task::JoinHandle<Result<tonic::Response<pb::LookupResponse>, tonic::Status>>,
) {
    let query = LaredoQueryServiceClient::new(channel(addr).await);
    let mut waiting = query.clone();
    let in_flight = tokio::spawn(async move { waiting.lookup(pb::LookupRequest::default()).await });
    stub.wait_entered(1).await;
    (query, in_flight)
}

async fn still_served(
    stub: &StubQuery,
    mut query: LaredoQueryServiceClient<tonic::transport::Channel>,
    in_flight: tokio::task::JoinHandle<Result<tonic::Response<pb::LookupResponse>, tonic::Status>>,
) {
    stub.release.add_permits(1);
    let answer = tokio::time::timeout(WAIT, in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(answer.into_inner().found);
    let count = query
        .count_rows(pb::CountRowsRequest::default())
        .await
        .unwrap();
    assert_eq!(count.into_inner().count, STUB_COUNT);
}

#[tokio::test]
async fn a_burst_of_streams_reset_at_once_ends_its_connection_while_other_clients_are_served() {
    let fixture = fixture();
    let stub = StubQuery::new();
    let running = start(
        GrpcServer::builder(fixture.engine.clone())
            .insecure(true)
            .add_service(query_server(&stub)),
    )
    .await;
    let (query, in_flight) = bystander(running.addr, &stub).await;

    // Streams opened and reset at once, many times over (CVE-2023-44487): h2 counts
    // those reset before the server took them.
    let mut flood = RawH2::connect(running.addr).await.unwrap();
    let mut stream = 1u32;
    for _ in 0..100 {
        let mut batch = Vec::new();
        for _ in 0..100 {
            lookup_call(&mut batch, stream);
            RawH2::reset(&mut batch, stream);
            stream += 2;
        }
        if flood.send(&batch).await.is_err() {
            break;
        }
    }
    let code = goaway_or_close(&mut flood).await;
    assert!(matches!(code, None | Some(ENHANCE_YOUR_CALM)), "{code:?}");

    still_served(&stub, query, in_flight).await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn calls_cancelled_one_by_one_beyond_max_cancelled_calls_end_their_connection() {
    let fixture = fixture();
    let stub = StubQuery::new();
    let max_cancelled_calls = 20;
    let running = start(
        GrpcServer::builder(fixture.engine.clone())
            .insecure(true)
            .limits(limits(|l| l.max_cancelled_calls = max_cancelled_calls))
            .add_service(query_server(&stub)),
    )
    .await;
    let (query, in_flight) = bystander(running.addr, &stub).await;

    // Each call reaches the service before the client resets it: past h2's own guard,
    // which counts only streams reset before the server took them.
    let mut client = RawH2::connect(running.addr).await.unwrap();
    let mut ended_after = None;
    for n in 0..(max_cancelled_calls + 10) {
        let stream = 2 * n + 1;
        let mut call = Vec::new();
        lookup_call(&mut call, stream);
        if client.send(&call).await.is_err() {
            ended_after = Some(n);
            break;
        }
        let mut entered = stub.entered.subscribe();
        let entered = tokio::time::timeout(WAIT, entered.wait_for(|e| *e >= 2 + n as usize)).await;
        let mut reset = Vec::new();
        RawH2::reset(&mut reset, stream);
        if entered.is_err() || client.send(&reset).await.is_err() {
            ended_after = Some(n);
            break;
        }
    }
    if ended_after.is_none() {
        goaway_or_close(&mut client).await;
    }
    assert!(
        ended_after.is_none_or(|n| n > max_cancelled_calls),
        "ended after only {ended_after:?} cancelled calls"
    );

    still_served(&stub, query, in_flight).await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_idle_timeout_and_a_busy_one_is_not() {
    let fixture = fixture();
    let stub = StubQuery::new();
    let idle_timeout = Duration::from_millis(300);
    let running = start(
        GrpcServer::builder(fixture.engine.clone())
            .insecure(true)
            .limits(limits(|l| l.idle_timeout = idle_timeout))
            .add_service(query_server(&stub)),
    )
    .await;

    // Idle from the start: closed once the timeout passed.
    let started = Instant::now();
    let mut idle = RawH2::connect(running.addr).await.unwrap();
    let end = idle.read_until(WAIT, |_| false).await.unwrap();
    assert_eq!(end, None, "the server closed the idle connection");
    assert!(started.elapsed() >= idle_timeout, "{:?}", started.elapsed());

    // A call in flight for several idle timeouts keeps its connection.
    let mut busy = RawH2::connect(running.addr).await.unwrap();
    let mut call = Vec::new();
    lookup_call(&mut call, 1);
    busy.send(&call).await.unwrap();
    stub.wait_entered(1).await;
    // Time passing is what this checks: three idle timeouts with the call open.
    tokio::time::sleep(idle_timeout * 3).await;
    stub.release.add_permits(1);
    busy.read_until(WAIT, |f| {
        f.kind == frame_type::HEADERS && f.stream == 1 && f.flags & 0x1 != 0
    })
    .await
    .unwrap()
    .expect("the answer arrives on the connection that was busy");
    // Idle again now: closed after the timeout.
    assert_eq!(busy.read_until(WAIT, |_| false).await.unwrap(), None);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_unary_call_over_request_timeout_is_answered_deadline_exceeded_but_streams_live_on() {
    let fixture = fixture();
    let stub = StubQuery::new();
    let timeout = Duration::from_millis(200);
    let running = start(
        GrpcServer::builder(fixture.engine.clone())
            .insecure(true)
            .limits(limits(|l| l.request_timeout = timeout))
            .add_service(query_server(&stub)),
    )
    .await;
    let mut query = LaredoQueryServiceClient::new(channel(running.addr).await);
    let status = query
        .lookup(pb::LookupRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("request_timeout"), "{status:?}");

    // A stream answers at once and then lives as long as it likes.
    let mut events = query
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let outlived = tokio::time::timeout(timeout * 3, events.message()).await;
    assert!(outlived.is_err(), "the stream ended: {outlived:?}");
    drop(events);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn connections_over_max_connections_are_answered_resource_exhausted_naming_it() {
    let fixture = fixture();
    let running = start(
        GrpcServer::builder(fixture.engine.clone())
            .insecure(true)
            .limits(limits(|l| l.max_connections = 1))
            .add_service(query_server(&StubQuery::new())),
    )
    .await;
    let mut first = LaredoQueryServiceClient::new(channel(running.addr).await);
    first
        .count_rows(pb::CountRowsRequest::default())
        .await
        .unwrap();

    let mut second = LaredoQueryServiceClient::new(channel(running.addr).await);
    let status = second
        .count_rows(pb::CountRowsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_connections"), "{status:?}");

    // The first keeps being served; once it goes, a new connection is let in.
    let count = first
        .count_rows(pb::CountRowsRequest::default())
        .await
        .unwrap();
    assert_eq!(count.into_inner().count, STUB_COUNT);
    drop(first);
    let addr = running.addr;
    wait_until_async("a new connection is let in", WAIT, || async move {
        let mut query = LaredoQueryServiceClient::new(channel(addr).await);
        query
            .count_rows(pb::CountRowsRequest::default())
            .await
            .is_ok()
    })
    .await;
    running.stop().await.unwrap();
}
