//! The seed's two examples against a real PostgreSQL: an engine with an ephemeral
//! PostgreSQL source feeding `public.users` into an IndexedTarget, then a lookup by key.
//!
//! ```text
//! cargo run -p laredo-source-pg --example pg_users -- postgresql://user:pass@localhost:5432/mydb [user-123]
//! ```
//!
//! The database needs `wal_level=logical`, a `public.users` table with an `id` column
//! and a user allowed to replicate. The source creates publication `laredo_example`
//! (for `public.users`) and a temporary replication slot that goes away with the
//! example. Without a connection string the example starts a throwaway PostgreSQL of its
//! own (from laredo-test-support), creates the table and writes to it while it runs.

use std::time::Duration;

use laredo_core::{Engine, Row, table};
use laredo_source_pg::{PgSource, PgSourceConfig, PublicationConfig, SlotMode};
use laredo_target_memory::IndexedTarget;
use laredo_test_support::PgCluster;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let given = args.next();
    let key = args.next().unwrap_or_else(|| "user-123".to_string());
    // A throwaway server when no connection string is given.
    let throwaway = match given {
        Some(_) => None,
        None => {
            println!("no connection string given: starting a throwaway PostgreSQL");
            let pg = PgCluster::start()?;
            let db = pg.create_database("example")?;
            pg.psql(
                &db,
                "CREATE TABLE users (id text PRIMARY KEY, name text NOT NULL); \
                 INSERT INTO users VALUES ('user-123', 'Ada'), ('user-456', 'Grace');",
            )?;
            Some((pg, db))
        }
    };
    let url = match (&given, &throwaway) {
        (Some(url), _) => url.clone(),
        (None, Some((pg, db))) => pg.connection_string(db),
        (None, None) => unreachable!("one of the two is set"),
    };

    let source = PgSource::new(
        PgSourceConfig::new(url)
            .slot_mode(SlotMode::Ephemeral)
            .slot_name("laredo_example")
            .publication(PublicationConfig::new("laredo_example").create_missing(true)),
    )?;
    let users = table("public", "users");
    let engine = Engine::builder()
        .source("pg_main", std::sync::Arc::new(source))
        .pipeline(
            "pg_main",
            users.clone(),
            IndexedTarget::builder().lookup_fields(["id"]).build(),
            laredo_core::PipelineOptions::default(),
        )
        .build()?;
    engine.start().await?;
    if !engine.await_ready(Duration::from_secs(30)).await {
        engine.stop().await?;
        return Err("the engine did not become ready in 30 s (see the log above)".into());
    }

    let target = engine
        .get_target::<IndexedTarget>("pg_main", &users)
        .ok_or("target not found")?;
    match target.lookup(key.as_str()) {
        Some(row) => println!(
            "lookup {key}: name = {}",
            row.get_string("name").unwrap_or_default()
        ),
        None => println!("lookup {key}: no such row"),
    }
    println!("{} rows loaded", target.count());

    if let Some((pg, db)) = &throwaway {
        // Live changes: written to PostgreSQL, seen by a listener on the target.
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let listener = target.listen(move |old: Option<&Row>, new: Option<&Row>| {
            let show = |r: Option<&Row>| r.map_or_else(|| "-".to_string(), ToString::to_string);
            let _ = seen_tx.send(format!("changed: {} -> {}", show(old), show(new)));
        });
        pg.psql(
            db,
            "INSERT INTO users VALUES ('user-789', 'Edsger'); \
             UPDATE users SET name = 'Grace H.' WHERE id = 'user-456'; \
             DELETE FROM users WHERE id = 'user-123';",
        )?;
        for _ in 0..3 {
            let line = tokio::time::timeout(Duration::from_secs(30), seen_rx.recv())
                .await?
                .ok_or("listener closed")?;
            println!("{line}");
        }
        drop(listener);
        println!("rows now: {}", target.count());
    }
    engine.stop().await?;
    Ok(())
}
