//! Read-only OAM commands: status, pipelines, tables, schema, source, ready.

use serde_json::json;

use crate::support::{orders, serve, server, test_source, users};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_the_service_sources_and_pipelines() {
    let server = server(3).await;
    let out = server.run(&["status"]).await;
    let text = out.ok();
    assert!(text.starts_with("Service:     STREAMING\n"), "{text}");
    let users_id = server.pipeline_id(&users());
    let line = text
        .lines()
        .find(|l| l.starts_with(&users_id))
        .unwrap_or_else(|| panic!("no line for {users_id}: {text}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells[1..3], ["STREAMING", "3"], "{line}");
    assert!(
        text.contains("\nmain    test  STREAMING"),
        "source line missing: {text}"
    );
    assert!(text.ends_with("Snapshots: disabled\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_has_every_pipeline_with_its_counts() {
    let server = server(3).await;
    let status = server.run(&["status", "-o", "json"]).await.json();
    assert_eq!(status["state"], "STREAMING");
    assert_eq!(status["sources"][0]["source_id"], "main");
    assert_eq!(status["sources"][0]["state"], "STREAMING");
    let pipelines = status["pipelines"].as_array().unwrap();
    assert_eq!(pipelines.len(), 2);
    assert_eq!(pipelines[0]["table"], "public.users");
    assert_eq!(pipelines[0]["row_count"], 3);
    assert_eq!(pipelines[0]["ready"], true);
    assert_eq!(pipelines[1]["table"], "public.orders");
    assert_eq!(pipelines[1]["row_count"], 2);
    assert_eq!(status["snapshots"]["enabled"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_table_lists_its_indexes() {
    let server = server(3).await;
    let text = server
        .run(&["status", "--table", "public.users"])
        .await
        .ok()
        .to_string();
    assert!(text.starts_with("Table public.users\n"), "{text}");
    assert!(
        text.contains(&format!("Pipeline:     {}\n", server.pipeline_id(&users()))),
        "{text}"
    );
    let indexes = text.split("Indexes:\n").nth(1).unwrap();
    let mut lines: Vec<Vec<&str>> = indexes
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.remove(0), ["NAME", "FIELDS", "UNIQUE", "ENTRIES"]);
    lines.sort();
    // The lookup-fields index is listed under the name the target reports.
    let lookup = lines.iter().position(|l| l[1] == "email").unwrap();
    let lookup = lines.remove(lookup);
    assert_eq!(lookup[1..], ["email", "yes", "3"]);
    assert_eq!(
        lines,
        [
            vec!["by_name", "name", "yes", "3"],
            vec!["by_team", "team", "no", "3"]
        ]
    );

    let detail = server
        .run(&["status", "--table", "public.users", "-o", "json"])
        .await
        .json();
    assert_eq!(detail["pipelines"][0]["row_count"], 3);
    let by_team = detail["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "by_team")
        .unwrap();
    assert_eq!(
        *by_team,
        json!({"name": "by_team", "fields": ["team"], "unique": false, "entry_count": 3})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_print_a_table_and_json() {
    let server = server(2).await;
    let text = server.run(&["pipelines"]).await.ok().to_string();
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "PIPELINE", "SOURCE", "TABLE", "TARGET", "STATE", "ROWS", "BUFFER", "ERRORS", "DLQ"
        ]
    );
    let users_id = server.pipeline_id(&users());
    let row = lines.iter().find(|l| l[0] == users_id).unwrap();
    assert_eq!(
        row[1..6],
        ["main", "public.users", "indexed-memory", "STREAMING", "2"]
    );
    assert_eq!(row[7..], ["-", "0"]);

    let json = server
        .run(&["pipelines", "--table", "public.orders", "--output", "json"])
        .await
        .json();
    let pipelines = json.as_array().unwrap();
    assert_eq!(pipelines.len(), 1);
    assert_eq!(pipelines[0]["pipeline_id"], server.pipeline_id(&orders()));
    assert_eq!(pipelines[0]["row_count"], 2);
    assert_eq!(pipelines[0]["state"], "STREAMING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_show_primary_keys_and_targets() {
    let server = server(1).await;
    assert_eq!(
        server.run(&["tables"]).await.ok(),
        "TABLE          SOURCE  PK         TARGETS\n\
         public.users   main    id         indexed-memory\n\
         public.orders  main    region,id  indexed-memory\n"
    );
    let json = server.run(&["tables", "-o", "json"]).await.json();
    assert_eq!(json[1]["table"], "public.orders");
    assert_eq!(json[1]["primary_key"], json!(["region", "id"]));
    assert_eq!(json[1]["pipeline_id"], server.pipeline_id(&orders()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_lists_the_columns() {
    let server = server(1).await;
    let text = server
        .run(&["schema", "public.orders"])
        .await
        .ok()
        .to_string();
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["#", "COLUMN", "TYPE", "NOT", "NULL", "PK"]);
    assert_eq!(lines[1][1..3], ["region", "text"]);
    assert_eq!(lines[2][1..3], ["id", "int8"]);
    assert_eq!(lines[3][1..], ["total", "int8"]);

    let json = server.run(&["schema", "orders", "-o", "json"]).await.json();
    let columns = json.as_array().unwrap();
    assert_eq!(columns.len(), 3);
    assert_eq!(columns[0]["column_name"], "region");
    assert_eq!(columns[0]["is_primary_key"], true);
    assert_eq!(columns[2]["column_name"], "total");
    assert_eq!(columns[2]["is_primary_key"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_shows_the_test_source() {
    let server = server(1).await;
    let text = server.run(&["source", "main"]).await.ok().to_string();
    assert!(
        text.starts_with("Source:    main\nType:      test\nState:     STREAMING\n"),
        "{text}"
    );
    let json = server.run(&["source", "-o", "json"]).await.json();
    assert_eq!(json[0]["source_id"], "main");
    assert_eq!(json[0]["source_type"], "test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_exits_zero_when_every_pipeline_is_ready() {
    let server = server(1).await;
    assert_eq!(server.run(&["ready"]).await.ok(), "READY: all pipelines\n");
    let users_id = server.pipeline_id(&users());
    assert_eq!(
        server.run(&["ready", "--pipeline", &users_id]).await.ok(),
        format!("READY: pipeline {users_id}\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_exits_one_while_a_baseline_runs() {
    let source = test_source(3);
    // Slow enough that the baseline is still running while the test looks.
    source.set_baseline_row_delay(std::time::Duration::from_secs(30));
    let server = serve(source).await;
    let out = server.run(&["ready"]).await;
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stdout.starts_with("NOT READY: pipeline "), "{out:#?}");
    assert!(out.stdout.contains("BASELINING"), "{out:#?}");

    let json = server.run(&["ready", "-o", "json"]).await;
    assert_eq!(json.code, Some(1), "{json:#?}");
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["ready"], false);
    assert!(!json["not_ready_reasons"].as_array().unwrap().is_empty());
}

/// Reads need a token too: a read token suffices (every other test here sends one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_without_a_token_is_refused_saying_which_token_and_how() {
    let server = server(1).await;
    let anonymous = server.run_anonymous(&["tables"]).await;
    assert_eq!(
        anonymous.failed(),
        "error: /laredo.v1.LaredoOAMService/ListTables is protected: send a read or admin token as \"authorization: Bearer <token>\" (UNAUTHENTICATED)\n\
         hint: no token was sent: pass one with --token or LAREDO_TOKEN (a read token suffices for reads)\n"
    );
    assert_eq!(anonymous.stdout, "");
    let wrong = server
        .run(&["query", "count", "public.users", "--token", "not-a-token"])
        .await;
    assert_eq!(
        wrong.failed(),
        "error: /laredo.v1.LaredoQueryService/CountRows is protected: the bearer token is not a known token (UNAUTHENTICATED)\n\
         hint: the server does not accept the token from --token or LAREDO_TOKEN for this call\n"
    );
    // The read token from the environment is enough.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_laredo"))
        .args([
            "query",
            "count",
            "public.users",
            "-a",
            &server.addr.to_string(),
        ])
        .env("LAREDO_TOKEN", crate::support::READ_TOKEN)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
