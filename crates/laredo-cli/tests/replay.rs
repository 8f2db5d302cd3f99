//! `laredo replay`: start a snapshot replay into a pipeline and follow it.

use serde_json::json;

use crate::support::{server, server_with_snapshots, user, users};

/// Takes a snapshot through the engine and returns its id.
async fn snapshot(server: &crate::support::Server) -> String {
    server
        .engine
        .create_snapshot(Default::default())
        .await
        .unwrap()
        .snapshot_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_follows_the_replay_until_it_completes() {
    let server = server_with_snapshots(3).await;
    let snapshot_id = snapshot(&server).await;
    let last = server
        .source
        .emit_delete(users(), laredo_core::row! {"id" => 1})
        .await;
    laredo_test_support::wait_until_async("the delete applied", crate::support::WAIT, || {
        let source = server.source.clone();
        let last = last.clone();
        async move { source.acked_position() >= last.as_u64() }
    })
    .await;
    let target = server
        .engine
        .get_target::<laredo_target_memory::IndexedTarget>("main", &users())
        .unwrap();
    assert!(target.lookup("u1@x").is_none());

    let pipeline = server.pipeline_id(&users());
    let out = server
        .run_admin(&[
            "replay",
            &snapshot_id,
            "--pipeline",
            &pipeline,
            "public.users",
            "-o",
            "json",
        ])
        .await;
    let mut status = out.json();
    let replay_id = status["replay_id"].as_str().unwrap().to_string();
    assert!(
        replay_id.starts_with(&format!("replay-{pipeline}-{snapshot_id}-")),
        "{replay_id}"
    );
    assert!(status["elapsed_seconds"].is_number(), "{status}");
    status["elapsed_seconds"] = json!(null);
    assert_eq!(
        status,
        json!({
            "replay_id": replay_id,
            "state": "COMPLETED",
            "rows_replayed": 3,
            "elapsed_seconds": null,
            "message": "",
        })
    );
    assert!(
        out.stderr.starts_with(&format!(
            "replay {replay_id} started: replaying snapshot {snapshot_id} into pipeline {pipeline}"
        )),
        "{out:#?}"
    );
    assert_eq!(
        target.lookup("u1@x"),
        Some(user(1)),
        "the snapshot's row is back"
    );

    let out = server
        .run_admin(&["replay", &snapshot_id, "--pipeline", &pipeline])
        .await;
    let line = out.ok();
    assert!(
        line.starts_with("replay replay-") && line.contains(": COMPLETED, 3 rows in "),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_stopped_by_ctrl_c() {
    // Realtime replays 1000 rows a second: 3000 rows run for three seconds.
    let server = server_with_snapshots(3000).await;
    let snapshot_id = snapshot(&server).await;
    let pipeline = server.pipeline_id(&users());
    let mut replay = server.spawn(&[
        "replay",
        &snapshot_id,
        "--pipeline",
        &pipeline,
        "--speed",
        "realtime",
        "--token",
        crate::support::TOKEN,
    ]);
    let started = replay.stderr_line(|l| l.starts_with("replay ")).await;
    assert!(started.contains(" started: "), "{started}");
    assert!(started.contains("1000 rows/s"), "{started}");
    let replay_id = started
        .strip_prefix("replay ")
        .and_then(|rest| rest.split_once(' '))
        .map(|(id, _)| id.to_string())
        .unwrap();
    let (code, rest) = replay.interrupt_reading_stderr().await;
    assert_eq!(code, Some(1));
    assert_eq!(rest, [format!("replay {replay_id} stopped")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_without_a_snapshot_store_explains_why() {
    let server = server(1).await;
    let pipeline = server.pipeline_id(&users());
    let out = server
        .run_admin(&["replay", "snap-1", "--pipeline", &pipeline])
        .await;
    assert_eq!(
        out.failed(),
        "error: no snapshot store configured (FAILED_PRECONDITION)\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_an_unknown_snapshot_is_not_found() {
    let server = server_with_snapshots(1).await;
    let pipeline = server.pipeline_id(&users());
    let out = server
        .run_admin(&["replay", "snap-0", "--pipeline", &pipeline])
        .await;
    let stderr = out.failed();
    assert!(
        stderr.starts_with("error: ")
            && stderr.contains("snap-0 not found")
            && stderr.ends_with("(NOT_FOUND)\n"),
        "{stderr}"
    );
}
