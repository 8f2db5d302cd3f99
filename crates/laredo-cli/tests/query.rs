//! `laredo query`: lookups, gets, listing with paging, counting.

use serde_json::json;

use crate::support::{server, user, users};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_by_the_lookup_fields_prints_the_row() {
    let server = server(3).await;
    assert_eq!(
        server.run(&["query", "public.users", "u2@x"]).await.ok(),
        "id:    2\nname:  user-2\nteam:  blue\nemail: u2@x\n"
    );
    let json = server
        .run(&["query", "lookup", "public.users", "u3@x", "-o", "json"])
        .await
        .json();
    assert_eq!(
        json,
        json!({"found": true, "row": {"id": 3, "name": "user-3", "team": "red", "email": "u3@x"}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_by_a_named_index() {
    let server = server(3).await;
    let json = server
        .run(&[
            "query",
            "public.users",
            "--index",
            "by_name",
            "user-1",
            "-o",
            "json",
        ])
        .await
        .json();
    assert_eq!(json["row"]["id"], 1);

    // Every match of a non-unique index: ids 1 and 4 are both "green".
    let server = crate::support::server(4).await;
    let text = server
        .run(&[
            "query",
            "lookup",
            "--index",
            "by_team",
            "--all-matches",
            "public.users",
            "green",
        ])
        .await
        .ok()
        .to_string();
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.remove(0).split_whitespace().collect::<Vec<_>>(),
        ["ID", "NAME", "TEAM", "EMAIL"]
    );
    lines.sort_unstable();
    assert_eq!(
        lines,
        ["1   user-1  green  u1@x", "4   user-4  green  u4@x"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_that_matches_nothing_exits_one() {
    let server = server(3).await;
    let out = server.run(&["query", "public.users", "nobody@x"]).await;
    assert_eq!(
        out.failed(),
        "no row of public.users has email = nobody@x\n"
    );
    assert_eq!(out.stdout, "");
    let json = server
        .run(&["query", "public.users", "nobody@x", "-o", "json"])
        .await;
    assert_eq!(json.code, Some(1));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json.stdout).unwrap(),
        json!({"found": false, "row": null})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_by_primary_key_types_the_key_from_the_schema() {
    let server = server(3).await;
    // `2` is sent as an int8 because the key column is int8.
    let json = server
        .run(&["query", "public.users", "--pk", "2", "-o", "json"])
        .await
        .json();
    assert_eq!(
        json["row"],
        json!({"id": 2, "name": "user-2", "team": "blue", "email": "u2@x"})
    );
    // A composite key (region text, id int8), in key order.
    assert_eq!(
        server
            .run(&["query", "get", "--pk", "us", "--pk", "1", "public.orders"])
            .await
            .ok(),
        "region: us\nid:     1\ntotal:  20\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_through_every_row() {
    let server = server(5).await;
    let text = server
        .run(&["query", "public.users", "--all", "--limit", "2"])
        .await
        .ok()
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ID", "NAME", "TEAM", "EMAIL"]
    );
    assert!(lines[1].starts_with("1 "), "{text}");
    assert!(lines[2].starts_with("2 "), "{text}");
    assert_eq!(lines[3], "Showing rows 1–2 of 5");
    assert!(
        lines[4].starts_with("Next page: laredo query list --limit 2 --page-token "),
        "{text}"
    );

    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let mut args = vec!["query", "list", "--limit", "2", "-o", "json"];
        if !token.is_empty() {
            args.extend(["--page-token", token.as_str()]);
        }
        args.push("public.users");
        let page = server.run(&args).await.json();
        assert_eq!(page["total_count"], 5);
        for row in page["rows"].as_array().unwrap() {
            ids.push(row["id"].as_i64().unwrap());
        }
        token = page["next_page_token"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(ids, [1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_follows_live_changes() {
    let server = server(3).await;
    assert_eq!(
        server.run(&["query", "count", "public.users"]).await.ok(),
        "3\n"
    );
    let position = server.source.emit_insert(users(), user(10)).await;
    let want = position.as_u64();
    laredo_test_support::wait_until("insert applied", crate::support::WAIT, || {
        server.source.acked_position() >= want
    })
    .await;
    assert_eq!(
        server
            .run(&["query", "count", "public.users", "-o", "json"])
            .await
            .json(),
        json!({"count": 4})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_table_is_not_found() {
    let server = server(1).await;
    let out = server.run(&["query", "count", "public.nope"]).await;
    assert_eq!(
        out.failed(),
        "error: no target with row access found for public.nope (NOT_FOUND)\n"
    );
}
