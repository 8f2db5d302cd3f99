//! The seed's "querying a target" example, over the scriptable test source: look a row
//! up by its lookup field, list every row, and listen to live changes while the source
//! streams an insert, an update and a delete.
//!
//! Run with `cargo run -p laredo-core --example query_target`
//! (README's quick start: `cargo xtask example`).

use std::time::Duration;

use laredo_core::{Engine, PipelineOptions, Row, row, table};
use laredo_source_test::TestSource;
use laredo_target_memory::IndexedTarget;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let users = table("public", "users");
    let source = TestSource::new();
    source.set_schema(
        users.clone(),
        TestSource::columns(&[("id", "text", true), ("name", "text", false)]),
    );
    source.add_row(users.clone(), row! {"id" => "user-123", "name" => "Ada"});
    source.add_row(users.clone(), row! {"id" => "user-456", "name" => "Grace"});

    let engine = Engine::builder()
        .source("pg_main", source.clone())
        .pipeline(
            "pg_main",
            users.clone(),
            IndexedTarget::builder().lookup_fields(["id"]).build(),
            PipelineOptions::default(),
        )
        .build()?;
    engine.start().await?;
    if !engine.await_ready(Duration::from_secs(30)).await {
        return Err("engine did not become ready".into());
    }

    let target = engine
        .get_target::<IndexedTarget>("pg_main", &users)
        .ok_or("target not found")?;

    // Lookup by primary key fields.
    if let Some(row) = target.lookup("user-123") {
        println!("name: {}", row.get_string("name").unwrap_or_default());
    }

    // List all rows.
    let mut rows = target.all();
    rows.sort_by_key(|r| r.get_string("id"));
    for row in &rows {
        println!("row: {row}");
    }

    // Subscribe to live changes.
    let listener = target.listen(|old: Option<&Row>, new: Option<&Row>| {
        let show = |r: Option<&Row>| r.map_or_else(|| "-".to_string(), ToString::to_string);
        println!("changed: {} -> {}", show(old), show(new));
    });
    source
        .emit_insert(users.clone(), row! {"id" => "user-789", "name" => "Edsger"})
        .await;
    source
        .emit_update(
            users.clone(),
            row! {"id" => "user-456", "name" => "Grace H."},
            Some(row! {"id" => "user-456"}),
        )
        .await;
    let last = source
        .emit_delete(users.clone(), row! {"id" => "user-123"})
        .await;
    // Wait until the engine has applied (and acknowledged) the last change.
    while source.acked_position() < last.as_u64() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(listener);
    println!("rows now: {}", target.count());
    engine.stop().await?;
    Ok(())
}
