//! The OAM and Query services through real tonic clients over loopback, against an
//! engine streaming a real PostgreSQL server (laredo-test-support starts it) into an
//! IndexedTarget, with a local snapshot store.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use laredo_core::{Engine, IndexDefinition, PipelineOptions, SnapshotOptions, Value, table};
use laredo_proto::laredo::v1 as pb;
use laredo_proto::laredo::v1::laredo_oam_service_client::LaredoOamServiceClient;
use laredo_proto::laredo::v1::laredo_query_service_client::LaredoQueryServiceClient;
use laredo_service_oam::{OamService, StatusEvents};
use laredo_service_query::QueryService;
use laredo_snapshot_local::LocalSnapshotStore;
use laredo_source_pg::{PgSource, PgSourceConfig, PublicationConfig, ReconnectPolicy, SlotMode};
use laredo_target_memory::IndexedTarget;
use laredo_test_support::{PgCluster, TestObserver, wait_until_async};
use tonic::Code;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);

struct Server {
    engine: Engine,
    oam: LaredoOamServiceClient<Channel>,
    query: LaredoQueryServiceClient<Channel>,
}

fn config(pg: &PgCluster, db: &str) -> PgSourceConfig {
    PgSourceConfig::new(pg.connection_string(db))
        .slot_mode(SlotMode::Stateful)
        .slot_name(format!("slot_{db}"))
        .publication(PublicationConfig::new(format!("pub_{db}")).create_missing(true))
        .status_interval(Duration::from_millis(100))
        .reconnect(ReconnectPolicy::new(
            u32::MAX,
            Duration::from_millis(50),
            Duration::from_millis(500),
            2.0,
        ))
}

fn target() -> Arc<IndexedTarget> {
    IndexedTarget::builder()
        .lookup_fields(["id"])
        .index(IndexDefinition::new("by_team", ["team"], false))
        .build()
}

/// An engine on `public.users` of `db` with OAM and Query served over loopback.
async fn serve(
    pg: &PgCluster,
    db: &str,
    target: Arc<IndexedTarget>,
    snapshots: SnapshotOptions,
    observer: Arc<TestObserver>,
) -> Server {
    let events = StatusEvents::new();
    let engine = Engine::builder()
        .source("pg", Arc::new(PgSource::new(config(pg, db)).unwrap()))
        .pipeline(
            "pg",
            table("public", "users"),
            target,
            PipelineOptions::default(),
        )
        .snapshots(snapshots)
        .observer(events.clone())
        .observer(observer)
        .build()
        .unwrap();
    engine.start().await.unwrap();
    assert!(engine.await_ready(WAIT).await, "{:?}", engine.pipelines());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let oam = OamService::new(engine.clone(), events).into_server();
    let query = QueryService::new(engine.clone()).into_server();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(oam)
            .add_service(query)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Server {
        engine,
        oam: LaredoOamServiceClient::new(channel.clone()),
        query: LaredoQueryServiceClient::new(channel),
    }
}

fn setup(pg: &PgCluster, prefix: &str) -> String {
    let db = pg.create_database(prefix).unwrap();
    pg.psql(
        &db,
        "CREATE TABLE users (id int8 PRIMARY KEY, name text NOT NULL, team text); \
         INSERT INTO users SELECT g, 'user-' || g, CASE WHEN g % 2 = 0 THEN 'even' ELSE 'odd' END \
         FROM generate_series(1, 50) g;",
    )
    .unwrap();
    db
}

fn int(v: i64) -> pb::Value {
    pb::Value::from(&Value::Int64(v))
}

fn text(v: &str) -> pb::Value {
    pb::Value::from(&Value::text(v))
}

async fn count(query: &mut LaredoQueryServiceClient<Channel>) -> u64 {
    query
        .count_rows(pb::CountRowsRequest {
            schema: "public".into(),
            table: "users".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .count
}

async fn wait_count(query: &LaredoQueryServiceClient<Channel>, pg: &PgCluster, db: &str) {
    let want: u64 = pg
        .psql(db, "SELECT count(*) FROM users")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until_async("the target to hold the table's rows", WAIT, || {
        let mut query = query.clone();
        async move { count(&mut query).await == want }
    })
    .await;
}

fn field<'a>(s: &'a prost_types::Struct, path: &[&str]) -> Option<&'a prost_types::value::Kind> {
    let (last, parents) = path.split_last()?;
    let mut current = s;
    for key in parents {
        match current.fields.get(*key)?.kind.as_ref()? {
            prost_types::value::Kind::StructValue(inner) => current = inner,
            _ => return None,
        }
    }
    current.fields.get(*last)?.kind.as_ref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_and_admin_rpc_works_against_a_postgresql_source() {
    use prost_types::value::Kind;
    let pg = PgCluster::shared();
    let db = setup(pg, "oampg");
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(dir.path()));
    let Server {
        engine,
        mut oam,
        mut query,
    } = serve(
        pg,
        &db,
        target(),
        SnapshotOptions::new(store).describe_store("local", dir.path().display().to_string()),
        TestObserver::new(),
    )
    .await;

    // Status and source details.
    let status = oam
        .get_status(pb::GetStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.sources[0].source_type, "postgresql");
    assert_eq!(status.pipelines[0].row_count, 50);
    assert!(status.snapshot_status.as_ref().unwrap().enabled);
    let info = oam
        .get_source_info(pb::GetSourceInfoRequest {
            source_id: "pg".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let details = info.sources[0]
        .details
        .as_ref()
        .expect("PostgreSQL details");
    assert_eq!(
        field(details, &["slot", "name"]),
        Some(&Kind::StringValue(format!("slot_{db}")))
    );
    assert_eq!(
        field(details, &["slot", "type"]),
        Some(&Kind::StringValue("persistent".into()))
    );
    assert_eq!(
        field(details, &["slot", "exists"]),
        Some(&Kind::BoolValue(true))
    );
    assert!(matches!(
        field(details, &["slot", "confirmed_flush_lsn"]),
        Some(Kind::StringValue(_))
    ));
    assert_eq!(
        field(details, &["publication", "name"]),
        Some(&Kind::StringValue(format!("pub_{db}")))
    );
    let tables = oam
        .list_tables(pb::ListTablesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tables.tables[0].primary_key, ["id"]);
    assert_eq!(tables.tables[0].source_type, "postgresql");
    let source_config = tables.tables[0].source_config.as_ref().unwrap();
    assert_eq!(
        field(source_config, &["details", "slot", "name"]),
        Some(&Kind::StringValue(format!("slot_{db}")))
    );
    let target_config = tables.tables[0].target_config.as_ref().unwrap();
    assert_eq!(
        field(target_config, &["type"]),
        Some(&Kind::StringValue("indexed-memory".into()))
    );
    let schema = oam
        .get_table_schema(pb::GetTableSchemaRequest {
            schema: "public".into(),
            table: "users".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = schema
        .columns
        .iter()
        .map(|c| c.column_name.as_str())
        .collect();
    assert_eq!(names, ["id", "name", "team"]);

    // Changes made in PostgreSQL are visible through Query.
    pg.psql(
        &db,
        "INSERT INTO users VALUES (51, 'new', 'odd'); UPDATE users SET name = 'renamed' WHERE id = 2; \
         DELETE FROM users WHERE id = 3;",
    )
    .unwrap();
    wait_until_async("the insert through Lookup", WAIT, || {
        let mut query = query.clone();
        async move {
            query
                .lookup(pb::LookupRequest {
                    schema: "public".into(),
                    table: "users".into(),
                    index_name: String::new(),
                    key_values: vec![int(51)],
                })
                .await
                .unwrap()
                .into_inner()
                .found
        }
    })
    .await;
    wait_count(&query, pg, &db).await;
    let info = oam
        .get_source_info(pb::GetSourceInfoRequest {
            source_id: "pg".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let current = &info.sources[0].current_position;
    assert!(current.contains('/'), "an LSN: {current:?}");
    let row = query
        .get_row(pb::GetRowRequest {
            schema: "public".into(),
            table: "users".into(),
            primary_key: vec![int(2)],
        })
        .await
        .unwrap()
        .into_inner();
    let row = row.row.unwrap();
    let name_at = row.columns.iter().position(|c| c == "name").unwrap();
    assert_eq!(row.values[name_at], text("renamed"));
    let gone = query
        .get_row(pb::GetRowRequest {
            schema: "public".into(),
            table: "users".into(),
            primary_key: vec![int(3)],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!gone.found);
    let even = query
        .lookup_all(pb::LookupAllRequest {
            schema: "public".into(),
            table: "users".into(),
            index_name: "by_team".into(),
            key_values: vec![text("even")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(even.rows.len(), 25);

    // Paging covers the table exactly once.
    let mut seen = BTreeSet::new();
    let mut token = String::new();
    loop {
        let page = query
            .list_rows(pb::ListRowsRequest {
                schema: "public".into(),
                table: "users".into(),
                page_size: 20,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        for row in &page.rows {
            let id_at = row.columns.iter().position(|c| c == "id").unwrap();
            assert!(
                seen.insert(format!("{:?}", row.values[id_at])),
                "a row listed twice"
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 50);

    // Snapshots: create, list, inspect; a restore that would lose changes is refused.
    let created = oam
        .create_snapshot(pb::CreateSnapshotRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(created.accepted);
    let listed = oam
        .list_snapshots(pb::ListSnapshotsRequest {
            table: "public.users".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.snapshots.len(), 1);
    assert_eq!(listed.snapshots[0].store_type, "local");
    assert_eq!(listed.snapshots[0].tables[0].row_count, 50);
    let inspected = oam
        .inspect_snapshot(pb::InspectSnapshotRequest {
            snapshot_id: created.snapshot_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    let position = inspected.source_positions[0].position.clone();
    assert_eq!(inspected.source_positions[0].source_id, "pg");
    assert!(position.contains('/'), "an LSN: {position}");
    assert_eq!(
        listed.snapshots[0].source_positions, inspected.source_positions,
        "the listing shows the positions too"
    );

    pg.psql(&db, "INSERT INTO users VALUES (52, 'later', 'even')")
        .unwrap();
    wait_count(&query, pg, &db).await;
    assert!(
        pg.wait_for_value(
            &db,
            &format!(
                "SELECT confirmed_flush_lsn > '{}' FROM pg_replication_slots WHERE slot_name = 'slot_{db}'",
                position.split('#').next().unwrap()
            ),
            "t",
            WAIT
        ),
        "the slot confirmed past the snapshot"
    );
    let refused = oam
        .restore_snapshot(pb::RestoreSnapshotRequest {
            snapshot_id: created.snapshot_id.clone(),
            confirm: true,
            skip_meta_check: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("cannot stream from"),
        "{refused:?}"
    );
    let unconfirmed = oam
        .restore_snapshot(pb::RestoreSnapshotRequest {
            snapshot_id: created.snapshot_id.clone(),
            confirm: false,
            skip_meta_check: false,
        })
        .await
        .unwrap_err();
    assert_eq!(unconfirmed.code(), Code::FailedPrecondition);
    let missing = oam
        .inspect_snapshot(pb::InspectSnapshotRequest {
            snapshot_id: "snap-0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    oam.create_snapshot(pb::CreateSnapshotRequest::default())
        .await
        .unwrap();
    let pruned = oam
        .prune_snapshots(pb::PruneSnapshotsRequest {
            keep: 1,
            table: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pruned.deleted_count, 1);
    let deleted_missing = oam
        .delete_snapshot(pb::DeleteSnapshotRequest {
            snapshot_id: created.snapshot_id,
        })
        .await
        .unwrap_err();
    assert_eq!(deleted_missing.code(), Code::NotFound, "pruned already");

    // Pause holds PostgreSQL's changes; resume applies them.
    oam.pause_sync(pb::PauseSyncRequest {
        source_id: "pg".into(),
    })
    .await
    .unwrap();
    pg.psql(&db, "INSERT INTO users VALUES (53, 'paused', 'odd')")
        .unwrap();
    let held = count(&mut query).await;
    oam.resume_sync(pb::ResumeSyncRequest {
        source_id: "pg".into(),
    })
    .await
    .unwrap();
    wait_count(&query, pg, &db).await;
    assert!(count(&mut query).await > held || held == 51, "resumed");

    // Reset drops the slot and re-baselines without a restart.
    pg.psql(&db, "DELETE FROM users WHERE id > 40").unwrap();
    oam.reset_source(pb::ResetSourceRequest {
        source_id: "pg".into(),
        confirm: true,
        drop_publication: false,
    })
    .await
    .unwrap();
    wait_count(&query, pg, &db).await;
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_snapshot_restores_at_the_next_start_and_streams_what_was_written_while_down() {
    let pg = PgCluster::shared();
    let db = setup(pg, "restorepg");
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(dir.path()));
    let first = serve(
        pg,
        &db,
        target(),
        SnapshotOptions::new(store.clone()).on_shutdown(true),
        TestObserver::new(),
    )
    .await;
    pg.psql(&db, "UPDATE users SET name = 'before-stop' WHERE id <= 10")
        .unwrap();
    wait_until_async("the update applied", WAIT, || {
        let mut query = first.query.clone();
        async move {
            let row = query
                .get_row(pb::GetRowRequest {
                    schema: "public".into(),
                    table: "users".into(),
                    primary_key: vec![int(10)],
                })
                .await
                .unwrap()
                .into_inner()
                .row
                .unwrap();
            row.values.contains(&text("before-stop"))
        }
    })
    .await;
    first.engine.stop().await.unwrap();

    // Written while no engine runs: only the slot keeps it.
    pg.psql(
        &db,
        "INSERT INTO users VALUES (60, 'while-down', 'even'); DELETE FROM users WHERE id = 1;",
    )
    .unwrap();
    let observer = TestObserver::new();
    let second_target = target();
    let second = serve(
        pg,
        &db,
        second_target.clone(),
        SnapshotOptions::new(store),
        observer.clone(),
    )
    .await;
    assert!(
        observer.has_event("SnapshotRestoreCompleted"),
        "{:?}",
        observer.events_of("SnapshotFailed")
    );
    assert!(
        !observer.has_event("BaselineStarted"),
        "restored, not baselined"
    );
    // The restored rows already number 50, like the table: wait for the changes.
    laredo_test_support::wait_until("changes written while down", WAIT, || {
        second_target.lookup(60).is_some() && second_target.lookup(1).is_none()
    })
    .await;
    wait_count(&second.query, pg, &db).await;
    assert_eq!(
        second_target.lookup(10).unwrap().get("name"),
        Some(&Value::text("before-stop"))
    );
    second.engine.stop().await.unwrap();
}

/// A snapshot store in a temporary directory (kept alive by the returned guard).
fn scratch_snapshots() -> (tempfile::TempDir, SnapshotOptions) {
    let dir = tempfile::tempdir().unwrap();
    let options = SnapshotOptions::new(Arc::new(LocalSnapshotStore::new(dir.path())));
    (dir, options)
}

/// The next WatchStatus row change.
async fn next_row_change(
    stream: &mut tonic::Streaming<pb::WatchStatusResponse>,
) -> pb::WatchRowChange {
    loop {
        let message = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream stays open");
        if let Some(pb::watch_status_response::Event::RowChange(row)) = message.event {
            return row;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_subscribe_carry_postgresql_positions_transaction_ids_and_keys() {
    let pg = PgCluster::shared();
    let db = setup(pg, "oamwatch");
    let scratch = scratch_snapshots();
    let Server {
        engine,
        mut oam,
        mut query,
    } = serve(pg, &db, target(), scratch.1, TestObserver::new()).await;
    let mut watch = oam
        .watch_status(pb::WatchStatusRequest {
            tables: vec!["public.users".into()],
            pipeline_ids: Vec::new(),
            include_row_changes: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut subscription = query
        .subscribe(pb::SubscribeRequest {
            schema: "public".into(),
            table: "users".into(),
            replay_existing: false,
        })
        .await
        .unwrap()
        .into_inner();
    // One transaction: the insert and its transaction id.
    let txid: u64 = pg
        .psql(
            &db,
            "INSERT INTO users VALUES (51, 'new', 'odd'); SELECT txid_current();",
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let xid = i64::try_from(txid % (1 << 32)).unwrap();

    let row = next_row_change(&mut watch).await;
    assert_eq!(
        (row.schema.as_str(), row.table.as_str(), row.action, row.xid),
        ("public", "users", pb::ChangeAction::Insert as i32, xid)
    );
    // PostgreSQL's own LSN format (`16/B374D848`, `#n` for the n-th change of a
    // transaction), not a generic rendering.
    let lsn = row.position.split('#').next().unwrap();
    let (high, low) = lsn.split_once('/').expect("an LSN");
    assert!(
        u32::from_str_radix(high, 16).is_ok() && u32::from_str_radix(low, 16).is_ok(),
        "{}",
        row.position
    );
    let key = row.key.expect("the row's key");
    assert_eq!(
        (key.columns, key.values),
        (vec!["id".to_string()], vec![int(51)])
    );

    let change = loop {
        let message = tokio::time::timeout(WAIT, subscription.message())
            .await
            .expect("a change in time")
            .unwrap()
            .expect("the stream stays open");
        if let Some(pb::subscribe_response::Event::Change(change)) = message.event {
            break change;
        }
    };
    assert_eq!(
        (change.position.as_str(), change.xid),
        (row.position.as_str(), xid)
    );
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_reset_report_the_sources_details() {
    use prost_types::value::Kind;
    let pg = PgCluster::shared();
    let db = setup(pg, "oamdetails");
    let scratch = scratch_snapshots();
    let Server {
        engine, mut oam, ..
    } = serve(pg, &db, target(), scratch.1, TestObserver::new()).await;
    let status = oam
        .get_status(pb::GetStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let details = status.sources[0].details.as_ref().expect("source details");
    assert_eq!(
        field(details, &["slot", "name"]),
        Some(&Kind::StringValue(format!("slot_{db}")))
    );
    assert_eq!(
        field(details, &["publication", "name"]),
        Some(&Kind::StringValue(format!("pub_{db}")))
    );
    let reset = oam
        .reset_source(pb::ResetSourceRequest {
            source_id: "pg".into(),
            confirm: true,
            drop_publication: false,
        })
        .await
        .unwrap()
        .into_inner();
    let details = reset.details.as_ref().expect("reset details");
    assert_eq!(
        (
            field(details, &["source_type"]),
            field(details, &["drop_publication"]),
            field(details, &["source", "publication", "name"]),
        ),
        (
            Some(&Kind::StringValue("postgresql".into())),
            Some(&Kind::BoolValue(false)),
            Some(&Kind::StringValue(format!("pub_{db}"))),
        )
    );
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_row_identity_is_warned_about_at_startup() {
    use prost_types::value::Kind;
    let pg = PgCluster::shared();
    let db = pg.create_database("oamnokey").unwrap();
    pg.psql(
        &db,
        "CREATE TABLE users (id int8 NOT NULL, name text, team text); \
         INSERT INTO users VALUES (1, 'a', 'odd');",
    )
    .unwrap();
    let observer = TestObserver::new();
    let scratch = scratch_snapshots();
    let target = IndexedTarget::builder().lookup_fields(["id"]).build();
    let Server {
        engine, mut oam, ..
    } = serve(pg, &db, target, scratch.1, observer.clone()).await;
    let warning = observer.wait_for_event("ValidationWarning", WAIT).await;
    assert_eq!(
        (
            warning.subject.as_str(),
            warning.field("table"),
            warning.field("code")
        ),
        ("pg", Some("public.users"), Some("NO_ROW_IDENTITY"))
    );
    // The table is still served.
    assert!(engine.is_ready());
    let status = oam
        .get_status(pb::GetStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let details = status.sources[0].details.as_ref().expect("source details");
    let Some(Kind::ListValue(warnings)) = field(details, &["warnings"]) else {
        panic!("no warnings in {details:?}");
    };
    assert_eq!(warnings.values.len(), 1);
    let Some(Kind::StringValue(text)) = &warnings.values[0].kind else {
        panic!("{warnings:?}");
    };
    assert!(text.contains("public.users: NO_ROW_IDENTITY"), "{text}");
    engine.stop().await.unwrap();
}
