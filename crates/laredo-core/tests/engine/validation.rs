//! Row-count validation: after a baseline (the target's count, then the source's
//! `count_rows`) and periodic drift validation.

use std::time::Duration;

use laredo_core::{Engine, PipelineOptions, PipelineState, ValidationAction};
use laredo_test_support::TestObserver;

use super::support::*;

const PIPELINE: &str = "main:public.users:indexed-memory";

#[tokio::test]
async fn post_baseline_validation_off_reports_nothing_and_never_fails_the_pipeline() {
    let source = source_with_users(1..=5);
    let target = FaultTarget::new("miscounting");
    target.set_count_offset(1);
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline(
            "main",
            users(),
            target.clone(),
            PipelineOptions::default()
                .post_baseline_validation(false)
                .validation_action(ValidationAction::Error),
        )
        .observer(observer.clone())
        .build()
        .unwrap();
    engine.start().await.unwrap();
    assert!(engine.await_ready(WAIT).await, "{:?}", engine.pipelines());
    assert!(
        !observer.has_event("ValidationResult"),
        "{:?}",
        observer.events_of("ValidationResult")
    );
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn after_the_baseline_the_source_count_is_compared_too() {
    let source = source_with_users(1..=5);
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), indexed(), PipelineOptions::default())
        .observer(observer.clone())
        .build()
        .unwrap();
    engine.start().await.unwrap();
    // The first result is the target against the rows delivered; the second the
    // target against the source's own count.
    observer
        .wait_for_event_count("ValidationResult", 2, WAIT)
        .await;
    let results: Vec<_> = observer
        .events_of("ValidationResult")
        .iter()
        .map(|e| {
            (
                e.subject.clone(),
                e.field("source_count").map(str::to_string),
                e.field("target_count").map(str::to_string),
                e.field("matched").map(str::to_string),
            )
        })
        .collect();
    let expected = (
        PIPELINE.to_string(),
        Some("5".to_string()),
        Some("5".to_string()),
        Some("true".to_string()),
    );
    assert_eq!(results, vec![expected.clone(), expected]);
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn drift_validation_finds_rows_the_stream_missed() {
    let source = source_with_users(1..=5);
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline(
            "main",
            users(),
            indexed(),
            PipelineOptions::default()
                .validation_interval(Duration::from_millis(50))
                .validation_action(ValidationAction::Error),
        )
        .observer(observer.clone())
        .build()
        .unwrap();
    engine.start().await.unwrap();
    assert!(engine.await_ready(WAIT).await);
    // A row the source holds but never streamed: the engine's own count and the
    // target's agree, only the source's count shows the drift.
    source.add_row(users(), user(6, "unseen"));
    let mismatch = observer
        .wait_for("ValidationResult", WAIT, |e| {
            e.field("matched") == Some("false")
        })
        .await;
    assert_eq!(
        (
            mismatch.subject.as_str(),
            mismatch.field("source_count"),
            mismatch.field("target_count")
        ),
        (PIPELINE, Some("6"), Some("5"))
    );
    laredo_test_support::wait_until("pipeline in ERROR", WAIT, || {
        engine.pipelines()[0].state == PipelineState::Error
    })
    .await;
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn drift_validation_compares_the_engines_count_with_the_target() {
    let source = source_with_users(1..=5);
    let target = FaultTarget::new("miscounting");
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline(
            "main",
            users(),
            target.clone(),
            PipelineOptions::default().validation_interval(Duration::from_millis(50)),
        )
        .observer(observer.clone())
        .build()
        .unwrap();
    engine.start().await.unwrap();
    assert!(engine.await_ready(WAIT).await);
    // The target loses count of a row behind the engine's back.
    target.set_count_offset(-1);
    let mismatch = observer
        .wait_for("ValidationResult", WAIT, |e| {
            e.field("matched") == Some("false")
        })
        .await;
    assert_eq!(
        (
            mismatch.field("source_count"),
            mismatch.field("target_count")
        ),
        (Some("5"), Some("4"))
    );
    // `warn` (the default) keeps the pipeline streaming.
    assert_eq!(engine.pipelines()[0].state, PipelineState::Streaming);
    engine.stop().await.unwrap();
}
