//! Buffer policies: block, drop_oldest and error.

use std::sync::atomic::Ordering;
use std::time::Duration;

use laredo_core::{BufferPolicy, ChangeEvent, Engine, PipelineOptions, PipelineState, Position};
use laredo_test_support::{TestObserver, wait_until};

use super::support::*;

fn depth(engine: &Engine, pipeline_id: &str) -> usize {
    engine
        .pipelines()
        .into_iter()
        .find(|p| p.id == pipeline_id)
        .map_or(0, |p| p.buffer_depth)
}

#[tokio::test]
async fn block_makes_the_source_wait_and_loses_nothing() {
    let source = source_with_users([]);
    let slow = FaultTarget::new("slow");
    let fast = FaultTarget::new("fast");
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline(
            "main",
            users(),
            slow.clone(),
            PipelineOptions::default().buffer_size(2),
        )
        .pipeline("main", orders(), fast.clone(), PipelineOptions::default())
        .build()
        .unwrap();
    started(&engine).await;
    slow.set_gate(false);
    // One change held by the consumer, two in the buffer: the fourth must wait.
    for id in 1..=3 {
        source.emit_insert(users(), user(id, "x")).await;
    }
    wait_until("buffer full", WAIT, || {
        depth(&engine, "main:public.users:slow") == 2
    })
    .await;
    let blocked = tokio::spawn({
        let source = source.clone();
        async move { source.emit_insert(users(), user(4, "x")).await }
    });
    let waited = tokio::time::timeout(Duration::from_millis(300), async {
        while !blocked.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        waited.is_err(),
        "the source must wait while the buffer is full"
    );
    slow.set_gate(true);
    blocked.await.unwrap();
    let last = source
        .emit_insert(orders(), order(1, 1))
        .await
        .as_u64()
        .unwrap();
    wait_until("all applied", WAIT, || max_ack(&source) == last).await;
    assert_eq!(slow.inner.count(), 4);
    assert_eq!(fast.inner.count(), 1);
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn drop_oldest_discards_and_reports() {
    let source = source_with_users([]);
    let target = FaultTarget::new("lossy");
    let observer = TestObserver::without_per_change_events();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline(
            "main",
            users(),
            target.clone(),
            PipelineOptions::default()
                .buffer_size(2)
                .buffer_policy(BufferPolicy::DropOldest),
        )
        .observer(observer.clone())
        .build()
        .unwrap();
    started(&engine).await;
    target.set_gate(false);
    let last = source.enqueue(
        (1..=20).map(|id| ChangeEvent::insert(users(), Position::from_u64(0), user(id, "x"))),
    );
    source.wait_delivered(last.clone()).await;
    let triggered = observer.events_of("BufferPolicyTriggered");
    assert!(!triggered.is_empty());
    assert!(
        triggered
            .iter()
            .all(|e| e.field("policy") == Some("drop_oldest"))
    );
    target.set_gate(true);
    wait_until("ack reaches the end", WAIT, || {
        max_ack(&source) == last.as_u64().unwrap()
    })
    .await;
    let applied = target.applied.load(Ordering::SeqCst);
    assert!(applied < 20, "some changes were dropped, applied {applied}");
    assert_eq!(
        applied as usize + triggered.len(),
        20,
        "every change is either applied or reported dropped"
    );
    assert_eq!(
        target.inner.lookup(20),
        Some(user(20, "x")),
        "the newest change survives"
    );
    assert_eq!(engine.pipelines()[0].state, PipelineState::Streaming);
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn error_policy_buffer_fails_the_pipeline() {
    let source = source_with_users([]);
    let target = FaultTarget::new("strict");
    let sibling = FaultTarget::new("sibling");
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline(
            "main",
            users(),
            target.clone(),
            PipelineOptions::default()
                .buffer_size(1)
                .buffer_policy(BufferPolicy::Error),
        )
        .pipeline("main", users(), sibling.clone(), PipelineOptions::default())
        .observer(observer.clone())
        .build()
        .unwrap();
    started(&engine).await;
    target.set_gate(false);
    let last = source.enqueue(
        (1..=5).map(|id| ChangeEvent::insert(users(), Position::from_u64(0), user(id, "x"))),
    );
    let event = observer.wait_for_event("BufferPolicyTriggered", WAIT).await;
    assert_eq!(event.field("policy"), Some("error"));
    wait_until("strict pipeline in ERROR", WAIT, || {
        engine
            .pipelines()
            .iter()
            .any(|p| p.id == "main:public.users:strict" && p.state == PipelineState::Error)
    })
    .await;
    target.set_gate(true);
    wait_until("sibling gets everything", WAIT, || {
        max_ack(&source) == last.as_u64().unwrap()
    })
    .await;
    assert_eq!(sibling.inner.count(), 5);
    engine.stop().await.unwrap();
}
