//! TestSource behaviour: consistency of baseline and stream, delivery, pause, resume,
//! release of history, injected faults.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use laredo_core::{
    BaselineSink, ChangeAction, ChangeEvent, ChangeHandler, ColumnDefinition, Position, Row,
    SourceError, SyncSource, TableIdentifier, ValidationError, row, table,
};
use laredo_source_test::TestSource;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq)]
enum Seen {
    Change(ChangeAction, u64, Option<i64>),
    Heartbeat(u64),
    Schema(Vec<String>),
}

struct Recorder(mpsc::UnboundedSender<Seen>);

#[async_trait]
impl ChangeHandler for Recorder {
    async fn on_change(&mut self, event: ChangeEvent) -> Result<(), SourceError> {
        let id = event.identity().and_then(|r| r.get_i64("id"));
        let _ = self.0.send(Seen::Change(
            event.action,
            event.position.as_u64().unwrap(),
            id,
        ));
        Ok(())
    }
    async fn on_heartbeat(&mut self, position: Position) -> Result<(), SourceError> {
        let _ = self.0.send(Seen::Heartbeat(position.as_u64().unwrap()));
        Ok(())
    }
    async fn on_schema_change(
        &mut self,
        _table: TableIdentifier,
        _old: Vec<ColumnDefinition>,
        new: Vec<ColumnDefinition>,
    ) -> Result<(), SourceError> {
        let _ = self
            .0
            .send(Seen::Schema(new.into_iter().map(|c| c.name).collect()));
        Ok(())
    }
}

struct Collect(Vec<Row>);

#[async_trait]
impl BaselineSink for Collect {
    async fn on_rows(
        &mut self,
        _table: &TableIdentifier,
        rows: Vec<Row>,
    ) -> Result<(), SourceError> {
        self.0.extend(rows);
        Ok(())
    }
}

fn users() -> TableIdentifier {
    table("public", "users")
}

fn source() -> Arc<TestSource> {
    let source = TestSource::new();
    source.set_schema(
        users(),
        TestSource::columns(&[("id", "int8", true), ("name", "text", false)]),
    );
    source
}

struct Running {
    rx: mpsc::UnboundedReceiver<Seen>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), SourceError>>,
}

fn stream(source: &Arc<TestSource>, from: u64) -> Running {
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (source, cancel) = (Arc::clone(source), cancel.clone());
        async move {
            source
                .stream(Position::from_u64(from), &mut Recorder(tx), cancel)
                .await
        }
    });
    Running { rx, cancel, task }
}

impl Running {
    async fn next(&mut self) -> Seen {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .unwrap()
            .unwrap()
    }
    async fn stop(self) -> Result<(), SourceError> {
        self.cancel.cancel();
        self.task.await.unwrap()
    }
}

fn ids(rows: &[Row]) -> Vec<i64> {
    let mut ids: Vec<i64> = rows.iter().filter_map(|r| r.get_i64("id")).collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn baseline_and_stream_split_changes_exactly() {
    let source = source();
    source.add_row(users(), row! {"id" => 1, "name" => "a"});
    source.enqueue([ChangeEvent::insert(
        users(),
        Position::from_u64(0),
        row! {"id" => 2, "name" => "b"},
    )]);
    let mut sink = Collect(Vec::new());
    let position = source.baseline(&[users()], &mut sink).await.unwrap();
    assert_eq!(position, Position::from_u64(1));
    assert_eq!(
        ids(&sink.0),
        vec![1, 2],
        "changes before the baseline are in it"
    );

    source.enqueue([ChangeEvent::delete(
        users(),
        Position::from_u64(0),
        row! {"id" => 1},
    )]);
    let mut running = stream(&source, 1);
    assert_eq!(
        running.next().await,
        Seen::Change(ChangeAction::Delete, 2, Some(1)),
        "only changes after the baseline"
    );
    assert_eq!(ids(&source.table_rows(&users())), vec![2]);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn emit_returns_once_delivered_and_applies_to_the_table() {
    let source = source();
    let mut running = stream(&source, 0);
    let p1 = source
        .emit_insert(users(), row! {"id" => 1, "name" => "a"})
        .await;
    let p2 = source
        .emit_update(users(), row! {"id" => 1, "name" => "b"}, None)
        .await;
    let p3 = source.emit_truncate(users()).await;
    assert_eq!(
        (p1.as_u64(), p2.as_u64(), p3.as_u64()),
        (Some(1), Some(2), Some(3))
    );
    assert_eq!(
        running.next().await,
        Seen::Change(ChangeAction::Insert, 1, Some(1))
    );
    assert_eq!(
        running.next().await,
        Seen::Change(ChangeAction::Update, 2, Some(1))
    );
    assert_eq!(
        running.next().await,
        Seen::Change(ChangeAction::Truncate, 3, None)
    );
    assert!(source.table_rows(&users()).is_empty());
    let beat = source.emit_heartbeat().await;
    assert_eq!(
        running.next().await,
        Seen::Heartbeat(beat.as_u64().unwrap())
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn pause_stops_delivery_until_resume() {
    let source = source();
    let mut running = stream(&source, 0);
    source.pause().await.unwrap();
    let last = source.enqueue([ChangeEvent::insert(
        users(),
        Position::from_u64(0),
        row! {"id" => 1, "name" => "a"},
    )]);
    let delivered = tokio::time::timeout(
        Duration::from_millis(200),
        source.wait_delivered(last.clone()),
    )
    .await;
    assert!(delivered.is_err(), "nothing delivered while paused");
    source.resume().await.unwrap();
    source.wait_delivered(last).await;
    assert_eq!(
        running.next().await,
        Seen::Change(ChangeAction::Insert, 1, Some(1))
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn ack_releases_history_and_resume_continues_after_it() {
    let source = source();
    assert!(!source.supports_resume());
    source.enqueue((1..=5).map(|id| {
        ChangeEvent::insert(
            users(),
            Position::from_u64(0),
            row! {"id" => id, "name" => "x"},
        )
    }));
    source.ack(&Position::from_u64(3)).await.unwrap();
    assert!(source.supports_resume());
    assert_eq!(
        source.last_acked_position().await.unwrap(),
        Some(Position::from_u64(3))
    );
    let mut running = stream(&source, 3);
    assert_eq!(
        running.next().await,
        Seen::Change(ChangeAction::Insert, 4, Some(4))
    );
    assert_eq!(
        running.next().await,
        Seen::Change(ChangeAction::Insert, 5, Some(5))
    );
    running.stop().await.unwrap();

    let err = stream(&source, 1).stop().await;
    let err = match err {
        Err(e) => e,
        Ok(()) => stream(&source, 1).task.await.unwrap().unwrap_err(),
    };
    assert!(err.is_rebaseline_required(), "{err}");
    let bad = source.ack(&Position::from_text("x")).await.unwrap_err();
    assert!(
        bad.to_string().contains("not a test-source position"),
        "{bad}"
    );
    assert_eq!(source.acks(), vec![3]);
}

#[tokio::test]
async fn injected_failures_and_validation() {
    let source = source();
    source.fail_init(Some("down".to_string()));
    assert_eq!(
        source.init(&[users()]).await.unwrap_err().to_string(),
        "down"
    );
    source.fail_init(None);
    let err = source.init(&[table("public", "ghost")]).await.unwrap_err();
    assert!(
        err.to_string().contains("not configured via set_schema"),
        "{err}"
    );
    let problems = source
        .validate_tables(&[users(), table("public", "ghost")])
        .await;
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].code, ValidationError::TABLE_NOT_FOUND);

    source.fail_baseline(Some("snapshot too old".to_string()));
    assert!(
        source
            .baseline(&[users()], &mut Collect(Vec::new()))
            .await
            .is_err()
    );

    let running = stream(&source, 0);
    source.fail_stream(SourceError::msg("connection reset"));
    let result = tokio::time::timeout(WAIT, running.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.unwrap_err().to_string(), "connection reset");
}

#[tokio::test]
async fn schema_changes_stream_in_order() {
    let source = source();
    let mut running = stream(&source, 0);
    source
        .emit_insert(users(), row! {"id" => 1, "name" => "a"})
        .await;
    source
        .add_column(users(), ColumnDefinition::new("email", "text"))
        .await;
    source
        .emit_insert(users(), row! {"id" => 2, "name" => "b", "email" => "b@x"})
        .await;
    assert_eq!(
        running.next().await,
        Seen::Change(ChangeAction::Insert, 1, Some(1))
    );
    assert_eq!(
        running.next().await,
        Seen::Schema(vec!["id".into(), "name".into(), "email".into()])
    );
    assert_eq!(
        running.next().await,
        Seen::Change(ChangeAction::Insert, 3, Some(2))
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_is_delivered_in_order() {
    let source = source();
    let mut running = stream(&source, 0);
    let last = source.enqueue((1..=100_000).map(|id| {
        ChangeEvent::insert(
            users(),
            Position::from_u64(0),
            row! {"id" => id, "name" => "x"},
        )
    }));
    source.wait_delivered(last).await;
    for expected in 1..=100_000u64 {
        match running.next().await {
            Seen::Change(ChangeAction::Insert, position, _) => assert_eq!(position, expected),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(source.table_rows(&users()).len(), 100_000);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn close_ends_the_stream_and_reset_forgets_the_position() {
    let source = source();
    let running = stream(&source, 0);
    source
        .emit_insert(users(), row! {"id" => 1, "name" => "a"})
        .await;
    source.close().await.unwrap();
    tokio::time::timeout(WAIT, running.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    source.ack(&Position::from_u64(1)).await.unwrap();
    source.reset(true).await.unwrap();
    assert_eq!(source.reset_calls(), vec![true]);
    assert_eq!(source.last_acked_position().await.unwrap(), None);
    assert_eq!(
        source.position_from_string("42").unwrap(),
        Position::from_u64(42)
    );
    assert!(source.position_from_string("x").is_err());
}
