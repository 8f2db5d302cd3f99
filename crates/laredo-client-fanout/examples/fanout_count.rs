//! A fan-out consumer that keeps a local replica of one table and reports its size.
//!
//! ```text
//! cargo run -p laredo-client-fanout --example fanout_count -- \
//!     [--address http://127.0.0.1:4002] [--table public.users] [--interval 1s] \
//!     [--token TOKEN | --token-file PATH] [--ca ca.pem] [--tls-server-name NAME]
//! ```
//!
//! The token (a read token suffices) comes from `--token`, `--token-file` or the
//! `LAREDO_TOKEN` environment variable; a server started with `insecure = true` (the
//! demo) needs none. `--ca` (and `--tls-server-name`) connect with TLS.
//!
//! It connects with [`FanoutClient`], waits for the replica to be ready, then prints one
//! line per interval in which changes arrived (and one at least every ten intervals):
//!
//! ```text
//! ready: rows 10000 sequence 0
//! rows 10012 sequence 36 changes +36
//! ```
//!
//! The counts come from the local replica (`FanoutClient::count`), the changes from a
//! listener (`FanoutClient::listen`). Ctrl-C (or SIGTERM) stops it: it prints a final
//! `stopped: rows N sequence S` line and exits 0. `cargo xtask demo` runs it next to
//! `laredo-server` and compares its row count with the table's.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use laredo_client_fanout::{ClientOptions, FanoutClient};
use tokio::signal::unix::{SignalKind, signal};

/// How long the replica may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// A line at least every this many quiet intervals, so a reader sees it is alive.
const QUIET_INTERVALS: u32 = 10;

struct Args {
    address: String,
    schema: String,
    table: String,
    interval: Duration,
    token: Option<String>,
    token_file: Option<String>,
    ca: Option<String>,
    tls_server_name: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        address: "http://127.0.0.1:4002".into(),
        schema: "public".into(),
        table: "users".into(),
        interval: Duration::from_secs(1),
        token: std::env::var("LAREDO_TOKEN").ok().filter(|t| !t.is_empty()),
        token_file: None,
        ca: None,
        tls_server_name: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--address" => args.address = value()?,
            "--table" => {
                let name = value()?;
                let (schema, table) = name.split_once('.').unwrap_or(("public", &name));
                args.schema = schema.to_owned();
                args.table = table.to_owned();
            }
            "--interval" => args.interval = parse_interval(&value()?)?,
            "--token" => args.token = Some(value()?),
            "--token-file" => args.token_file = Some(value()?),
            "--ca" => args.ca = Some(value()?),
            "--tls-server-name" => args.tls_server_name = Some(value()?),
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: fanout_count [--address URL] [--table schema.table] [--interval 1s] [--token TOKEN | --token-file PATH] [--ca ca.pem] [--tls-server-name NAME]"
                ));
            }
        }
    }
    Ok(args)
}

/// `250ms` or `2s`.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let parsed = if let Some(ms) = text.strip_suffix("ms") {
        ms.parse().map(Duration::from_millis)
    } else {
        text.trim_end_matches('s').parse().map(Duration::from_secs)
    };
    match parsed {
        Ok(interval) if !interval.is_zero() => Ok(interval),
        _ => Err(format!(
            "--interval: expected a duration such as 500ms or 2s, found {text:?}"
        )),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut options = ClientOptions::new(&args.address, &args.schema, &args.table)
        .client_id("fanout-count-example");
    if let Some(path) = &args.token_file {
        options = options.token_file(path);
    } else if let Some(token) = &args.token {
        options = options.token(token);
    }
    if let Some(ca) = &args.ca {
        options = options.tls_ca_file(ca);
    }
    if let Some(name) = &args.tls_server_name {
        options = options.tls_server_name(name);
    }
    let client = match FanoutClient::new(options) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("error: cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    // Counted by a listener: called after each change applied to the replica.
    let changes = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&changes);
    let _listener = client.listen(move |_old, _new| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    if let Err(error) = client.start().await {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }

    let ready = tokio::select! {
        ready = client.await_ready(READY_TIMEOUT) => ready,
        _ = term.recv() => false,
        _ = int.recv() => false,
    };
    if ready {
        // The snapshot's rows went through the listener too; count from here.
        changes.store(0, Ordering::Relaxed);
        println!(
            "ready: rows {} sequence {}",
            client.count(),
            client.last_sequence()
        );
        let mut ticker = tokio::time::interval(args.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quiet = 0;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
            let new = changes.swap(0, Ordering::Relaxed);
            quiet = if new == 0 { quiet + 1 } else { 0 };
            if new > 0 || quiet >= QUIET_INTERVALS {
                quiet = 0;
                println!(
                    "rows {} sequence {} changes +{new}",
                    client.count(),
                    client.last_sequence()
                );
            }
        }
    } else {
        eprintln!("the replica was not ready within {READY_TIMEOUT:?} (or a signal came first)");
        if let Some(error) = client.stats().last_error {
            eprintln!("last error: {error}");
        }
    }
    let stopped = client.stop().await;
    println!(
        "stopped: rows {} sequence {}",
        client.count(),
        client.last_sequence()
    );
    match stopped {
        Ok(()) if ready => ExitCode::SUCCESS,
        Ok(()) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
