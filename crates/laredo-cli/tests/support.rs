//! An engine over the test source served by a real `GrpcServer` (OAM + Query, admin
//! token) on a loopback port, and a runner for the `laredo` binary.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use laredo_core::{
    Engine, IndexDefinition, PipelineOptions, Row, SnapshotOptions, TableIdentifier, row, table,
};
use laredo_deadletter::MemoryDeadLetterStore;
use laredo_service::GrpcServer;
use laredo_service_oam::{OamService, StatusEvents};
use laredo_service_query::QueryService;
use laredo_snapshot_local::LocalSnapshotStore;
use laredo_source_test::TestSource;
use laredo_target_memory::IndexedTarget;
use serde_json::Value as Json;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

/// Upper bound of every wait; generous, as the machine may be busy.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// The server's admin token.
pub(crate) const TOKEN: &str = "cli-test-token";
/// The server's read token, which commands send unless told otherwise.
pub(crate) const READ_TOKEN: &str = "cli-read-token";

/// `public.users(id int8 pk, name, team, email)`: lookup fields `email`, a non-unique
/// index `by_team`, a unique index `by_name`.
pub(crate) fn users() -> TableIdentifier {
    table("public", "users")
}

/// `public.orders(region text, id int8, total int8)`, key `(region, id)`.
pub(crate) fn orders() -> TableIdentifier {
    table("public", "orders")
}

pub(crate) fn user(id: i64) -> Row {
    let team = ["red", "green", "blue"][usize::try_from(id % 3).unwrap()];
    row! {"id" => id, "name" => format!("user-{id}"), "team" => team, "email" => format!("u{id}@x")}
}

/// A served engine.
pub(crate) struct Server {
    pub(crate) engine: Engine,
    pub(crate) source: Arc<TestSource>,
    pub(crate) addr: SocketAddr,
    shutdown: CancellationToken,
    /// The snapshot store's directory, when it has one.
    _snapshots: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Server {
    /// The id of the pipeline of `table`.
    pub(crate) fn pipeline_id(&self, table: &TableIdentifier) -> String {
        self.engine
            .pipelines()
            .into_iter()
            .find(|p| &p.table == table)
            .unwrap()
            .id
    }

    /// Runs `laredo -a <this server> args...` to completion.
    pub(crate) async fn run(&self, args: &[&str]) -> Run {
        run(&self.token_args(args, READ_TOKEN), args).await
    }

    /// Runs it without any token.
    pub(crate) async fn run_anonymous(&self, args: &[&str]) -> Run {
        run(&self.address_args(), args).await
    }

    /// The address flags, and `--token token` unless `args` bring their own.
    fn token_args(&self, args: &[&str], token: &str) -> Vec<String> {
        let mut global = self.address_args();
        if !args.contains(&"--token") {
            global.extend(["--token".to_string(), token.to_string()]);
        }
        global
    }

    /// Runs it with the admin token.
    pub(crate) async fn run_admin(&self, args: &[&str]) -> Run {
        run(&self.token_args(args, TOKEN), args).await
    }

    /// Starts `laredo -a <this server> args...` with piped output.
    pub(crate) fn spawn(&self, args: &[&str]) -> Spawned {
        let mut child = command(&self.token_args(args, READ_TOKEN), args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        Spawned {
            child,
            stdout,
            stderr,
        }
    }

    fn address_args(&self) -> Vec<String> {
        vec!["-a".to_string(), self.addr.to_string()]
    }
}

/// Users 1..=user_count in the baseline, two orders; started and ready.
pub(crate) async fn server(user_count: i64) -> Server {
    let source = test_source(user_count);
    let server = serve(source).await;
    assert!(
        server.engine.await_ready(WAIT).await,
        "engine not ready: {:?}",
        server.engine.pipelines()
    );
    server
}

pub(crate) fn test_source(user_count: i64) -> Arc<TestSource> {
    let source = TestSource::new();
    source.set_schema(
        users(),
        TestSource::columns(&[
            ("id", "int8", true),
            ("name", "text", false),
            ("team", "text", false),
            ("email", "text", false),
        ]),
    );
    source.set_schema(
        orders(),
        TestSource::columns(&[
            ("region", "text", true),
            ("id", "int8", true),
            ("total", "int8", false),
        ]),
    );
    for id in 1..=user_count {
        source.add_row(users(), user(id));
    }
    source.add_row(orders(), row! {"region" => "eu", "id" => 1, "total" => 10});
    source.add_row(orders(), row! {"region" => "us", "id" => 1, "total" => 20});
    source
}

/// Users 1..=user_count and two orders, with a local snapshot store; ready.
pub(crate) async fn server_with_snapshots(user_count: i64) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let options = SnapshotOptions::new(Arc::new(LocalSnapshotStore::new(dir.path())))
        .describe_store("local", dir.path().display().to_string());
    let mut server = serve_with(test_source(user_count), Some(options), false).await;
    server._snapshots = Some(dir);
    assert!(server.engine.await_ready(WAIT).await);
    server
}

/// Builds the engine on `source`, serves it and starts it (without waiting for ready).
pub(crate) async fn serve(source: Arc<TestSource>) -> Server {
    serve_with(source, None, false).await
}

/// laredo-service's self-signed certificate for `localhost` and `127.0.0.1`, or its key.
pub(crate) fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../laredo-service/tests/fixtures")
        .join(name)
}

/// As [`server`], served over TLS with [`fixture`]s `server.crt` and `server.key`.
pub(crate) async fn server_tls(user_count: i64) -> Server {
    let server = serve_with(test_source(user_count), None, true).await;
    assert!(server.engine.await_ready(WAIT).await);
    server
}

async fn serve_with(
    source: Arc<TestSource>,
    snapshots: Option<SnapshotOptions>,
    tls: bool,
) -> Server {
    let events = StatusEvents::new();
    let mut builder = Engine::builder();
    if let Some(options) = snapshots {
        builder = builder.snapshots(options);
    }
    let engine = builder
        .source("main", source.clone())
        .pipeline(
            "main",
            users(),
            IndexedTarget::builder()
                .lookup_fields(["email"])
                .index(IndexDefinition::new("by_team", ["team"], false))
                .index(IndexDefinition::new("by_name", ["name"], true))
                .build(),
            PipelineOptions::default(),
        )
        .pipeline(
            "main",
            orders(),
            IndexedTarget::builder().build(),
            PipelineOptions::default(),
        )
        .dead_letter_store(Arc::new(MemoryDeadLetterStore::new()))
        .observer(events.clone())
        .build()
        .unwrap();
    let mut grpc = GrpcServer::builder(engine.clone())
        .listen("127.0.0.1:0".parse().unwrap())
        .add_service(OamService::new(engine.clone(), events).into_server())
        .add_service(QueryService::new(engine.clone()).into_server())
        .admin_token(TOKEN)
        .read_token(READ_TOKEN);
    if tls {
        grpc = grpc.tls(fixture("server.crt"), fixture("server.key"));
    }
    let grpc = grpc.bind().await.unwrap();
    let addr = grpc.local_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(grpc.serve(shutdown.clone().cancelled_owned()));
    engine.start().await.unwrap();
    Server {
        engine,
        source,
        addr,
        shutdown,
        _snapshots: None,
    }
}

/// A finished run of the binary.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// Asserts exit 0 and returns stdout.
    #[track_caller]
    pub(crate) fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self:#?}");
        &self.stdout
    }

    /// Asserts exit 0 and parses stdout as JSON.
    #[track_caller]
    pub(crate) fn json(&self) -> Json {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("{e}: {self:#?}"))
    }

    /// Asserts exit 1 and returns stderr.
    #[track_caller]
    pub(crate) fn failed(&self) -> &str {
        assert_eq!(self.code, Some(1), "{self:#?}");
        &self.stderr
    }
}

fn command(global: &[String], args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_laredo"));
    command
        .args(args)
        .args(global)
        .env_remove("LAREDO_ADDRESS")
        .env_remove("LAREDO_FANOUT_ADDRESS")
        .env_remove("LAREDO_TOKEN")
        .env_remove("LAREDO_TLS_SERVER_NAME")
        .stdin(Stdio::null());
    command
}

/// Runs the binary with `global` flags placed after `args` (they are global).
pub(crate) async fn run(global: &[String], args: &[&str]) -> Run {
    let output = tokio::time::timeout(WAIT, command(global, args).output())
        .await
        .expect("laredo finished")
        .unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// A running binary with line readers on its output.
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) stdout: Lines<BufReader<ChildStdout>>,
    pub(crate) stderr: Lines<BufReader<ChildStderr>>,
}

impl Spawned {
    /// Reads stdout lines until one satisfies `wanted`; returns it.
    pub(crate) async fn stdout_line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        read_until(&mut self.stdout, wanted).await
    }

    /// Reads stderr lines until one satisfies `wanted`; returns it.
    pub(crate) async fn stderr_line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        read_until(&mut self.stderr, wanted).await
    }

    /// Sends SIGINT (what Ctrl-C sends) and returns the exit code.
    pub(crate) async fn interrupt(mut self) -> Option<i32> {
        self.send_sigint().await;
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("laredo exited after SIGINT")
            .unwrap()
            .code()
    }
}

impl Spawned {
    /// Sends SIGINT and returns the exit code and the stderr lines not read yet.
    pub(crate) async fn interrupt_reading_stderr(mut self) -> (Option<i32>, Vec<String>) {
        self.send_sigint().await;
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, async {
            while let Some(line) = self.stderr.next_line().await.unwrap() {
                rest.push(line);
            }
        })
        .await
        .expect("stderr closed after SIGINT");
        let code = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("laredo exited after SIGINT")
            .unwrap()
            .code();
        (code, rest)
    }

    async fn send_sigint(&self) {
        let pid = self.child.id().unwrap().to_string();
        let status = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }
}

async fn read_until<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut Lines<R>,
    wanted: impl Fn(&str) -> bool,
) -> String {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if wanted(&line) {
                return Some(line);
            }
            seen.push(line);
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        Ok(None) => panic!("output ended; lines: {seen:#?}"),
        Err(_) => panic!("timed out; lines so far: {seen:#?}"),
    }
}
