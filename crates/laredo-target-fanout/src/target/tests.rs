//! Unit tests of the fan-out target that look inside it: the pace of pruning, journal
//! entries and their schema bookkeeping, snapshot retention, and shared snapshot builds
//! (held back by the target's build gate).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use laredo_core::{
    Change, ChangeAction, Position, Row, SchemaChangeResponse, SnapshotEntry, SnapshotTarget,
    SyncTarget, TableSnapshotInfo,
};
use laredo_core::{row, table};
use laredo_test_support::OneChange;

use super::appends::prune_slack;
use super::snapshots::SNAPSHOT_AGE_CHECK_EVERY;
use super::*;
use crate::journal::EntryKind;

fn columns() -> Vec<ColumnDefinition> {
    vec![
        ColumnDefinition::new("id", "int8").primary_key(1),
        ColumnDefinition::new("name", "text"),
    ]
}

async fn ready(target: &FanoutTarget) {
    let t = table("public", "t");
    target.on_init(&t, &columns()).await.unwrap();
    target
        .on_baseline(&t, &[row! {"id" => 1, "name" => "a"}])
        .await
        .unwrap();
    target
        .on_baseline_complete(&t, Some(&Position::from_u64(10)))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_full_journal_is_pruned_in_steps_and_stays_within_its_slack() {
    let max = 1000;
    let slack = prune_slack(max);
    assert_eq!(slack, 15);
    let target = FanoutTarget::with_config(FanoutConfig::default().journal_max_entries(max));
    ready(&target).await;
    let t = table("public", "t");
    let mut longest = 0;
    let mut pruned_steps = 0;
    let mut previous_oldest = target.oldest_sequence();
    for n in 0..3000_i64 {
        target
            .on_insert(&t, &row! {"id" => n + 2, "name" => "x"})
            .await
            .unwrap();
        longest = longest.max(target.journal_len());
        if target.oldest_sequence() != previous_oldest {
            pruned_steps += 1;
            previous_oldest = target.oldest_sequence();
        }
    }
    assert!(longest <= max + slack, "journal reached {longest} entries");
    assert!(target.journal_len() >= max, "never pruned below the limit");
    // One look at the pins per `slack` appends (or per second), not per append.
    assert!(
        pruned_steps <= 2000 / slack + 10,
        "{pruned_steps} prunes for 2000 appends over the limit"
    );
    assert!(pruned_steps >= 2000 / slack / 2, "{pruned_steps} prunes");
}

#[tokio::test]
async fn the_baseline_is_journaled_and_stamped_with_its_end() {
    let target = FanoutTarget::new();
    ready(&target).await;
    assert!(target.is_ready());
    let entries = target.entries_since(0, 10).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].position, Some(Position::from_u64(10)));
    let snapshots = target.snapshots();
    assert_eq!(snapshots.len(), 1, "initial snapshot");
    assert_eq!(snapshots[0].sequence(), 1);
    assert!(snapshots[0].id().starts_with("fanout-1-"));
}

#[tokio::test]
async fn changes_carry_old_rows_found_by_identity() {
    let target = FanoutTarget::new();
    ready(&target).await;
    let t = table("public", "t");
    let update = Change::update(row! {"id" => 2, "name" => "b"}, Some(row! {"id" => 1}));
    let delete = Change::delete(row! {"id" => 2});
    target
        .apply(
            &t,
            &[
                update.at(Position::from_u64(11)),
                delete.at(Position::from_u64(12)),
            ],
        )
        .await
        .unwrap();
    let entries = target.entries_since(1, 10).unwrap();
    let kinds: Vec<&EntryKind> = entries.iter().map(|e| &e.kind).collect();
    assert_eq!(
        kinds,
        [
            &EntryKind::Change {
                action: ChangeAction::Update,
                old_values: Some(row! {"id" => 1, "name" => "a"}),
                new_values: Some(row! {"id" => 2, "name" => "b"}),
            },
            &EntryKind::Change {
                action: ChangeAction::Delete,
                old_values: Some(row! {"id" => 2, "name" => "b"}),
                new_values: None,
            },
        ]
    );
    assert_eq!(entries[1].position, Some(Position::from_u64(12)));
    assert_eq!(target.row_count(), 0);
}

#[tokio::test]
async fn snapshot_retention_keeps_the_newest() {
    let target = FanoutTarget::with_config(FanoutConfig::default().snapshot_keep_count(2));
    ready(&target).await;
    let t = table("public", "t");
    for id in 2..6 {
        target.on_insert(&t, &row! {"id" => id}).await.unwrap();
        target.take_snapshot();
    }
    let sequences: Vec<u64> = target.snapshots().iter().map(|s| s.sequence()).collect();
    assert_eq!(sequences, [5, 4]);
}

#[tokio::test]
async fn a_schema_change_is_journaled_and_continues() {
    let target = FanoutTarget::new();
    ready(&target).await;
    let t = table("public", "t");
    let mut new_columns = columns();
    new_columns.push(ColumnDefinition::new("age", "int8"));
    let response = target.on_schema_change(&t, &columns(), &new_columns).await;
    assert_eq!(response, SchemaChangeResponse::proceed());
    let entries = target.entries_since(1, 10).unwrap();
    assert!(matches!(&entries[0].kind, EntryKind::Schema { new_columns: c, .. } if c.len() == 3));
    assert_eq!(target.columns(), new_columns);
}

#[tokio::test]
async fn initialising_a_live_target_with_other_columns_journals_the_change() {
    let target = FanoutTarget::new();
    ready(&target).await;
    let t = table("public", "t");
    // The same columns again (a restart of the pipeline): nothing to journal.
    target.on_init(&t, &columns()).await.unwrap();
    assert_eq!(target.entries_since(1, 10).unwrap().len(), 0);
    // Other columns (a re-baseline after the table changed): rows after this
    // follow them, so streams must get the change in sequence order.
    let mut new_columns = columns();
    new_columns.push(ColumnDefinition::new("age", "int8"));
    target.on_init(&t, &new_columns).await.unwrap();
    target
        .on_insert(&t, &row! {"id" => 5, "name" => "e", "age" => 3})
        .await
        .unwrap();
    let entries = target.entries_since(1, 10).unwrap();
    assert!(
        matches!(&entries[0].kind, EntryKind::Schema { old_columns, new_columns: c, .. }
            if old_columns == &columns() && c == &new_columns),
        "{entries:?}"
    );
    // The insert is a full row of the new columns: COMPACT sends it positionally.
    assert!(entries[1].shape.new_full);
    assert_eq!(target.columns(), new_columns);
    assert_eq!(target.subscribe_head().borrow().to_owned(), 3);
}

#[tokio::test]
async fn rows_between_a_reinit_and_the_sources_schema_change_follow_the_targets_columns() {
    // The engine may initialise the target with new columns before the source's
    // schema change reaches it; the rows in between follow the new columns, and a
    // COMPACT stream resuming among them must be told those, not the source's old
    // ones (same length: a mix-up would decode without an error).
    let target = FanoutTarget::new();
    ready(&target).await;
    let t = table("public", "t");
    let renamed = vec![
        ColumnDefinition::new("id", "int8").primary_key(1),
        ColumnDefinition::new("title", "text"),
    ];
    target.on_init(&t, &renamed).await.unwrap();
    target
        .apply_at(
            &t,
            Change::insert(row! {"id" => 5, "title" => "e"}),
            Position::from_u64(11),
        )
        .await
        .unwrap();
    target.on_schema_change(&t, &columns(), &renamed).await;
    target
        .apply_at(
            &t,
            Change::insert(row! {"id" => 6, "title" => "f"}),
            Position::from_u64(13),
        )
        .await
        .unwrap();
    let entries = target.entries_since(1, 10).unwrap();
    assert_eq!(entries.len(), 4);
    // The re-init's entry takes the journal's position: resuming by position
    // across it still works.
    assert_eq!(entries[0].position, Some(Position::from_u64(10)));
    assert!(entries[1].shape.new_full && entries[3].shape.new_full);
    {
        let journal = &target.state.read().journal;
        assert_eq!(journal.columns_after(1), Some(columns().as_slice()));
        assert_eq!(journal.columns_after(2), Some(renamed.as_slice()));
        assert_eq!(journal.columns_after(3), Some(renamed.as_slice()));
        assert_eq!(journal.columns_after(4), None);
    }
    // Metadata alone (nullability here) is no schema change.
    let mut relaxed = renamed.clone();
    relaxed[1].nullable = !relaxed[1].nullable;
    target.on_init(&t, &relaxed).await.unwrap();
    assert_eq!(target.entries_since(1, 10).unwrap().len(), 4);
    assert_eq!(target.columns(), relaxed);
}

#[tokio::test]
async fn schema_bookkeeping_follows_pruning_and_reseeding() {
    let target = FanoutTarget::with_config(FanoutConfig::default().journal_max_entries(2));
    ready(&target).await;
    let t = table("public", "t");
    let mut wider = columns();
    wider.push(ColumnDefinition::new("age", "int8"));
    target.on_schema_change(&t, &columns(), &wider).await;
    assert_eq!(
        target.state.read().journal.columns_after(1),
        Some(columns().as_slice())
    );
    for id in 2..10 {
        target
            .on_insert(&t, &row! {"id" => id, "name" => "x", "age" => id})
            .await
            .unwrap();
    }
    // The schema entry was pruned with the entries around it.
    assert!(target.oldest_sequence() > 2);
    assert_eq!(target.state.read().journal.columns_after(1), None);
    target.on_schema_change(&t, &wider, &columns()).await;
    assert!(target.state.read().journal.columns_after(2).is_some());
    target
        .restore_snapshot(
            &TableSnapshotInfo {
                table: t.clone(),
                row_count: 1,
                columns: columns(),
                target_type: TYPE_NAME.to_string(),
                indexes: Vec::new(),
            },
            vec![SnapshotEntry {
                row: row! {"id" => 1, "name" => "a"},
            }],
        )
        .await
        .unwrap();
    assert_eq!(target.state.read().journal.columns_after(0), None);
}

fn full_snapshot_request(client_id: &str) -> OpenRequest<'static> {
    fn compare(a: &Position, b: &Position) -> std::cmp::Ordering {
        a.as_u64().cmp(&b.as_u64())
    }
    OpenRequest {
        client_id: client_id.to_string(),
        last_known_sequence: 0,
        last_known_position: None,
        last_snapshot_id: "",
        filters: Vec::new(),
        compare: &compare,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_opening_during_a_snapshot_build_share_it() {
    let target = FanoutTarget::new();
    ready(&target).await;
    let t = table("public", "t");
    // More changes than rows: the baseline's snapshot is not reused.
    for id in 2..6 {
        target.on_insert(&t, &row! {"id" => id}).await.unwrap();
    }
    let taken = target.snapshots_taken();
    let (release, gate) = std::sync::mpsc::channel();
    *target.build_gate.lock() = Some(gate);
    let mut opening = Vec::new();
    for n in 0..20 {
        let target = Arc::clone(&target);
        opening.push(tokio::spawn(async move {
            target
                .open(full_snapshot_request(&format!("c{n}")))
                .await
                .map_err(|_| "refused")
        }));
    }
    laredo_test_support::wait_until("every stream waits", Duration::from_secs(10), || {
        target.client_count() == 20
    })
    .await;
    // Changes while the build waits: they land before its copy, which takes them.
    for id in 6..9 {
        target.on_insert(&t, &row! {"id" => id}).await.unwrap();
    }
    assert!(
        target.state.read().building.is_some(),
        "one build in flight"
    );
    release.send(()).unwrap();
    let mut ids = std::collections::HashSet::new();
    for opening in opening {
        let opened = opening.await.unwrap().unwrap();
        let snapshot = opened.snapshot.clone().unwrap();
        assert_eq!(snapshot.sequence(), target.current_sequence());
        assert_eq!(opened.resume_from, snapshot.sequence());
        assert_eq!(opened.guard.record.sequence(), snapshot.sequence());
        assert_eq!(snapshot.rows().len(), 8);
        ids.insert(snapshot.id().to_string());
    }
    assert_eq!(ids.len(), 1, "one snapshot for every stream: {ids:?}");
    assert_eq!(target.snapshots_taken(), taken + 1, "one build");
    assert!(target.state.read().building.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_pins_the_journal_after_its_floor() {
    let target = FanoutTarget::with_config(FanoutConfig::default().journal_max_entries(2));
    ready(&target).await;
    let t = table("public", "t");
    for id in 2..6 {
        target.on_insert(&t, &row! {"id" => id}).await.unwrap();
    }
    let (release, gate) = std::sync::mpsc::channel();
    *target.build_gate.lock() = Some(gate);
    let opening = {
        let target = Arc::clone(&target);
        tokio::spawn(async move {
            let opened = target.open(full_snapshot_request("c")).await;
            opened.map(|o| o.resume_from).map_err(|_| "refused")
        })
    };
    laredo_test_support::wait_until("the stream waits", Duration::from_secs(10), || {
        target.client_count() == 1
    })
    .await;
    let floor = target.current_sequence();
    for id in 6..20 {
        target.on_insert(&t, &row! {"id" => id}).await.unwrap();
    }
    assert!(
        target.oldest_sequence() <= floor + 1,
        "entries after the floor ({floor}) kept, oldest {}",
        target.oldest_sequence()
    );
    release.send(()).unwrap();
    assert_eq!(opening.await.unwrap(), Ok(target.current_sequence()));
}

#[tokio::test]
async fn a_full_snapshot_stream_reuses_the_newest_snapshot_while_catching_up_is_cheaper() {
    let target = FanoutTarget::new();
    let t = table("public", "t");
    target.on_init(&t, &columns()).await.unwrap();
    let rows: Vec<Row> = (1..=10)
        .map(|id| row! {"id" => id, "name" => "a"})
        .collect();
    target.on_baseline(&t, &rows).await.unwrap();
    target.on_baseline_complete(&t, None).await.unwrap();
    let baseline = target.snapshots()[0].clone();
    for id in 11..=20 {
        target.on_insert(&t, &row! {"id" => id}).await.unwrap();
    }
    let opened = target.open(full_snapshot_request("a")).await.ok().unwrap();
    assert_eq!(
        opened.snapshot.unwrap().id(),
        baseline.id(),
        "10 behind, 10 rows"
    );
    assert_eq!(opened.resume_from, baseline.sequence());
    target.on_insert(&t, &row! {"id" => 21}).await.unwrap();
    let opened = target.open(full_snapshot_request("b")).await.ok().unwrap();
    let snapshot = opened.snapshot.unwrap();
    assert_eq!(
        snapshot.sequence(),
        target.current_sequence(),
        "11 behind: rebuilt"
    );
    assert_eq!(snapshot.rows().len(), 21);
}

#[tokio::test]
async fn snapshot_retention_keeps_three_by_default() {
    let target = FanoutTarget::new();
    ready(&target).await;
    let t = table("public", "t");
    for id in 2..8 {
        target.on_insert(&t, &row! {"id" => id}).await.unwrap();
        target.take_snapshot();
    }
    let sequences: Vec<u64> = target.snapshots().iter().map(|s| s.sequence()).collect();
    assert_eq!(sequences, [7, 6, 5]);
}

/// Makes every held snapshot but the newest `age` old.
fn age_snapshots(target: &FanoutTarget, age: Duration) {
    let mut state = target.state.write();
    let newest = state.snapshots.front().map(|s| s.sequence);
    for snapshot in &mut state.snapshots {
        if Some(snapshot.sequence) == newest {
            continue;
        }
        let old = FanoutSnapshot {
            id: snapshot.id.clone(),
            sequence: snapshot.sequence,
            position: snapshot.position.clone(),
            created_at: SystemTime::now() - age,
            columns: snapshot.columns.clone(),
            rows: snapshot.rows.clone(),
            size_bytes: snapshot.size_bytes,
        };
        *snapshot = Arc::new(old);
    }
}

#[tokio::test]
async fn snapshots_older_than_a_day_are_dropped_by_default_as_changes_arrive() {
    let target = FanoutTarget::new();
    ready(&target).await;
    let t = table("public", "t");
    target.on_insert(&t, &row! {"id" => 2}).await.unwrap();
    target.take_snapshot();
    assert_eq!(target.snapshots().len(), 2);
    age_snapshots(&target, Duration::from_secs(25 * 3600));
    // No snapshot is taken: the changes alone drop the old one.
    for id in 3..(3 + SNAPSHOT_AGE_CHECK_EVERY as i64) {
        target.on_insert(&t, &row! {"id" => id}).await.unwrap();
    }
    let sequences: Vec<u64> = target.snapshots().iter().map(|s| s.sequence()).collect();
    assert_eq!(sequences, [2], "the day-old baseline snapshot is gone");
}

#[tokio::test]
async fn drain_is_idempotent() {
    let target = FanoutTarget::new();
    assert!(target.drain(DrainReason::Admin, None));
    assert!(!target.drain(DrainReason::Shutdown, Some(Duration::from_secs(1))));
    let info = target.drain_info().unwrap();
    assert_eq!((info.reason, info.deadline), (DrainReason::Admin, None));
}
