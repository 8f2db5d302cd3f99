//! Admin commands: the token, reload, pause and resume, dead letters, snapshots.

use laredo_core::PipelineState;
use serde_json::json;

use crate::support::{TOKEN, WAIT, server, users};

fn states(server: &crate::support::Server) -> Vec<PipelineState> {
    server
        .engine
        .pipelines()
        .into_iter()
        .map(|p| p.state)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_command_without_the_admin_token_is_refused() {
    let server = server(1).await;
    let out = server.run_anonymous(&["pause"]).await;
    assert_eq!(
        out.failed(),
        "error: /laredo.v1.LaredoOAMService/PauseSync is an admin method: send the admin token as \"authorization: Bearer <token>\" (UNAUTHENTICATED)\n\
         hint: no token was sent: pass one with --token or LAREDO_TOKEN (a read token suffices for reads)\n"
    );
    assert_eq!(states(&server), [PipelineState::Streaming; 2]);

    let read = server.run(&["pause"]).await;
    assert_eq!(
        read.failed(),
        "error: /laredo.v1.LaredoOAMService/PauseSync is an admin method: the token has the read role only (PERMISSION_DENIED)\n\
         hint: this command needs an admin token: pass one with --token or LAREDO_TOKEN\n"
    );
    assert_eq!(states(&server), [PipelineState::Streaming; 2]);

    let wrong = server.run(&["pause", "--token", "wrong"]).await;
    assert_eq!(
        wrong.failed(),
        "error: /laredo.v1.LaredoOAMService/PauseSync is an admin method: the bearer token is not an admin token (UNAUTHENTICATED)\n\
         hint: the server does not accept the token from --token or LAREDO_TOKEN for this call\n"
    );
    assert_eq!(states(&server), [PipelineState::Streaming; 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_can_come_from_the_environment() {
    let server = server(1).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_laredo"))
        .args(["pause", "-a", &server.addr.to_string()])
        .env("LAREDO_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(states(&server), [PipelineState::Paused; 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_change_every_pipeline() {
    let server = server(1).await;
    assert_eq!(
        server.run_admin(&["pause"]).await.ok(),
        "Sync paused. WAL is accumulating. Service: PAUSED\n"
    );
    assert_eq!(states(&server), [PipelineState::Paused; 2]);

    let resumed = server
        .run_admin(&["resume", "--source", "main", "-o", "json"])
        .await
        .json();
    assert_eq!(resumed, json!({"state": "STREAMING"}));
    assert_eq!(states(&server), [PipelineState::Streaming; 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_follows_a_fresh_baseline_of_the_table_to_its_end() {
    let server = server(2).await;
    let before = server.source.baseline_calls();
    let users_id = server.pipeline_id(&users());
    let out = server.run_admin(&["reload", "public.users"]).await;
    assert_eq!(
        out.ok(),
        format!(
            "accepted: reload started for public.users on source main\n\
             reloaded {users_id}: STREAMING, 2 rows\n"
        )
    );
    assert_eq!(
        server.source.baseline_calls(),
        before + 1,
        "the command returned after the reload's baseline"
    );
    assert!(server.engine.is_ready());

    let json = server
        .run_admin(&["reload", "users", "--source", "main", "-o", "json"])
        .await
        .json();
    assert_eq!(
        json,
        json!({
            "accepted": true,
            "message": "reload started for public.users on source main",
            "pipelines": [{"pipeline_id": users_id, "state": "STREAMING", "row_count": 2}],
        })
    );
    assert_eq!(server.source.baseline_calls(), before + 2);

    let json = server
        .run_admin(&["reload", "--all", "-o", "json"])
        .await
        .json();
    assert_eq!(json["accepted"], true);
    assert_eq!(json["message"], "reload started for every table");
    let pipelines = json["pipelines"].as_array().unwrap();
    assert_eq!(pipelines.len(), 2, "both tables' pipelines: {json}");
    assert!(
        pipelines.iter().all(|p| p["state"] == "STREAMING"),
        "{json}"
    );
    assert_eq!(
        server.source.baseline_calls(),
        before + 4,
        "the command returned after both tables' baselines"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_no_wait_returns_once_accepted() {
    let server = server(2).await;
    let before = server.source.baseline_calls();
    let out = server
        .run_admin(&["reload", "public.users", "--no-wait"])
        .await;
    assert_eq!(
        out.ok(),
        "accepted: reload started for public.users on source main\n"
    );
    laredo_test_support::wait_until("the reload ran", WAIT, || {
        server.source.baseline_calls() > before && server.engine.is_ready()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_of_an_unknown_table_is_not_found() {
    let server = server(1).await;
    let out = server.run_admin(&["reload", "public.nope"]).await;
    assert_eq!(
        out.failed(),
        "error: no pipeline serves table public.nope (NOT_FOUND)\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_list_replay_and_purge_an_empty_store() {
    let server = server(1).await;
    let id = server.pipeline_id(&users());
    assert_eq!(
        server.run(&["dead-letters", &id]).await.ok(),
        "TIMESTAMP  ACTION  POSITION  ERROR\nShowing 0 of 0 dead letters\n"
    );
    assert_eq!(
        server
            .run(&["dead-letters", &id, "-o", "json"])
            .await
            .json(),
        json!({"total_count": 0, "entries": []})
    );
    assert_eq!(
        server
            .run_admin(&["dead-letters", "replay", &id])
            .await
            .ok(),
        "replayed 0, succeeded 0, failed 0\n"
    );
    assert_eq!(
        server
            .run_admin(&["dead-letters", "purge", &id, "-o", "json"])
            .await
            .json(),
        json!({"purged": 0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_without_a_store_explain_why() {
    let server = server(1).await;
    let out = server.run(&["snapshot", "list"]).await;
    assert_eq!(
        out.failed(),
        "error: no snapshot store configured (FAILED_PRECONDITION)\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_source_needs_confirmation_without_a_terminal() {
    let server = server(1).await;
    let before = server.source.reset_calls().len();
    let out = server.run_admin(&["reset-source", "main"]).await;
    assert!(
        out.failed().contains("pass --confirm to proceed"),
        "{out:#?}"
    );
    assert_eq!(server.source.reset_calls().len(), before);

    let out = server.run_admin(&["reset-source", "main", "--yes"]).await;
    assert_eq!(out.ok(), "source \"main\" reset; a fresh baseline runs\n");
    assert_eq!(server.source.reset_calls(), [false]);
}
