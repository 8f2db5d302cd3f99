//! Subcommands and configuration errors; none of these touches a database.

use std::net::TcpListener;
use std::time::Duration;

use crate::support::{binary, write_config};

/// A listener standing in for PostgreSQL: anything that connects shows up as a
/// pending connection.
fn fake_database() -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

fn assert_never_connected(listener: &TcpListener) {
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("something connected to the database: {other:?}"),
    }
}

fn config_text(port: u16, extra: &str) -> String {
    format!(
        r#"
sources.pg {{ type = postgresql, connection = "postgresql://laredo:hunter2@127.0.0.1:{port}/app" }}
tables = [{{ source = pg, schema = public, table = users,
            targets = [{{ type = indexed-memory, lookup_fields = [id] }}] }}]
grpc.port = 0
grpc.auth.admin_token = test-admin-token
fanout.grpc.port = 0
health.http_port = 0
observability.metrics.port = 0
{extra}
"#
    )
}

fn stderr_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

fn run_with_timeout(command: &mut std::process::Command) -> std::process::Output {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &id.to_string()])
                .status();
            panic!("the binary did not exit");
        }
    }
}

#[test]
fn a_config_with_mistakes_lists_each_one_and_connects_to_nothing() {
    let db = fake_database();
    let port = db.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        port,
        r#"
sources.pg.slot_mode = statefull
tables += { source = pg_mian, schema = public, table = orders,
            targets = [{ type = indexed-memory, lookup_feilds = [id] }] }
shutdown.timeout = forever
"#,
    );
    let config = write_config(dir.path(), &text);
    let out = run_with_timeout(binary().arg("--config").arg(&config));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stderr_lines(&out),
        vec![
            "sources.pg.slot_mode: expected one of \"ephemeral\", \"stateful\", found \"statefull\" (did you mean \"stateful\"?)",
            "tables[1].targets[0].lookup_feilds: unknown key (did you mean \"lookup_fields\"?)",
            "tables[1].targets[0]: lookup_fields is required for type indexed-memory",
            "shutdown.timeout: expected a duration such as \"500ms\", \"5s\", \"10 seconds\", \"24h\" or \"7d\", found \"forever\"",
            "tables[1]: references unknown source \"pg_mian\"",
        ],
        "{out:?}"
    );
    assert_never_connected(&db);
}

#[test]
fn without_a_token_or_insecure_the_server_refuses_to_start_naming_the_key() {
    let db = fake_database();
    let port = db.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
sources.pg {{ type = postgresql, connection = "postgresql://laredo@127.0.0.1:{port}/app" }}
tables = [{{ source = pg, schema = public, table = users,
            targets = [{{ type = indexed-memory, lookup_fields = [id] }}] }}]
grpc.auth.read_token_files = ["{missing}"]
"#,
        missing = dir.path().join("missing-token").display()
    );
    let config = write_config(dir.path(), &text);
    for args in [&["--config"][..], &["validate", "--config"][..]] {
        let out = run_with_timeout(binary().args(args).arg(&config));
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let lines = stderr_lines(&out);
        assert!(
            lines[0].starts_with(&format!(
                "grpc.auth.read_token_files[0]: cannot read {}",
                dir.path().join("missing-token").display()
            )),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("grpc.auth: no token is configured")
                && lines[1].contains("grpc.auth.admin_token")
                && lines[1].contains("LAREDO_GRPC_AUTH_ADMIN_TOKEN")
                && lines[1].contains("insecure = true"),
            "{lines:?}"
        );
    }
    // A token from a file is enough to pass the check.
    let token = dir.path().join("missing-token");
    std::fs::write(&token, "a-read-token\n").unwrap();
    let out = run_with_timeout(
        binary()
            .args(["validate", "--validate", "structural", "--config"])
            .arg(&config),
    );
    assert!(out.status.success(), "{out:?}");
    assert_never_connected(&db);
}

#[test]
fn unavailable_features_are_refused_before_connecting() {
    let db = fake_database();
    let port = db.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        port,
        r#"
sources.k { type = s3-kinesis, baseline_bucket = "s3://b/", stream_arn = "arn:aws:kinesis:us-east-1:1:stream/s" }
tables += { source = pg, schema = public, table = orders,
            targets = [{ type = http-sync, base_url = "http://127.0.0.1:1/" }] }
"#,
    );
    let config = write_config(dir.path(), &text);
    let out = run_with_timeout(binary().arg("--config").arg(&config));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stderr_lines(&out),
        vec![
            "sources.k: type s3-kinesis is not available in this build",
            "tables[1].targets[0].type: type http-sync is not available in this build",
        ]
    );
    assert_never_connected(&db);
}

#[test]
fn validate_reports_valid_and_invalid_configs() {
    let db = fake_database();
    let port = db.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_text(port, ""));
    let out = run_with_timeout(
        binary()
            .args(["validate", "--validate", "structural", "--config"])
            .arg(&config),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "config is valid\n");

    // Configuration errors come before any connection, whatever the mode.
    let out = run_with_timeout(
        binary()
            .args(["validate", "--set", "grpc.port=abc", "--config"])
            .arg(&config),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&out),
        vec!["grpc.port: expected an integer, found string \"abc\""]
    );
    assert_never_connected(&db);
}

#[test]
fn config_dump_prints_the_merged_config_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &config_text(5432, "grpc.auth.admin_token = s3cret-token"),
    );
    let conf_d = dir.path().join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    std::fs::write(conf_d.join("10-port.conf"), "grpc.port = 4100").unwrap();
    let out = run_with_timeout(
        binary()
            .args([
                "config",
                "--dump",
                "--set",
                "health.http_port=8181",
                "--config",
            ])
            .arg(&config),
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("hunter2") && !stdout.contains("s3cret"),
        "{stdout}"
    );
    let dump: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(dump["sources"]["pg"]["connection"], "***");
    assert_eq!(dump["grpc"]["auth"]["admin_token"], "***");
    assert_eq!(dump["grpc"]["port"], 4100, "conf.d fragment merged");
    assert_eq!(dump["health"]["http_port"], 8181, "--set applied");
    assert_eq!(dump["shutdown"]["timeout"], "2m", "defaults filled in");
}

#[test]
fn version_prints_the_crate_version() {
    let out = run_with_timeout(binary().arg("version"));
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("laredo-server {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let out = run_with_timeout(binary().args(["healthcheck", "--port", &port.to_string()]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("not ready ("));
}

fn executable(path: &std::path::Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The binary with `--init-dir dir` (the helper's default points nowhere).
fn with_init_dir(dir: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_laredo-server"));
    command
        .env_remove("LAREDO_CONFIG")
        .arg("--init-dir")
        .arg(dir);
    command
}

#[test]
fn init_hooks_run_in_order_before_the_config_is_read() {
    let db = fake_database();
    let port = db.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_text(port, ""));
    let init = dir.path().join("init");
    std::fs::create_dir(&init).unwrap();
    // The first hook writes a fragment, the second proves it ran after the first; the
    // fragment's mistake shows the init dir's `*.conf` files are merged afterwards.
    executable(
        &init.join("10-generate"),
        &format!(
            "#!/bin/sh\necho 'grpc.port = \"abc\"' > {}/generated.conf\n",
            init.display()
        ),
    );
    executable(
        &init.join("20-check"),
        &format!("#!/bin/sh\ntest -f {}/generated.conf\n", init.display()),
    );
    let out = run_with_timeout(with_init_dir(&init).arg("--config").arg(&config));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stderr_lines(&out),
        vec!["grpc.port: expected an integer, found string \"abc\""]
    );
    assert_never_connected(&db);
}

#[test]
fn a_failing_init_hook_aborts_startup() {
    let db = fake_database();
    let port = db.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_text(port, ""));
    let init = dir.path().join("init");
    std::fs::create_dir(&init).unwrap();
    executable(&init.join("10-fail"), "#!/bin/sh\nexit 3\n");
    let out = run_with_timeout(with_init_dir(&init).arg("--config").arg(&config));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("10-fail failed"), "{stderr}");
    assert_never_connected(&db);
}

const STATEFUL_WITHOUT_SNAPSHOTS: &str = "sources.pg.slot_mode: a stateful slot is kept to resume after a restart, but tables[0].targets[0] (indexed-memory) keeps its rows in memory and no snapshot store is configured, so every start must run a full baseline anyway while the slot holds WAL back in between; configure snapshots (snapshot { enabled = true, store = local, store_config.path = ..., on_shutdown = true }), set sources.pg.always_baseline = true to accept that, or use slot_mode = ephemeral";

#[test]
fn a_stateful_slot_into_memory_without_snapshots_is_refused() {
    let db = fake_database();
    let port = db.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &config_text(port, "sources.pg.slot_mode = stateful"),
    );
    for command in [&["validate"][..], &[]] {
        let out = run_with_timeout(binary().args(command).arg("--config").arg(&config));
        assert_eq!(out.status.code(), Some(1), "{command:?}: {out:?}");
        assert_eq!(stderr_lines(&out), vec![STATEFUL_WITHOUT_SNAPSHOTS]);
    }
    assert_never_connected(&db);
}

#[test]
fn a_stateful_slot_is_accepted_with_snapshots_or_always_baseline() {
    let db = fake_database();
    let port = db.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    for extra in [
        "snapshot { enabled = true, store = local, store_config.path = /tmp/s, on_shutdown = true }",
        "sources.pg.always_baseline = true",
    ] {
        let text = format!("sources.pg.slot_mode = stateful\n{extra}");
        let config = write_config(dir.path(), &config_text(port, &text));
        let out = run_with_timeout(
            binary()
                .args(["validate", "--validate", "structural", "--config"])
                .arg(&config),
        );
        assert!(out.status.success(), "{extra}: {out:?}");
        assert_eq!(stderr_lines(&out), Vec::<String>::new());
    }
    assert_never_connected(&db);
}

#[test]
fn validate_none_turns_safety_problems_into_warnings() {
    let db = fake_database();
    let port = db.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &config_text(port, "sources.pg.slot_mode = stateful"),
    );
    let out = run_with_timeout(
        binary()
            .args(["validate", "--validate", "none", "--config"])
            .arg(&config),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "config is valid\n");
    assert_eq!(
        stderr_lines(&out),
        vec![format!("warning: {STATEFUL_WITHOUT_SNAPSHOTS}")]
    );
    assert_never_connected(&db);
}

#[test]
fn snapshots_without_a_trigger_get_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &config_text(
            5432,
            "snapshot { enabled = true, store = local, store_config.path = /tmp/s }",
        ),
    );
    let out = run_with_timeout(
        binary()
            .args(["validate", "--validate", "structural", "--config"])
            .arg(&config),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stderr_lines(&out),
        vec![
            "warning: snapshot: enabled, but neither snapshot.on_shutdown nor snapshot.schedule is set; snapshots are taken only on request (laredo snapshot create)"
        ]
    );
}

#[test]
fn strict_validation_names_a_source_that_cannot_be_reached() {
    // A port nothing listens on: the connection is refused at once.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_text(port, ""));
    for command in [&["validate"][..], &[]] {
        let out = run_with_timeout(binary().args(command).arg("--config").arg(&config));
        assert_eq!(out.status.code(), Some(1), "{command:?}: {out:?}");
        let lines = stderr_lines(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("sources.pg.connection: "),
            "{command:?}: {lines:?}"
        );
    }
}
