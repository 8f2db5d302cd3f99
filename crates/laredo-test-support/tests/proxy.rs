//! The fault proxy, on real loopback sockets in front of an echo server: forwards bytes
//! and closes, cuts, stalls, restores and counts.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::net::SocketAddr;
use std::time::Duration;

use laredo_test_support::{FaultProxy, wait_until, wait_until_async};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bound for anything that should happen; only reached when a test fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// How long a stalled read must stay silent.
const SILENCE: Duration = Duration::from_millis(200);

/// An echo server on a free loopback port: every connection gets its bytes back, and
/// its close (FIN) once it has closed its side.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

async fn connect(proxy: &FaultProxy) -> TcpStream {
    tokio::time::timeout(PATIENCE, TcpStream::connect(proxy.addr()))
        .await
        .unwrap()
        .unwrap()
}

/// Sends `message` and reads the echo.
async fn round_trip(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut echo = vec![0; message.len()];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut echo))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(echo, message);
}

/// Whether the next read ends the stream (EOF or an error such as a reset).
async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut buffer = [0; 64];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buffer)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// Whether a read stays silent (no bytes, no close) for [`SILENCE`].
async fn is_silent(stream: &mut TcpStream) -> bool {
    let mut buffer = [0; 64];
    tokio::time::timeout(SILENCE, stream.read(&mut buffer))
        .await
        .is_err()
}

#[tokio::test]
async fn bytes_and_an_orderly_close_pass_through() {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"hello").await;

    // More than the proxy's buffers and the sockets' windows, written while reading.
    let big: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = client.split();
    let mut echo = vec![0; big.len()];
    let (written, echoed) = tokio::time::timeout(PATIENCE, async {
        tokio::join!(write.write_all(&big), read.read_exact(&mut echo))
    })
    .await
    .unwrap();
    written.unwrap();
    echoed.unwrap();
    assert!(echo == big, "the large payload came back changed");

    // A half-close travels to the server, and the server's close travels back.
    client.write_all(b"bye").await.unwrap();
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, client.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, b"bye");
    wait_until("the connection is closed", PATIENCE, || {
        proxy.open_connections() == 0
    })
    .await;
    assert_eq!(proxy.connections(), 1);
}

#[tokio::test]
async fn cut_closes_open_connections_and_refuses_new_ones_until_restore() {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    let mut first = connect(&proxy).await;
    let mut second = connect(&proxy).await;
    round_trip(&mut first, b"one").await;
    round_trip(&mut second, b"two").await;

    proxy.cut();
    assert!(
        is_closed(&mut first).await,
        "an open connection survived the cut"
    );
    assert!(
        is_closed(&mut second).await,
        "an open connection survived the cut"
    );
    wait_until("the cut connections are gone", PATIENCE, || {
        proxy.open_connections() == 0
    })
    .await;

    // The listener still accepts at the TCP level, then closes at once.
    let mut refused = connect(&proxy).await;
    let _ = refused.write_all(b"anyone?").await;
    assert!(
        is_closed(&mut refused).await,
        "a connection was let through a cut"
    );
    assert_eq!(proxy.connections(), 2, "a refused connection was counted");

    proxy.restore();
    let mut again = connect(&proxy).await;
    round_trip(&mut again, b"back").await;
    assert_eq!(proxy.connections(), 3);
    assert_eq!(proxy.open_connections(), 1);
}

#[tokio::test]
async fn a_cut_is_a_reset_not_an_orderly_close() {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"hello").await;

    proxy.cut();
    let mut buffer = [0; 64];
    let read = tokio::time::timeout(PATIENCE, client.read(&mut buffer))
        .await
        .unwrap();
    assert_eq!(
        read.map_err(|err| err.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
}

#[tokio::test]
async fn cut_then_restore_at_once_still_closes_the_connections_from_before() {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"before").await;

    proxy.cut();
    proxy.restore();
    assert!(
        is_closed(&mut client).await,
        "the connection survived the cut"
    );
    let mut again = connect(&proxy).await;
    round_trip(&mut again, b"after").await;
}

#[tokio::test]
async fn stall_holds_bytes_without_closing_until_restore() {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"flowing").await;

    proxy.stall();
    client.write_all(b"held").await.unwrap();
    assert!(is_silent(&mut client).await, "bytes crossed a stall");
    // A connection made during the stall is held too, not forwarded.
    let mut late = connect(&proxy).await;
    late.write_all(b"late").await.unwrap();
    assert!(is_silent(&mut late).await, "bytes crossed a stall");
    assert_eq!(proxy.connections(), 1);
    assert_eq!(proxy.open_connections(), 1, "a stall closed a connection");

    proxy.restore();
    let mut held = [0; 4];
    tokio::time::timeout(PATIENCE, client.read_exact(&mut held))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&held, b"held");
    tokio::time::timeout(PATIENCE, late.read_exact(&mut held))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&held, b"late");
    round_trip(&mut client, b"flowing again").await;
    assert_eq!(proxy.connections(), 2);
}

#[tokio::test]
async fn a_cut_during_a_stall_closes_the_stalled_connections() {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"flowing").await;

    proxy.stall();
    client.write_all(b"held").await.unwrap();
    assert!(is_silent(&mut client).await, "bytes crossed a stall");
    proxy.cut();
    assert!(
        is_closed(&mut client).await,
        "a stalled connection survived the cut"
    );
}

#[tokio::test]
async fn connections_counts_forwarded_and_open_connections() {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    assert_eq!((proxy.connections(), proxy.open_connections()), (0, 0));

    let mut clients = Vec::new();
    for message in [&b"a"[..], b"b", b"c"] {
        let mut client = connect(&proxy).await;
        round_trip(&mut client, message).await;
        clients.push(client);
    }
    assert_eq!((proxy.connections(), proxy.open_connections()), (3, 3));

    drop(clients.pop());
    wait_until("a closed client stops counting as open", PATIENCE, || {
        proxy.open_connections() == 2
    })
    .await;
    assert_eq!(proxy.connections(), 3);
}

#[tokio::test]
async fn an_unreachable_upstream_closes_the_client_and_is_not_counted() {
    // A free port with nothing listening on it.
    let upstream = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let mut client = connect(&proxy).await;
    assert!(is_closed(&mut client).await, "the client was left hanging");
    assert_eq!(proxy.connections(), 0);
}

#[tokio::test]
async fn dropping_the_proxy_closes_the_listener_and_every_connection() {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    let addr = proxy.addr();
    assert_eq!(addr.port(), proxy.port());
    assert!(addr.ip().is_loopback());
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"hello").await;

    drop(proxy);
    assert!(
        is_closed(&mut client).await,
        "a connection outlived the proxy"
    );
    wait_until_async("the listener is closed", PATIENCE, || async move {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
}
