//! `cargo xtask demo`: a throwaway PostgreSQL, laredo-server from
//! deploy/examples/demo.conf, a write load, and changes arriving live: `laredo watch`
//! prints them, `laredo query count` shows the indexed-memory target's rows, and the
//! `fanout_count` example of laredo-client-fanout keeps a replica through the fan-out
//! listener and reports its rows. At the end (with `--seconds N`) the demo waits for
//! the table, the indexed-memory target and the fan-out client to agree, and fails if
//! they do not.
//!
//! Every child (server, `laredo watch`, the fan-out client) is held by a [`ChildGuard`]
//! that stops it on every path out, and the cluster is removed when `PgCluster` drops.
//! Ctrl-C reaches every child too (same process group); the guards then finish the job
//! (a second signal makes the server skip its fan-out drain grace).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use laredo_test_support::PgCluster;

use crate::{cargo, ensure_postgres, run_step};

/// How long the server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the copies may take to catch up with the table once the writes stop.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a child may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(200);

/// Ports the demo's server listens on.
struct Ports {
    grpc: u16,
    fanout: u16,
    health: u16,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process stopped on drop: SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
struct ChildGuard {
    name: &'static str,
    child: Child,
}

impl ChildGuard {
    fn new(name: &'static str, child: Child) -> Self {
        Self { name, child }
    }

    fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
    }

    /// Sends `signal` (unless the child has exited) and waits for the exit.
    fn stop_with(&mut self, signal: &str) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        self.signal(signal);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "==> {} did not stop in {STOP_TIMEOUT:?}; killing it",
            self.name
        );
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop_with("-TERM");
    }
}

/// Runs the demo for `seconds` (until Ctrl-C when `None`).
pub(crate) fn demo(root: &Path, args: &[String]) -> Result<()> {
    let seconds = match args {
        [] => None,
        [flag, n] if flag == "--seconds" => Some(n.parse::<u64>().context("--seconds N")?),
        _ => bail!("usage: cargo xtask demo [--seconds N]"),
    };
    ensure_postgres()?;
    run_step(
        "build laredo-server, the laredo CLI and the fan-out client example",
        cargo().current_dir(root).args([
            "build",
            "--locked",
            "-p",
            "laredo-server",
            "-p",
            "laredo-cli",
            "-p",
            "laredo-client-fanout",
            "--bins",
            "--example",
            "fanout_count",
        ]),
    )?;
    let bin_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), Into::into)
        .join("debug");

    let stop = Arc::new(AtomicBool::new(false));
    watch_ctrl_c(Arc::clone(&stop))?;

    eprintln!("==> starting a throwaway PostgreSQL");
    let pg = PgCluster::start().map_err(|e| anyhow::anyhow!("{e}"))?;
    let db = pg
        .create_database("demo")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let init = std::fs::read_to_string(root.join("deploy/examples/init.sql"))?;
    pg.psql(&db, &init).map_err(|e| anyhow::anyhow!("{e}"))?;
    let url = pg.connection_string(&db);
    let state = pg.root().join("laredo-state");
    std::fs::create_dir_all(&state)?;
    let ports = Ports {
        grpc: free_port()?,
        fanout: free_port()?,
        health: free_port()?,
    };

    eprintln!(
        "==> laredo-server --config deploy/examples/demo.conf (gRPC 127.0.0.1:{}, fan-out :{}, health :{})",
        ports.grpc, ports.fanout, ports.health
    );
    let server = Command::new(bin_dir.join("laredo-server"))
        .current_dir(root)
        .args(["--config", "deploy/examples/demo.conf"])
        .args(["--set", &format!("grpc.port={}", ports.grpc)])
        .args(["--set", &format!("fanout.grpc.port={}", ports.fanout)])
        .args(["--set", &format!("health.http_port={}", ports.health)])
        // demo.conf is insecure (no tokens): here, on loopback only.
        .args(["--set", "grpc.bind=127.0.0.1"])
        .args(["--set", "fanout.grpc.bind=127.0.0.1"])
        .args(["--set", "health.bind=127.0.0.1"])
        .args(["--set", "observability.metrics.bind=127.0.0.1"])
        // The metrics port is not shown; a free one avoids a clash with a local 9090.
        .args(["--set", "observability.metrics.port=0"])
        .args(["--set", "observability.logging.level=warn"])
        .args(["--log-format", "text"])
        .env("DEMO_PG_URL", &url)
        .env("DEMO_STATE_DIR", &state)
        .spawn()
        .context("starting laredo-server")?;
    let mut server = ChildGuard::new("laredo-server", server);
    let result = run_demo(&bin_dir, &pg, &db, &ports, seconds, &stop, &mut server);
    // Stop the server cleanly (it may have had Ctrl-C already: this second signal
    // skips its drain grace), then drop PostgreSQL.
    let status = server.stop_with("-TERM");
    eprintln!(
        "==> laredo-server exited ({})",
        status.map_or_else(|| "unknown status".to_string(), |s| s.to_string())
    );
    drop(server);
    drop(pg);
    eprintln!("==> PostgreSQL stopped and removed");
    result
}

/// The latest row count a fan-out client printed, -1 before its first line.
struct ClientRows(AtomicI64);

impl ClientRows {
    fn get(&self) -> Option<u64> {
        u64::try_from(self.0.load(Ordering::SeqCst)).ok()
    }
}

/// Reads the `fanout_count` example's lines: echoes them and keeps the row count.
fn follow_client(stdout: impl std::io::Read + Send + 'static, rows: Arc<ClientRows>) {
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            eprintln!("    fan-out client: {line}");
            // "ready: rows N sequence S", "rows N sequence S changes +K", "stopped: rows N …"
            let mut words = line.split_whitespace().skip_while(|w| *w != "rows");
            if let Some(n) = words.nth(1).and_then(|n| n.parse::<i64>().ok()) {
                rows.0.store(n, Ordering::SeqCst);
            }
        }
    });
}

fn run_demo(
    bin_dir: &Path,
    pg: &PgCluster,
    db: &str,
    ports: &Ports,
    seconds: Option<u64>,
    stop: &AtomicBool,
    server: &mut ChildGuard,
) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = server.exited()? {
            bail!("laredo-server exited early ({status})");
        }
        if is_ready(bin_dir, ports.health) {
            break;
        }
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if Instant::now() > deadline {
            bail!("laredo-server did not become ready in {READY_TIMEOUT:?}");
        }
        thread::sleep(POLL);
    }
    eprintln!("==> ready; laredo status:");
    let cli = |args: &[&str]| {
        let mut command = Command::new(bin_dir.join("laredo"));
        command
            .args(["--address", &format!("127.0.0.1:{}", ports.grpc)])
            .args(["--fanout-address", &format!("127.0.0.1:{}", ports.fanout)])
            .args(args);
        command
    };
    cli(&["status"]).status()?;

    eprintln!(
        "==> a fan-out client (cargo run -p laredo-client-fanout --example fanout_count) replicates public.users from :{}",
        ports.fanout
    );
    let client_rows = Arc::new(ClientRows(AtomicI64::new(-1)));
    let mut client = Command::new(bin_dir.join("examples/fanout_count"))
        .args(["--address", &format!("http://127.0.0.1:{}", ports.fanout)])
        .args(["--table", "public.users", "--interval", "1s"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the fanout_count example")?;
    let stdout = client.stdout.take().context("the client's stdout")?;
    let mut client = ChildGuard::new("fanout_count", client);
    follow_client(stdout, Arc::clone(&client_rows));

    eprintln!("==> writing to public.users; `laredo watch` shows the changes as they apply");
    let writes = Arc::new(AtomicU64::new(0));
    let mut writer = Writer::start(pg, db, Arc::clone(&writes));
    let mut watch = ChildGuard::new(
        "laredo watch",
        cli(&["watch"]).stdout(Stdio::inherit()).spawn()?,
    );

    let table_rows = || {
        pg.psql(db, "SELECT count(*) FROM users")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let held_rows = || {
        cli_output(cli(&["query", "count", "public.users"]))
            .parse::<u64>()
            .ok()
    };
    let show = |n: Option<u64>| n.map_or_else(|| "?".to_string(), |n| n.to_string());

    let started = Instant::now();
    let mut result = Ok(());
    while !stop.load(Ordering::SeqCst) && seconds.is_none_or(|s| started.elapsed().as_secs() < s) {
        thread::sleep(Duration::from_secs(2));
        if stop.load(Ordering::SeqCst) {
            break; // Ctrl-C reached the children too: their exits are expected
        }
        if let Some(status) = server.exited()? {
            result = Err(anyhow::anyhow!("laredo-server exited ({status})"));
            break;
        }
        if let Some(status) = client.exited()? {
            result = Err(anyhow::anyhow!("the fan-out client exited ({status})"));
            break;
        }
        eprintln!(
            "--- {} writes | table rows {} | indexed-memory rows {} | fan-out client rows {}",
            writes.load(Ordering::SeqCst),
            show(table_rows()),
            show(held_rows()),
            show(client_rows.get()),
        );
    }
    writer.stop();
    watch.stop_with("-INT");
    if result.is_err() || stop.load(Ordering::SeqCst) {
        return result;
    }

    // The writes have stopped: wait for both copies to reach the table.
    let want = table_rows();
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    let (mut held, mut replica) = (held_rows(), client_rows.get());
    while (held != want || replica != want)
        && Instant::now() < deadline
        && !stop.load(Ordering::SeqCst)
    {
        thread::sleep(POLL);
        (held, replica) = (held_rows(), client_rows.get());
    }
    eprintln!("==> laredo fanout status public.users:");
    cli(&["fanout", "status", "public.users"]).status()?;
    client.stop_with("-TERM");
    eprintln!(
        "==> final: {} writes | table rows {} | indexed-memory rows {} | fan-out client rows {}",
        writes.load(Ordering::SeqCst),
        show(want),
        show(held),
        show(replica),
    );
    if want.is_none() || held != want || replica != want {
        bail!("the copies do not match the table after {CATCH_UP_TIMEOUT:?}");
    }
    eprintln!("==> the indexed-memory target and the fan-out client both match the table");
    Ok(())
}

/// The write load on its own thread; stopped (and joined) on drop.
struct Writer {
    handle: Option<thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Writer {
    fn start(pg: &PgCluster, db: &str, writes: Arc<AtomicU64>) -> Self {
        let url = pg.connection_string(db);
        let psql = pg.program("psql");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || write_load(&psql, &url, &writes, &flag));
        Self {
            handle: Some(handle),
            stop,
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Inserts, updates and deletes a few rows every 100 ms until `stop`.
fn write_load(psql: &Path, url: &str, writes: &AtomicU64, stop: &AtomicBool) {
    let mut next = 1_000_000_u64;
    while !stop.load(Ordering::SeqCst) {
        let sql = format!(
            "INSERT INTO users (id, name, email, team) VALUES ({next}, 'new {next}', 'new{next}@example.com', 'red'); \
             UPDATE users SET score = score + 1, updated_at = now() WHERE id = {}; \
             DELETE FROM users WHERE id = {};",
            1 + next % 10_000,
            next - 5
        );
        let ok = Command::new(psql)
            .args(["-q", "-X", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", &sql])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            writes.fetch_add(3, Ordering::SeqCst);
        }
        next += 1;
        thread::sleep(Duration::from_millis(100));
    }
}

fn cli_output(mut command: Command) -> String {
    match command.stderr(Stdio::null()).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .trim()
            .replace('\n', " "),
        Err(e) => format!("({e})"),
    }
}

/// Whether the server answers its readiness probe (`laredo-server healthcheck`).
fn is_ready(bin_dir: &Path, port: u16) -> bool {
    Command::new(bin_dir.join("laredo-server"))
        .args(["healthcheck", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Sets `stop` on Ctrl-C (the server and the other children get the signal too and
/// stop by themselves; the demo then cleans up).
fn watch_ctrl_c(stop: Arc<AtomicBool>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    thread::spawn(move || {
        runtime.block_on(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\n==> Ctrl-C: stopping");
                stop.store(true, Ordering::SeqCst);
            }
        });
    });
    Ok(())
}
