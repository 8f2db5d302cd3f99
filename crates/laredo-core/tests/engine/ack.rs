//! ACK coordination: the source is acknowledged at the minimum durable position over
//! its live pipelines, never ahead of a target that has not made a change durable.

use std::time::Duration;

use laredo_core::{Engine, ErrorPolicy, PipelineOptions};
use laredo_test_support::{TestObserver, wait_until};

use super::support::*;

#[tokio::test]
async fn ack_advances_once_every_change_is_durable() {
    let source = source_with_users([1]);
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), indexed(), PipelineOptions::default())
        .observer(observer.clone())
        .build()
        .unwrap();
    started(&engine).await;
    let last = source
        .emit_insert(users(), user(2, "b"))
        .await
        .as_u64()
        .unwrap();
    wait_until("ack reaches the last change", WAIT, || {
        max_ack(&source) == last
    })
    .await;
    let acks = source.acks();
    assert!(
        acks.windows(2).all(|w| w[0] < w[1]),
        "acks only move forward: {acks:?}"
    );
    let advanced = observer.events_of("AckAdvanced");
    assert_eq!(
        advanced.last().and_then(|e| e.field("position")),
        Some(last.to_string().as_str())
    );
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn ack_never_passes_a_non_durable_target() {
    let source = source_with_users([1]);
    let durable = FaultTarget::new("durable");
    let lazy = FaultTarget::new("lazy");
    lazy.set_durable(false);
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), durable.clone(), PipelineOptions::default())
        .pipeline("main", users(), lazy.clone(), PipelineOptions::default())
        .build()
        .unwrap();
    started(&engine).await;
    let mut last = 0;
    for id in 2..20 {
        last = source
            .emit_insert(users(), user(id, "x"))
            .await
            .as_u64()
            .unwrap();
    }
    wait_until("both targets applied everything", WAIT, || {
        durable.applied.load(std::sync::atomic::Ordering::SeqCst) == 18
            && lazy.applied.load(std::sync::atomic::Ordering::SeqCst) == 18
    })
    .await;
    assert!(
        source.acks().is_empty(),
        "nothing acknowledged while a target is not durable: {:?}",
        source.acks()
    );

    // Once the lazy target is durable, the next heartbeat lets the ACK catch up.
    lazy.set_durable(true);
    let beat = source.emit_heartbeat().await.as_u64().unwrap();
    assert!(beat >= last);
    wait_until("ack catches up after durability", WAIT, || {
        max_ack(&source) == beat
    })
    .await;
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_target_holds_the_ack_back() {
    let source = source_with_users([1]);
    let fast = FaultTarget::new("fast");
    let slow = FaultTarget::new("slow");
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), fast.clone(), PipelineOptions::default())
        .pipeline("main", orders(), slow.clone(), PipelineOptions::default())
        .build()
        .unwrap();
    started(&engine).await;
    let before = source.emit_heartbeat().await.as_u64().unwrap();
    wait_until("heartbeat acknowledged", WAIT, || {
        max_ack(&source) == before
    })
    .await;

    slow.set_gate(false);
    let held = source
        .emit_insert(orders(), order(1, 1))
        .await
        .as_u64()
        .unwrap();
    let mut last = held;
    for id in 2..10 {
        last = source
            .emit_insert(users(), user(id, "x"))
            .await
            .as_u64()
            .unwrap();
    }
    wait_until("fast target applied", WAIT, || {
        fast.applied.load(std::sync::atomic::Ordering::SeqCst) == 8
    })
    .await;
    source.emit_heartbeat().await;
    // The fast pipeline is durable far ahead, but the slow one has not applied `held`.
    tokio::time::timeout(Duration::from_millis(300), async {
        wait_until("ack passes the held change", Duration::from_secs(1), || {
            max_ack(&source) >= held
        })
        .await;
    })
    .await
    .expect_err("the ack must stay below the slow target's pending change");
    assert!(max_ack(&source) < held);

    slow.set_gate(true);
    let beat = source.emit_heartbeat().await.as_u64().unwrap();
    assert!(beat >= last);
    wait_until("ack catches up", WAIT, || max_ack(&source) == beat).await;
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn an_isolated_failed_pipeline_leaves_the_ack_tracker() {
    let source = source_with_users([1]);
    let healthy = FaultTarget::new("healthy");
    let broken = FaultTarget::new("broken");
    broken.fail_when(Some(Box::new(|_| true)));
    let options = PipelineOptions::default()
        .max_retries(0)
        .error_policy(ErrorPolicy::Isolate);
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), healthy.clone(), PipelineOptions::default())
        .pipeline("main", users(), broken.clone(), options)
        .build()
        .unwrap();
    started(&engine).await;
    source.emit_insert(users(), user(2, "b")).await;
    let last = source
        .emit_insert(users(), user(3, "c"))
        .await
        .as_u64()
        .unwrap();
    wait_until("ack moves past the failed pipeline", WAIT, || {
        max_ack(&source) == last
    })
    .await;
    assert_eq!(healthy.inner.count(), 3);
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn an_idle_table_does_not_hold_the_ack_back() {
    let source = source_with_users([1]);
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), indexed(), PipelineOptions::default())
        .pipeline("main", orders(), indexed(), PipelineOptions::default())
        .build()
        .unwrap();
    started(&engine).await;
    let mut last = 0;
    for id in 2..30 {
        last = source
            .emit_insert(users(), user(id, "x"))
            .await
            .as_u64()
            .unwrap();
    }
    // orders never changes, yet the ACK follows the users changes.
    wait_until("ack follows the busy table", WAIT, || {
        max_ack(&source) == last
    })
    .await;
    engine.stop().await.unwrap();
}
