//! The OAM service through a real tonic client over loopback, against an engine running
//! the scriptable test source.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use laredo_core::{
    ApplyError, Change, ChangeKind, ColumnDefinition, Engine, PipelineOptions, Row, SyncTarget,
    TableIdentifier, TargetError, row, table,
};
use laredo_deadletter::MemoryDeadLetterStore;
use laredo_proto::laredo::v1 as pb;
use laredo_proto::laredo::v1::laredo_oam_service_client::LaredoOamServiceClient;
use laredo_service_oam::{OamService, StatusEvents};
use laredo_source_test::TestSource;
use laredo_target_memory::IndexedTarget;
use laredo_test_support::wait_until_async;
use tonic::Code;
use tonic::transport::Channel;

mod answers;
mod replay;

/// Serves the OAM service of `engine` on a loopback port and connects a client to it.
async fn serve(engine: &Engine, events: Arc<StatusEvents>) -> LaredoOamServiceClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = OamService::new(engine.clone(), events).into_server();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    LaredoOamServiceClient::new(channel)
}

const WAIT: Duration = Duration::from_secs(10);

fn users() -> TableIdentifier {
    table("public", "users")
}

fn user(id: i64, name: &str) -> Row {
    row! {"id" => id, "name" => name}
}

/// A protobuf `Struct` as JSON.
fn struct_json(s: &prost_types::Struct) -> serde_json::Value {
    fn value(v: &prost_types::Value) -> serde_json::Value {
        use prost_types::value::Kind;
        match &v.kind {
            None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
            Some(Kind::BoolValue(b)) => (*b).into(),
            Some(Kind::NumberValue(n)) => (*n).into(),
            Some(Kind::StringValue(s)) => s.clone().into(),
            Some(Kind::ListValue(l)) => l.values.iter().map(value).collect(),
            Some(Kind::StructValue(s)) => struct_json(s),
        }
    }
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// An IndexedTarget that refuses rows named "bad" until healed, and whose baseline
/// rows wait for a permit of `gate` while `gated`.
struct Picky {
    inner: Arc<IndexedTarget>,
    healed: AtomicBool,
    gated: AtomicBool,
    gate: tokio::sync::Semaphore,
}

#[async_trait]
impl SyncTarget for Picky {
    fn type_name(&self) -> &str {
        "picky"
    }
    async fn on_init(
        &self,
        t: &TableIdentifier,
        c: &[ColumnDefinition],
    ) -> Result<(), TargetError> {
        self.inner.on_init(t, c).await
    }
    async fn on_baseline(&self, t: &TableIdentifier, rows: &[Row]) -> Result<(), TargetError> {
        if self.gated.load(Ordering::SeqCst) {
            for _ in rows {
                self.gate.acquire().await.unwrap().forget();
            }
        }
        self.inner.on_baseline(t, rows).await
    }
    /// Refuses an insert of a row named "bad" until healed; applies the rest.
    async fn apply(&self, t: &TableIdentifier, batch: &[Change]) -> Result<(), ApplyError> {
        for (n, change) in batch.iter().enumerate() {
            let bad = matches!(&change.kind, ChangeKind::Insert { row } if row.get_str("name") == Some("bad"));
            if bad && !self.healed.load(Ordering::SeqCst) {
                return Err(ApplyError::at(n, TargetError::new("bad row refused")));
            }
            self.inner
                .apply(t, std::slice::from_ref(change))
                .await
                .map_err(|e| ApplyError::at(n, e.error))?;
        }
        Ok(())
    }
}

struct Fixture {
    engine: Engine,
    source: Arc<TestSource>,
    target: Arc<IndexedTarget>,
    picky: Arc<Picky>,
    client: LaredoOamServiceClient<Channel>,
}

/// An engine with two pipelines of `public.users` (an IndexedTarget with an index, and a
/// picky target with a dead letter store), served over loopback.
async fn fixture() -> Fixture {
    let source = TestSource::new();
    source.set_schema(
        users(),
        TestSource::columns(&[("id", "int8", true), ("name", "text", false)]),
    );
    for id in 1..=3 {
        source.add_row(users(), user(id, &format!("user-{id}")));
    }
    let target = IndexedTarget::builder()
        .lookup_fields(["id"])
        .index(laredo_core::IndexDefinition::new(
            "by_name",
            ["name"],
            false,
        ))
        .build();
    let picky = Arc::new(Picky {
        inner: IndexedTarget::builder().lookup_fields(["id"]).build(),
        healed: AtomicBool::new(false),
        gated: AtomicBool::new(false),
        gate: tokio::sync::Semaphore::new(0),
    });
    let events = StatusEvents::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), target.clone(), PipelineOptions::default())
        .pipeline(
            "main",
            users(),
            picky.clone(),
            PipelineOptions::default()
                .max_retries(0)
                .retry_backoff(Duration::from_millis(1), Duration::from_millis(1)),
        )
        .dead_letter_store(Arc::new(MemoryDeadLetterStore::new()))
        .observer(events.clone())
        .build()
        .unwrap();
    engine.start().await.unwrap();
    assert!(engine.await_ready(WAIT).await);

    let client = serve(&engine, events).await;
    Fixture {
        engine,
        source,
        target,
        picky,
        client,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_pipelines_tables_and_schema() {
    let mut f = fixture().await;
    let last = f.source.emit_insert(users(), user(4, "d")).await;
    wait_until_async("applied", WAIT, || {
        let source = f.source.clone();
        let last = last.clone();
        async move { source.acked_position() >= last.as_u64() }
    })
    .await;

    let status = f
        .client
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, pb::ServiceState::Streaming as i32);
    assert_eq!(status.sources.len(), 1);
    assert_eq!(status.sources[0].source_id, "main");
    assert_eq!(status.sources[0].state, pb::SourceState::Streaming as i32);
    assert_eq!(status.pipelines.len(), 2);
    let indexed = status
        .pipelines
        .iter()
        .find(|p| p.target_type == "indexed-memory")
        .unwrap();
    assert_eq!(indexed.row_count, 4);
    assert_eq!(indexed.inserts_applied, 1);
    assert!(indexed.ready);
    assert!(indexed.last_change_at.is_some());

    let table = f
        .client
        .get_table_status(pb::GetTableStatusRequest {
            schema: "public".into(),
            table: "users".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(table.pipelines.len(), 2);
    let by_name = table.indexes.iter().find(|i| i.name == "by_name").unwrap();
    assert_eq!(by_name.fields, vec!["name".to_string()]);
    assert!(!by_name.unique);

    let one = f
        .client
        .get_pipeline_status(pb::GetPipelineStatusRequest {
            pipeline_id: indexed.pipeline_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.status.unwrap().pipeline_id, indexed.pipeline_id);
    assert!(!one.indexes.is_empty());
    let picky = status
        .pipelines
        .iter()
        .find(|p| p.target_type == "picky")
        .unwrap();
    let other = f
        .client
        .get_pipeline_status(pb::GetPipelineStatusRequest {
            pipeline_id: picky.pipeline_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        other.indexes.is_empty(),
        "a pipeline reports its own target's indexes, not a sibling's"
    );

    let listed = f
        .client
        .list_pipelines(pb::ListPipelinesRequest {
            source_id: "main".into(),
            table: "public.users".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.pipelines.len(), 2);
    let none = f
        .client
        .list_pipelines(pb::ListPipelinesRequest {
            source_id: "other".into(),
            table: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.pipelines.is_empty());

    let tables = f
        .client
        .list_tables(pb::ListTablesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tables.tables.len(), 2);
    assert_eq!(tables.tables[0].primary_key, vec!["id".to_string()]);
    assert_eq!(tables.tables[0].source_type, "test");
    let source_config = struct_json(tables.tables[0].source_config.as_ref().unwrap());
    assert_eq!(
        source_config,
        serde_json::json!({
            "id": "main",
            "type": "test",
            "supports_resume": true,
            "ordering_guarantee": "total",
            "details": {},
        })
    );
    let indexed_config = tables
        .tables
        .iter()
        .find(|t| t.target_type == "indexed-memory")
        .and_then(|t| t.target_config.as_ref())
        .map(struct_json)
        .unwrap();
    assert_eq!(
        indexed_config,
        serde_json::json!({
            "type": "indexed-memory",
            "lookup_fields": ["id"],
            "indexes": [{"name": "by_name", "fields": ["name"], "unique": false}],
        })
    );
    let picky_config = tables
        .tables
        .iter()
        .find(|t| t.target_type == "picky")
        .and_then(|t| t.target_config.as_ref())
        .map(struct_json)
        .unwrap();
    assert_eq!(
        picky_config,
        serde_json::json!({"type": "picky"}),
        "a target that describes nothing still names its type"
    );

    let schema = f
        .client
        .get_table_schema(pb::GetTableSchemaRequest {
            schema: String::new(),
            table: "users".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = schema
        .columns
        .iter()
        .map(|c| c.column_name.as_str())
        .collect();
    assert_eq!(names, ["id", "name"]);

    let sources = f
        .client
        .get_source_info(pb::GetSourceInfoRequest {
            source_id: "main".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sources.sources[0].source_type, "test");
    assert_eq!(
        sources.sources[0].acked_position,
        last.as_u64().unwrap().to_string()
    );
    assert_eq!(
        sources.sources[0].current_position,
        last.as_u64().unwrap().to_string(),
        "the last change read"
    );
    assert_eq!(
        status.sources[0].current_position,
        last.as_u64().unwrap().to_string()
    );

    let ready = f
        .client
        .check_ready(pb::CheckReadyRequest {
            source: "main".into(),
            table: "public.users".into(),
            pipeline_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ready.ready, "{:?}", ready.not_ready_reasons);
    f.engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_things_and_missing_preconditions_get_their_status_codes() {
    let mut f = fixture().await;
    fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
        let status = r.unwrap_err();
        (status.code(), status.message().to_string())
    }
    let (c, m) = code(
        f.client
            .get_table_status(pb::GetTableStatusRequest {
                schema: "public".into(),
                table: "nope".into(),
            })
            .await,
    );
    assert_eq!(c, Code::NotFound);
    assert!(m.contains("public.nope"), "{m}");
    let (c, m) = code(
        f.client
            .get_pipeline_status(pb::GetPipelineStatusRequest {
                pipeline_id: "x".into(),
            })
            .await,
    );
    assert_eq!(c, Code::NotFound);
    assert_eq!(m, "pipeline x not found");
    let (c, m) = code(
        f.client
            .reload_table(pb::ReloadTableRequest {
                source_id: String::new(),
                schema: "public".into(),
                table: "nope".into(),
            })
            .await,
    );
    assert_eq!(c, Code::NotFound);
    assert!(m.contains("public.nope"), "{m}");
    let (c, m) = code(
        f.client
            .reload_table(pb::ReloadTableRequest {
                source_id: "ghost".into(),
                schema: "public".into(),
                table: "users".into(),
            })
            .await,
    );
    assert_eq!(c, Code::NotFound);
    assert!(m.contains("ghost"), "{m}");
    let (c, m) = code(
        f.client
            .get_replay_status(pb::GetReplayStatusRequest {
                replay_id: "replay-x".into(),
            })
            .await,
    );
    assert_eq!(
        (c, m.as_str()),
        (Code::NotFound, "replay replay-x not found")
    );
    let (c, m) = code(
        f.client
            .stop_replay(pb::StopReplayRequest {
                replay_id: "replay-x".into(),
            })
            .await,
    );
    assert_eq!(
        (c, m.as_str()),
        (Code::NotFound, "replay replay-x not found")
    );
    let (c, _) = code(
        f.client
            .pause_sync(pb::PauseSyncRequest {
                source_id: "ghost".into(),
            })
            .await,
    );
    assert_eq!(c, Code::NotFound);
    let (c, m) = code(
        f.client
            .reset_source(pb::ResetSourceRequest {
                source_id: "main".into(),
                confirm: false,
                drop_publication: false,
            })
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition);
    assert!(m.contains("confirm"), "{m}");
    let (c, m) = code(
        f.client
            .create_snapshot(pb::CreateSnapshotRequest::default())
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition);
    assert!(m.contains("snapshot store"), "{m}");
    let (c, _) = code(
        f.client
            .list_snapshots(pb::ListSnapshotsRequest::default())
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition);
    let (c, _) = code(
        f.client
            .start_replay(pb::StartReplayRequest::default())
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition);
    let (c, _) = code(
        f.client
            .drain_replication(pb::DrainReplicationRequest::default())
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition);
    let (c, _) = code(
        f.client
            .check_ready(pb::CheckReadyRequest {
                source: "ghost".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(c, Code::NotFound);
    f.engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_pause_resume_and_reset_drive_the_engine() {
    let mut f = fixture().await;
    let paused = f
        .client
        .pause_sync(pb::PauseSyncRequest {
            source_id: "main".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paused.state, pb::ServiceState::Paused as i32);
    let resumed = f
        .client
        .resume_sync(pb::ResumeSyncRequest {
            source_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.state, pb::ServiceState::Streaming as i32);

    // A row only the target has goes with a reload.
    laredo_test_support::OneChange::on_insert(&*f.target, &users(), &user(99, "stale"))
        .await
        .unwrap();
    let reload = f
        .client
        .reload_table(pb::ReloadTableRequest {
            source_id: "main".into(),
            schema: "public".into(),
            table: "users".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reload.accepted);
    assert_eq!(
        reload.message,
        "reload started for public.users on source main"
    );
    laredo_test_support::wait_until("the reload dropped the stale row", WAIT, || {
        f.target.lookup(99i64).is_none() && f.engine.is_ready()
    })
    .await;
    let baselines = f.source.baseline_calls();

    let reset = f
        .client
        .reset_source(pb::ResetSourceRequest {
            source_id: "main".into(),
            confirm: true,
            drop_publication: true,
        })
        .await;
    assert!(reset.unwrap().into_inner().accepted);
    assert_eq!(
        f.source.reset_calls(),
        vec![true],
        "publication dropped as asked"
    );
    wait_until_async("a fresh baseline", WAIT, || {
        let source = f.source.clone();
        async move { source.baseline_calls() > baselines }
    })
    .await;
    f.engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_table_answers_before_a_slow_reload_completes() {
    let mut f = fixture().await;
    laredo_test_support::OneChange::on_insert(&*f.target, &users(), &user(99, "stale"))
        .await
        .unwrap();
    // The reload's baseline waits at the picky target until the gate opens.
    f.picky.gated.store(true, Ordering::SeqCst);
    let reload = tokio::time::timeout(
        WAIT,
        f.client.reload_table(pb::ReloadTableRequest {
            source_id: String::new(),
            schema: "public".into(),
            table: "users".into(),
        }),
    )
    .await
    .expect("answered while the reload waits")
    .unwrap()
    .into_inner();
    assert!(reload.accepted, "{}", reload.message);
    assert_eq!(
        reload.message,
        "reload started for public.users on source main"
    );
    let picky_id = f
        .engine
        .pipelines()
        .into_iter()
        .find(|p| p.target_type == "picky")
        .unwrap()
        .id;
    laredo_test_support::wait_until("the reload is baselining", WAIT, || {
        f.engine
            .pipelines()
            .iter()
            .any(|p| p.id == picky_id && p.state == laredo_core::PipelineState::Baselining)
    })
    .await;
    assert!(!f.engine.is_ready());

    f.picky
        .gate
        .add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    laredo_test_support::wait_until("the reload completed", WAIT, || {
        f.engine.is_ready() && f.target.lookup(99i64).is_none()
    })
    .await;
    assert_eq!(f.picky.inner.all().len(), 3);
    assert_eq!(f.target.all().len(), 3);
    f.engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_replayed_and_purged() {
    let mut f = fixture().await;
    let picky_id = f
        .engine
        .pipelines()
        .into_iter()
        .find(|p| p.target_type == "picky")
        .unwrap()
        .id;
    f.source.emit_insert(users(), user(7, "bad")).await;
    f.source.emit_insert(users(), user(8, "bad")).await;
    let last = f.source.emit_insert(users(), user(9, "good")).await;
    wait_until_async("applied", WAIT, || {
        let source = f.source.clone();
        let last = last.clone();
        async move { source.acked_position() >= last.as_u64() }
    })
    .await;
    let listed = f
        .client
        .list_dead_letters(pb::ListDeadLettersRequest {
            pipeline_id: picky_id.clone(),
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_count, 2);
    assert_eq!(listed.entries.len(), 1, "limited");
    let entry = &listed.entries[0];
    assert_eq!(entry.action, pb::ChangeAction::Insert as i32);
    assert!(
        entry.error_message.contains("bad row refused"),
        "{}",
        entry.error_message
    );
    assert!(entry.new_values.is_some());

    f.picky.healed.store(true, Ordering::SeqCst);
    let replayed = f
        .client
        .replay_dead_letters(pb::ReplayDeadLettersRequest {
            pipeline_id: picky_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (replayed.replayed, replayed.succeeded, replayed.failed),
        (2, 2, 0)
    );
    assert!(f.picky.inner.lookup(7i64).is_some());

    f.source.emit_insert(users(), user(10, "bad")).await;
    laredo_test_support::wait_until("10 applied while healed", WAIT, || {
        f.picky.inner.lookup(10i64).is_some()
    })
    .await;
    f.picky.healed.store(false, Ordering::SeqCst);
    let last = f.source.emit_insert(users(), user(11, "bad")).await;
    wait_until_async("applied", WAIT, || {
        let source = f.source.clone();
        let last = last.clone();
        async move { source.acked_position() >= last.as_u64() }
    })
    .await;
    let purged = f
        .client
        .purge_dead_letters(pb::PurgeDeadLettersRequest {
            pipeline_id: picky_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(purged.purged, 1);
    let listed = f
        .client
        .list_dead_letters(pb::ListDeadLettersRequest {
            pipeline_id: picky_id,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_count, 0);
    f.engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_state_changes_and_row_changes() {
    let mut f = fixture().await;
    let mut stream = f
        .client
        .watch_status(pb::WatchStatusRequest {
            tables: vec!["public.users".into()],
            pipeline_ids: Vec::new(),
            include_row_changes: true,
        })
        .await
        .unwrap()
        .into_inner();
    f.engine.pause("main").await.unwrap();
    f.engine.resume("main").await.unwrap();
    f.source.emit_insert(users(), user(5, "e")).await;
    let mut saw_pause = false;
    let mut saw_row = false;
    while !(saw_pause && saw_row) {
        let message = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream stays open");
        match message.event.unwrap() {
            pb::watch_status_response::Event::PipelineStateChange(change) => {
                if change.new_state == pb::PipelineState::Paused as i32 {
                    saw_pause = true;
                }
            }
            pb::watch_status_response::Event::RowChange(row) => {
                assert_eq!(row.table, "users");
                assert_eq!(row.action, pb::ChangeAction::Insert as i32);
                saw_row = true;
            }
            // Pausing changes the service state too (see the answers module).
            pb::watch_status_response::Event::ServiceStateChange(_) => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    f.engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_replication_drains_fan_out_targets() {
    let source = TestSource::new();
    source.set_schema(
        users(),
        TestSource::columns(&[("id", "int8", true), ("name", "text", false)]),
    );
    source.add_row(users(), user(1, "a"));
    let fanout = laredo_target_fanout::FanoutTarget::new();
    let events = StatusEvents::new();
    let engine = Engine::builder()
        .source("main", source)
        .pipeline("main", users(), fanout.clone(), PipelineOptions::default())
        .observer(events.clone())
        .build()
        .unwrap();
    engine.start().await.unwrap();
    assert!(engine.await_ready(WAIT).await);
    let mut client = serve(&engine, events).await;

    let half = client
        .drain_replication(pb::DrainReplicationRequest {
            schema: "public".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(half.code(), Code::InvalidArgument, "{half:?}");
    let unknown = client
        .drain_replication(pb::DrainReplicationRequest {
            schema: "public".into(),
            table: "ghost".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert!(!fanout.is_draining());
    let drained = client
        .drain_replication(pb::DrainReplicationRequest {
            schema: "public".into(),
            table: "users".into(),
            drain_deadline: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(drained.accepted);
    assert_eq!(drained.drained_targets, ["public.users"]);
    assert!(fanout.is_draining());
    engine.stop().await.unwrap();
}
