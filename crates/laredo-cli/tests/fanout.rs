//! `laredo fanout` against the replication service of a real fan-out target, served on
//! its own port like the fan-out port of a server, with a read and an admin token.

use std::net::SocketAddr;
use std::sync::Arc;

use laredo_core::{Engine, PipelineOptions};
use laredo_proto::laredo::replication::v1 as rpb;
use laredo_proto::laredo::replication::v1::laredo_replication_service_client::LaredoReplicationServiceClient;
use laredo_service::GrpcServer;
use laredo_source_test::TestSource;
use laredo_target_fanout::{FanoutTarget, ReplicationService};
use laredo_test_support::wait_until;
use tokio_util::sync::CancellationToken;

use crate::support::{READ_TOKEN, Run, TOKEN, WAIT, run, test_source, user, users};

struct Fanout {
    source: Arc<TestSource>,
    target: Arc<FanoutTarget>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    _engine: Engine,
}

impl Drop for Fanout {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Fanout {
    /// Runs `laredo` with the read token.
    async fn run(&self, args: &[&str]) -> Run {
        run(
            &[
                "--fanout-address".to_string(),
                self.addr.to_string(),
                "--token".to_string(),
                READ_TOKEN.to_string(),
            ],
            args,
        )
        .await
    }
}

/// `public.users` (two baseline rows) into a fan-out target, served and ready.
async fn fanout() -> Fanout {
    let source = test_source(2);
    let target = FanoutTarget::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), target.clone(), PipelineOptions::default())
        .build()
        .unwrap();
    let server = GrpcServer::builder(engine.clone())
        .listen("127.0.0.1:0".parse().unwrap())
        .admin_token(TOKEN)
        .read_token(READ_TOKEN)
        .add_service(ReplicationService::new(engine.clone()).into_server())
        .bind()
        .await
        .unwrap();
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(server.serve(shutdown.clone().cancelled_owned()));
    engine.start().await.unwrap();
    assert!(engine.await_ready(WAIT).await);
    Fanout {
        source,
        target,
        addr,
        shutdown,
        _engine: engine,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_journal_rows_and_snapshot() {
    let f = fanout().await;
    let status = f
        .run(&["fanout", "status", "public.users", "-o", "json"])
        .await
        .json();
    assert_eq!(status["row_count"], 2);
    assert_eq!(status["server_id"], f.target.server_id());
    assert_eq!(status["current_sequence"], f.target.current_sequence());
    assert_eq!(
        status["journal"]["entry_count"],
        u64::try_from(f.target.journal_len()).unwrap()
    );
    assert_eq!(status["connected_clients"], 0);
    let newest = f.target.snapshots().first().map(|s| s.id().to_string());
    assert_eq!(
        status["latest_snapshot"]["snapshot_id"]
            .as_str()
            .map(str::to_string),
        newest
    );

    let text = f
        .run(&["fanout", "status", "public.users"])
        .await
        .ok()
        .to_string();
    assert!(text.contains("\nRows:            2\n"), "{text}");
    assert!(text.contains("\nClients:         0\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_tails_the_newest_entries() {
    let f = fanout().await;
    let before = f.target.current_sequence();
    f.source.emit_insert(users(), user(3)).await;
    wait_until("insert journaled", WAIT, || {
        f.target.current_sequence() > before
    })
    .await;

    let json = f
        .run(&[
            "fanout",
            "journal",
            "public.users",
            "--tail",
            "1",
            "-o",
            "json",
        ])
        .await
        .json();
    let entries = json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{json}");
    assert_eq!(entries[0]["sequence"], f.target.current_sequence());
    assert_eq!(entries[0]["action"], "INSERT");
    assert_eq!(entries[0]["new"]["id"], 3);

    let text = f
        .run(&["fanout", "journal", "public.users", "--tail", "1"])
        .await
        .ok()
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[1].ends_with("INSERT  id=3 name=user-3 team=red email=u3@x"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_list_what_the_target_holds() {
    let f = fanout().await;
    let json = f
        .run(&["fanout", "snapshots", "public.users", "-o", "json"])
        .await
        .json();
    let listed: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot_id"].as_str().unwrap())
        .collect();
    let held: Vec<String> = f
        .target
        .snapshots()
        .iter()
        .map(|s| s.id().to_string())
        .collect();
    assert!(!held.is_empty());
    assert_eq!(listed, held);
    assert_eq!(json[0]["row_count"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_lists_a_connected_replica() {
    let f = fanout().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", f.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = LaredoReplicationServiceClient::new(channel);
    let mut request = tonic::Request::new(rpb::SyncRequest {
        schema: "public".into(),
        table: "users".into(),
        client_id: "replica-1".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {READ_TOKEN}").parse().unwrap(),
    );
    let mut stream = client.sync(request).await.unwrap().into_inner();
    // The handshake comes after the server registered the client.
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        first.message,
        Some(rpb::sync_response::Message::Handshake(_))
    ));

    let json = f
        .run(&["fanout", "clients", "public.users", "-o", "json"])
        .await
        .json();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json[0]["client_id"], "replica-1");
    assert_eq!(json[0]["mode"], "FULL_SNAPSHOT");

    let text = f
        .run(&["fanout", "clients", "public.users"])
        .await
        .ok()
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "CLIENT",
            "ID",
            "SEQUENCE",
            "BEHIND",
            "STATE",
            "BUFFER",
            "CONNECTED"
        ]
    );
    assert!(lines[1].starts_with("replica-1 "), "{text}");
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_fanout_target_is_not_found() {
    let f = fanout().await;
    let out = f.run(&["fanout", "status", "public.nope"]).await;
    let stderr = out.failed();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.ends_with(" (NOT_FOUND)\n"), "{stderr}");
    assert!(stderr.contains("public.nope"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fanout_port_needs_a_token_too() {
    let f = fanout().await;
    let out = run(
        &["--fanout-address".to_string(), f.addr.to_string()],
        &["fanout", "status", "public.users"],
    )
    .await;
    assert_eq!(
        out.failed(),
        "error: /laredo.replication.v1.LaredoReplicationService/GetReplicationStatus is protected: send a read or admin token as \"authorization: Bearer <token>\" (UNAUTHENTICATED)\n\
         hint: no token was sent: pass one with --token or LAREDO_TOKEN (a read token suffices for reads)\n"
    );
}
