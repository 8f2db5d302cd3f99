//! The `laredo` CLI binary against the real `laredo-server` binary and PostgreSQL:
//! what the CLI prints (tables and `-o json`) must equal what the table holds.
//!
//! The CLI is another package's binary, so `CARGO_BIN_EXE_laredo` is not set here. It
//! is built into the same directory as `laredo-server`: `cargo xtask test` and
//! `cargo nextest run --workspace` build every binary of the workspace (the CLI's own
//! integration tests need it). A run limited to this package needs
//! `cargo build -p laredo-cli` first; without it these tests fail and say so.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use laredo_test_support::PgCluster;
use parking_lot::Mutex;
use serde_json::Value as Json;

use crate::support::{
    ADMIN_TOKEN, Server, WAIT, table_users, users_config_with_targets, users_db, wait_for,
    write_config,
};

/// How long one CLI command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The `laredo` binary next to `laredo-server`.
fn cli_binary() -> PathBuf {
    let cli = Path::new(env!("CARGO_BIN_EXE_laredo-server")).with_file_name("laredo");
    assert!(
        cli.is_file(),
        "the laredo CLI binary is missing at {}: build it with `cargo build -p laredo-cli` \
         (cargo xtask test builds every binary of the workspace before the tests)",
        cli.display()
    );
    cli
}

/// The CLI pointed at one server.
struct Laredo {
    binary: PathBuf,
    grpc: String,
    fanout: String,
}

impl Laredo {
    fn new(server: &Server) -> Self {
        Self {
            binary: cli_binary(),
            grpc: server.addrs.grpc.to_string(),
            fanout: server
                .addrs
                .fanout
                .map_or_else(String::new, |a| a.to_string()),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .env_remove("LAREDO_ADDRESS")
            .env_remove("LAREDO_FANOUT_ADDRESS")
            .env_remove("LAREDO_TOKEN")
            .args(["--token", ADMIN_TOKEN])
            .args(["--address", &self.grpc])
            .args(["--fanout-address", &self.fanout])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Runs `args` to completion.
    fn run(&self, args: &[&str]) -> Output {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let id = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(COMMAND_TIMEOUT) {
            Ok(out) => out.unwrap(),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &id.to_string()])
                    .status();
                panic!("laredo {args:?} did not exit within {COMMAND_TIMEOUT:?}");
            }
        }
    }

    /// The stdout of `args`, which must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "laredo {args:?} failed: {out:?}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `-o json args`, parsed.
    fn json(&self, args: &[&str]) -> Json {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("laredo {all:?}: {e}:\n{text}"))
    }

    /// `query count public.users`.
    fn count(&self) -> u64 {
        self.json(&["query", "count", "public.users"])["count"]
            .as_u64()
            .unwrap()
    }

    /// Every row through `query list`, page by page, as `id|name` lines sorted by id.
    fn all_users(&self) -> Vec<String> {
        let mut rows = Vec::new();
        let mut token = String::new();
        loop {
            let mut args = vec!["query", "list", "--limit", "7"];
            if !token.is_empty() {
                args.extend(["--page-token", &token]);
            }
            args.push("public.users");
            let page = self.json(&args);
            for row in page["rows"].as_array().unwrap() {
                rows.push((
                    row["id"].as_i64().unwrap(),
                    row["name"].as_str().unwrap().to_string(),
                ));
            }
            token = page["next_page_token"].as_str().unwrap_or("").to_string();
            if token.is_empty() {
                break;
            }
        }
        rows.sort();
        rows.into_iter()
            .map(|(id, name)| format!("{id}|{name}"))
            .collect()
    }
}

/// `SELECT count(*) FROM users`.
fn table_count(pg: &PgCluster, db: &str) -> u64 {
    pg.psql(db, "SELECT count(*) FROM users")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

const TARGETS: &str =
    "{ type = indexed-memory, lookup_fields = [id] }, { type = replication-fanout }";
const INDEXED: &str = "pg:public.users:indexed-memory";
const FANOUT: &str = "pg:public.users:replication-fanout";

/// A server for `users` of `db` with both target types and a local snapshot store.
fn start(pg: &PgCluster, db: &str, dir: &Path) -> Server {
    let extra = format!(
        "snapshot {{ enabled = true, store = local, store_config.path = \"{}\" }}",
        dir.join("snapshots").display()
    );
    let config = write_config(dir, &users_config_with_targets(pg, db, TARGETS, &extra));
    let server = Server::start(&config);
    server.wait_ready();
    server
}

/// Waits until `query count` and the fan-out status both report the table's count.
fn wait_cli_count_equals_table(laredo: &Laredo, pg: &PgCluster, db: &str) {
    let want = table_count(pg, db);
    wait_for("the CLI's row counts to equal the table's", WAIT, || {
        laredo.count() == want
            && laredo.json(&["fanout", "status", "public.users"])["row_count"].as_u64()
                == Some(want)
    });
}

#[test]
fn reads_through_the_cli_equal_the_table() {
    let pg = PgCluster::shared();
    let db = users_db(pg, "cli_reads", 40);
    let dir = tempfile::tempdir().unwrap();
    let server = start(pg, &db, dir.path());
    let laredo = Laredo::new(&server);

    pg.psql(
        &db,
        "INSERT INTO users SELECT g, 'new-' || g FROM generate_series(41, 50) g; \
         UPDATE users SET name = 'renamed' WHERE id = 3; DELETE FROM users WHERE id = 4;",
    )
    .unwrap();
    wait_cli_count_equals_table(&laredo, pg, &db);
    let want = table_count(pg, &db);
    assert_eq!(want, 49);

    // Every row, through the paginated list, equals the table.
    assert_eq!(laredo.all_users(), table_users(pg, &db));

    // A lookup by the lookup field, in both output formats; a deleted key is an error.
    let found = laredo.json(&["query", "public.users", "3"]);
    assert_eq!(found["found"], true, "{found}");
    assert_eq!(
        (found["row"]["id"].clone(), found["row"]["name"].clone()),
        (3.into(), "renamed".into())
    );
    assert_eq!(
        laredo.ok(&["query", "public.users", "3"]),
        "id:   3\nname: renamed\n"
    );
    let missing = laredo.run(&["query", "public.users", "4"]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");

    // status: the service and both pipelines stream, holding the table's rows.
    let status = laredo.json(&["status"]);
    assert_eq!(status["state"], "STREAMING", "{status}");
    let pipelines = status["pipelines"].as_array().unwrap();
    let mut seen: Vec<(String, String, u64)> = pipelines
        .iter()
        .map(|p| {
            (
                p["pipeline_id"].as_str().unwrap().to_string(),
                p["state"].as_str().unwrap().to_string(),
                p["row_count"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (INDEXED.to_string(), "STREAMING".to_string(), want),
            (FANOUT.to_string(), "STREAMING".to_string(), want),
        ]
    );
    let text = laredo.ok(&["status"]);
    assert!(
        text.contains(INDEXED) && text.contains(FANOUT),
        "status table names both pipelines:\n{text}"
    );

    // tables: public.users from source pg, keyed by id.
    let tables = laredo.json(&["tables"]);
    let users: Vec<&Json> = tables
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["table"] == "public.users")
        .collect();
    assert!(!users.is_empty(), "{tables}");
    for entry in users {
        assert_eq!(entry["source_id"], "pg", "{entry}");
        assert_eq!(entry["primary_key"], serde_json::json!(["id"]), "{entry}");
    }
    let text = laredo.ok(&["tables"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("public.users") && l.contains(" pg ")),
        "{text}"
    );

    // The plain count prints the number alone.
    assert_eq!(
        laredo.ok(&["query", "count", "public.users"]),
        format!("{want}\n")
    );
}

#[test]
fn pause_resume_and_snapshots_through_the_cli() {
    let pg = PgCluster::shared();
    let db = users_db(pg, "cli_admin", 25);
    let dir = tempfile::tempdir().unwrap();
    let server = start(pg, &db, dir.path());
    let laredo = Laredo::new(&server);

    let paused = laredo.ok(&["pause"]);
    assert!(paused.contains("Sync paused"), "{paused}");
    assert_eq!(laredo.json(&["status"])["state"], "PAUSED");
    // Written while paused: delivered after the resume.
    pg.psql(
        &db,
        "INSERT INTO users VALUES (100, 'while-paused'); DELETE FROM users WHERE id = 1;",
    )
    .unwrap();
    assert_eq!(laredo.json(&["resume"])["state"], "STREAMING");
    wait_cli_count_equals_table(&laredo, pg, &db);
    assert_eq!(laredo.all_users(), table_users(pg, &db));

    let created = laredo.json(&["snapshot", "create", "--meta", "who=e2e"]);
    assert_eq!(created["accepted"], true, "{created}");
    let id = created["snapshot_id"].as_str().unwrap().to_string();
    let listed = laredo.json(&["snapshot", "list"]);
    let snapshot = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["snapshot_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed: {listed}"));
    assert_eq!(snapshot["store_type"], "local");
    let want = table_count(pg, &db);
    let mut tables: Vec<(String, u64)> = snapshot["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["target_type"].as_str().unwrap().to_string(),
                t["row_count"].as_u64().unwrap(),
            )
        })
        .collect();
    tables.sort();
    assert_eq!(
        tables,
        vec![
            ("indexed-memory".to_string(), want),
            ("replication-fanout".to_string(), want),
        ]
    );
    let text = laredo.ok(&["snapshot", "list"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&id) && l.contains("local")),
        "{text}"
    );
}

/// A `laredo watch` child whose stdout lines are collected.
struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    fn start(laredo: &Laredo, args: &[&str]) -> Self {
        let mut child = laredo
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().push(line);
            }
        });
        Self { child, lines }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_prints_changes_as_they_apply() {
    let pg = PgCluster::shared();
    let db = users_db(pg, "cli_watch", 5);
    let dir = tempfile::tempdir().unwrap();
    let server = start(pg, &db, dir.path());
    let laredo = Laredo::new(&server);

    let json = Watch::start(
        &laredo,
        &["-o", "json", "watch", "public.users", "--pipeline", INDEXED],
    );
    let text = Watch::start(&laredo, &["watch", "public.users"]);
    // The stream is open once the server counts the watchers' subscriptions; until
    // then a change could pass unseen, so write until both have seen one.
    let mut next = 1000;
    wait_for("both watchers to print an insert", WAIT, || {
        pg.psql(&db, &format!("INSERT INTO users VALUES ({next}, 'w')"))
            .unwrap();
        next += 1;
        let json_seen = json.lines.lock().iter().any(|line| {
            serde_json::from_str::<Json>(line).is_ok_and(|event| {
                event["type"] == "row_change"
                    && event["action"] == "INSERT"
                    && event["table"] == "public.users"
                    && event["pipeline_id"] == INDEXED
            })
        });
        let text_seen = text
            .lines
            .lock()
            .iter()
            .any(|line| line.contains("INSERT public.users"));
        json_seen && text_seen
    });
    // Only the one pipeline asked for.
    for line in json.lines.lock().iter() {
        let event: Json = serde_json::from_str(line).unwrap();
        if event["type"] == "row_change" {
            assert_eq!(event["pipeline_id"], INDEXED, "{line}");
        }
    }
    pg.psql(&db, "DELETE FROM users WHERE id = 2").unwrap();
    wait_for("the delete to show", WAIT, || {
        json.lines.lock().iter().any(|line| {
            serde_json::from_str::<Json>(line)
                .is_ok_and(|e| e["action"] == "DELETE" && e["table"] == "public.users")
        })
    });
    wait_cli_count_equals_table(&laredo, pg, &db);
}
