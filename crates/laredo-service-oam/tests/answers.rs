//! Answers that carry what really happened: row events with their transaction and
//! key, service state changes, dead letter store failures.

use std::sync::Arc;

use async_trait::async_trait;
use laredo_core::{
    ChangeEvent, DeadLetterEntry, DeadLetterError, DeadLetterStore, Engine, PipelineOptions,
    Position,
};
use laredo_proto::laredo::v1 as pb;
use laredo_service_oam::StatusEvents;
use laredo_source_test::TestSource;
use laredo_target_memory::IndexedTarget;
use tonic::Streaming;

use super::{WAIT, fixture, serve, user, users};

/// The next event of a watch stream.
async fn next(stream: &mut Streaming<pb::WatchStatusResponse>) -> pb::watch_status_response::Event {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an event in time")
        .unwrap()
        .expect("the stream stays open")
        .event
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_row_changes_carry_the_transaction_id_and_the_key() {
    let mut f = fixture().await;
    let pipeline = f.engine.pipelines()[0].id.clone();
    let mut stream = f
        .client
        .watch_status(pb::WatchStatusRequest {
            tables: Vec::new(),
            pipeline_ids: vec![pipeline.clone()],
            include_row_changes: true,
        })
        .await
        .unwrap()
        .into_inner();
    let position =
        f.source.enqueue([
            ChangeEvent::insert(users(), Position::from_u64(0), user(5, "e"))
                .with_commit(None, 4242),
        ]);
    loop {
        if let pb::watch_status_response::Event::RowChange(row) = next(&mut stream).await {
            assert_eq!(
                (
                    row.pipeline_id.as_str(),
                    row.action,
                    row.xid,
                    row.position.as_str()
                ),
                (
                    pipeline.as_str(),
                    pb::ChangeAction::Insert as i32,
                    4242,
                    position.to_string().as_str()
                )
            );
            let key = row.key.expect("the row's key");
            assert_eq!(key.columns, vec!["id".to_string()]);
            assert_eq!(
                key.values,
                vec![pb::Value {
                    kind: Some(pb::value::Kind::Int64Value(5))
                }]
            );
            break;
        }
    }
    f.engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sends_service_state_changes_even_with_a_pipeline_filter() {
    let mut f = fixture().await;
    let mut stream = f
        .client
        .watch_status(pb::WatchStatusRequest {
            tables: Vec::new(),
            pipeline_ids: vec!["some-other-pipeline".into()],
            include_row_changes: false,
        })
        .await
        .unwrap()
        .into_inner();
    f.engine.pause("main").await.unwrap();
    assert_eq!(
        next(&mut stream).await,
        pb::watch_status_response::Event::ServiceStateChange(pb::ServiceStateChange {
            old_state: pb::ServiceState::Streaming as i32,
            new_state: pb::ServiceState::Paused as i32,
        })
    );
    f.engine.resume("main").await.unwrap();
    assert_eq!(
        next(&mut stream).await,
        pb::watch_status_response::Event::ServiceStateChange(pb::ServiceStateChange {
            old_state: pb::ServiceState::Paused as i32,
            new_state: pb::ServiceState::Streaming as i32,
        })
    );
    f.engine.stop().await.unwrap();
}

/// A dead letter store that cannot be read.
struct BrokenStore;

/// What [`BrokenStore`] answers: an error with a cause, so the answers show the chain.
fn broken() -> DeadLetterError {
    DeadLetterError::with_source(
        "cannot read dead.jsonl",
        std::io::Error::other("disk on fire"),
    )
}

/// How the service reports [`broken`]: the store named once, then the chain.
const BROKEN: &str = "dead letter store: cannot read dead.jsonl: disk on fire";

#[async_trait]
impl DeadLetterStore for BrokenStore {
    async fn write(&self, _: DeadLetterEntry) -> Result<u64, DeadLetterError> {
        Err(broken())
    }
    async fn read(&self, _: &str, _: usize) -> Result<Vec<DeadLetterEntry>, DeadLetterError> {
        Err(broken())
    }
    async fn remove(&self, _: &str, _: &[u64]) -> Result<(), DeadLetterError> {
        Err(broken())
    }
    async fn purge(&self, _: &str) -> Result<(), DeadLetterError> {
        Err(broken())
    }
    async fn count(&self, _: &str) -> Result<u64, DeadLetterError> {
        Err(broken())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_store_error_is_reported_not_counted_as_zero() {
    let source = TestSource::new();
    source.set_schema(
        users(),
        TestSource::columns(&[("id", "int8", true), ("name", "text", false)]),
    );
    let events = StatusEvents::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline(
            "main",
            users(),
            IndexedTarget::builder().build(),
            PipelineOptions::default(),
        )
        .dead_letter_store(Arc::new(BrokenStore))
        .observer(events.clone())
        .build()
        .unwrap();
    engine.start().await.unwrap();
    assert!(engine.await_ready(WAIT).await);
    let mut client = serve(&engine, events).await;
    let status = client
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let pipeline = &status.pipelines[0];
    assert_eq!(
        (
            pipeline.dead_letter_count,
            pipeline.dead_letter_error.as_str()
        ),
        (0, BROKEN)
    );
    let pipeline_id = pipeline.pipeline_id.clone();
    let listed = client
        .list_dead_letters(pb::ListDeadLettersRequest {
            pipeline_id: pipeline_id.clone(),
            limit: 0,
        })
        .await
        .expect_err("the store cannot be read");
    assert_eq!(
        (listed.code(), listed.message()),
        (tonic::Code::Internal, BROKEN)
    );
    let replayed = client
        .replay_dead_letters(pb::ReplayDeadLettersRequest { pipeline_id })
        .await
        .expect_err("the store cannot be read");
    assert_eq!(
        (replayed.code(), replayed.message()),
        (tonic::Code::Internal, BROKEN)
    );
    engine.stop().await.unwrap();
}
