//! `cargo xtask demo`: a throwaway PostgreSQL, laredo-server from
//! deploy/examples/demo.conf, a write load, and changes arriving live.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use laredo_test_support::PgCluster;

use crate::{cargo, ensure_postgres, run_step};

/// Ports the demo's server listens on.
struct Ports {
    grpc: u16,
    fanout: u16,
    health: u16,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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
        "build laredo-server and the laredo CLI",
        cargo().current_dir(root).args([
            "build",
            "--locked",
            "-p",
            "laredo-server",
            "-p",
            "laredo-cli",
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
    let mut server = Command::new(bin_dir.join("laredo-server"))
        .current_dir(root)
        .args(["--config", "deploy/examples/demo.conf"])
        .args(["--set", &format!("grpc.port={}", ports.grpc)])
        .args(["--set", &format!("fanout.grpc.port={}", ports.fanout)])
        .args(["--set", &format!("health.http_port={}", ports.health)])
        .args(["--set", "observability.logging.level=warn"])
        .env("DEMO_PG_URL", &url)
        .env("DEMO_STATE_DIR", &state)
        .spawn()
        .context("starting laredo-server")?;
    let result = run_demo(&bin_dir, &pg, &db, &ports, seconds, &stop, &mut server);
    // Stop the server cleanly (it may have had Ctrl-C already), then drop PostgreSQL.
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let status = server.wait()?;
    eprintln!("==> laredo-server exited ({status})");
    drop(pg);
    result
}

fn run_demo(
    bin_dir: &Path,
    pg: &PgCluster,
    db: &str,
    ports: &Ports,
    seconds: Option<u64>,
    stop: &AtomicBool,
    server: &mut Child,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = server.try_wait()? {
            bail!("laredo-server exited early ({status})");
        }
        if is_ready(bin_dir, ports.health) {
            break;
        }
        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
            bail!("laredo-server did not become ready");
        }
        thread::sleep(Duration::from_millis(200));
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

    eprintln!("==> writing to public.users; `laredo watch` shows the changes as they apply");
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let url = pg.connection_string(db);
        let psql = pg.program("psql");
        let writes = Arc::clone(&writes);
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopping);
        let handle = thread::spawn(move || write_load(&psql, &url, &writes, &flag));
        (handle, stopping)
    };
    let mut watch = cli(&["watch"]).stdout(Stdio::inherit()).spawn()?;

    let started = Instant::now();
    let mut result = Ok(());
    while !stop.load(Ordering::SeqCst) && seconds.is_none_or(|s| started.elapsed().as_secs() < s) {
        thread::sleep(Duration::from_secs(2));
        if let Some(status) = server.try_wait()? {
            result = Err(anyhow::anyhow!("laredo-server exited ({status})"));
            break;
        }
        let table = pg
            .psql(db, "SELECT count(*) FROM users")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let held = cli_output(cli(&["query", "count", "public.users"]));
        let fanout = cli_output(cli(&["-o", "json", "fanout", "status", "public.users"]));
        eprintln!(
            "--- {} writes | table rows {table} | indexed-memory rows {held} | fan-out status {fanout}",
            writes.load(Ordering::SeqCst)
        );
    }
    writer.1.store(true, Ordering::SeqCst);
    let _ = writer.0.join();
    let _ = Command::new("kill")
        .args(["-INT", &watch.id().to_string()])
        .status();
    let _ = watch.wait();
    // Let the last writes arrive, then compare once more.
    thread::sleep(Duration::from_secs(1));
    let table = pg
        .psql(db, "SELECT count(*) FROM users")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let held = cli_output(cli(&["query", "count", "public.users"]));
    eprintln!("==> final: table rows {table}, indexed-memory rows {held}");
    result
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

/// Sets `stop` on Ctrl-C (the server and the CLI get the signal too and stop by
/// themselves; the demo then cleans up).
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
