//! Readiness: computed live from pipeline states.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use laredo_core::{Engine, PipelineOptions};
use laredo_test_support::wait_until;

use super::support::*;

#[tokio::test]
async fn await_ready_waits_for_the_baseline() {
    let source = source_with_users(1..=40);
    source.set_baseline_row_delay(Duration::from_millis(5));
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), indexed(), PipelineOptions::default())
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    engine.on_ready({
        let calls = Arc::clone(&calls);
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
        }
    });
    engine.start().await.unwrap();
    assert!(!engine.is_ready());
    assert!(
        !engine.await_ready(Duration::ZERO).await,
        "zero timeout only checks"
    );
    assert!(
        !engine.await_ready(Duration::from_millis(20)).await,
        "baseline still loading"
    );
    assert!(engine.await_ready(WAIT).await);
    assert!(engine.is_ready());
    assert!(engine.is_source_ready("main"));
    assert!(engine.is_table_ready("main", &users()));
    assert!(engine.is_pipeline_ready("main:public.users:indexed-memory"));
    assert!(!engine.is_source_ready("ghost"));
    wait_until("on_ready fired", WAIT, || calls.load(Ordering::SeqCst) == 1).await;

    // Already ready: the callback runs at once.
    let immediate = Arc::new(AtomicUsize::new(0));
    engine.on_ready({
        let immediate = Arc::clone(&immediate);
        move || {
            immediate.fetch_add(1, Ordering::SeqCst);
        }
    });
    assert_eq!(immediate.load(Ordering::SeqCst), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "callbacks fire once");
    engine.stop().await.unwrap();
    assert!(!engine.is_ready(), "stopped pipelines are not ready");
}
