//! `RowAccess`, the capability services read the targets through: keys, indexes, pages,
//! and subscriptions that carry each change's position and transaction id.

use std::sync::Arc;

use laredo_core::{
    Change, ChangeAction, IndexError, IndexInfo, PRIMARY_INDEX, Position, Row, RowAccess,
    RowChange, SnapshotTarget, SyncTarget, Value, row,
};
use laredo_target_memory::CompiledTarget;
use parking_lot::Mutex;

use super::support::*;

/// What a subscriber saw: action, old row, new row, and the change's position and
/// transaction id when the write was an applied change.
type Seen = (
    ChangeAction,
    Option<Row>,
    Option<Row>,
    Option<(Position, i64)>,
);

fn seen(change: &RowChange<'_>) -> Seen {
    (
        change.action(),
        change.old.cloned(),
        change.new.cloned(),
        change.change.map(|c| (c.position.clone(), c.xid)),
    )
}

fn subscribe(rows: &dyn RowAccess) -> (Arc<Mutex<Vec<Seen>>>, laredo_core::ListenerHandle) {
    let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let handle = rows
        .subscribe(Arc::new({
            let log = Arc::clone(&log);
            move |change: &RowChange<'_>| log.lock().push(seen(change))
        }))
        .expect("the target reports its changes");
    (log, handle)
}

fn at(n: u64) -> Position {
    Position::from_u64(n)
}

#[tokio::test]
async fn subscribers_learn_the_position_and_transaction_of_each_change_of_a_batch() {
    let target = target().await;
    let (log, _handle) = subscribe(target.rows().unwrap());
    target
        .on_baseline(&t(), &[user(1, "a", "red")])
        .await
        .unwrap();
    target
        .apply(
            &t(),
            &[
                Change::insert(user(2, "b", "red"))
                    .at(at(10))
                    .with_commit(7, None),
                Change::update(user(1, "a2", "blue"), None)
                    .at(at(11))
                    .with_commit(7, None),
                Change::delete(row! {"id" => 2})
                    .at(at(12))
                    .with_commit(8, None),
                Change::delete(row! {"id" => 99})
                    .at(at(13))
                    .with_commit(8, None),
                Change::truncate().at(at(14)).with_commit(9, None),
            ],
        )
        .await
        .unwrap();
    target
        .restore_snapshot(
            &snapshot_info(1, "indexed-memory"),
            vec![laredo_core::SnapshotEntry {
                row: user(3, "c", "red"),
            }],
        )
        .await
        .unwrap();

    assert_eq!(
        *log.lock(),
        vec![
            // Baseline rows and a restore are no applied change.
            (ChangeAction::Insert, None, Some(user(1, "a", "red")), None),
            (
                ChangeAction::Insert,
                None,
                Some(user(2, "b", "red")),
                Some((at(10), 7))
            ),
            (
                ChangeAction::Update,
                Some(user(1, "a", "red")),
                Some(user(1, "a2", "blue")),
                Some((at(11), 7))
            ),
            (
                ChangeAction::Delete,
                Some(user(2, "b", "red")),
                None,
                Some((at(12), 8))
            ),
            // The delete of a missing key changed nothing: not reported.
            (ChangeAction::Truncate, None, None, Some((at(14), 9))),
            (ChangeAction::Truncate, None, None, None),
            (ChangeAction::Insert, None, Some(user(3, "c", "red")), None),
        ]
    );
}

#[tokio::test]
async fn row_access_reads_by_key_and_by_every_index() {
    let target = target().await;
    target
        .on_baseline(
            &t(),
            &[
                user(1, "a", "red"),
                user(2, "b", "red"),
                user(3, "c", "blue"),
            ],
        )
        .await
        .unwrap();
    let rows = target.rows().unwrap();

    assert_eq!(rows.key_fields(), ["id"]);
    assert_eq!(
        rows.indexes(),
        vec![
            IndexInfo::new(PRIMARY_INDEX, vec!["email".into()], true, 3),
            IndexInfo::new("by_team", vec!["team".into()], false, 3),
            IndexInfo::new("by_team_unique", vec!["team".into()], true, 2),
        ]
    );
    assert_eq!(rows.get(&row! {"id" => 2}), Some(user(2, "b", "red")));
    assert_eq!(
        rows.lookup(PRIMARY_INDEX, &[Value::text("c")]),
        Ok(vec![user(3, "c", "blue")])
    );
    assert_eq!(
        by_id(rows.lookup("by_team", &[Value::text("red")]).unwrap()),
        vec![user(1, "a", "red"), user(2, "b", "red")]
    );
    assert_eq!(
        rows.lookup("by_mood", &[Value::text("red")]),
        Err(IndexError::UnknownIndex("by_mood".into()))
    );
    assert_eq!(
        rows.lookup("by_team", &[Value::text("red"), Value::Int64(1)]),
        Err(IndexError::KeyArity {
            index: "by_team".into(),
            expected: 1,
            got: 2
        })
    );
    assert_eq!(rows.count(), 3);
}

#[tokio::test]
async fn row_access_pages_in_key_order_from_the_ordered_index() {
    let target = target().await;
    let batch: Vec<Row> = [5, 1, 4, 2, 3]
        .into_iter()
        .map(|id| user(id, &format!("u{id}"), "red"))
        .collect();
    target.on_baseline(&t(), &batch).await.unwrap();
    let rows = target.rows().unwrap();

    let first = rows.rows_after(None, 2).expect("an ordered index");
    assert_eq!(first, vec![user(1, "u1", "red"), user(2, "u2", "red")]);
    let next = rows
        .rows_after(Some(&[Value::Int64(2)]), 2)
        .expect("an ordered index");
    assert_eq!(next, vec![user(3, "u3", "red"), user(4, "u4", "red")]);
    assert_eq!(
        rows.rows_after(Some(&[Value::Int64(4)]), 2),
        Some(vec![user(5, "u5", "red")])
    );
    assert_eq!(target.rows_read(), 5, "each page read only its own rows");
}

#[derive(Debug)]
struct Account {
    id: i64,
    cents: i64,
}

fn accounts() -> Arc<CompiledTarget<Account>> {
    CompiledTarget::builder(|row: &Row| -> Result<Account, String> {
        Ok(Account {
            id: row.get_i64("id").ok_or("no id")?,
            cents: row.get_i64("cents").ok_or("no cents")?,
        })
    })
    .build()
}

fn account(id: i64, cents: i64) -> Row {
    row! {"id" => id, "cents" => cents, "note" => "raw"}
}

fn shown(id: i64, cents: i64) -> Row {
    row! {"id" => id, "euros" => cents / 100}
}

#[tokio::test]
async fn compiled_objects_read_as_serialized_rows_by_key_only() {
    let target = accounts();
    target
        .on_init(
            &t(),
            &[
                laredo_core::ColumnDefinition::new("id", "int8").primary_key(1),
                laredo_core::ColumnDefinition::new("cents", "int8"),
                laredo_core::ColumnDefinition::new("note", "text"),
            ],
        )
        .await
        .unwrap();
    target
        .on_baseline(&t(), &[account(1, 100), account(2, 250)])
        .await
        .unwrap();
    let view = target.serialized(|a: &Account| shown(a.id, a.cents));
    let (log, _handle) = subscribe(view.as_ref());

    assert_eq!(view.key_fields(), ["id"]);
    assert_eq!(
        view.indexes(),
        vec![IndexInfo::new(PRIMARY_INDEX, vec!["id".into()], true, 2)]
    );
    assert_eq!(view.get(&row! {"id" => 2}), Some(shown(2, 250)));
    assert_eq!(
        view.lookup(PRIMARY_INDEX, &[Value::Int64(1)]),
        Ok(vec![shown(1, 100)])
    );
    assert_eq!(
        view.lookup("by_cents", &[Value::Int64(1)]),
        Err(IndexError::UnknownIndex("by_cents".into()))
    );
    assert_eq!(
        view.lookup(PRIMARY_INDEX, &[]),
        Err(IndexError::KeyArity {
            index: PRIMARY_INDEX.into(),
            expected: 1,
            got: 0
        })
    );
    let mut all = view.scan();
    all.sort_by_key(|r| r.get_i64("id"));
    assert_eq!(all, vec![shown(1, 100), shown(2, 250)]);
    assert_eq!(view.count(), 2);
    assert_eq!(view.rows_after(None, 10), None, "no ordered index");

    target
        .apply(
            &t(),
            &[
                Change::update(account(1, 300), None)
                    .at(at(20))
                    .with_commit(4, None),
                Change::delete(row! {"id" => 2})
                    .at(at(21))
                    .with_commit(5, None),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        *log.lock(),
        vec![
            (
                ChangeAction::Update,
                Some(shown(1, 100)),
                Some(shown(1, 300)),
                Some((at(20), 4))
            ),
            (
                ChangeAction::Delete,
                Some(shown(2, 250)),
                None,
                Some((at(21), 5))
            ),
        ]
    );
    // The target itself still hands the engine its original rows.
    let own = target.rows().unwrap();
    assert_eq!(own.get(&row! {"id" => 1}), Some(account(1, 300)));
    assert_eq!(own.key_fields(), ["id"]);
}

#[tokio::test]
async fn a_target_without_row_access_extras_answers_with_the_defaults() {
    // The in-memory targets override every method; the defaults are what a minimal
    // target (get, count, scan) offers: no key fields, no index, no pages, no stream.
    struct Minimal;
    impl RowAccess for Minimal {
        fn get(&self, _: &Row) -> Option<Row> {
            None
        }
        fn count(&self) -> u64 {
            0
        }
        fn scan(&self) -> Vec<Row> {
            Vec::new()
        }
    }
    let minimal: &dyn RowAccess = &Minimal;
    assert_eq!(minimal.key_fields(), Vec::<String>::new());
    assert_eq!(minimal.indexes(), Vec::new());
    assert_eq!(
        minimal.lookup(PRIMARY_INDEX, &[Value::Int64(1)]),
        Err(IndexError::UnknownIndex(PRIMARY_INDEX.into()))
    );
    assert_eq!(minimal.rows_after(None, 1), None);
    assert!(
        minimal
            .subscribe(Arc::new(|_: &RowChange<'_>| {}))
            .is_none()
    );
}
