//! Tokens and TLS against a real `GrpcServer` with read and admin tokens (and, for TLS,
//! the certificate fixtures of laredo-service).

use std::path::PathBuf;
use std::time::Duration;

use laredo_client_fanout::{ClientError, ClientOptions, FanoutClient, SessionErrorKind};
use laredo_service::GrpcServerBuilder;
use laredo_test_support::wait_until;

use crate::{Server, WAIT, converged};

const ADMIN_TOKEN: &str = "fanout-admin-token";
const READ_TOKEN: &str = "fanout-read-token";
const SYNC: &str = "/laredo.replication.v1.LaredoReplicationService/Sync";

/// laredo-service's self-signed certificate for `localhost` and `127.0.0.1`.
fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../laredo-service/tests/fixtures")
        .join(name)
}

fn tokens(grpc: GrpcServerBuilder) -> GrpcServerBuilder {
    grpc.admin_token(ADMIN_TOKEN).read_token(READ_TOKEN)
}

fn tls(grpc: GrpcServerBuilder) -> GrpcServerBuilder {
    tokens(grpc).tls(fixture("server.crt"), fixture("server.key"))
}

/// Fast retries, so that refused attempts repeat quickly.
fn options(address: &str) -> ClientOptions {
    ClientOptions::new(address, "public", "items")
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
}

/// Waits until the server refused `attempts` connection attempts of `client`.
async fn refused(client: &FanoutClient, attempts: u64) {
    wait_until("the server to refuse the client", WAIT, || {
        client.stats().auth_failures >= attempts
    })
    .await;
}

/// The client never got a stream: no session, no rows, not ready.
#[track_caller]
fn never_synced(client: &FanoutClient) {
    let stats = client.stats();
    assert_eq!(stats.sessions, 0, "{stats:?}");
    assert_eq!(client.count(), 0);
    assert!(!client.is_ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_read_token_the_replica_syncs() {
    let server = Server::start_with(20, tokens).await;
    let client = FanoutClient::new(options(&server.url()).token(READ_TOKEN)).unwrap();
    client.start().await.unwrap();
    assert!(client.await_ready(WAIT).await, "{:?}", client.stats());
    server
        .source
        .emit_insert(crate::items(), crate::item(21, "eu"))
        .await;
    converged(&client, &server).await;
    let stats = client.stats();
    assert_eq!((stats.auth_failures, stats.last_error), (0, None));
    client.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_client_reports_unauthenticated_and_does_not_sync() {
    let server = Server::start_with(20, tokens).await;
    let client = FanoutClient::new(options(&server.url())).unwrap();
    client.start().await.unwrap();
    // Two refusals: it keeps trying (a token may be added on the server), never syncing.
    refused(&client, 2).await;
    let error = client.stats().last_error.unwrap();
    assert_eq!(error.kind, SessionErrorKind::Unauthenticated);
    assert_eq!(error.endpoint, server.url());
    assert_eq!(
        error.message,
        format!(
            "{SYNC} is protected: send a read or admin token as \"authorization: Bearer <token>\" (Unauthenticated)"
        )
    );
    assert!(error.is_credentials());
    never_synced(&client);
    client.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_reported_and_does_not_sync() {
    let server = Server::start_with(20, tokens).await;
    let client = FanoutClient::new(options(&server.url()).token("not-the-token")).unwrap();
    client.start().await.unwrap();
    refused(&client, 2).await;
    let error = client.stats().last_error.unwrap();
    assert_eq!(error.kind, SessionErrorKind::Unauthenticated);
    assert_eq!(
        error.message,
        format!("{SYNC} is protected: the bearer token is not a known token (Unauthenticated)")
    );
    never_synced(&client);
    client.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_where_sync_is_an_admin_method_is_permission_denied() {
    let server = Server::start_with(20, |grpc| tokens(grpc).admin_methods([SYNC])).await;
    let client = FanoutClient::new(options(&server.url()).token(READ_TOKEN)).unwrap();
    client.start().await.unwrap();
    refused(&client, 1).await;
    let error = client.stats().last_error.unwrap();
    assert_eq!(error.kind, SessionErrorKind::PermissionDenied);
    assert_eq!(
        error.message,
        format!("{SYNC} is an admin method: the token has the read role only (PermissionDenied)")
    );
    never_synced(&client);
    client.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_is_read_again_on_every_attempt() {
    let server = Server::start_with(20, tokens).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "an-old-token\n").unwrap();
    let client = FanoutClient::new(options(&server.url()).token_file(&path)).unwrap();
    client.start().await.unwrap();
    refused(&client, 1).await;
    never_synced(&client);
    // The secret is rotated in place: the next attempt uses it, without a restart.
    std::fs::write(&path, format!("{READ_TOKEN}\n")).unwrap();
    assert!(client.await_ready(WAIT).await, "{:?}", client.stats());
    converged(&client, &server).await;
    assert_eq!(client.stats().last_error, None);
    client.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_the_ca_and_the_server_name_the_replica_syncs() {
    let server = Server::start_with(20, tls).await;
    // A bare address: TLS options make it https://.
    let client = FanoutClient::new(
        options(&server.addr.to_string())
            .token(READ_TOKEN)
            .tls_ca_file(fixture("server.crt"))
            .tls_server_name("localhost"),
    )
    .unwrap();
    client.start().await.unwrap();
    assert!(client.await_ready(WAIT).await, "{:?}", client.stats());
    server
        .source
        .emit_insert(crate::items(), crate::item(21, "eu"))
        .await;
    converged(&client, &server).await;
    assert_eq!(client.stats().endpoint, format!("https://{}", server.addr));
    client.stop().await.unwrap();

    // The CA as PEM bytes, the name from the URL (the certificate names 127.0.0.1).
    let ca = std::fs::read(fixture("server.crt")).unwrap();
    let by_ip = FanoutClient::new(
        options(&format!("https://{}", server.addr))
            .token(READ_TOKEN)
            .tls_ca_pem(ca),
    )
    .unwrap();
    by_ip.start().await.unwrap();
    assert!(by_ip.await_ready(WAIT).await, "{:?}", by_ip.stats());
    converged(&by_ip, &server).await;
    by_ip.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_wrong_server_name_fails_clearly() {
    let server = Server::start_with(20, tls).await;
    let client = FanoutClient::new(
        options(&server.addr.to_string())
            .token(READ_TOKEN)
            .tls_ca_file(fixture("server.crt"))
            .tls_server_name("laredo.example.com"),
    )
    .unwrap();
    client.start().await.unwrap();
    wait_until("a failed connection", WAIT, || {
        client.stats().last_error.is_some()
    })
    .await;
    let error = client.stats().last_error.unwrap();
    assert_eq!(error.kind, SessionErrorKind::Connect, "{error}");
    assert!(
        error.message.starts_with("cannot connect: ")
            && error
                .message
                .contains("certificate not valid for name \"laredo.example.com\""),
        "{error}"
    );
    never_synced(&client);
    client.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_tls_refuses_a_plaintext_client() {
    let server = Server::start_with(20, tls).await;
    let client = FanoutClient::new(options(&server.url()).token(READ_TOKEN)).unwrap();
    client.start().await.unwrap();
    wait_until("a failed attempt", WAIT, || {
        client.stats().last_error.is_some()
    })
    .await;
    assert!(!client.stats().last_error.unwrap().is_credentials());
    never_synced(&client);
    client.stop().await.unwrap();
}

fn options_error(options: ClientOptions) -> String {
    match FanoutClient::new(options) {
        Err(ClientError::Options(message)) => message,
        Err(other) => panic!("not an options error: {other:?}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn unusable_credentials_are_refused_when_the_client_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let plain = || ClientOptions::new("http://127.0.0.1:4002", "public", "items");
    let bare = || ClientOptions::new("127.0.0.1:4002", "public", "items");
    let cases = [
        (plain().token(""), "token: must not be empty".to_string()),
        (
            plain().token("two words"),
            "token: must be visible ASCII without spaces".to_string(),
        ),
        (
            plain().token_file(&missing),
            format!("token_file: cannot read {:?}: ", missing.display()),
        ),
        (
            plain().token_file(&empty),
            format!("token_file: the token in {:?} must not be empty", empty.display()),
        ),
        (
            ClientOptions::new("https://127.0.0.1:4002", "public", "items"),
            "https://127.0.0.1:4002 needs a CA to verify the server with: set tls_ca_file or tls_ca_pem (operating-system roots are not used)".to_string(),
        ),
        (
            plain().tls_ca_file(fixture("server.crt")),
            "http://127.0.0.1:4002 is plaintext but TLS options are set: use https://".to_string(),
        ),
        (
            bare().tls_ca_file(&missing),
            format!("tls_ca_file: cannot read {:?}: ", missing.display()),
        ),
        (
            bare().tls_ca_file(&not_pem),
            format!("tls_ca_file: {:?} holds no PEM certificate", not_pem.display()),
        ),
        (
            bare().tls_server_name("localhost"),
            "tls_server_name is set but no CA: set tls_ca_file or tls_ca_pem (operating-system roots are not used)".to_string(),
        ),
    ];
    for (options, expected) in cases {
        let message = options_error(options);
        assert!(
            message.starts_with(&expected),
            "{message:?} vs {expected:?}"
        );
    }
}

#[test]
fn the_token_stays_out_of_debug_output() {
    let options = ClientOptions::new("127.0.0.1:4002", "public", "items")
        .token("s3cret-t0ken")
        .tls_ca_pem(std::fs::read(fixture("server.crt")).unwrap());
    let debug = format!("{options:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(debug.contains("Value(***)"), "{debug}");
    // Neither is the CA's PEM printed, only its size.
    assert!(!debug.contains("BEGIN CERTIFICATE"), "{debug}");
}
