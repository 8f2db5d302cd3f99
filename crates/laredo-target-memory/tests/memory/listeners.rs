//! Listener order, unsubscription, and reading the target from a listener.

use std::sync::Arc;

use laredo_core::{SyncTarget, row};
use laredo_test_support::OneChange;
use parking_lot::Mutex;

use super::support::*;

#[tokio::test]
async fn listeners_hear_every_change_in_order_in_registration_order() {
    let target = target().await;
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let handles: Vec<_> = ["first", "second"]
        .into_iter()
        .map(|name| {
            let log = Arc::clone(&log);
            target.listen(move |old, new| {
                let id = |r: Option<&laredo_core::Row>| r.and_then(|r| r.get_i64("id"));
                log.lock()
                    .push(format!("{name} {:?}->{:?}", id(old), id(new)));
            })
        })
        .collect();
    target.on_insert(&t(), &user(1, "a", "red")).await.unwrap();
    target
        .on_update(&t(), &user(2, "a", "red"), Some(&row! {"id" => 1}))
        .await
        .unwrap();
    target.on_delete(&t(), &row! {"id" => 2}).await.unwrap();
    target.on_truncate(&t()).await.unwrap();

    assert_eq!(
        *log.lock(),
        vec![
            "first None->Some(1)",
            "second None->Some(1)",
            "first Some(1)->Some(2)",
            "second Some(1)->Some(2)",
            "first Some(2)->None",
            "second Some(2)->None",
            "first None->None",
            "second None->None",
        ]
    );
    drop(handles);
}

#[tokio::test]
async fn unsubscribe_and_drop_remove_the_listener_and_forget_keeps_it() {
    let target = target().await;
    let (unsubscribed, handle) = record(&target);
    handle.unsubscribe();
    let (dropped, handle) = record(&target);
    drop(handle);
    let (forgotten, handle) = record(&target);
    handle.forget();
    let (kept, _handle) = record(&target);
    target.on_insert(&t(), &user(1, "a", "red")).await.unwrap();

    assert_eq!(unsubscribed.lock().len(), 0);
    assert_eq!(dropped.lock().len(), 0);
    assert_eq!(*forgotten.lock(), vec![(None, Some(user(1, "a", "red")))]);
    assert_eq!(*kept.lock(), vec![(None, Some(user(1, "a", "red")))]);
}

#[tokio::test]
async fn on_close_removes_every_listener() {
    let target = target().await;
    let (events, _handle) = record(&target);
    target.on_close(&t()).await.unwrap();
    target.on_insert(&t(), &user(1, "a", "red")).await.unwrap();
    assert_eq!(events.lock().len(), 0);
    assert_eq!(
        target.get(1),
        Some(user(1, "a", "red")),
        "rows stay readable"
    );
}

#[tokio::test]
async fn a_listener_reads_the_target_and_sees_the_change() {
    let target = target().await;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let _handle = target.listen({
        // A weak reference: the target owns its listeners.
        let (target, seen) = (Arc::downgrade(&target), Arc::clone(&seen));
        move |old, new| {
            let target = target.upgrade().unwrap();
            let get = |r: &laredo_core::Row| target.get(r.get_i64("id").unwrap());
            // The change itself is visible: the new row is stored, the deleted one gone.
            let visible = match (old, new) {
                (_, Some(new)) => get(new).as_ref() == Some(new),
                (Some(old), None) => get(old).is_none(),
                (None, None) => target.count() == 0,
            };
            let red = target.lookup_all("by_team", "red").unwrap().len();
            seen.lock().push(format!(
                "count {} rows {} red {red} visible {visible}",
                target.count(),
                target.all().len(),
            ));
        }
    });
    target.on_insert(&t(), &user(1, "a", "red")).await.unwrap();
    target.on_insert(&t(), &user(2, "b", "red")).await.unwrap();
    target.on_delete(&t(), &row! {"id" => 1}).await.unwrap();

    assert_eq!(
        *seen.lock(),
        vec![
            "count 1 rows 1 red 1 visible true",
            "count 2 rows 2 red 2 visible true",
            "count 1 rows 1 red 1 visible true",
        ]
    );
}

#[tokio::test]
async fn a_batch_is_reported_once_all_of_it_is_visible() {
    let target = target().await;
    let counts: Arc<Mutex<Vec<usize>>> = Arc::default();
    let _handle = target.listen({
        let (target, counts) = (Arc::downgrade(&target), Arc::clone(&counts));
        move |_, _| counts.lock().push(target.upgrade().unwrap().count())
    });
    let batch: Vec<_> = (0..3).map(|id| user(id, &format!("{id}"), "red")).collect();
    target.on_baseline(&t(), &batch).await.unwrap();
    assert_eq!(*counts.lock(), vec![3, 3, 3]);
}
