//! The seed's "creating an engine" example, over the scriptable test source: one source,
//! one pipeline of `public.users` into an `IndexedTarget`, start, wait for readiness,
//! stop.
//!
//! Run with `cargo run -p laredo-core --example create_engine`.

use std::time::Duration;

use laredo_core::{Engine, PipelineOptions, row, table};
use laredo_source_test::TestSource;
use laredo_target_memory::IndexedTarget;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source = TestSource::new();
    source.set_schema(
        table("public", "users"),
        TestSource::columns(&[("id", "text", true), ("name", "text", false)]),
    );
    source.add_row(
        table("public", "users"),
        row! {"id" => "user-123", "name" => "Ada"},
    );

    let engine = Engine::builder()
        .source("pg_main", source)
        .pipeline(
            "pg_main",
            table("public", "users"),
            IndexedTarget::builder().lookup_fields(["id"]).build(),
            PipelineOptions::default(),
        )
        .build()?;

    engine.start().await?;
    let ready = engine.await_ready(Duration::from_secs(30)).await;
    println!("engine ready: {ready}");
    for pipeline in engine.pipelines() {
        println!(
            "{} {} rows={}",
            pipeline.id, pipeline.state, pipeline.row_count
        );
    }
    engine.stop().await?;
    Ok(())
}
