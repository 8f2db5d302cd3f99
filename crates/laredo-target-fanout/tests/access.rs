//! The fan-out target through laredo-core's capabilities, as services see it without
//! knowing its type: row access (keys and change streams) and fan-out control
//! (clients, drain).

use std::sync::Arc;

use laredo_core::{
    Change, ChangeAction, ColumnDefinition, DrainReason, Position, Row, RowChange, SnapshotEntry,
    SnapshotTarget, SyncTarget, TableSnapshotInfo, row,
};
use laredo_target_fanout::{FanoutConfig, FanoutTarget};
use laredo_test_support::wait_until;
use parking_lot::Mutex;

use crate::fixture::{Replica, Server, WAIT, item, items, sync_request};

/// What a row listener saw: action, old row, new row, and the applied change's
/// position and transaction id when there was one.
type Seen = (
    ChangeAction,
    Option<Row>,
    Option<Row>,
    Option<(Position, i64)>,
);

fn columns() -> Vec<ColumnDefinition> {
    vec![
        ColumnDefinition::new("id", "int8").primary_key(1),
        ColumnDefinition::new("name", "text"),
    ]
}

fn named(id: i64, name: &str) -> Row {
    row! {"id" => id, "name" => name}
}

fn at(n: u64) -> Position {
    Position::from_u64(n)
}

#[tokio::test]
async fn row_listeners_hear_each_change_with_its_position_and_transaction() {
    let target = FanoutTarget::new();
    let t = items();
    target.on_init(&t, &columns()).await.unwrap();
    // `rows()` of the capability, not the inherent copy of the rows.
    let rows = SyncTarget::rows(target.as_ref()).expect("row access");
    assert_eq!(rows.key_fields(), ["id"]);
    let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let handle = rows
        .subscribe(Arc::new({
            let log = Arc::clone(&log);
            move |change: &RowChange<'_>| {
                log.lock().push((
                    change.action(),
                    change.old.cloned(),
                    change.new.cloned(),
                    change.change.map(|c| (c.position.clone(), c.xid)),
                ));
            }
        }))
        .expect("the fan-out target reports its changes");

    target
        .on_baseline(&t, &[named(1, "a"), named(2, "b")])
        .await
        .unwrap();
    target.on_baseline_complete(&t, Some(&at(5))).await.unwrap();
    target
        .apply(
            &t,
            &[
                Change::insert(named(3, "c"))
                    .at(at(6))
                    .with_commit(40, None),
                // Moves row 1 onto key 2, which a row held: that one goes first.
                Change::update(named(2, "a-moved"), Some(row! {"id" => 1}))
                    .at(at(7))
                    .with_commit(41, None),
                Change::delete(row! {"id" => 3})
                    .at(at(8))
                    .with_commit(42, None),
                Change::delete(row! {"id" => 99})
                    .at(at(9))
                    .with_commit(42, None),
                Change::truncate().at(at(10)).with_commit(43, None),
                Change::insert(named(4, "d"))
                    .at(at(11))
                    .with_commit(44, None),
            ],
        )
        .await
        .unwrap();
    target
        .restore_snapshot(
            &TableSnapshotInfo {
                table: t.clone(),
                row_count: 1,
                columns: columns(),
                target_type: "replication-fanout".into(),
                indexes: Vec::new(),
            },
            vec![SnapshotEntry { row: named(5, "e") }],
        )
        .await
        .unwrap();

    assert_eq!(
        *log.lock(),
        vec![
            (ChangeAction::Insert, None, Some(named(1, "a")), None),
            (ChangeAction::Insert, None, Some(named(2, "b")), None),
            (
                ChangeAction::Insert,
                None,
                Some(named(3, "c")),
                Some((at(6), 40))
            ),
            (
                ChangeAction::Delete,
                Some(named(2, "b")),
                None,
                Some((at(7), 41))
            ),
            (
                ChangeAction::Update,
                Some(named(1, "a")),
                Some(named(2, "a-moved")),
                Some((at(7), 41))
            ),
            (
                ChangeAction::Delete,
                Some(named(3, "c")),
                None,
                Some((at(8), 42))
            ),
            // The delete of key 99 changed no row: not reported.
            (ChangeAction::Truncate, None, None, Some((at(10), 43))),
            (
                ChangeAction::Insert,
                None,
                Some(named(4, "d")),
                Some((at(11), 44))
            ),
            // A restore: every row goes, then the snapshot's rows arrive.
            (ChangeAction::Truncate, None, None, None),
            (ChangeAction::Insert, None, Some(named(5, "e")), None),
        ]
    );

    // Closing removes the listeners: nothing more is heard, the rows stay.
    target.on_close(&t).await.unwrap();
    target
        .apply(&t, &[Change::insert(named(6, "f")).at(at(12))])
        .await
        .unwrap();
    assert_eq!(log.lock().len(), 10);
    assert_eq!(rows.get(&row! {"id" => 6}), Some(named(6, "f")));
    drop(handle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fanout_capability_counts_clients_and_drains_them() {
    let server = Server::start(FanoutConfig::default(), [item(1, "eu", 1)]).await;
    let target = server
        .engine
        .pipeline_target(&server.engine.pipelines()[0].id)
        .expect("the pipeline's target");
    let fanout = target.fanout().expect("the fan-out capability");
    assert_eq!((fanout.client_count(), fanout.is_draining()), (0, false));

    let client = server.client().await;
    let replica = Replica::start(&client, sync_request("watcher")).await;
    replica.wait_caught_up().await;
    assert_eq!(fanout.client_count(), 1);

    assert!(
        fanout.drain(DrainReason::Admin, None),
        "the first drain starts"
    );
    assert!(
        !fanout.drain(DrainReason::Shutdown, None),
        "a second one changes nothing"
    );
    assert!(fanout.is_draining());
    let drain = server.target.drain_info().expect("draining");
    assert_eq!((drain.reason, drain.deadline), (DrainReason::Admin, None));
    wait_until("the replica was told to leave", WAIT, || {
        !replica.snapshot().go_aways.is_empty()
    })
    .await;
    let go_aways = replica.snapshot().go_aways;
    assert_eq!(go_aways.len(), 1, "{go_aways:?}");
    assert_eq!(
        go_aways[0].reason(),
        laredo_proto::laredo::replication::v1::GoAwayReason::Admin
    );
}
