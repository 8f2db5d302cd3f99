//! Pause, resume, reload and reset.

use std::time::Duration;

use laredo_core::{ChangeEvent, Engine, EngineError, PipelineOptions, PipelineState, Position};
use laredo_test_support::{TestObserver, wait_until};

use super::support::*;

fn states(engine: &Engine) -> Vec<PipelineState> {
    engine.pipelines().into_iter().map(|p| p.state).collect()
}

#[tokio::test]
async fn pause_holds_changes_and_resume_applies_them() {
    let source = source_with_users([1]);
    let target = indexed();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), target.clone(), PipelineOptions::default())
        .build()
        .unwrap();
    started(&engine).await;
    engine.pause("main").await.unwrap();
    assert_eq!(states(&engine), vec![PipelineState::Paused]);
    assert!(
        engine.is_source_ready("main"),
        "paused pipelines stay ready"
    );
    let last = source.enqueue([ChangeEvent::insert(
        users(),
        Position::from_u64(0),
        user(2, "b"),
    )]);
    let delivered = tokio::time::timeout(
        Duration::from_millis(300),
        source.wait_delivered(last.clone()),
    )
    .await;
    assert!(delivered.is_err(), "a paused source delivers nothing");
    assert_eq!(target.count(), 1);

    engine.resume("main").await.unwrap();
    assert_eq!(states(&engine), vec![PipelineState::Streaming]);
    wait_until("held change applied", WAIT, || target.lookup(2).is_some()).await;
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn pause_does_not_touch_failed_pipelines() {
    let source = source_with_users([1]);
    let broken = FaultTarget::new("broken");
    broken.fail_when(Some(Box::new(|_| true)));
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline(
            "main",
            users(),
            broken.clone(),
            PipelineOptions::default().max_retries(0),
        )
        .pipeline("main", users(), indexed(), PipelineOptions::default())
        .build()
        .unwrap();
    started(&engine).await;
    source.emit_insert(users(), user(2, "b")).await;
    wait_until("broken in ERROR", WAIT, || {
        states(&engine)[0] == PipelineState::Error
    })
    .await;
    engine.pause("main").await.unwrap();
    assert_eq!(
        states(&engine),
        vec![PipelineState::Error, PipelineState::Paused]
    );
    engine.resume("main").await.unwrap();
    assert_eq!(
        states(&engine),
        vec![PipelineState::Error, PipelineState::Streaming]
    );
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn reload_rebaselines_one_table_without_losing_concurrent_changes() {
    let source = source_with_users(1..=200);
    let users_target = FaultTarget::new("users");
    let orders_target = indexed();
    let observer = TestObserver::without_per_change_events();
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
        .observer(observer.clone())
        .build()
        .unwrap();
    started(&engine).await;
    // A row only the target has must be gone after the reload (it truncates first).
    laredo_test_support::OneChange::on_insert(&*users_target.inner, &users(), &user(999, "stale"))
        .await
        .unwrap();

    // Slow the reload's baseline down so that writers overlap it.
    source.set_baseline_row_delay(Duration::from_micros(200));
    let writer = tokio::spawn({
        let source = source.clone();
        async move {
            let mut last = Position::from_u64(0);
            for id in 1..=100 {
                last = source.emit_update(users(), user(id, "updated"), None).await;
                source.emit_insert(orders(), order(id, id)).await;
            }
            last
        }
    });
    engine.reload("main", &users()).await.unwrap();
    let last = writer.await.unwrap();
    source.set_baseline_row_delay(Duration::ZERO);
    wait_until("everything applied", WAIT, || {
        max_ack(&source) >= last.as_u64().unwrap()
    })
    .await;
    let last = source.emit_heartbeat().await.as_u64().unwrap();
    wait_until("heartbeat acknowledged", WAIT, || max_ack(&source) == last).await;

    assert_eq!(
        sorted_rows(&users_target.inner),
        sorted_source_rows(&source, &users())
    );
    assert_eq!(orders_target.count(), 100, "the other table kept streaming");
    assert_eq!(
        observer.event_count("BaselineCompleted"),
        3,
        "two initial baselines and one reload"
    );
    assert_eq!(
        states(&engine),
        vec![PipelineState::Streaming, PipelineState::Streaming]
    );
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn reload_all_reloads_every_table() {
    let source = source_with_users(1..=3);
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), indexed(), PipelineOptions::default())
        .pipeline("main", orders(), indexed(), PipelineOptions::default())
        .observer(observer.clone())
        .build()
        .unwrap();
    started(&engine).await;
    engine.reload_all(None).await.unwrap();
    assert_eq!(observer.event_count("BaselineCompleted"), 4);
    assert!(matches!(
        engine.reload_all(Some("ghost")).await,
        Err(EngineError::UnknownSource(_))
    ));
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn reset_source_rebaselines_from_scratch() {
    let source = source_with_users([1, 2]);
    let target = indexed();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), target.clone(), PipelineOptions::default())
        .build()
        .unwrap();
    started(&engine).await;
    let last = source
        .emit_insert(users(), user(3, "c"))
        .await
        .as_u64()
        .unwrap();
    wait_until("acknowledged", WAIT, || max_ack(&source) == last).await;
    laredo_test_support::OneChange::on_insert(&*target, &users(), &user(77, "stale"))
        .await
        .unwrap();

    engine.reset_source("main", true).await.unwrap();
    assert_eq!(source.reset_calls(), vec![true]);
    assert!(engine.await_ready(WAIT).await);
    wait_until("baselined again", WAIT, || source.baseline_calls() == 2).await;
    assert!(engine.await_ready(WAIT).await);
    assert_eq!(sorted_rows(&target), sorted_source_rows(&source, &users()));
    let last = source
        .emit_insert(users(), user(4, "d"))
        .await
        .as_u64()
        .unwrap();
    wait_until("streaming after reset", WAIT, || target.lookup(4).is_some()).await;
    wait_until("acknowledged after reset", WAIT, || {
        max_ack(&source) == last
    })
    .await;
    engine.stop().await.unwrap();
}

/// A source without `reset` (every other method delegates to a test source).
struct NoReset(std::sync::Arc<laredo_source_test::TestSource>);

#[async_trait::async_trait]
impl laredo_core::SyncSource for NoReset {
    fn source_type(&self) -> &str {
        "no-reset"
    }
    async fn init(
        &self,
        tables: &[laredo_core::TableIdentifier],
    ) -> Result<
        std::collections::HashMap<laredo_core::TableIdentifier, Vec<laredo_core::ColumnDefinition>>,
        laredo_core::SourceError,
    > {
        self.0.init(tables).await
    }
    async fn validate_tables(
        &self,
        tables: &[laredo_core::TableIdentifier],
    ) -> Vec<laredo_core::ValidationError> {
        self.0.validate_tables(tables).await
    }
    async fn baseline(
        &self,
        tables: &[laredo_core::TableIdentifier],
        sink: &mut dyn laredo_core::BaselineSink,
    ) -> Result<Position, laredo_core::SourceError> {
        self.0.baseline(tables, sink).await
    }
    async fn stream(
        &self,
        from: Position,
        handler: &mut dyn laredo_core::ChangeHandler,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<(), laredo_core::SourceError> {
        self.0.stream(from, handler, cancel).await
    }
    async fn ack(&self, position: &Position) -> Result<(), laredo_core::SourceError> {
        self.0.ack(position).await
    }
    fn supports_resume(&self) -> bool {
        self.0.supports_resume()
    }
    async fn last_acked_position(&self) -> Result<Option<Position>, laredo_core::SourceError> {
        self.0.last_acked_position().await
    }
    fn compare_positions(&self, a: &Position, b: &Position) -> std::cmp::Ordering {
        self.0.compare_positions(a, b)
    }
    fn position_to_string(&self, position: &Position) -> String {
        self.0.position_to_string(position)
    }
    fn position_from_string(&self, text: &str) -> Result<Position, laredo_core::SourceError> {
        self.0.position_from_string(text)
    }
    async fn pause(&self) -> Result<(), laredo_core::SourceError> {
        self.0.pause().await
    }
    async fn resume(&self) -> Result<(), laredo_core::SourceError> {
        self.0.resume().await
    }
    fn lag(&self) -> laredo_core::LagInfo {
        self.0.lag()
    }
    fn ordering_guarantee(&self) -> laredo_core::OrderingGuarantee {
        self.0.ordering_guarantee()
    }
    fn state(&self) -> laredo_core::SourceState {
        laredo_core::SyncSource::state(&*self.0)
    }
    async fn close(&self) -> Result<(), laredo_core::SourceError> {
        self.0.close().await
    }
}

#[tokio::test]
async fn reset_of_a_source_without_reset_is_refused_and_streaming_goes_on() {
    let inner = source_with_users([1]);
    let target = indexed();
    let engine = Engine::builder()
        .source("main", std::sync::Arc::new(NoReset(inner.clone())))
        .pipeline("main", users(), target.clone(), PipelineOptions::default())
        .build()
        .unwrap();
    started(&engine).await;
    let err = engine.reset_source("main", false).await.unwrap_err();
    assert_eq!(err.to_string(), "source main does not support reset");
    assert!(
        engine.await_ready(WAIT).await,
        "the source runs again after the refused reset"
    );
    inner.emit_insert(users(), user(2, "b")).await;
    wait_until("streaming after the refused reset", WAIT, || {
        target.lookup(2).is_some()
    })
    .await;
    engine.stop().await.unwrap();
}
