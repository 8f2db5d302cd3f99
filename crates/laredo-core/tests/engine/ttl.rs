//! TTL: expired rows are skipped, updated away and scanned out.

use std::time::Duration;

use laredo_core::{Engine, PipelineOptions, Row, Value, row, table, time};
use laredo_source_test::TestSource;
use laredo_target_memory::IndexedTarget;
use laredo_test_support::{TestObserver, wait_until};

use super::support::*;

fn sessions() -> laredo_core::TableIdentifier {
    table("public", "sessions")
}

fn session(id: i64, expires_at: i64) -> Row {
    row! {"id" => id, "expires_at" => Value::TimestampTz(expires_at)}
}

const HOUR: i64 = 3_600_000_000;

#[tokio::test]
async fn expired_rows_are_skipped_updated_away_and_scanned_out() {
    let now = time::now_micros();
    let source = TestSource::new();
    source.set_schema(
        sessions(),
        TestSource::columns(&[("id", "int8", true), ("expires_at", "timestamptz", false)]),
    );
    source.add_row(sessions(), session(1, now - HOUR)); // expired: skipped by the baseline
    source.add_row(sessions(), session(2, now + HOUR));
    source.add_row(sessions(), row! {"id" => 3, "expires_at" => "not a time"}); // never expires
    let target = IndexedTarget::builder().lookup_fields(["id"]).build();
    let observer = TestObserver::new();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline(
            "main",
            sessions(),
            target.clone(),
            PipelineOptions::default()
                .ttl_field("expires_at")
                .ttl_scan_interval(Duration::from_millis(20)),
        )
        .observer(observer.clone())
        .build()
        .unwrap();
    started(&engine).await;
    let ids = |t: &IndexedTarget| {
        let mut ids: Vec<i64> = t.all().iter().filter_map(|r| r.get_i64("id")).collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(ids(&target), vec![2, 3]);

    source.emit_insert(sessions(), session(4, now - HOUR)).await; // expired insert: skipped
    source.emit_insert(sessions(), session(5, now + HOUR)).await;
    // An update to an expired time deletes; an update extending the expiry keeps the row.
    source
        .emit_update(sessions(), session(5, now - HOUR), None)
        .await;
    let soon = time::now_micros() + 300_000;
    source.emit_update(sessions(), session(2, soon), None).await;
    let last = source
        .emit_update(sessions(), session(3, now + HOUR), None)
        .await
        .as_u64()
        .unwrap();
    wait_until("changes applied", WAIT, || max_ack(&source) == last).await;
    assert!(target.lookup(4).is_none());
    assert!(target.lookup(5).is_none());

    // Row 2 expires shortly; the scanner removes it and reports its key.
    let expired = observer.wait_for_event("RowExpired", WAIT).await;
    assert_eq!(expired.subject, "main:public.sessions:indexed-memory");
    assert_eq!(expired.field("key"), Some("2"));
    assert!(time::now_micros() >= soon, "not removed before its expiry");
    assert_eq!(ids(&target), vec![3]);
    assert_eq!(engine.pipelines()[0].row_count, 1);
    engine.stop().await.unwrap();
}
