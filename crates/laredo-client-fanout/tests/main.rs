//! The client against the real replication service over loopback: engines on the
//! scriptable test source streaming into fan-out targets.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use laredo_client_fanout::{ClientOptions, FanoutClient};
use laredo_core::{Engine, PipelineOptions, Row, RowAccess, TableIdentifier, Value, row, table};
use laredo_source_test::TestSource;
use laredo_target_fanout::{DrainReason, FanoutConfig, FanoutTarget, ReplicationService};
use laredo_test_support::{FaultProxy, wait_until};

mod credentials;

const WAIT: Duration = Duration::from_secs(30);

fn items() -> TableIdentifier {
    table("public", "items")
}

fn item(id: i64, region: &str) -> Row {
    row! {"id" => id, "name" => format!("item-{id}"), "region" => region}
}

struct Server {
    engine: Engine,
    source: Arc<TestSource>,
    target: Arc<FanoutTarget>,
    service: ReplicationService,
    addr: SocketAddr,
}

impl Server {
    async fn start(rows: i64) -> Self {
        Self::start_with(rows, |grpc| grpc.insecure(true)).await
    }

    /// As [`Server::start`], with the gRPC server configured by `configure` (tokens,
    /// TLS).
    async fn start_with(
        rows: i64,
        configure: impl FnOnce(laredo_service::GrpcServerBuilder) -> laredo_service::GrpcServerBuilder,
    ) -> Self {
        let source = TestSource::new();
        source.set_schema(
            items(),
            TestSource::columns(&[
                ("id", "int8", true),
                ("name", "text", false),
                ("region", "text", false),
            ]),
        );
        for id in 1..=rows {
            source.add_row(items(), item(id, if id % 2 == 0 { "eu" } else { "us" }));
        }
        let target = FanoutTarget::with_config(
            FanoutConfig::default().heartbeat_interval(Duration::from_millis(200)),
        );
        let engine = Engine::builder()
            .source("main", source.clone())
            .pipeline("main", items(), target.clone(), PipelineOptions::default())
            .build()
            .unwrap();
        engine.start().await.unwrap();
        assert!(engine.await_ready(WAIT).await);
        let service = ReplicationService::new(engine.clone());
        let server = configure(
            laredo_service::GrpcServer::builder(engine.clone())
                .listen("127.0.0.1:0".parse().unwrap())
                .add_service(service.clone().into_server()),
        )
        .bind()
        .await
        .unwrap();
        let addr = server.local_addr();
        tokio::spawn(server.serve(std::future::pending()));
        Self {
            engine,
            source,
            target,
            service,
            addr,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn rows(&self) -> HashMap<i64, Row> {
        by_id(self.target.rows())
    }
}

fn by_id(rows: Vec<Row>) -> HashMap<i64, Row> {
    rows.into_iter()
        .map(|r| (r.get_i64("id").unwrap(), r))
        .collect()
}

fn options(url: &str) -> ClientOptions {
    ClientOptions::new(url, "public", "items")
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
}

/// Waits until the server's engine applied every change emitted so far, then until the
/// replica equals the server's rows.
async fn converged(client: &FanoutClient, server: &Server) {
    let last = server.source.emit_heartbeat().await.as_u64();
    wait_until("the server to apply every change", WAIT, || {
        server.source.acked_position() >= last
    })
    .await;
    wait_until("the replica to equal the server", WAIT, || {
        by_id(client.all()) == server.rows()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_replicates_the_table_and_follows_live_changes() {
    let server = Server::start(100).await;
    let client =
        FanoutClient::new(options(&server.url()).with_index("by_region", ["region"])).unwrap();
    let heard = Arc::new(AtomicUsize::new(0));
    let positions = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let counter = Arc::clone(&heard);
    let _listener = client.listen(move |_, _| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let seen = Arc::clone(&positions);
    let _positioned = client.listen_with_position(move |_, new, position| {
        if new.is_some_and(|r| r.get_i64("id") == Some(1000)) {
            seen.lock().push(position.to_string());
        }
    });
    client.start().await.unwrap();
    assert!(client.await_ready(WAIT).await);
    assert_eq!(client.count(), 100);
    assert_eq!(client.stats().full_snapshots, 1);
    let columns = client.columns();
    let key: Vec<&str> = columns
        .iter()
        .filter(|c| c.primary_key)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(key, ["id"], "keyed by the handshake's primary key");

    let inserted = server.source.emit_insert(items(), item(1000, "eu")).await;
    server
        .source
        .emit_update(items(), item(2, "us"), None)
        .await;
    let deleted = server.source.emit_delete(items(), item(3, "")).await;
    converged(&client, &server).await;
    assert_eq!(
        client.get(2i64).unwrap().get("region"),
        Some(&Value::text("us"))
    );
    assert!(client.get(3i64).is_none());
    assert_eq!(
        client
            .lookup_by_index("by_region", Value::text("eu"))
            .unwrap()
            .len(),
        50
    );
    assert_eq!(client.lookup("region", &Value::text("us")).len(), 50);
    // The replica's store is a RowAccess too: readable without knowing its type.
    let rows: Arc<dyn RowAccess> = client.rows();
    assert_eq!(rows.key_fields(), ["id"]);
    assert_eq!(rows.get(&row! {"id" => 2}), Some(item(2, "us")));
    assert_eq!(rows.count(), 100, "100 rows, one inserted, one deleted");
    assert_eq!(positions.lock().as_slice(), [inserted.to_string()]);
    assert_eq!(client.last_source_position(), deleted.to_string());
    assert!(
        heard.load(Ordering::SeqCst) >= 103,
        "snapshot rows and changes heard"
    );
    client.stop().await.unwrap();
    server.engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_resumes_by_sequence_without_a_new_snapshot() {
    let server = Server::start(20).await;
    let proxy = FaultProxy::start(server.addr).await.unwrap();
    let client = FanoutClient::new(
        options(&format!("http://{}", proxy.addr())).heartbeat_timeout(Duration::from_secs(2)),
    )
    .unwrap();
    client.start().await.unwrap();
    assert!(client.await_ready(WAIT).await);
    proxy.cut();
    wait_until("the connection to be cut", WAIT, || {
        proxy.open_connections() == 0
    })
    .await;
    for id in 100..110 {
        server.source.emit_insert(items(), item(id, "eu")).await;
    }
    server.source.emit_delete(items(), item(1, "")).await;
    proxy.restore();
    converged(&client, &server).await;
    wait_until("a second session", WAIT, || client.stats().sessions >= 2).await;
    let stats = client.stats();
    assert_eq!(stats.full_snapshots, 1, "{stats:?}");
    assert!(stats.resumed >= 1, "{stats:?}");
    client.stop().await.unwrap();
    server.engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_away_fails_over_to_another_instance_by_position() {
    // Two instances fed identical histories: the same changes at the same positions.
    let a = Server::start(30).await;
    let b = Server::start(30).await;
    let client = FanoutClient::new(options(&a.url()).endpoint(b.url())).unwrap();
    client.start().await.unwrap();
    assert!(client.await_ready(WAIT).await);
    for server in [&a, &b] {
        server.source.emit_insert(items(), item(500, "eu")).await;
        server
            .source
            .emit_update(items(), item(4, "us"), None)
            .await;
    }
    converged(&client, &a).await;

    assert_eq!(
        a.service
            .drain(DrainReason::Admin, Some(Duration::from_secs(20))),
        1
    );
    wait_until("the client to move to the second instance", WAIT, || {
        client.stats().endpoint == b.url()
    })
    .await;
    for server in [&a, &b] {
        server.source.emit_delete(items(), item(5, "")).await;
        server.source.emit_insert(items(), item(501, "us")).await;
    }
    converged(&client, &b).await;
    let stats = client.stats();
    assert_eq!(stats.go_aways, 1, "{stats:?}");
    assert_eq!(
        stats.full_snapshots, 1,
        "resumed on b by position: {stats:?}"
    );
    client.stop().await.unwrap();
    a.engine.stop().await.unwrap();
    b.engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_snapshot_restarts_by_resuming_instead_of_a_full_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.json");
    let server = Server::start(40).await;
    let first = FanoutClient::new(options(&server.url()).local_snapshot_path(&path)).unwrap();
    first.start().await.unwrap();
    assert!(first.await_ready(WAIT).await);
    server.source.emit_insert(items(), item(41, "eu")).await;
    converged(&first, &server).await;
    first.stop().await.unwrap();
    assert!(path.exists());

    // Changes while no client runs.
    server.source.emit_delete(items(), item(10, "")).await;
    server.source.emit_insert(items(), item(42, "us")).await;
    let second = FanoutClient::new(options(&server.url()).local_snapshot_path(&path)).unwrap();
    second.start().await.unwrap();
    assert_eq!(
        second.count(),
        41,
        "the saved rows are there before any stream"
    );
    assert!(second.await_ready(WAIT).await);
    converged(&second, &server).await;
    let stats = second.stats();
    assert_eq!(stats.full_snapshots, 0, "{stats:?}");
    assert_eq!(stats.resumed, 1, "{stats:?}");
    second.stop().await.unwrap();

    // A corrupt file means a fresh start.
    std::fs::write(&path, b"{ not json").unwrap();
    let third = FanoutClient::new(options(&server.url()).local_snapshot_path(&path)).unwrap();
    third.start().await.unwrap();
    assert!(third.await_ready(WAIT).await);
    converged(&third, &server).await;
    assert_eq!(third.stats().full_snapshots, 1);
    third.stop().await.unwrap();
    server.engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_narrow_the_replica_and_bad_options_are_refused() {
    let server = Server::start(20).await;
    let client = FanoutClient::new(
        options(&server.url())
            .with_filter_equals("region", Value::text("eu"))
            .unwrap(),
    )
    .unwrap();
    client.start().await.unwrap();
    assert!(client.await_ready(WAIT).await);
    assert_eq!(client.count(), 10);
    server.source.emit_insert(items(), item(100, "eu")).await;
    server.source.emit_insert(items(), item(101, "us")).await;
    wait_until("the eu insert", WAIT, || client.get(100i64).is_some()).await;
    assert!(client.get(101i64).is_none());
    assert!(
        client
            .all()
            .iter()
            .all(|r| r.get("region") == Some(&Value::text("eu")))
    );
    client.stop().await.unwrap();

    assert!(
        options(&server.url())
            .with_filter_equals("region", Value::json("{}"))
            .is_err()
    );
    assert!(FanoutClient::new(ClientOptions::new("127.0.0.1:1", "", "items")).is_err());
    let twice = FanoutClient::new(options(&server.url())).unwrap();
    twice.start().await.unwrap();
    assert!(twice.start().await.is_err());
    twice.stop().await.unwrap();
    server.engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_reaches_the_replica_and_later_rows_carry_the_new_column() {
    let server = Server::start(20).await;
    let client = FanoutClient::new(options(&server.url())).unwrap();
    client.start().await.unwrap();
    assert!(client.await_ready(WAIT).await);
    // A row under the old columns, the change, then rows under the new ones.
    server
        .source
        .emit_update(items(), item(1, "us"), None)
        .await;
    let note = laredo_core::ColumnDefinition::new("note", "text");
    server.source.add_column(items(), note).await;
    for id in 2..6 {
        let row = row! {"id" => id, "name" => format!("item-{id}"), "region" => "ap", "note" => format!("n{id}")};
        server.source.emit_update(items(), row, None).await;
    }
    converged(&client, &server).await;
    assert!(client.columns().iter().any(|c| c.name == "note"));
    assert_eq!(
        client.get(4i64).unwrap().get("note"),
        Some(&Value::text("n4"))
    );
    assert_eq!(
        client.get(1i64).unwrap().get("region"),
        Some(&Value::text("us"))
    );
    client.stop().await.unwrap();
    server.engine.stop().await.unwrap();
}

/// A scripted replication service for a fault the real one never produces: a COMPACT
/// journal row that does not fit the columns its handshake announced. (The only fake
/// server in these tests: the real service cannot be made to send such a row.)
mod scripted {
    use std::pin::Pin;

    use laredo_core::ColumnDefinition;
    use laredo_proto::laredo::replication::v1 as pb;
    use laredo_proto::laredo::replication::v1::laredo_replication_service_server::{
        LaredoReplicationService, LaredoReplicationServiceServer,
    };
    use laredo_proto::laredo::v1 as types;
    use parking_lot::Mutex;
    use tokio_stream::{Stream, StreamExt as _};
    use tonic::{Request, Response, Status};

    use super::*;

    type Messages<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

    /// Answers every `Sync` with a one-row snapshot and the insert of row 2; the first
    /// stream's insert has one value too many, the second stream's snapshot row one
    /// value too few.
    #[derive(Default, Clone)]
    pub(crate) struct Scripted {
        pub(crate) requests: Arc<Mutex<Vec<pb::SyncRequest>>>,
    }

    fn message(message: pb::sync_response::Message) -> Result<pb::SyncResponse, Status> {
        Ok(pb::SyncResponse {
            message: Some(message),
        })
    }

    #[tonic::async_trait]
    impl LaredoReplicationService for Scripted {
        type SyncStream = Messages<pb::SyncResponse>;
        type FetchSnapshotStream = Messages<pb::FetchSnapshotResponse>;

        async fn sync(
            &self,
            request: Request<pb::SyncRequest>,
        ) -> Result<Response<Self::SyncStream>, Status> {
            use pb::sync_response::Message as M;
            let stream = {
                let mut requests = self.requests.lock();
                requests.push(request.into_inner());
                requests.len()
            };
            let columns: Vec<types::ColumnDefinition> = [
                ColumnDefinition::new("id", "int8").primary_key(1),
                ColumnDefinition::new("name", "text"),
            ]
            .iter()
            .map(types::ColumnDefinition::from)
            .collect();
            let mut inserted = types::Row::from(&row! {"id" => 2, "name" => "b"});
            inserted.columns.clear();
            if stream == 1 {
                inserted.values.push(inserted.values[1].clone());
            }
            let mut snapshot_row = types::Row::from(&row! {"id" => 1, "name" => "a"});
            if stream == 2 {
                snapshot_row.values.pop();
            }
            let messages = vec![
                message(M::Handshake(pb::Handshake {
                    mode: pb::SyncMode::FullSnapshot.into(),
                    server_current_sequence: 2,
                    resume_from_sequence: 1,
                    columns: columns.clone(),
                    server_id: "scripted".into(),
                    row_encoding: pb::RowEncoding::Compact.into(),
                    row_columns: columns,
                    ..Default::default()
                })),
                message(M::SnapshotBegin(pb::SnapshotBegin {
                    snapshot_id: "s1".into(),
                    sequence: 1,
                    row_count: 1,
                    ..Default::default()
                })),
                message(M::SnapshotRows(pb::SnapshotRows {
                    rows: vec![snapshot_row],
                })),
                message(M::SnapshotEnd(pb::SnapshotEnd {
                    snapshot_id: "s1".into(),
                    sequence: 1,
                    rows_sent: 1,
                    ..Default::default()
                })),
                message(M::JournalEntries(pb::JournalEntries {
                    entries: vec![pb::JournalEntry {
                        sequence: 2,
                        action: types::ChangeAction::Insert.into(),
                        new_values: Some(inserted),
                        ..Default::default()
                    }],
                })),
            ];
            let stream = tokio_stream::iter(messages).chain(tokio_stream::pending());
            Ok(Response::new(Box::pin(stream)))
        }

        async fn list_snapshots(
            &self,
            _: Request<pb::ListSnapshotsRequest>,
        ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
            Err(Status::unimplemented("scripted"))
        }

        async fn fetch_snapshot(
            &self,
            _: Request<pb::FetchSnapshotRequest>,
        ) -> Result<Response<Self::FetchSnapshotStream>, Status> {
            Err(Status::unimplemented("scripted"))
        }

        async fn get_replication_status(
            &self,
            _: Request<pb::GetReplicationStatusRequest>,
        ) -> Result<Response<pb::GetReplicationStatusResponse>, Status> {
            Err(Status::unimplemented("scripted"))
        }

        async fn list_journal_entries(
            &self,
            _: Request<pb::ListJournalEntriesRequest>,
        ) -> Result<Response<pb::ListJournalEntriesResponse>, Status> {
            Err(Status::unimplemented("scripted"))
        }
    }

    /// Serves `scripted` on a loopback port.
    pub(crate) async fn serve(scripted: Scripted) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(LaredoReplicationServiceServer::new(scripted))
                .serve_with_incoming(incoming),
        );
        addr
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_row_is_not_skipped_the_replica_starts_over() {
    let scripted = scripted::Scripted::default();
    let addr = scripted::serve(scripted.clone()).await;
    let client = FanoutClient::new(
        options(&format!("http://{addr}")).heartbeat_timeout(Duration::from_secs(30)),
    )
    .unwrap();
    client.start().await.unwrap();
    // The first stream's insert does not decode, then the second stream's snapshot row:
    // rather than skip them (a replica without a row for good), the client asks for a
    // fresh snapshot each time, and the third stream applies.
    wait_until("the replica holds both rows", WAIT, || {
        by_id(client.all())
            == by_id(vec![
                row! {"id" => 1, "name" => "a"},
                row! {"id" => 2, "name" => "b"},
            ])
    })
    .await;
    let requests = scripted.requests.lock().clone();
    assert!(requests.len() >= 3, "{requests:?}");
    assert_eq!(
        requests[0].row_encoding(),
        laredo_proto::laredo::replication::v1::RowEncoding::Compact
    );
    // Without resume fields: the replica's state before the bad row is not trusted.
    for request in &requests[1..3] {
        assert_eq!(request.last_known_sequence, 0);
        assert!(request.last_snapshot_id.is_empty());
        assert!(request.last_known_source_position.is_empty());
    }
    assert_eq!(client.stats().full_snapshots, 3);
    client.stop().await.unwrap();
}
