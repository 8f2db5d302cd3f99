//! Baseline and streaming: rows and changes reach the right targets, filtered and
//! transformed, and targets end equal to the source's tables.

use std::sync::Arc;

use laredo_core::{
    ChangeEvent, Engine, PipelineOptions, Position, Row, Value, filter_fn, row, transform_fn,
};
use laredo_filter::FieldEquals;
use laredo_target_memory::{CompiledTarget, IndexedTarget};
use laredo_test_support::TestObserver;
use parking_lot::Mutex;

use super::support::*;

#[tokio::test]
async fn baseline_rows_reach_the_indexed_target() {
    let source = source_with_users(1..=25);
    let target = indexed();
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), target.clone(), PipelineOptions::default())
        .observer(observer.clone())
        .build()
        .unwrap();
    started(&engine).await;
    assert_eq!(target.lookup(7), Some(user(7, "user-7")));
    assert_eq!(sorted_rows(&target), sorted_source_rows(&source, &users()));
    let completed = observer.wait_for_event("BaselineCompleted", WAIT).await;
    assert_eq!(completed.subject, "main:public.users:indexed-memory");
    assert_eq!(completed.field("total_rows"), Some("25"));
    assert!(observer.has_event("BaselineStarted"));
    let loaded = observer.events_of("BaselineRowLoaded");
    assert_eq!(loaded.last().and_then(|e| e.field("row_count")), Some("25"));
    let validation = observer.wait_for_event("ValidationResult", WAIT).await;
    assert_eq!(validation.field("matched"), Some("true"));
    assert!(observer.has_event("SourceConnected"));
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn every_change_kind_is_applied_in_order() {
    let source = source_with_users([1, 2, 3]);
    let target = indexed();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let _listener = target.listen({
        let seen = Arc::clone(&seen);
        move |old: Option<&Row>, new: Option<&Row>| {
            seen.lock().push((
                old.and_then(|r| r.get_i64("id")),
                new.and_then(|r| r.get_string("name")),
            ));
        }
    });
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), target.clone(), PipelineOptions::default())
        .build()
        .unwrap();
    started(&engine).await;
    seen.lock().clear();

    source.emit_insert(users(), user(4, "dora")).await;
    source
        .emit_update(users(), user(2, "bob-renamed"), Some(user(2, "user-2")))
        .await;
    let last = source.emit_delete(users(), row! {"id" => 3}).await;
    wait_for_ack(&source, &last).await;
    assert_eq!(sorted_rows(&target), sorted_source_rows(&source, &users()));
    assert_eq!(
        target
            .lookup(2)
            .and_then(|r| r.get_string("name"))
            .as_deref(),
        Some("bob-renamed")
    );
    assert_eq!(
        *seen.lock(),
        vec![
            (None, Some("dora".to_string())),
            (Some(2), Some("bob-renamed".to_string())),
            (Some(3), None)
        ]
    );

    let last = source.emit_truncate(users()).await;
    wait_for_ack(&source, &last).await;
    assert_eq!(target.count(), 0);
    engine.stop().await.unwrap();
}

async fn wait_for_ack(source: &laredo_source_test::TestSource, position: &Position) {
    let want = position.as_u64().unwrap();
    laredo_test_support::wait_until("the source is acknowledged", WAIT, || {
        max_ack(source) >= want
    })
    .await;
}

#[tokio::test]
async fn tables_are_routed_and_one_table_feeds_many_targets() {
    let source = source_with_users([1]);
    let by_id = indexed();
    let by_team = IndexedTarget::builder()
        .lookup_fields(["id"])
        .index(laredo_core::IndexDefinition::new("team", ["team"], false))
        .build();
    let names =
        CompiledTarget::<String>::builder(|row: &Row| row.get_string("name").ok_or("no name"))
            .key_fields(["id"])
            .build();
    let order_target = indexed();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), by_id.clone(), PipelineOptions::default())
        .pipeline(
            "main",
            users(),
            by_team.clone(),
            PipelineOptions::default().id("users-by-team"),
        )
        .pipeline("main", users(), names.clone(), PipelineOptions::default())
        .pipeline(
            "main",
            orders(),
            order_target.clone(),
            PipelineOptions::default(),
        )
        .build()
        .unwrap();
    started(&engine).await;
    source.emit_insert(users(), user(2, "bea")).await;
    let last = source.emit_insert(orders(), order(10, 2)).await;
    wait_for_ack(&source, &last).await;

    assert_eq!(by_id.count(), 2);
    assert_eq!(
        by_team.lookup_all("team", "even").unwrap(),
        vec![user(2, "bea")]
    );
    assert_eq!(names.get(2).as_deref().map(String::as_str), Some("bea"));
    assert_eq!(order_target.count(), 1, "orders only get order changes");
    assert_eq!(order_target.lookup(10), Some(order(10, 2)));
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn filters_and_transforms_shape_baseline_and_changes() {
    let source = source_with_users(1..=6);
    let target = indexed();
    let options = PipelineOptions::default()
        .filter(Arc::new(FieldEquals::new("team", "even")))
        .filter(filter_fn(|_, row| row.get_i64("id") != Some(6)))
        .transform(transform_fn(|_, row| Some(row.without(&["team"]))))
        .transform(transform_fn(|_, row| {
            let upper = row.get_str("name").map(str::to_uppercase);
            Some(row.with("name", upper))
        }));
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), target.clone(), options)
        .build()
        .unwrap();
    started(&engine).await;
    let shaped = |id: i64, name: &str| row! {"id" => id, "name" => name};
    assert_eq!(
        sorted_rows(&target),
        vec![shaped(2, "USER-2"), shaped(4, "USER-4")]
    );

    source.emit_insert(users(), user(8, "hal")).await; // kept
    source.emit_insert(users(), user(9, "ivy")).await; // odd: filtered
    // An update that leaves the filtered set removes the row.
    source
        .emit_update(
            users(),
            row! {"id" => 4, "name" => "user-4", "team" => "odd"},
            Some(user(4, "user-4")),
        )
        .await;
    // A delete whose identity lacks the filtered field still deletes by key.
    let last = source.emit_delete(users(), row! {"id" => 2}).await;
    wait_for_ack(&source, &last).await;
    assert_eq!(sorted_rows(&target), vec![shaped(8, "HAL")]);
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn a_resumable_source_resumes_without_gap_or_duplicate() {
    let source = source_with_users([1]);
    let first_target = FaultTarget::new("recording");
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline(
            "main",
            users(),
            first_target.clone(),
            PipelineOptions::default(),
        )
        .build()
        .unwrap();
    started(&engine).await;
    source.emit_insert(users(), user(2, "b")).await;
    let last = source.emit_insert(users(), user(3, "c")).await;
    wait_for_ack(&source, &last).await;
    engine.stop().await.unwrap();

    // Written while no engine runs.
    source.enqueue([
        ChangeEvent::insert(users(), Position::from_u64(0), user(4, "d")),
        ChangeEvent::update(users(), Position::from_u64(0), user(2, "b2"), None),
    ]);
    // A target whose rows outlive the engine (as a database's do): resumed into.
    let second_target = FaultTarget::new("recording");
    second_target.set_retains_state(true);
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline(
            "main",
            users(),
            second_target.clone(),
            PipelineOptions::default(),
        )
        .observer(observer.clone())
        .build()
        .unwrap();
    started(&engine).await;
    assert_eq!(source.baseline_calls(), 1, "resume skips the baseline");
    assert!(!observer.has_event("BaselineStarted"));
    let last = source.emit_insert(users(), user(5, "e")).await;
    wait_for_ack(&source, &last).await;
    assert_eq!(
        second_target.log(),
        vec!["INSERT 4", "UPDATE 2", "INSERT 5"],
        "exactly the changes after the ACK"
    );
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn a_new_engine_baselines_targets_that_start_empty_instead_of_resuming() {
    let source = source_with_users([1]);
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), indexed(), PipelineOptions::default())
        .build()
        .unwrap();
    started(&engine).await;
    let last = source.emit_insert(users(), user(2, "b")).await;
    wait_for_ack(&source, &last).await;
    engine.stop().await.unwrap();
    source.enqueue([ChangeEvent::insert(
        users(),
        Position::from_u64(0),
        user(3, "c"),
    )]);

    // As after a process restart: a new engine with a new in-memory target, and the
    // source could resume from its acknowledged position. Resuming would leave rows 1
    // and 2 out of the target, so the engine baselines.
    let target = indexed();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), target.clone(), PipelineOptions::default())
        .build()
        .unwrap();
    started(&engine).await;
    assert_eq!(
        source.baseline_calls(),
        2,
        "a second baseline, not a resume"
    );
    let mut ids: Vec<i64> = target
        .all()
        .iter()
        .filter_map(|r| r.get_i64("id"))
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3]);
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn rebaseline_required_reloads_everything_and_drops_stale_rows() {
    let source = source_with_users([1, 2]);
    source.set_supports_resume(Some(false));
    let target = indexed();
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), target.clone(), PipelineOptions::default())
        .observer(observer.clone())
        .build()
        .unwrap();
    started(&engine).await;
    // A row only the target has (as after a missed delete) must not survive a re-baseline.
    laredo_test_support::OneChange::on_insert(&*target, &users(), &user(99, "stale"))
        .await
        .unwrap();
    source.emit_insert(users(), user(3, "c")).await;
    source.fail_stream(laredo_core::SourceError::ReBaselineRequired {
        reason: "slot lost".to_string(),
    });
    observer.wait_for_event("ReBaselineTriggered", WAIT).await;
    observer
        .wait_for_event_count("BaselineCompleted", 2, WAIT)
        .await;
    assert!(engine.await_ready(WAIT).await);
    assert_eq!(source.baseline_calls(), 2);
    let last = source.emit_insert(users(), user(4, "d")).await;
    wait_for_ack(&source, &last).await;
    assert_eq!(sorted_rows(&target), sorted_source_rows(&source, &users()));
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn a_failed_stream_disconnects_and_fails_its_pipelines() {
    let source = source_with_users([1]);
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), indexed(), PipelineOptions::default())
        .observer(observer.clone())
        .build()
        .unwrap();
    started(&engine).await;
    source.fail_stream(laredo_core::SourceError::msg("connection reset"));
    let event = observer.wait_for_event("SourceDisconnected", WAIT).await;
    assert_eq!(
        event.field("reason"),
        Some("stream error: connection reset")
    );
    laredo_test_support::wait_until("pipeline in ERROR", WAIT, || !engine.is_ready()).await;
    assert_eq!(
        engine.pipelines()[0].state,
        laredo_core::PipelineState::Error
    );
    // Each pipeline hears why, so status and readiness can say it.
    let failed = observer.wait_for_event("PipelineFailed", WAIT).await;
    assert_eq!(failed.subject, engine.pipelines()[0].id);
    assert_eq!(
        failed.field("reason"),
        Some("source main stopped: connection reset")
    );
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn values_keep_their_kinds_end_to_end() {
    let source = laredo_source_test::TestSource::new();
    let t = laredo_core::table("public", "kinds");
    source.set_schema(
        t.clone(),
        laredo_source_test::TestSource::columns(&[("id", "int8", true), ("v", "jsonb", false)]),
    );
    let values = [
        Value::Null,
        Value::Bool(true),
        Value::Float64(1.5),
        Value::numeric("12345678901234567890.123"),
        Value::json(r#"{"a":[1,2]}"#),
        Value::Uuid([9; 16]),
        Value::Date(19_000),
        Value::TimestampTz(1_700_000_000_000_001),
        Value::Interval {
            months: 1,
            days: 2,
            micros: 3,
        },
        Value::array([Value::text("x"), Value::Null]),
        Value::bytes([0, 255]),
    ];
    let target = indexed();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline(
            "main",
            t.clone(),
            target.clone(),
            PipelineOptions::default(),
        )
        .build()
        .unwrap();
    started(&engine).await;
    let mut last = None;
    for (id, v) in values.iter().enumerate() {
        last = Some(
            source
                .emit_insert(t.clone(), row! {"id" => id as i64, "v" => v.clone()})
                .await,
        );
    }
    wait_for_ack(&source, &last.unwrap()).await;
    for (id, v) in values.iter().enumerate() {
        assert_eq!(
            target
                .lookup(id as i64)
                .and_then(|r| r.get("v").cloned())
                .as_ref(),
            Some(v)
        );
    }
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn per_change_observer_events_carry_their_arguments() {
    let source = source_with_users([1]);
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline(
            "main",
            users(),
            indexed(),
            PipelineOptions::default().buffer_size(64),
        )
        .observer(observer.clone())
        .build()
        .unwrap();
    started(&engine).await;
    let position = source.emit_update(users(), user(1, "renamed"), None).await;
    let pipeline = "main:public.users:indexed-memory";
    let received = observer.wait_for_event("ChangeReceived", WAIT).await;
    assert_eq!(received.subject, pipeline);
    assert_eq!(received.field("table"), Some("public.users"));
    assert_eq!(received.field("action"), Some("UPDATE"));
    assert_eq!(
        received.field("position"),
        Some(position.to_string().as_str())
    );
    let applied = observer.wait_for_event("ChangeApplied", WAIT).await;
    assert_eq!(
        (applied.subject.as_str(), applied.field("action")),
        (pipeline, Some("UPDATE"))
    );
    let depth = observer.wait_for_event("BufferDepthChanged", WAIT).await;
    assert_eq!(depth.field("capacity"), Some("64"));
    assert!(
        observer
            .events_of("BufferDepthChanged")
            .iter()
            .any(|e| e.field("depth") == Some("1"))
    );
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn unchanged_values_are_completed_from_the_targets_row() {
    let source = source_with_users([1, 2]);
    let keeper = indexed();
    let stateless = FaultTarget::new("stateless");
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), keeper.clone(), PipelineOptions::default())
        .pipeline(
            "main",
            users(),
            stateless.clone(),
            PipelineOptions::default(),
        )
        .build()
        .unwrap();
    started(&engine).await;
    // The source did not resend `name` (PostgreSQL's unchanged TOAST value).
    let partial = row! {"id" => 2i64, "name" => Value::UnchangedToast, "team" => "even"};
    let last = source.emit_update(users(), partial, None).await;
    laredo_test_support::wait_until("applied", WAIT, || {
        max_ack(&source) >= last.as_u64().unwrap()
    })
    .await;
    assert_eq!(
        keeper.lookup(2),
        Some(user(2, "user-2")),
        "completed from the held row"
    );
    let seen = stateless.inner.lookup(2).unwrap();
    assert!(
        !seen.contains("name"),
        "a target that keeps no rows gets the row without the unknown column: {seen}"
    );
    assert!(
        seen.values()
            .iter()
            .all(|v| !matches!(v, Value::UnchangedToast))
    );
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn changes_buffered_before_a_rebaseline_are_not_applied_over_it() {
    let source = source_with_users([1, 2]);
    let target = FaultTarget::new("gated");
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), target.clone(), PipelineOptions::default())
        .build()
        .unwrap();
    started(&engine).await;
    // The consumer is stuck applying a delete; an update waits in the buffer behind it.
    // Then the row changes again without an event (a change the stream never delivers,
    // as after a lost slot) and the stream asks for a re-baseline.
    target.set_gate(false);
    source.emit_delete(users(), row! {"id" => 1i64}).await;
    source
        .emit_update(users(), user(2, "stale"), Some(row! {"id" => 2i64}))
        .await;
    source.add_row(users(), user(2, "current"));
    source.fail_stream(laredo_core::SourceError::ReBaselineRequired {
        reason: "slot lost".to_string(),
    });
    target.set_gate(true);
    laredo_test_support::wait_until("re-baselined", WAIT, || source.baseline_calls() == 2).await;
    // A later change is applied after everything buffered before it.
    source.emit_insert(users(), user(9, "later")).await;
    laredo_test_support::wait_until("later change applied", WAIT, || {
        target.inner.lookup(9).is_some()
    })
    .await;
    assert_eq!(
        target.inner.lookup(2),
        Some(user(2, "current")),
        "the stale update was skipped: the baseline already had the row's state"
    );
    assert_eq!(target.inner.lookup(1), None);
    engine.stop().await.unwrap();
}
