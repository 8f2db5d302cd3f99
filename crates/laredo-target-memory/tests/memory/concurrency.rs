//! Readers on several threads while the writer applies changes: every read sees the
//! rows and the indexes agree.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use laredo_core::{Row, row};
use laredo_target_memory::IndexedTarget;
use laredo_test_support::OneChange;

use super::support::*;

const CHANGES: i64 = 100_000;
const IDS: i64 = 500;
const TEAMS: [&str; 3] = ["t0", "t1", "t2"];

/// The row change `n` writes: the version grows with every change, the email and the
/// team move around.
fn versioned(n: i64) -> Row {
    let id = n % IDS;
    row! {
        "id" => id,
        "email" => format!("{id}.{}@x", n % 2),
        "team" => TEAMS[(n % 3) as usize],
        "version" => n,
    }
}

/// Checks, within each read and across reads, that the indexes match the rows.
fn check_reads(target: &IndexedTarget) -> u64 {
    let mut checks = 0;
    for team in TEAMS {
        for found in target.lookup_all("by_team", team).unwrap() {
            assert_eq!(found.get_str("team"), Some(team), "index and row agree");
            let id = found.get_i64("id").unwrap();
            let version = found.get_i64("version").unwrap();
            // A later read sees the same row, a newer version of it, or its delete.
            if let Some(later) = target.get(id) {
                let later_version = later.get_i64("version").unwrap();
                assert!(
                    later_version >= version,
                    "{later:?} is older than {found:?}"
                );
                if later_version == version {
                    assert_eq!(later, found, "one version, one content");
                }
            }
            let email = found.get_str("email").unwrap().to_string();
            if let Some(by_email) = target.lookup(email.as_str()) {
                assert_eq!(by_email.get_str("email"), Some(email.as_str()));
                assert_eq!(by_email.get_i64("id"), Some(id), "emails belong to one id");
            }
            checks += 1;
        }
    }
    // One read lock: every index holds one entry per row (emails are unique).
    let counts: Vec<usize> = target.indexes().iter().map(|i| i.entry_count).collect();
    assert_eq!(
        counts[0], counts[1],
        "lookup and by_team indexes: {counts:?}"
    );
    let all = target.all();
    let mut ids: Vec<i64> = all.iter().map(|r| r.get_i64("id").unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "one row per primary key");
    checks
}

#[test]
fn readers_always_see_rows_and_indexes_agree() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let target = runtime.block_on(target());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (target, done) = (Arc::clone(&target), Arc::clone(&done));
            std::thread::spawn(move || {
                let (mut rounds, mut checks) = (0u64, 0u64);
                // At least a few rounds after the writer finished, however they ran.
                while !done.load(Ordering::SeqCst) || rounds < 20 {
                    checks += check_reads(&target);
                    rounds += 1;
                }
                checks
            })
        })
        .collect();

    let mut model: HashMap<i64, Row> = HashMap::new();
    runtime.block_on(async {
        for n in 0..CHANGES {
            let row = versioned(n);
            let id = n % IDS;
            if n % 7 == 0 {
                target.on_delete(&t(), &row! {"id" => id}).await.unwrap();
                model.remove(&id);
            } else if n % 2 == 0 {
                target
                    .on_update(&t(), &row, Some(&row! {"id" => id}))
                    .await
                    .unwrap();
                model.insert(id, row);
            } else {
                target.on_insert(&t(), &row).await.unwrap();
                model.insert(id, row);
            }
        }
    });
    done.store(true, Ordering::SeqCst);
    let checks: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(checks > 0, "the readers found rows");

    let mut expected: Vec<Row> = model.into_values().collect();
    expected.sort_by_key(|r| r.get_i64("id"));
    assert_eq!(by_id(target.all()), expected);
    for team in TEAMS {
        let in_team: Vec<Row> = expected
            .iter()
            .filter(|r| r.get_str("team") == Some(team))
            .cloned()
            .collect();
        assert_eq!(by_id(target.lookup_all("by_team", team).unwrap()), in_team);
    }
}
