//! Schema changes reach targets in order, and their responses are honoured.

use laredo_core::{ColumnDefinition, Engine, PipelineOptions, PipelineState, SchemaChangeResponse};
use laredo_test_support::{TestObserver, wait_until};

use super::support::*;

#[tokio::test]
async fn schema_change_responses_are_honoured() {
    let source = source_with_users([1, 2]);
    let continues = FaultTarget::new("continues");
    let rebaselines = FaultTarget::new("rebaselines");
    rebaselines.set_schema_response(SchemaChangeResponse::re_baseline("need the new column"));
    let refuses = FaultTarget::new("refuses");
    refuses.set_schema_response(SchemaChangeResponse::error("cannot handle it"));
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline(
            "main",
            users(),
            continues.clone(),
            PipelineOptions::default(),
        )
        .pipeline(
            "main",
            users(),
            rebaselines.clone(),
            PipelineOptions::default(),
        )
        .pipeline("main", users(), refuses.clone(), PipelineOptions::default())
        .observer(observer.clone())
        .build()
        .unwrap();
    started(&engine).await;
    source
        .add_column(users(), ColumnDefinition::new("email", "text"))
        .await;
    let event = observer.wait_for_event("SchemaChange", WAIT).await;
    assert_eq!(event.subject, "main");
    let schema = engine.table_schema(&users()).unwrap();
    assert_eq!(schema.last().map(|c| c.name.as_str()), Some("email"));

    wait_until("refusing pipeline in ERROR", WAIT, || {
        engine
            .pipelines()
            .iter()
            .any(|p| p.id == "main:public.users:refuses" && p.state == PipelineState::Error)
    })
    .await;
    // The re-baselining pipeline reloads its table (all of the table's live pipelines).
    wait_until("reload finished", WAIT, || source.baseline_calls() == 2).await;
    observer
        .wait_for_event_count("BaselineCompleted", 5, WAIT)
        .await;
    let last = source
        .emit_insert(
            users(),
            laredo_core::row! {"id" => 3, "name" => "c", "team" => "odd", "email" => "c@x"},
        )
        .await
        .as_u64()
        .unwrap();
    wait_until("streaming goes on", WAIT, || max_ack(&source) == last).await;
    assert_eq!(
        continues
            .inner
            .lookup(3)
            .and_then(|r| r.get_string("email"))
            .as_deref(),
        Some("c@x")
    );
    assert_eq!(
        rebaselines
            .inner
            .lookup(3)
            .and_then(|r| r.get_string("email"))
            .as_deref(),
        Some("c@x")
    );
    engine.stop().await.unwrap();
}
