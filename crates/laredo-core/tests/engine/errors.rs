//! Retries, dead letters and error policies.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use laredo_core::{DeadLetterStore, Engine, ErrorPolicy, PipelineOptions, PipelineState};
use laredo_deadletter::MemoryDeadLetterStore;
use laredo_test_support::{TestObserver, wait_until};

use super::support::*;

fn quick_retries(retries: u32) -> PipelineOptions {
    PipelineOptions::default()
        .max_retries(retries)
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(4))
}

fn state_of(engine: &Engine, pipeline_id: &str) -> PipelineState {
    engine
        .pipelines()
        .into_iter()
        .find(|p| p.id == pipeline_id)
        .expect("pipeline exists")
        .state
}

#[tokio::test]
async fn a_change_is_retried_until_it_succeeds() {
    let source = source_with_users([1]);
    let target = FaultTarget::new("flaky");
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), target.clone(), quick_retries(3))
        .observer(observer.clone())
        .build()
        .unwrap();
    started(&engine).await;
    target.fail_next(2);
    let last = source
        .emit_insert(users(), user(2, "b"))
        .await
        .as_u64()
        .unwrap();
    wait_until("applied after retries", WAIT, || max_ack(&source) == last).await;
    assert_eq!(target.inner.lookup(2), Some(user(2, "b")));
    let errors: Vec<String> = observer
        .events_of("ChangeError")
        .iter()
        .map(|e| e.field("error").unwrap().to_string())
        .collect();
    assert_eq!(
        errors,
        vec![
            "injected failure".to_string(),
            "retry 1/3: injected failure".to_string()
        ]
    );
    assert_eq!(
        state_of(&engine, "main:public.users:flaky"),
        PipelineState::Streaming
    );
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn isolate_keeps_the_sibling_streaming() {
    let source = source_with_users([1]);
    let healthy = FaultTarget::new("healthy");
    let broken = FaultTarget::new("broken");
    broken.fail_when(Some(Box::new(|row| row.get_i64("id") == Some(2))));
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), healthy.clone(), PipelineOptions::default())
        .pipeline("main", users(), broken.clone(), quick_retries(1))
        .build()
        .unwrap();
    started(&engine).await;
    source.emit_insert(users(), user(2, "b")).await;
    wait_until("broken pipeline in ERROR", WAIT, || {
        state_of(&engine, "main:public.users:broken") == PipelineState::Error
    })
    .await;
    assert!(
        !engine.is_ready(),
        "an ERROR pipeline makes the engine not ready"
    );
    assert!(!engine.is_source_ready("main"));

    let last = source
        .emit_insert(users(), user(3, "c"))
        .await
        .as_u64()
        .unwrap();
    wait_until("sibling applies later changes", WAIT, || {
        healthy.inner.lookup(3).is_some()
    })
    .await;
    wait_until("ack advances", WAIT, || max_ack(&source) == last).await;
    assert_eq!(
        state_of(&engine, "main:public.users:healthy"),
        PipelineState::Streaming
    );
    assert_eq!(
        broken.inner.lookup(3),
        None,
        "later changes are ignored for the failed pipeline"
    );
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn stop_source_fails_the_source_and_spares_other_sources() {
    let main = source_with_users([1]);
    let other = source_with_users([1]);
    let broken = FaultTarget::new("broken");
    broken.fail_when(Some(Box::new(|_| true)));
    let sibling = FaultTarget::new("sibling");
    let elsewhere = FaultTarget::new("elsewhere");
    let engine = Engine::builder()
        .source("main", main.clone())
        .source("other", other.clone())
        .pipeline(
            "main",
            users(),
            broken.clone(),
            quick_retries(0).error_policy(ErrorPolicy::StopSource),
        )
        .pipeline(
            "main",
            orders(),
            sibling.clone(),
            PipelineOptions::default(),
        )
        .pipeline(
            "other",
            users(),
            elsewhere.clone(),
            PipelineOptions::default(),
        )
        .build()
        .unwrap();
    started(&engine).await;
    main.emit_insert(users(), user(2, "b")).await;
    wait_until("source pipelines in ERROR", WAIT, || {
        state_of(&engine, "main:public.users:broken") == PipelineState::Error
            && state_of(&engine, "main:public.orders:sibling") == PipelineState::Error
    })
    .await;
    assert!(!engine.is_source_ready("main"));
    other.emit_insert(users(), user(5, "e")).await;
    wait_until("other source keeps streaming", WAIT, || {
        elsewhere.inner.lookup(5).is_some()
    })
    .await;
    assert!(engine.is_source_ready("other"));
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn stop_all_fails_every_pipeline() {
    let main = source_with_users([1]);
    let other = source_with_users([1]);
    let broken = FaultTarget::new("broken");
    broken.fail_when(Some(Box::new(|_| true)));
    let engine = Engine::builder()
        .source("main", main.clone())
        .source("other", other.clone())
        .pipeline(
            "main",
            users(),
            broken.clone(),
            quick_retries(0).error_policy(ErrorPolicy::StopAll),
        )
        .pipeline("other", users(), indexed(), PipelineOptions::default())
        .build()
        .unwrap();
    started(&engine).await;
    main.emit_insert(users(), user(2, "b")).await;
    wait_until("every pipeline in ERROR", WAIT, || {
        engine
            .pipelines()
            .iter()
            .all(|p| p.state == PipelineState::Error)
    })
    .await;
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn exhausted_retries_go_to_the_dead_letter_store_and_replay() {
    let source = source_with_users([1]);
    let target = FaultTarget::new("picky");
    target.fail_when(Some(Box::new(|row| row.get_str("name") == Some("poison"))));
    let store = std::sync::Arc::new(MemoryDeadLetterStore::new());
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), target.clone(), quick_retries(2))
        .dead_letter_store(store.clone())
        .observer(observer.clone())
        .build()
        .unwrap();
    started(&engine).await;
    let poison_at = source.emit_insert(users(), user(2, "poison")).await;
    let last = source
        .emit_insert(users(), user(3, "fine"))
        .await
        .as_u64()
        .unwrap();
    wait_until("later changes applied", WAIT, || max_ack(&source) == last).await;

    let pipeline = "main:public.users:picky";
    assert_eq!(
        state_of(&engine, pipeline),
        PipelineState::Streaming,
        "a parked change does not stop the pipeline"
    );
    assert_eq!(
        observer.event_count("ChangeError"),
        3,
        "first failure and two retries"
    );
    let written = observer.wait_for_event("DeadLetterWritten", WAIT).await;
    assert_eq!(written.subject, pipeline);
    let entries = store.read(pipeline, 0).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].new_values.as_ref(), Some(&user(2, "poison")));
    assert_eq!(entries[0].position, poison_at.as_u64().unwrap().to_string());
    assert!(
        entries[0].error.contains("injected failure"),
        "{}",
        entries[0].error
    );
    assert!(
        entries[0].error.ends_with(&format!(": {INJECTED_CAUSE}")),
        "the entry keeps the cause: {}",
        entries[0].error
    );
    for event in observer.events_of("ChangeError") {
        let error = event.field("error").unwrap().to_string();
        assert!(
            error.ends_with(&format!(": {INJECTED_CAUSE}")),
            "the observer sees the cause: {error}"
        );
    }

    target.fail_when(None);
    let outcome = store
        .replay(pipeline, &*target, &laredo_core::Position::from_u64(0))
        .await
        .unwrap();
    assert_eq!(
        (outcome.replayed, outcome.succeeded, outcome.failed),
        (1, 1, 0)
    );
    assert_eq!(target.inner.lookup(2), Some(user(2, "poison")));
    assert_eq!(store.count(pipeline).await.unwrap(), 0);
    assert_eq!(target.applied.load(Ordering::SeqCst), 2);
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_panics_puts_its_pipeline_in_error_at_once_and_the_sibling_streams_on() {
    let source = source_with_users([1]);
    let healthy = FaultTarget::new("healthy");
    let buggy = FaultTarget::new("buggy");
    buggy.panic_when(Some(Box::new(|row| row.get_i64("id") == Some(13))));
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), healthy.clone(), PipelineOptions::default())
        // A tiny buffer: were the dead consumer's buffer left full, the source would stall.
        .pipeline(
            "main",
            users(),
            buggy.clone(),
            PipelineOptions::default().buffer_size(2),
        )
        .observer(observer.clone())
        .build()
        .unwrap();
    started(&engine).await;
    assert!(engine.is_ready());

    source.emit_insert(users(), user(13, "boom")).await;
    wait_until(
        "the panicking pipeline in ERROR",
        Duration::from_secs(1),
        || state_of(&engine, "main:public.users:buggy") == PipelineState::Error,
    )
    .await;
    let failed = observer.wait_for_event("PipelineFailed", WAIT).await;
    assert_eq!(failed.subject, "main:public.users:buggy");
    assert!(
        failed
            .field("reason")
            .unwrap()
            .contains("target bug on this row"),
        "{failed:?}"
    );
    assert!(!engine.is_ready(), "readiness shows the failed pipeline");

    // Many more changes than the failed pipeline's buffer holds: the sibling gets them all.
    let mut last = 0;
    for id in 100..150 {
        last = source
            .emit_insert(users(), user(id, "later"))
            .await
            .as_u64()
            .unwrap();
    }
    wait_until("the sibling applied every later change", WAIT, || {
        healthy.inner.lookup(149).is_some()
    })
    .await;
    assert_eq!(
        state_of(&engine, "main:public.users:healthy"),
        PipelineState::Streaming
    );
    // An in-memory target is rebuilt by a baseline: the ACK moves on without it.
    wait_until("ack advanced", WAIT, || max_ack(&source) == last).await;
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pipeline_whose_target_retains_state_holds_the_ack() {
    let source = source_with_users([1]);
    let healthy = FaultTarget::new("healthy");
    let durable = FaultTarget::new("durable");
    durable.set_retains_state(true);
    durable.panic_when(Some(Box::new(|row| row.get_i64("id") == Some(7))));
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), healthy.clone(), PipelineOptions::default())
        .pipeline("main", users(), durable.clone(), PipelineOptions::default())
        .build()
        .unwrap();
    started(&engine).await;
    let before = source
        .emit_insert(users(), user(6, "ok"))
        .await
        .as_u64()
        .unwrap();
    wait_until("acked before the failure", WAIT, || {
        max_ack(&source) == before
    })
    .await;
    source.emit_insert(users(), user(7, "boom")).await;
    let after = source
        .emit_insert(users(), user(8, "later"))
        .await
        .as_u64()
        .unwrap();
    wait_until("the sibling applied the later change", WAIT, || {
        healthy.inner.lookup(8).is_some()
    })
    .await;
    wait_until("the durable pipeline failed", WAIT, || {
        state_of(&engine, "main:public.users:durable") == PipelineState::Error
    })
    .await;
    assert!(after > before);
    // Its changes from 7 on were never made durable: the ACK stays where it was.
    assert_eq!(max_ack(&source), before);
    engine.stop().await.unwrap();
}

/// A started engine streaming users and orders of one test source into two targets,
/// with `dead_letters` when given.
struct TwoTables {
    source: Arc<laredo_source_test::TestSource>,
    users_target: Arc<FaultTarget>,
    orders_target: Arc<FaultTarget>,
    engine: Engine,
}

async fn two_tables(dead_letters: Option<Arc<MemoryDeadLetterStore>>) -> TwoTables {
    let source = source_with_users([1]);
    let users_target = FaultTarget::new("users");
    let orders_target = FaultTarget::new("orders");
    let mut builder = Engine::builder()
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
        );
    if let Some(store) = dead_letters {
        builder = builder.dead_letter_store(store);
    }
    let engine = builder.build().unwrap();
    started(&engine).await;
    TwoTables {
        source,
        users_target,
        orders_target,
        engine,
    }
}

/// A change the source could not read, tied to one table, goes to that pipeline's dead
/// letter store; the table and its sibling keep streaming. Scripted with the test
/// source: PostgreSQL itself refuses to send text that is not valid in the client
/// encoding (SQLSTATE 22021 ends the walsender), and its pinned output styles parse, so
/// the fault cannot be produced with a real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_change_is_dead_lettered_and_every_table_keeps_streaming() {
    let dead_letters = Arc::new(MemoryDeadLetterStore::new());
    let TwoTables {
        source,
        users_target,
        orders_target,
        engine,
    } = two_tables(Some(dead_letters.clone())).await;

    source
        .emit_unreadable_insert(
            users(),
            user(2, "raw \\xff text"),
            "column name is not UTF-8",
        )
        .await;
    source.emit_insert(orders(), order(10, 1)).await;
    let last = source
        .emit_insert(users(), user(3, "after"))
        .await
        .as_u64()
        .unwrap();
    wait_until("both tables applied the later changes", WAIT, || {
        users_target.inner.lookup(3).is_some() && orders_target.inner.lookup(10).is_some()
    })
    .await;
    assert!(
        users_target.inner.lookup(2).is_none(),
        "the unreadable change was not applied"
    );
    let parked = dead_letters
        .read("main:public.users:users", 0)
        .await
        .unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].error, "column name is not UTF-8");
    assert!(
        dead_letters
            .read("main:public.orders:orders", 0)
            .await
            .unwrap()
            .is_empty()
    );
    for id in ["main:public.users:users", "main:public.orders:orders"] {
        assert_eq!(state_of(&engine, id), PipelineState::Streaming, "{id}");
    }
    // The parked change counts as handled: the ACK moves past it.
    wait_until("ack advanced", WAIT, || max_ack(&source) == last).await;
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_dead_letter_store_an_unreadable_change_fails_only_its_pipeline() {
    let TwoTables {
        source,
        orders_target,
        engine,
        ..
    } = two_tables(None).await;
    source
        .emit_unreadable_insert(users(), user(2, "raw"), "cannot read the value")
        .await;
    source.emit_insert(orders(), order(10, 1)).await;
    wait_until("the users pipeline failed", WAIT, || {
        state_of(&engine, "main:public.users:users") == PipelineState::Error
    })
    .await;
    wait_until("orders keeps streaming", WAIT, || {
        orders_target.inner.lookup(10).is_some()
    })
    .await;
    assert_eq!(
        state_of(&engine, "main:public.orders:orders"),
        PipelineState::Streaming
    );
    engine.stop().await.unwrap();
}
