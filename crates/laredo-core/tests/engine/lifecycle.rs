//! Construction, lifecycle errors, accessors, stop.

use std::collections::BTreeMap;
use std::sync::Arc;

use laredo_core::{Engine, EngineError, PipelineOptions, PipelineState, SyncTarget, table};
use laredo_source_test::TestSource;
use laredo_target_memory::IndexedTarget;
use laredo_test_support::TestObserver;

use super::support::*;

#[test]
fn builder_reports_every_error_at_once() {
    let target: Arc<dyn SyncTarget> = indexed();
    let errors = Engine::builder()
        .source("", TestSource::new())
        .pipeline(
            "nope",
            table("public", "t"),
            Arc::clone(&target),
            PipelineOptions::default(),
        )
        .pipeline(
            "",
            table("public", ""),
            Arc::clone(&target),
            PipelineOptions::default().buffer_size(0),
        )
        .build()
        .expect_err("invalid configuration");
    let messages: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        vec![
            "source[0]: source ID must not be empty",
            "pipeline[0]: references unknown source \"nope\"",
            "pipeline[1]: source ID must not be empty",
            "pipeline[1]: table name must not be empty",
            "pipeline[1]: buffer size must be positive, got 0",
        ]
    );
}

#[test]
fn builder_requires_sources_and_pipelines_and_unique_ids() {
    let errors = Engine::builder().build().expect_err("empty configuration");
    let messages: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        vec![
            "at least one source is required",
            "at least one pipeline is required"
        ]
    );

    let errors = Engine::builder()
        .source("main", TestSource::new())
        .source("main", TestSource::new())
        .pipeline("main", users(), indexed(), PipelineOptions::default())
        .pipeline("main", users(), indexed(), PipelineOptions::default())
        .build()
        .expect_err("duplicates");
    let messages: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        vec![
            "source[1]: duplicate source ID \"main\"",
            "pipeline[1]: duplicate pipeline ID \"main:public.users:indexed-memory\"",
        ]
    );
}

#[tokio::test]
async fn lifecycle_errors() {
    let source = source_with_users([1]);
    let engine = Engine::builder()
        .source("main", source)
        .pipeline("main", users(), indexed(), PipelineOptions::default())
        .build()
        .unwrap();
    assert!(matches!(engine.stop().await, Err(EngineError::NotStarted)));
    assert!(matches!(
        engine.pause("main").await,
        Err(EngineError::NotStarted)
    ));
    assert!(matches!(
        engine.reload("main", &users()).await,
        Err(EngineError::NotStarted)
    ));
    started(&engine).await;
    assert!(matches!(
        engine.start().await,
        Err(EngineError::AlreadyStarted)
    ));
    let err = engine.pause("ghost").await.unwrap_err();
    assert_eq!(err.to_string(), "unknown source: ghost");
    let err = engine.create_snapshot(BTreeMap::new()).await.unwrap_err();
    assert_eq!(err.to_string(), "no snapshot store configured");
    let err = engine
        .reload("main", &table("public", "nothing"))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("no active pipelines"), "{err}");
    engine.stop().await.unwrap();
    assert!(matches!(engine.stop().await, Err(EngineError::Stopped)));
    assert!(matches!(engine.start().await, Err(EngineError::Stopped)));
    assert!(matches!(
        engine.resume("main").await,
        Err(EngineError::Stopped)
    ));
}

#[tokio::test]
async fn accessors_describe_the_running_engine() {
    let source = source_with_users([1, 2]);
    let users_target = indexed();
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
            indexed(),
            PipelineOptions::default().id("orders-copy"),
        )
        .build()
        .unwrap();
    started(&engine).await;

    let typed = engine
        .get_target::<IndexedTarget>("main", &users())
        .expect("typed target");
    assert!(Arc::ptr_eq(&typed, &users_target));
    assert!(
        engine.get_target::<IndexedTarget>("", &users()).is_some(),
        "empty source id matches any"
    );
    assert!(
        engine.get_target::<FaultTarget>("main", &users()).is_none(),
        "wrong type"
    );
    assert!(
        engine
            .get_target::<IndexedTarget>("other", &users())
            .is_none()
    );
    assert_eq!(engine.targets("main", &users()).len(), 1);

    assert_eq!(engine.source_ids(), vec!["main".to_string()]);
    let info = engine.source_info("main").unwrap();
    assert_eq!(info.source_type, "test");
    assert!(engine.source_info("ghost").is_none());

    let pipelines = engine.pipelines();
    let ids: Vec<&str> = pipelines.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, vec!["main:public.users:indexed-memory", "orders-copy"]);
    assert!(
        pipelines
            .iter()
            .all(|p| p.state == PipelineState::Streaming)
    );
    assert_eq!(pipelines[0].row_count, 2);

    let schema = engine.table_schema(&users()).expect("schema discovered");
    let names: Vec<&str> = schema.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["id", "name", "team"]);
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn init_failure_fails_every_pipeline_of_the_source() {
    let source = source_with_users([1]);
    source.fail_init(Some("database is down".to_string()));
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source)
        .pipeline("main", users(), indexed(), PipelineOptions::default())
        .observer(observer.clone())
        .build()
        .unwrap();
    engine.start().await.unwrap();
    let event = observer.wait_for_event("SourceDisconnected", WAIT).await;
    assert!(
        event.field("reason").unwrap().starts_with("init failed: "),
        "{event:?}"
    );
    assert!(
        event.field("reason").unwrap().contains("database is down"),
        "{event:?}"
    );
    observer
        .wait_for("PipelineStateChanged", WAIT, |e| {
            e.field("new") == Some("ERROR")
        })
        .await;
    assert!(!engine.is_ready());
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn unconfigured_table_fails_init() {
    let source = TestSource::new();
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source)
        .pipeline("main", users(), indexed(), PipelineOptions::default())
        .observer(observer.clone())
        .build()
        .unwrap();
    engine.start().await.unwrap();
    let event = observer.wait_for_event("SourceDisconnected", WAIT).await;
    assert!(
        event
            .field("reason")
            .unwrap()
            .contains("not configured via set_schema"),
        "{event:?}"
    );
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn stop_drains_buffers_acks_and_closes() {
    let source = source_with_users([]);
    let target = FaultTarget::new("slow");
    let observer = TestObserver::without_per_change_events();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), target.clone(), PipelineOptions::default())
        .observer(observer.clone())
        .build()
        .unwrap();
    started(&engine).await;
    target.set_gate(false);
    let last = source.enqueue((1..=50).map(|id| {
        laredo_core::ChangeEvent::insert(users(), laredo_core::Position::from_u64(0), user(id, "x"))
    }));
    source.wait_delivered(last.clone()).await;
    let stopping = tokio::spawn({
        let engine = engine.clone();
        async move { engine.stop().await }
    });
    target.set_gate(true);
    stopping.await.unwrap().unwrap();
    assert_eq!(
        target.inner.count(),
        50,
        "every buffered change applied before stop returned"
    );
    assert_eq!(
        source.acked_position(),
        last.as_u64(),
        "final position acknowledged"
    );
    assert!(
        engine
            .pipelines()
            .iter()
            .all(|p| p.state == PipelineState::Stopped)
    );
    assert_eq!(
        laredo_core::SyncSource::state(&*source),
        laredo_core::SourceState::Closed
    );
}

#[tokio::test]
async fn row_count_validation_actions() {
    use laredo_core::ValidationAction;
    let source = source_with_users(1..=5);
    let strict = FaultTarget::new("strict");
    strict.set_count_offset(1);
    let reloading = FaultTarget::new("reloading");
    reloading.set_count_offset(1);
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline(
            "main",
            users(),
            strict.clone(),
            PipelineOptions::default().validation_action(ValidationAction::Error),
        )
        .pipeline(
            "main",
            orders(),
            reloading.clone(),
            PipelineOptions::default().validation_action(ValidationAction::ReBaseline),
        )
        .observer(observer.clone())
        .lag_poll_interval(std::time::Duration::from_millis(10))
        .build()
        .unwrap();
    engine.start().await.unwrap();
    let mismatch = observer
        .wait_for("ValidationResult", WAIT, |e| {
            e.subject == "main:public.users:strict"
        })
        .await;
    assert_eq!(
        (
            mismatch.field("source_count"),
            mismatch.field("target_count"),
            mismatch.field("matched")
        ),
        (Some("5"), Some("6"), Some("false"))
    );
    laredo_test_support::wait_until("strict pipeline in ERROR", WAIT, || {
        engine
            .pipelines()
            .iter()
            .any(|p| p.id == "main:public.users:strict" && p.state == PipelineState::Error)
    })
    .await;
    // The re_baseline action reloads the table once; a second mismatch only warns.
    laredo_test_support::wait_until("orders reloaded", WAIT, || source.baseline_calls() == 2).await;
    observer
        .wait_for_event_count("ValidationResult", 3, WAIT)
        .await;
    assert!(engine.is_table_ready("main", &orders()));
    // Lag is polled and reported.
    let lag = observer.wait_for_event("LagUpdated", WAIT).await;
    assert_eq!(lag.subject, "main");
    engine.stop().await.unwrap();
}
