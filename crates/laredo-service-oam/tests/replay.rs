//! Snapshot replay over OAM: StartReplay, GetReplayStatus and StopReplay against an
//! engine with a local snapshot store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use laredo_core::{Engine, PipelineOptions, SnapshotOptions, TableIdentifier, row, table};
use laredo_proto::laredo::v1 as pb;
use laredo_proto::laredo::v1::laredo_oam_service_client::LaredoOamServiceClient;
use laredo_service_oam::StatusEvents;
use laredo_snapshot_local::LocalSnapshotStore;
use laredo_source_test::TestSource;
use laredo_target_memory::IndexedTarget;
use laredo_test_support::wait_until_async;
use tonic::Code;
use tonic::transport::Channel;

use super::{WAIT, serve, user, users};

fn orders() -> TableIdentifier {
    table("public", "orders")
}

struct Fixture {
    engine: Engine,
    source: Arc<TestSource>,
    users: Arc<IndexedTarget>,
    orders: Arc<IndexedTarget>,
    client: LaredoOamServiceClient<Channel>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn pipeline(&self, table: &TableIdentifier) -> String {
        self.engine
            .pipelines()
            .into_iter()
            .find(|p| &p.table == table)
            .unwrap()
            .id
    }

    async fn snapshot(&mut self) -> String {
        let created = self
            .client
            .create_snapshot(pb::CreateSnapshotRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(created.accepted, "{}", created.message);
        created.snapshot_id
    }

    async fn start(
        &mut self,
        snapshot_id: &str,
        pipeline_id: &str,
        speed: pb::ReplaySpeed,
        tables: &[&str],
    ) -> Result<pb::StartReplayResponse, tonic::Status> {
        self.client
            .start_replay(pb::StartReplayRequest {
                snapshot_id: snapshot_id.to_string(),
                target_pipeline_id: pipeline_id.to_string(),
                speed: speed as i32,
                tables: tables.iter().map(|t| (*t).to_string()).collect(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn status(&mut self, replay_id: &str) -> pb::GetReplayStatusResponse {
        self.client
            .get_replay_status(pb::GetReplayStatusRequest {
                replay_id: replay_id.to_string(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Polls GetReplayStatus until the replay is no longer running.
    async fn finished(&mut self, replay_id: &str) -> pb::GetReplayStatusResponse {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.status(replay_id).await;
            if status.state != pb::ReplayState::Running as i32 {
                return status;
            }
            assert!(Instant::now() < deadline, "still running: {status:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Emits an insert and waits until every pipeline applied it.
    async fn applied(&self, position: laredo_core::Position) {
        wait_until_async("applied", WAIT, || {
            let source = self.source.clone();
            let position = position.clone();
            async move { source.acked_position() >= position.as_u64() }
        })
        .await;
    }
}

/// `public.users` (ids 1..=user_count) and `public.orders` (two rows) into
/// IndexedTargets, with a local snapshot store, served over loopback.
async fn fixture(user_count: i64) -> Fixture {
    let source = TestSource::new();
    source.set_schema(
        users(),
        TestSource::columns(&[("id", "int8", true), ("name", "text", false)]),
    );
    source.set_schema(
        orders(),
        TestSource::columns(&[("id", "int8", true), ("total", "int8", false)]),
    );
    for id in 1..=user_count {
        source.add_row(users(), user(id, &format!("user-{id}")));
    }
    source.add_row(orders(), row! {"id" => 1, "total" => 10});
    source.add_row(orders(), row! {"id" => 2, "total" => 20});
    let dir = tempfile::tempdir().unwrap();
    let users_target = IndexedTarget::builder().build();
    let orders_target = IndexedTarget::builder().build();
    let events = StatusEvents::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline(
            "main",
            users(),
            users_target.clone(),
            PipelineOptions::default(),
        )
        .pipeline(
            "main",
            orders(),
            orders_target.clone(),
            PipelineOptions::default(),
        )
        .snapshots(
            SnapshotOptions::new(Arc::new(LocalSnapshotStore::new(dir.path())))
                .describe_store("local", dir.path().display().to_string()),
        )
        .observer(events.clone())
        .build()
        .unwrap();
    engine.start().await.unwrap();
    assert!(engine.await_ready(WAIT).await);
    let client = serve(&engine, events).await;
    Fixture {
        engine,
        source,
        users: users_target,
        orders: orders_target,
        client,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_puts_the_snapshots_rows_back_into_the_target_pipeline_only() {
    let mut f = fixture(3).await;
    let snapshot_id = f.snapshot().await;
    f.source.emit_delete(users(), row! {"id" => 1}).await;
    f.source
        .emit_update(users(), user(2, "changed"), None)
        .await;
    let last = f.source.emit_delete(orders(), row! {"id" => 1}).await;
    f.applied(last).await;
    assert!(f.users.lookup(1i64).is_none());
    assert_eq!(f.orders.all().len(), 1);

    let pipeline = f.pipeline(&users());
    let started = f
        .start(&snapshot_id, &pipeline, pb::ReplaySpeed::Full, &[])
        .await
        .unwrap();
    assert!(started.accepted, "{}", started.message);
    assert!(
        started
            .replay_id
            .starts_with(&format!("replay-{pipeline}-{snapshot_id}-")),
        "{}",
        started.replay_id
    );
    let status = f.finished(&started.replay_id).await;
    assert_eq!(
        status.state,
        pb::ReplayState::Completed as i32,
        "{status:?}"
    );
    assert_eq!(status.replay_id, started.replay_id);
    assert_eq!(status.rows_replayed, 3);
    assert_eq!(status.message, "");
    assert!(status.elapsed.is_some());

    assert_eq!(
        f.users.lookup(1i64),
        Some(user(1, "user-1")),
        "the deleted row is back"
    );
    assert_eq!(
        f.users.lookup(2i64),
        Some(user(2, "user-2")),
        "the snapshot's value"
    );
    assert_eq!(f.users.all().len(), 3);
    assert_eq!(
        f.orders.all(),
        [row! {"id" => 2, "total" => 20}],
        "the snapshot's other table has no target in the replay: skipped"
    );

    // The pipeline applies live changes again.
    let last = f.source.emit_insert(users(), user(7, "g")).await;
    f.applied(last).await;
    assert_eq!(f.users.lookup(7i64), Some(user(7, "g")));
    f.engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_replay_cancels_a_running_replay() {
    let mut f = fixture(3000).await;
    let snapshot_id = f.snapshot().await;
    let pipeline = f.pipeline(&users());
    // Realtime is paced at 1000 rows/s: 3000 rows take three seconds.
    let started = f
        .start(&snapshot_id, &pipeline, pb::ReplaySpeed::Realtime, &[])
        .await
        .unwrap();
    assert!(started.accepted, "{}", started.message);
    assert!(
        started.message.contains("1000 rows/s"),
        "{}",
        started.message
    );
    let stopped = f
        .client
        .stop_replay(pb::StopReplayRequest {
            replay_id: started.replay_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stopped.stopped);
    let status = f.status(&started.replay_id).await;
    assert_eq!(status.state, pb::ReplayState::Stopped as i32, "{status:?}");
    assert!(status.rows_replayed < 3000, "{status:?}");
    let again = f
        .client
        .stop_replay(pb::StopReplayRequest {
            replay_id: started.replay_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.stopped, "already stopped");

    // The pipeline's apply lock was released: live changes flow again.
    let last = f.source.emit_insert(users(), user(5000, "new")).await;
    f.applied(last).await;
    assert_eq!(f.users.lookup(5000i64), Some(user(5000, "new")));
    f.engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_replay_rejects_what_it_cannot_replay() {
    let mut f = fixture(1).await;
    let snapshot_id = f.snapshot().await;
    let pipeline = f.pipeline(&users());
    let full = pb::ReplaySpeed::Full;
    let cases: [(&str, &str, &[&str], Code, String); 7] = [
        (
            "snap-0",
            &pipeline,
            &[],
            Code::NotFound,
            "snap-0 not found".to_string(),
        ),
        (
            "",
            &pipeline,
            &[],
            Code::InvalidArgument,
            "snapshot_id is required".to_string(),
        ),
        (
            &snapshot_id,
            "",
            &[],
            Code::InvalidArgument,
            "target_pipeline_id is required".to_string(),
        ),
        (
            &snapshot_id,
            "ghost",
            &[],
            Code::NotFound,
            "pipeline ghost not found".to_string(),
        ),
        (
            &snapshot_id,
            &pipeline,
            &["users"],
            Code::InvalidArgument,
            "invalid table \"users\": expected schema.table".to_string(),
        ),
        (
            &snapshot_id,
            &pipeline,
            &["public.ghost"],
            Code::InvalidArgument,
            format!("invalid table \"public.ghost\": snapshot {snapshot_id} does not hold it"),
        ),
        (
            &snapshot_id,
            &pipeline,
            &["public.orders"],
            Code::InvalidArgument,
            format!(
                "invalid table \"public.orders\": pipeline {pipeline} receives only public.users"
            ),
        ),
    ];
    for (snapshot, pipeline, tables, code, message) in cases {
        let status = f.start(snapshot, pipeline, full, tables).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(&message), "{status:?}");
    }
    let named = f
        .start(&snapshot_id, &pipeline, full, &["public.users"])
        .await
        .unwrap();
    assert!(named.accepted, "{}", named.message);
    let status = f.finished(&named.replay_id).await;
    assert_eq!(
        status.state,
        pb::ReplayState::Completed as i32,
        "{status:?}"
    );
    f.engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_replay_without_a_snapshot_store_is_a_failed_precondition() {
    let mut f = super::fixture().await;
    let pipeline = f.engine.pipelines()[0].id.clone();
    let status = f
        .client
        .start_replay(pb::StartReplayRequest {
            snapshot_id: "snap-1".into(),
            target_pipeline_id: pipeline,
            speed: pb::ReplaySpeed::Full as i32,
            tables: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "no snapshot store configured");
    f.engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_a_table_subset_holds_only_those_tables() {
    let mut f = fixture(3).await;
    let created = f
        .client
        .create_snapshot(pb::CreateSnapshotRequest {
            tables: vec!["public.orders".into()],
            user_meta: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.accepted, "{}", created.message);
    let info = f
        .client
        .inspect_snapshot(pb::InspectSnapshotRequest {
            snapshot_id: created.snapshot_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    let tables: Vec<(String, String, u64)> = info
        .tables
        .iter()
        .map(|t| (t.schema.clone(), t.table.clone(), t.row_count))
        .collect();
    assert_eq!(tables, vec![("public".into(), "orders".into(), 2)]);
    assert_eq!(
        info.source_positions.len(),
        1,
        "{:?}",
        info.source_positions
    );

    // A table no pipeline serves is refused by name, and nothing is taken.
    let err = f
        .client
        .create_snapshot(pb::CreateSnapshotRequest {
            tables: vec!["public.nope".into()],
            user_meta: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("public.nope"), "{}", err.message());
    let listed = f
        .client
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.snapshots.len(), 1);
    f.engine.stop().await.unwrap();
}
