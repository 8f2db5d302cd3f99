//! Streaming commands: `watch` and `query subscribe`, stopped with Ctrl-C (SIGINT).

use crate::support::{WAIT, server, user, users};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_state_changes_until_interrupted() {
    let server = server(1).await;
    let mut watch = server.spawn(&["watch"]);
    // Printed once the server has registered the watcher.
    watch
        .stderr_line(|l| l.starts_with("watching http://"))
        .await;

    server.engine.pause("main").await.unwrap();
    let users_id = server.pipeline_id(&users());
    let line = watch
        .stdout_line(|l| l.contains(&format!("Pipeline {users_id}:")))
        .await;
    assert!(
        line.ends_with(&format!("] Pipeline {users_id}: STREAMING → PAUSED")),
        "{line}"
    );
    assert!(line.starts_with('['), "{line}");

    server.engine.resume("main").await.unwrap();
    server.source.emit_insert(users(), user(7)).await;
    let line = watch.stdout_line(|l| l.contains("INSERT")).await;
    assert!(
        line.ends_with(&format!("] INSERT public.users (pipeline={users_id})")),
        "{line}"
    );

    assert_eq!(watch.interrupt().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_json_prints_one_object_per_line() {
    let server = server(1).await;
    let users_id = server.pipeline_id(&users());
    let mut watch = server.spawn(&["watch", "--pipeline", &users_id, "-o", "json"]);
    watch
        .stderr_line(|l| l.starts_with("watching http://"))
        .await;
    server.engine.pause("main").await.unwrap();
    let line = watch
        .stdout_line(|l| l.contains("pipeline_state_change"))
        .await;
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["pipeline_id"], users_id);
    assert_eq!(event["old_state"], "STREAMING");
    assert_eq!(event["new_state"], "PAUSED");
    assert_eq!(watch.interrupt().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_prints_current_rows_then_live_changes() {
    let server = server(2).await;
    let mut subscribe = server.spawn(&["query", "subscribe", "--replay-existing", "public.users"]);
    subscribe
        .stderr_line(|l| l.starts_with("subscribed to public.users"))
        .await;
    subscribe
        .stdout_line(|l| l.starts_with("-- 2 existing rows sent"))
        .await;
    server.source.emit_insert(users(), user(9)).await;
    let line = tokio::time::timeout(WAIT, subscribe.stdout_line(|l| l.contains("id=9")))
        .await
        .unwrap();
    assert!(
        line.ends_with("] INSERT id=9 name=user-9 team=red email=u9@x"),
        "{line}"
    );
    assert_eq!(subscribe.interrupt().await, Some(0));
}
