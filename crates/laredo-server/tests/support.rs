//! Running the binary and talking to it: config files, log lines, HTTP, gRPC.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use laredo_core::Row;
use laredo_proto::laredo::v1 as pb;
use laredo_proto::laredo::v1::laredo_query_service_client::LaredoQueryServiceClient;
use laredo_test_support::PgCluster;
use parking_lot::Mutex;
use tonic::transport::Channel;

/// How long any one condition may take.
pub(crate) const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// The binary under test.
pub(crate) fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_laredo-server"));
    // Nothing from the test's environment leaks into the configuration layers, and
    // the default init dir is never read.
    command
        .env_remove("LAREDO_CONFIG")
        .env_remove("RUST_LOG")
        .args(["--init-dir", "/nonexistent-laredo-init"]);
    command
}

/// Polls `done` until it is true or `timeout` passes (then panics naming `what`).
pub(crate) fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A database with `users (id int8 primary key, name text)` holding `rows` rows.
pub(crate) fn users_db(pg: &PgCluster, prefix: &str, rows: u32) -> String {
    let db = pg.create_database(prefix).unwrap();
    pg.psql(
        &db,
        &format!(
            "CREATE TABLE users (id int8 PRIMARY KEY, name text NOT NULL); \
             INSERT INTO users SELECT g, 'user-' || g FROM generate_series(1, {rows}) g;"
        ),
    )
    .unwrap();
    db
}

/// The admin token of the test configurations.
pub(crate) const ADMIN_TOKEN: &str = "test-admin-token";
/// The read token of the test configurations.
pub(crate) const READ_TOKEN: &str = "test-read-token";

/// A channel whose calls carry a bearer token.
pub(crate) type Authed = tonic::service::interceptor::InterceptedService<
    Channel,
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>,
>;

/// A channel to `addr` whose calls send `token`.
pub(crate) async fn authed(addr: SocketAddr, token: &'static str) -> Authed {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let header: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    tonic::service::interceptor::InterceptedService::new(
        channel,
        Box::new(move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
            Ok(request)
        }),
    )
}

/// A config for `users` of `db` into an indexed-memory target, every listener on a
/// free port. `extra` is appended (HOCON: later keys win).
pub(crate) fn users_config(pg: &PgCluster, db: &str, extra: &str) -> String {
    users_config_with_targets(
        pg,
        db,
        "{ type = indexed-memory, lookup_fields = [id] }",
        extra,
    )
}

/// [`users_config`] with other targets (a HOCON list body).
pub(crate) fn users_config_with_targets(
    pg: &PgCluster,
    db: &str,
    targets: &str,
    extra: &str,
) -> String {
    format!(
        r#"
sources.pg {{
  type = postgresql
  connection = "{conn}"
  slot_name = slot_{db}
  publication {{ name = pub_{db}, create = true }}
  reconnect {{ initial_backoff = 50ms, max_backoff = 500ms }}
}}
tables = [{{
  source = pg, schema = public, table = users
  targets = [{targets}]
}}]
grpc.port = 0
grpc.auth {{ admin_token = "{ADMIN_TOKEN}", read_token = "{READ_TOKEN}" }}
fanout.grpc.port = 0
health.http_port = 0
observability.metrics.port = 0
shutdown.timeout = 60s
{extra}
"#,
        conn = pg.connection_string(db),
    )
}

/// Writes `text` to `dir/laredo.conf`.
pub(crate) fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("laredo.conf");
    std::fs::write(&path, text).unwrap();
    path
}

/// The bound addresses, from the `server started` log line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Addrs {
    pub(crate) health: SocketAddr,
    pub(crate) metrics: SocketAddr,
    pub(crate) grpc: SocketAddr,
    /// The replication listener, when a fan-out target exists.
    pub(crate) fanout: Option<SocketAddr>,
}

/// A running server; killed on drop if still running.
pub(crate) struct Server {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    pub(crate) addrs: Addrs,
}

fn loopback(addr: &str) -> SocketAddr {
    let addr: SocketAddr = addr.parse().unwrap();
    SocketAddr::from(([127, 0, 0, 1], addr.port()))
}

impl Server {
    /// Starts the binary with `--config path` and waits for its listeners.
    pub(crate) fn start(config: &Path) -> Server {
        Self::start_with(config, &[])
    }

    /// Starts the binary with `--config path` and more arguments.
    pub(crate) fn start_with(config: &Path, args: &[&str]) -> Server {
        let mut child = binary()
            .arg("--config")
            .arg(config)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().push(line);
            }
        });
        let mut server = Server {
            child,
            logs,
            addrs: Addrs {
                health: ([127, 0, 0, 1], 0).into(),
                metrics: ([127, 0, 0, 1], 0).into(),
                grpc: ([127, 0, 0, 1], 0).into(),
                fanout: None,
            },
        };
        let mut started = None;
        wait_for("the server started log line", WAIT, || {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("server exited with {status}:\n{}", server.logs().join("\n"));
            }
            started = server.log_fields("server started");
            started.is_some()
        });
        let fields = started.unwrap();
        let addr = |key: &str| loopback(fields[key].as_str().unwrap());
        server.addrs = Addrs {
            health: addr("health_addr"),
            metrics: addr("metrics_addr"),
            grpc: addr("grpc_addr"),
            fanout: fields
                .get("fanout_addr")
                .and_then(|a| a.as_str())
                .map(loopback),
        };
        server
    }

    /// Every stderr line so far.
    pub(crate) fn logs(&self) -> Vec<String> {
        self.logs.lock().clone()
    }

    /// The `fields` of the first JSON log line whose message is `message`.
    pub(crate) fn log_fields(&self, message: &str) -> Option<serde_json::Value> {
        self.logs.lock().iter().find_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            let fields = value.get("fields")?;
            (fields.get("message")?.as_str()? == message).then(|| fields.clone())
        })
    }

    /// Sends SIGTERM.
    pub(crate) fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        wait_for("the server to exit", timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }

    /// GET `path` on the health port.
    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addrs.health, path)
    }

    /// Waits until the readiness probe answers 200.
    pub(crate) fn wait_ready(&self) {
        wait_for("readiness 200", WAIT, || self.get("/health/ready").0 == 200);
    }

    /// A Query service client sending the read token.
    pub(crate) async fn query(&self) -> LaredoQueryServiceClient<Authed> {
        LaredoQueryServiceClient::new(authed(self.addrs.grpc, READ_TOKEN).await)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A plain HTTP/1.1 GET: status and body. Connection errors read as status 0.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    if stream.read_to_string(&mut response).is_err() {
        return (0, String::new());
    }
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// The value of the sample `series` (name and labels, exactly as rendered).
pub(crate) fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Every row of `public.users` through ListRows, as `id|name` lines sorted by id.
pub(crate) async fn served_users(query: &mut LaredoQueryServiceClient<Authed>) -> Vec<String> {
    let mut rows = Vec::new();
    let mut token = String::new();
    loop {
        let page = query
            .list_rows(pb::ListRowsRequest {
                schema: "public".into(),
                table: "users".into(),
                page_size: 500,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        for wire in &page.rows {
            let row = Row::try_from(wire).unwrap();
            rows.push((
                row.get_i64("id").unwrap(),
                row.get_str("name").unwrap().to_string(),
            ));
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    rows.sort();
    rows.into_iter()
        .map(|(id, name)| format!("{id}|{name}"))
        .collect()
}

/// `SELECT id, name FROM users ORDER BY id` as `id|name` lines.
pub(crate) fn table_users(pg: &PgCluster, db: &str) -> Vec<String> {
    let out = pg
        .psql(db, "SELECT id, name FROM users ORDER BY id")
        .unwrap();
    out.lines().map(str::to_string).collect()
}

/// Waits until the server's copy equals the table.
pub(crate) async fn wait_served_equals_table(server: &Server, pg: &PgCluster, db: &str) {
    let mut query = server.query().await;
    let want = table_users(pg, db);
    let deadline = Instant::now() + WAIT;
    loop {
        let got = served_users(&mut query).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "target never matched the table: {} rows served, {} in the table",
            got.len(),
            want.len()
        );
        tokio::time::sleep(POLL).await;
    }
}
