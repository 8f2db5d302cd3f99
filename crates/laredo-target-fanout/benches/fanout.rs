//! `cargo xtask bench fanout`: many replication clients on loopback under a steady
//! change rate: delivered changes/s, p50/p99 latency from target apply to client
//! receipt, server memory per idle client, and server CPU per delivered message
//! against a plain TCP broadcaster writing the same bytes.
//!
//! Three processes. This binary re-executes itself as the **server** (an engine over
//! the test source with one `replication-fanout` target and the replication service
//! behind laredo-service's `GrpcServer` on a loopback port, on tonic, hyper and h2, with
//! `max_connections` raised to fit the clients) and as the **broadcaster** (the
//! reference, below), and stays the **load**: N light clients, each on its own HTTP/2
//! connection, speaking the real `Sync` protocol (handshake, full snapshot of the
//! table, `CaughtUp`, then live `JournalEntries`). The load shares the same two cores,
//! so it is kept cheap next to the server: each client is one task on the `h2` crate
//! directly (no tonic channel, buffer task or decoder), with 1 MiB receive windows,
//! and reads only what it measures (each entry's sequence and server `timestamp`) with
//! a hand parser.
//!
//! Per client count (5,000, then 1,000, 100 and a single-client reference, reusing the
//! first connections), the server updates rows at a steady `--rate` for `--seconds`
//! through the engine (driven by a timer, not as fast as possible), and waits until
//! every change is applied; the load waits until every client received the last one.
//! Then, except for the single client, the broadcaster replays what the clients
//! received.
//!
//! - **Latency** is the client's wall clock at receipt minus the entry's `timestamp`,
//!   which the target stamps when it appends the change (under its write lock, at
//!   apply). Both processes read the same system clock. It includes the server's
//!   encoding and queueing, HTTP/2, the loopback, and the client's decoding; it excludes
//!   the engine's own path from source to target. Percentiles come from a log-linear
//!   histogram (1 µs up to 64 µs, then 32 buckets per octave: under 3.2% error).
//!   `p99_steady_ms_<N>` leaves out the changes of the run's first second (the step
//!   from idle clients to the full rate); `p99_ms_<N>` counts every change.
//! - **Batching**: `entries_per_message_<N>` (journal entries per `JournalEntries`
//!   message the clients received) and `server_cpu_us_per_message_<N>` (server CPU
//!   time, from `/proc/<pid>/stat`, per gRPC message the clients received). Live
//!   delivery sends what is in the journal when a stream gets to run, so under load
//!   messages grow instead of queueing up. The server's CPU is the whole process: the
//!   engine's work per change is in it too (`server_cpu_cores_1`, the single-client
//!   run, is about that alone).
//! - **`cpu_per_message_ratio_<N>`**: `server_cpu_us_per_message_<N>` over the same for
//!   the **broadcaster**, a plain tokio TCP server: a listener, one task per accepted
//!   connection writing what its bounded channel hands it, and a driver on a 1 ms
//!   timer. Each client records every gRPC message it receives (when, relative to the
//!   run's start, and its size as the server writes it: the 5-byte gRPC prefix and the
//!   message in HTTP/2 DATA frames of at most 16 KiB with 9-byte headers); the
//!   broadcaster replays that schedule, one write of the same size at the same offset
//!   per message, to N loopback connections from this process, each read by a task that
//!   counts bytes. Same connection count, messages, sizes and pacing; no protocol and
//!   no encoding: the floor for that byte stream on this machine. The bench fails if
//!   the framed messages differ from the bytes the clients read by more than 2%, if the
//!   broadcaster writes or any connection receives other than the bytes scheduled, or if
//!   a client whose stream did not end received no entry. `cpu_per_message_ratio` is
//!   the largest client count's.
//! - **Delivered changes/s** is the entries received by all clients divided by the time
//!   from the first emitted change to the last receipt.
//! - **`delivery_ratio_<N>`** is delivered changes/s over offered changes/s (N × the
//!   emitted rate, as the server actually emitted it): 1.0 means every client kept up
//!   with the source; the tail after the last change lowers it only by the time needed
//!   to deliver it. `p99_ratio_<N>` is p99 latency against the single-client run.
//! - **Idle bytes per client**: the server's `VmRSS` (from `/proc/<pid>/status`) with
//!   no client connected, then after every client of the largest run finished its
//!   snapshot and sits idle on a live stream, divided by the client count. It is the
//!   whole per-connection cost (socket buffers kept by the kernel are not in RSS).
//!
//! Slow clients are not forgiven: a client the server disconnects (send buffer full)
//! is reported in `disconnected_<N>` and its missing entries lower the delivery ratio.
//!
//! Options: `--clients 5000,1000,100` (the single-client reference always runs last),
//! `--rate 1000` (changes/s), `--seconds 10`, `--rows 100` (table size, the snapshot
//! each client receives), `--journal <entries>` (the target's `journal.max_entries`;
//! a small journal is full during the run, as on a long-running server, so every
//! append also prunes). 5,000 clients need about 10,000 open files in the load process
//! (a gRPC and a broadcaster connection per client).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use laredo_core::{ChangeEvent, Engine, PipelineOptions, Position, Row, row, table};
use laredo_proto::laredo::replication::v1::{RowEncoding, SyncRequest};
use laredo_service::{GrpcServer, Limits};
use laredo_source_test::TestSource;
use laredo_target_fanout::{FanoutConfig, FanoutTarget, ReplicationService};
use laredo_test_support::{process_cpu_seconds, process_memory_kib};
use parking_lot::Mutex;
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const BENCH: &str = "fanout";
/// Set in the environment of the re-executed server process.
const ROLE_ENV: &str = "LAREDO_FANOUT_BENCH_ROLE";
const ROLE_SERVER: &str = "server";
const ROLE_BROADCASTER: &str = "broadcaster";
const SYNC_PATH: &str = "/laredo.replication.v1.LaredoReplicationService/Sync";
const SCHEMA: &str = "bench";
const TABLE: &str = "items";
/// Connections opened at once while building up the client population.
const CONNECT_CONCURRENCY: usize = 64;
const WAIT: Duration = Duration::from_secs(120);
/// The start of each run excluded from `p99_steady_ms_<N>`: the step from idle clients
/// to the full rate, during which every client's first changes arrive one round late.
const WARM_UP: Duration = Duration::from_secs(1);
/// Each load client's HTTP/2 receive windows (stream and connection): 1 MiB, so that
/// flow control never waits on a window update at these rates.
const CLIENT_WINDOW: u32 = 1 << 20;
/// HTTP/2: the header of every frame, and the largest DATA frame payload the load
/// clients accept (`SETTINGS_MAX_FRAME_SIZE`, left at its default).
const HTTP2_FRAME_HEADER: usize = 9;
const HTTP2_MAX_FRAME_SIZE: usize = 16_384;

// ---------------------------------------------------------------------------------
// What the load clients read of `SyncResponse` (the field numbers of
// proto/laredo/replication/v1/replication.proto): of `JournalEntries`, each entry's
// sequence and server timestamp; `CaughtUp`'s sequence; nothing else. A hand parser over
// the contiguous message slice: prost's generated decoding through `Buf` (skipping the
// rows field by field) cost the load process about half its CPU, which it takes from
// the server it measures on the same two cores.

enum LiteMessage {
    /// (sequence, server timestamp in microseconds since the epoch) per entry.
    Entries(Vec<(u64, u64)>),
    CaughtUp(u64),
    Other,
}

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;

enum Field<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

#[inline]
fn varint(buf: &mut &[u8]) -> Option<u64> {
    if let Some((&byte, rest)) = buf.split_first()
        && byte < 0x80
    {
        *buf = rest;
        return Some(u64::from(byte));
    }
    let mut value = 0u64;
    let mut shift = 0;
    while shift < 64 {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
        shift += 7;
    }
    None
}

/// The next field of a message: its number and value.
#[inline]
fn next_field<'a>(buf: &mut &'a [u8]) -> Option<(u64, Field<'a>)> {
    let key = varint(buf)?;
    let field = match key & 7 {
        WIRE_VARINT => Field::Varint(varint(buf)?),
        WIRE_LEN => {
            let len = usize::try_from(varint(buf)?).ok()?;
            if len > buf.len() {
                return None;
            }
            let (value, rest) = buf.split_at(len);
            *buf = rest;
            Field::Len(value)
        }
        WIRE_FIXED64 => {
            *buf = buf.get(8..)?;
            Field::Fixed
        }
        WIRE_FIXED32 => {
            *buf = buf.get(4..)?;
            Field::Fixed
        }
        _ => return None,
    };
    Some((key >> 3, field))
}

fn parse_response(mut buf: &[u8]) -> Option<LiteMessage> {
    let mut message = LiteMessage::Other;
    while !buf.is_empty() {
        match next_field(&mut buf)? {
            (5, Field::Len(entries)) => message = LiteMessage::Entries(parse_entries(entries)?),
            (9, Field::Len(mut caught_up)) => {
                let mut sequence = 0;
                while !caught_up.is_empty() {
                    if let (1, Field::Varint(v)) = next_field(&mut caught_up)? {
                        sequence = v;
                    }
                }
                message = LiteMessage::CaughtUp(sequence);
            }
            _ => {}
        }
    }
    Some(message)
}

fn parse_entries(mut buf: &[u8]) -> Option<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (1, Field::Len(mut entry)) = next_field(&mut buf)? else {
            continue;
        };
        let (mut sequence, mut micros) = (0, 0);
        while !entry.is_empty() {
            match next_field(&mut entry)? {
                (1, Field::Varint(v)) => sequence = v,
                (3, Field::Len(mut ts)) => {
                    let (mut seconds, mut nanos) = (0, 0);
                    while !ts.is_empty() {
                        match next_field(&mut ts)? {
                            (1, Field::Varint(v)) => seconds = v,
                            (2, Field::Varint(v)) => nanos = v,
                            _ => {}
                        }
                    }
                    micros = seconds * 1_000_000 + nanos / 1000;
                    // Fields are written in number order: nothing after it is read.
                    break;
                }
                _ => {}
            }
        }
        out.push((sequence, micros));
    }
    Some(out)
}

// ---------------------------------------------------------------------------------
// Latency histogram.

const SUB_BITS: u32 = 5;
const BUCKETS: usize = 1024;

fn bucket_of(micros: u64) -> usize {
    let linear = 1u64 << (SUB_BITS + 1);
    if micros < linear {
        return micros as usize;
    }
    let msb = 63 - micros.leading_zeros();
    let shift = msb - SUB_BITS;
    let top = (micros >> shift) - (1 << SUB_BITS);
    let idx = linear as usize + (shift as usize - 1) * (1 << SUB_BITS) + top as usize;
    idx.min(BUCKETS - 1)
}

/// The middle of a bucket, in microseconds.
fn bucket_value(idx: usize) -> f64 {
    let linear = 1usize << (SUB_BITS + 1);
    if idx < linear {
        return idx as f64;
    }
    let shift = (idx - linear) / (1 << SUB_BITS) + 1;
    let top = (idx - linear) % (1 << SUB_BITS) + (1 << SUB_BITS);
    let low = (top << shift) as f64;
    low + (1u64 << shift) as f64 / 2.0
}

#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
}

impl Histogram {
    fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
        }
    }

    fn record(&mut self, micros: u64) {
        self.counts[bucket_of(micros)] += 1;
    }

    fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile in milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.total();
        if total == 0 {
            return f64::NAN;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (idx, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_value(idx) / 1000.0;
            }
        }
        f64::NAN
    }
}

// ---------------------------------------------------------------------------------
// Options.

struct Options {
    clients: Vec<usize>,
    rate: u64,
    seconds: u64,
    rows: u64,
    /// `journal.max_entries` of the server's target; `None`: the default.
    journal: Option<usize>,
}

fn parse_options() -> Options {
    let mut options = Options {
        clients: vec![5000, 1000, 100],
        rate: 1000,
        seconds: 10,
        rows: 100,
        journal: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--clients" => {
                options.clients = value()
                    .split(',')
                    .map(|n| n.trim().parse().unwrap_or_else(|_| usage("bad --clients")))
                    .collect();
            }
            "--rate" => options.rate = value().parse().unwrap_or_else(|_| usage("bad --rate")),
            "--seconds" => {
                options.seconds = value().parse().unwrap_or_else(|_| usage("bad --seconds"));
            }
            "--rows" => options.rows = value().parse().unwrap_or_else(|_| usage("bad --rows")),
            "--journal" => {
                options.journal = Some(value().parse().unwrap_or_else(|_| usage("bad --journal")));
            }
            // `cargo bench` passes `--bench`.
            "--bench" => {}
            other => usage(&format!("unknown option {other:?}")),
        }
    }
    options.clients.sort_unstable_by(|a, b| b.cmp(a));
    options.clients.dedup();
    options.clients.retain(|&n| n > 1);
    options
}

/// The port's limits with room for the largest client count (one connection each).
fn bench_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_connections = 20_000;
    limits
}

fn usage(problem: &str) -> ! {
    eprintln!("fanout bench: {problem}");
    eprintln!(
        "options: --clients 5000,1000,100  --rate 1000  --seconds 10  --rows 100  --journal <max entries>"
    );
    std::process::exit(2);
}

// ---------------------------------------------------------------------------------
// The server process.

fn bench_row(id: u64, version: u64) -> Row {
    row! {
        "id" => id as i64,
        "name" => format!("item-{id}"),
        "region" => "eu-west",
        "score" => version as i64,
    }
}

/// Runs the server: prints `addr <addr>`, then answers `emit <rate> <millis>` with
/// `emitted <count> <last_sequence> <millis>` once every change is applied.
fn server_main() {
    let rows: u64 = std::env::var("LAREDO_FANOUT_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let items = table(SCHEMA, TABLE);
        let source = TestSource::new();
        source.set_schema(
            items.clone(),
            TestSource::columns(&[
                ("id", "int8", true),
                ("name", "text", false),
                ("region", "text", false),
                ("score", "int8", false),
            ]),
        );
        for id in 1..=rows {
            source.add_row(items.clone(), bench_row(id, 0));
        }
        // The bench connects up to 5,000 clients: past the default cap.
        let mut config = FanoutConfig::default().max_clients(0);
        if let Some(entries) = std::env::var("LAREDO_FANOUT_BENCH_JOURNAL")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            config = config.journal_max_entries(entries);
        }
        let target = FanoutTarget::with_config(config);
        let engine = Engine::builder()
            .source("main", source.clone())
            .pipeline(
                "main",
                items.clone(),
                target.clone(),
                PipelineOptions::default(),
            )
            .build()
            .expect("engine");
        engine.start().await.expect("engine starts");
        assert!(engine.await_ready(WAIT).await, "engine ready");
        let server = GrpcServer::builder(engine.clone())
            .listen("127.0.0.1:0".parse().expect("addr"))
            .insecure(true)
            .limits(bench_limits())
            .add_service(ReplicationService::new(engine.clone()).into_server())
            .bind()
            .await
            .expect("bind");
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(server.serve(shutdown.clone().cancelled_owned()));
        println!("addr {addr}");
        std::io::stdout().flush().expect("stdout");

        let (tx, mut commands) = tokio::sync::mpsc::channel::<String>(4);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        let mut version = 0;
        while let Some(line) = commands.recv().await {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["emit", rate, millis] => {
                    let rate: u64 = rate.parse().expect("rate");
                    let millis: u64 = millis.parse().expect("millis");
                    version += 1;
                    let started = Instant::now();
                    let before = target.current_sequence();
                    let count =
                        emit(&source, rate, Duration::from_millis(millis), rows, version).await;
                    // Each update is one journal entry: wait until the target applied
                    // the last one (the source only reports handing it to the engine).
                    let last = before + count;
                    while target.current_sequence() < last {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let elapsed = started.elapsed().as_millis();
                    println!("emitted {count} {last} {elapsed}");
                    std::io::stdout().flush().expect("stdout");
                }
                ["quit"] => break,
                _ => eprintln!("server: unknown command {line:?}"),
            }
        }
        shutdown.cancel();
        let _ = serving.await;
        let _ = engine.stop().await;
    });
}

/// Updates rows round-robin at `rate` changes/s for `duration` (a 1 ms timer tops the
/// emitted count up to `rate × elapsed`), then waits until the engine applied them.
async fn emit(source: &TestSource, rate: u64, duration: Duration, rows: u64, version: u64) -> u64 {
    let items = table(SCHEMA, TABLE);
    let started = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    let mut last = Position::from_u64(0);
    loop {
        ticker.tick().await;
        let elapsed = started.elapsed().min(duration);
        let due = (rate as u128 * elapsed.as_micros() / 1_000_000) as u64;
        if due > sent {
            let events = (sent..due).map(|n| {
                let id = n % rows.max(1) + 1;
                ChangeEvent::update(
                    items.clone(),
                    Position::from_u64(0),
                    bench_row(id, version),
                    None,
                )
            });
            last = source.enqueue(events);
            sent = due;
        }
        if elapsed >= duration {
            break;
        }
    }
    source.wait_delivered(last).await;
    sent
}

// ---------------------------------------------------------------------------------
// The reference: a plain tokio TCP broadcaster.
//
// Its own process, like the server: a listener on loopback, one task per accepted
// connection that writes what its bounded channel hands it, and a driver that replays a
// schedule (when, which connection, how many bytes) with a 1 ms timer, as the server's
// source emits. No protocol and no encoding: the bytes are a constant buffer, so what it
// costs is the tokio tasks, the channels and the kernel's TCP path: the floor for
// writing that byte stream to that many connections on this machine.

/// A replayed write: at `at_micros` after the start, `size` bytes to `connection`.
#[derive(Clone, Copy)]
struct ScheduledWrite {
    at_micros: u64,
    connection: u32,
    size: u32,
}

const WRITE_RECORD_LEN: usize = 16;
/// How far the bytes of the received messages (framed as the server writes them) may be
/// from the bytes the clients read: HTTP/2 control frames, and messages that tonic
/// happens to put in one DATA frame.
const MESSAGE_BYTES_TOLERANCE: f64 = 0.02;
/// Writes queued per connection: far more than a replayed client ever has in flight.
const WRITER_QUEUE: usize = 1024;

fn write_schedule(path: &std::path::Path, writes: &[ScheduledWrite]) {
    let mut bytes = Vec::with_capacity(writes.len() * WRITE_RECORD_LEN);
    for w in writes {
        bytes.extend_from_slice(&w.at_micros.to_le_bytes());
        bytes.extend_from_slice(&w.connection.to_le_bytes());
        bytes.extend_from_slice(&w.size.to_le_bytes());
    }
    std::fs::write(path, bytes).expect("write the broadcaster's schedule");
}

fn read_schedule(path: &str) -> Vec<ScheduledWrite> {
    let bytes = std::fs::read(path).expect("read the broadcaster's schedule");
    assert_eq!(
        bytes.len() % WRITE_RECORD_LEN,
        0,
        "truncated schedule {path}"
    );
    bytes
        .chunks_exact(WRITE_RECORD_LEN)
        .map(|r| ScheduledWrite {
            at_micros: u64::from_le_bytes(r[0..8].try_into().expect("8 bytes")),
            connection: u32::from_le_bytes(r[8..12].try_into().expect("4 bytes")),
            size: u32::from_le_bytes(r[12..16].try_into().expect("4 bytes")),
        })
        .collect()
}

/// Runs the broadcaster: prints `addr <addr>`, then answers `connections` with
/// `connections <count>`, `keep <n>` (closes the connections numbered `n` and up) with
/// `kept <count>`, `load <path>` with `loaded <writes>`, and `replay` (the loaded
/// schedule) with `replayed <writes> <bytes> <millis>` once every byte is written.
fn broadcaster_main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        // Connection number (the 4 bytes each load connection sends first) -> its writer.
        let writers = Arc::new(Mutex::new(std::collections::HashMap::<
            u32,
            tokio::sync::mpsc::Sender<Bytes>,
        >::new()));
        let written = Arc::new(AtomicU64::new(0));
        let accepting = {
            let writers = Arc::clone(&writers);
            let written = Arc::clone(&written);
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let writers = Arc::clone(&writers);
                    let written = Arc::clone(&written);
                    tokio::spawn(async move {
                        let mut tcp = tcp;
                        tcp.set_nodelay(true).expect("TCP_NODELAY");
                        let number = tcp.read_u32().await.expect("connection number");
                        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(WRITER_QUEUE);
                        writers.lock().insert(number, tx);
                        while let Some(bytes) = rx.recv().await {
                            tcp.write_all(&bytes).await.expect("broadcaster write");
                            written.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        }
                    });
                }
            })
        };
        println!("addr {addr}");
        std::io::stdout().flush().expect("stdout");

        let mut lines = std::io::stdin().lock().lines();
        let mut schedule = Vec::new();
        // This thread only drives this future (the connections' tasks run on the
        // workers), so it may block on stdin between commands.
        while let Some(Ok(line)) = lines.next() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let reply = match words.as_slice() {
                ["connections"] => format!("connections {}", writers.lock().len()),
                ["keep", n] => {
                    let n: u32 = n.parse().expect("count");
                    let mut writers = writers.lock();
                    writers.retain(|&number, _| number < n);
                    format!("kept {}", writers.len())
                }
                ["load", path] => {
                    schedule = read_schedule(path);
                    format!("loaded {}", schedule.len())
                }
                ["replay"] => {
                    let before = written.load(Ordering::Relaxed);
                    let started = Instant::now();
                    let current = writers.lock().clone();
                    let bytes = replay(&schedule, &current).await;
                    while written.load(Ordering::Relaxed) - before < bytes {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let done = written.load(Ordering::Relaxed) - before;
                    let millis = started.elapsed().as_millis();
                    format!("replayed {} {done} {millis}", schedule.len())
                }
                ["quit"] => break,
                _ => format!("unknown command {line:?}"),
            };
            println!("{reply}");
            std::io::stdout().flush().expect("stdout");
        }
        accepting.abort();
    });
}

/// Hands each write of `schedule` to its connection's writer when it is due; returns
/// the bytes handed over.
async fn replay(
    schedule: &[ScheduledWrite],
    writers: &std::collections::HashMap<u32, tokio::sync::mpsc::Sender<Bytes>>,
) -> u64 {
    let largest = schedule.iter().map(|w| w.size).max().unwrap_or(0);
    let payload = Bytes::from(vec![0x5a_u8; largest as usize]);
    let by_number: Vec<&tokio::sync::mpsc::Sender<Bytes>> = schedule
        .iter()
        .map(|w| {
            writers
                .get(&w.connection)
                .unwrap_or_else(|| panic!("no broadcaster connection {}", w.connection))
        })
        .collect();
    let started = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next = 0;
    let mut bytes = 0;
    while next < schedule.len() {
        ticker.tick().await;
        let now = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        while let Some(write) = schedule.get(next)
            && write.at_micros <= now
        {
            by_number[next]
                .send(payload.slice(..write.size as usize))
                .await
                .expect("broadcaster writer");
            bytes += u64::from(write.size);
            next += 1;
        }
    }
    bytes
}

// ---------------------------------------------------------------------------------
// The load: light HTTP/2 clients.

#[derive(Default)]
struct ClientStats {
    caught_up: bool,
    ended: Option<String>,
    last_sequence: u64,
    received: u64,
    /// `JournalEntries` messages received.
    messages: u64,
    latency: Option<Histogram>,
    /// Latency of the entries the server stamped after the warm-up (microseconds since
    /// the epoch), once the run is past the step from idle to the full rate.
    steady: Option<(u64, Histogram)>,
    /// What the broadcaster replays: every gRPC message received during the run, as
    /// (microseconds since the run's start, bytes the server wrote for it).
    trace: Option<(Instant, Vec<(u32, u32)>)>,
}

struct LoadClient {
    stats: Arc<Mutex<ClientStats>>,
    /// Bytes read from the client's TCP connection, HTTP/2 framing included.
    tcp_read: Arc<AtomicU64>,
    stop: CancellationToken,
}

/// A connection that counts the bytes read from it.
struct Counted<T> {
    inner: T,
    read: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.read.fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Drop for LoadClient {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn connect_client(addr: SocketAddr, n: usize, tasks: &Mutex<JoinSet<()>>) -> LoadClient {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("client connects");
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    let tcp_read = Arc::new(AtomicU64::new(0));
    let tcp = Counted {
        inner: tcp,
        read: Arc::clone(&tcp_read),
    };
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(CLIENT_WINDOW)
        .initial_connection_window_size(CLIENT_WINDOW)
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("HTTP/2 handshake");
    let stats = Arc::new(Mutex::new(ClientStats::default()));
    let stop = CancellationToken::new();
    let request = SyncRequest {
        schema: SCHEMA.into(),
        table: TABLE.into(),
        client_id: format!("bench-{n}"),
        // As laredo-client-fanout asks.
        row_encoding: RowEncoding::Compact.into(),
        ..Default::default()
    };
    let shared = Arc::clone(&stats);
    let cancel = stop.clone();
    tasks.lock().spawn(async move {
        tokio::select! {
            () = cancel.cancelled() => {}
            result = run_client(addr, send, connection, request, &shared) => {
                shared.lock().ended = Some(match result {
                    Ok(()) => "stream ended".to_string(),
                    Err(reason) => reason,
                });
            }
        }
    });
    LoadClient {
        stats,
        tcp_read,
        stop,
    }
}

/// One client on one task: it drives its HTTP/2 connection and reads its `Sync`
/// stream, splitting gRPC frames (a flag byte, a 4-byte big-endian length, the
/// message) itself.
async fn run_client(
    addr: SocketAddr,
    send: h2::client::SendRequest<Bytes>,
    connection: h2::client::Connection<Counted<tokio::net::TcpStream>, Bytes>,
    request: SyncRequest,
    stats: &Mutex<ClientStats>,
) -> Result<(), String> {
    let mut body = Vec::with_capacity(5 + request.encoded_len());
    body.push(0);
    body.extend_from_slice(
        &u32::try_from(request.encoded_len())
            .unwrap_or(0)
            .to_be_bytes(),
    );
    request.encode(&mut body).map_err(|e| e.to_string())?;
    let http_request = http::Request::post(format!("http://{addr}{SYNC_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .map_err(|e| e.to_string())?;
    let mut send = send.ready().await.map_err(|e| e.to_string())?;
    let (response, mut request_body) = send
        .send_request(http_request, false)
        .map_err(|e| e.to_string())?;
    request_body
        .send_data(Bytes::from(body), true)
        .map_err(|e| e.to_string())?;
    tokio::pin!(connection);
    let response = tokio::select! {
        response = response => response.map_err(|e| e.to_string())?,
        ended = &mut connection => return Err(format!("connection ended: {ended:?}")),
    };
    let mut body = response.into_body();
    let mut pending = BytesMut::new();
    loop {
        let chunk = tokio::select! {
            biased;
            chunk = body.data() => chunk,
            ended = &mut connection => return Err(format!("connection ended: {ended:?}")),
        };
        let Some(chunk) = chunk else { break };
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        pending.extend_from_slice(&chunk);
        while pending.len() >= 5 {
            let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
            if pending.len() < 5 + len {
                break;
            }
            let frame = pending.split_to(5 + len);
            let message = parse_response(&frame[5..]).ok_or("malformed SyncResponse")?;
            record(stats, message, wire_len(frame.len()));
        }
    }
    let trailers = body.trailers().await.map_err(|e| e.to_string())?;
    let status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string();
    let message = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-message"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if status == "0" {
        Ok(())
    } else {
        Err(format!("grpc-status {status}: {message}"))
    }
}

/// The bytes the server writes for a gRPC frame of `frame_len` bytes: the frame in
/// HTTP/2 DATA frames of at most the client's `SETTINGS_MAX_FRAME_SIZE` (the default, 16
/// KiB), each with its 9-byte header. (The client's receive windows are large enough
/// that flow control never splits it further.)
fn wire_len(frame_len: usize) -> u32 {
    let wire = frame_len + HTTP2_FRAME_HEADER * frame_len.div_ceil(HTTP2_MAX_FRAME_SIZE);
    u32::try_from(wire).unwrap_or(u32::MAX)
}

fn record(stats: &Mutex<ClientStats>, message: LiteMessage, wire_len: u32) {
    {
        let mut stats = stats.lock();
        if let Some((from, trace)) = stats.trace.as_mut() {
            let at = u32::try_from(from.elapsed().as_micros()).unwrap_or(u32::MAX);
            trace.push((at, wire_len));
        }
    }
    match message {
        LiteMessage::CaughtUp(sequence) => {
            let mut stats = stats.lock();
            stats.caught_up = true;
            stats.last_sequence = stats.last_sequence.max(sequence);
        }
        LiteMessage::Entries(entries) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros();
            let now = u64::try_from(now).unwrap_or(u64::MAX);
            let mut stats = stats.lock();
            let ClientStats {
                last_sequence,
                received,
                messages,
                latency,
                steady,
                ..
            } = &mut *stats;
            *messages += 1;
            for (sequence, stamped) in entries {
                *last_sequence = sequence;
                *received += 1;
                if let Some(histogram) = latency.as_mut() {
                    histogram.record(now.saturating_sub(stamped));
                }
                if let Some((from, histogram)) = steady.as_mut()
                    && stamped >= *from
                {
                    histogram.record(now.saturating_sub(stamped));
                }
            }
        }
        LiteMessage::Other => {}
    }
}

// ---------------------------------------------------------------------------------
// The driver.

struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
}

fn figure(figures: &mut Vec<Figure>, name: impl Into<String>, value: f64, unit: &'static str) {
    figures.push(Figure {
        name: name.into(),
        value,
        unit,
    });
}

/// This binary re-executed as the server or the broadcaster, driven by lines on its
/// stdin and stdout.
struct ChildProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ChildProcess {
    fn start_server(rows: u64, journal: Option<usize>) -> Self {
        let mut command = Command::new(std::env::current_exe().expect("current exe"));
        if let Some(entries) = journal {
            command.env("LAREDO_FANOUT_BENCH_JOURNAL", entries.to_string());
        }
        command
            .env(ROLE_ENV, ROLE_SERVER)
            .env("LAREDO_FANOUT_BENCH_ROWS", rows.to_string());
        Self::start(command)
    }

    fn start_broadcaster() -> Self {
        let mut command = Command::new(std::env::current_exe().expect("current exe"));
        command.env(ROLE_ENV, ROLE_BROADCASTER);
        Self::start(command)
    }

    fn start(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("bench process starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("child output");
        assert!(!line.is_empty(), "a bench child process exited");
        line.trim().to_string()
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// The address the child printed first (`addr <addr>`).
    fn addr(&mut self) -> SocketAddr {
        let line = self.line();
        line.strip_prefix("addr ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected child output {line:?}"))
    }

    /// Sends `command` and returns the numbers of the reply, which starts with `reply`.
    fn ask(&mut self, command: &str, reply: &str) -> Vec<u64> {
        writeln!(self.stdin, "{command}").expect("child stdin");
        self.stdin.flush().expect("child stdin");
        let line = self.line();
        line.strip_prefix(reply)
            .and_then(|rest| rest.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{command:?}: unexpected reply {line:?}"))
            .split_whitespace()
            .map(|w| w.parse().expect("number"))
            .collect()
    }

    fn rss_bytes(&self) -> u64 {
        process_memory_kib(&self.child.id().to_string(), "VmRSS") * 1024
    }

    /// Server: emits at `rate` for `duration`; returns (changes, last sequence, millis
    /// taken).
    fn emit(&mut self, rate: u64, duration: Duration) -> (u64, u64, u64) {
        let words = self.ask(&format!("emit {rate} {}", duration.as_millis()), "emitted");
        (words[0], words[1], words[2])
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            eprintln!("fanout bench: timed out after {timeout:?} waiting for {what}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

struct RunResult {
    clients: usize,
    offered_per_sec: f64,
    delivered_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    p99_steady_ms: f64,
    max_ms: f64,
    entries_per_message: f64,
    /// gRPC messages the clients received (all kinds; in practice `JournalEntries`).
    messages: u64,
    /// The bytes the server wrote for them (HTTP/2 DATA frames), and all the bytes the
    /// clients read from their connections meanwhile.
    message_bytes: u64,
    tcp_bytes: u64,
    server_cpu_seconds: f64,
    disconnected: usize,
    missing: u64,
    /// CPU cores busy on average in the server process, and in this (load) process.
    server_cores: f64,
    load_cores: f64,
}

impl RunResult {
    fn server_us_per_message(&self) -> f64 {
        self.server_cpu_seconds * 1e6 / (self.messages as f64).max(1.0)
    }
}

/// Runs the server at the configured rate with `clients`; returns the figures and what
/// the clients received, as the broadcaster's schedule.
async fn measure(
    server: &mut ChildProcess,
    clients: &[LoadClient],
    options: &Options,
) -> (RunResult, Vec<ScheduledWrite>) {
    let steady_from = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        + WARM_UP;
    let steady_from = u64::try_from(steady_from.as_micros()).unwrap_or(u64::MAX);
    let started = Instant::now();
    for client in clients {
        let mut stats = client.stats.lock();
        stats.received = 0;
        stats.messages = 0;
        stats.latency = Some(Histogram::new());
        stats.steady = Some((steady_from, Histogram::new()));
        stats.trace = Some((started, Vec::new()));
    }
    let tcp_before: Vec<u64> = clients
        .iter()
        .map(|c| c.tcp_read.load(Ordering::Relaxed))
        .collect();
    let duration = Duration::from_secs(options.seconds);
    let server_pid = server.pid();
    let (server_cpu, load_cpu) = (
        process_cpu_seconds(&server_pid),
        process_cpu_seconds("self"),
    );
    // The server's `emit` blocks this thread; the clients run on the runtime's workers.
    let (emitted, last_sequence, emit_millis) =
        tokio::task::block_in_place(|| server.emit(options.rate, duration));
    assert!(emitted > 0, "the server emitted no change");
    let all_done = |clients: &[LoadClient]| {
        clients.iter().all(|c| {
            let stats = c.stats.lock();
            stats.last_sequence >= last_sequence || stats.ended.is_some()
        })
    };
    wait_for("every client to receive the last change", WAIT, || {
        all_done(clients)
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu_seconds = process_cpu_seconds(&server_pid) - server_cpu;
    let load_cores = (process_cpu_seconds("self") - load_cpu) / elapsed;
    let mut histogram = Histogram::new();
    let mut steady = Histogram::new();
    let mut entry_messages = 0;
    let mut received = 0;
    let mut disconnected = 0;
    let mut schedule = Vec::new();
    let mut tcp_bytes = 0;
    for (number, (client, tcp_before)) in clients.iter().zip(tcp_before).enumerate() {
        tcp_bytes += client.tcp_read.load(Ordering::Relaxed) - tcp_before;
        let mut stats = client.stats.lock();
        received += stats.received;
        entry_messages += stats.messages;
        if let Some(h) = &stats.latency {
            histogram.merge(h);
        }
        if let Some((_, h)) = &stats.steady {
            steady.merge(h);
        }
        if let Some(reason) = &stats.ended {
            disconnected += 1;
            if disconnected == 1 {
                eprintln!("fanout bench: a client's stream ended: {reason}");
            }
        } else {
            assert!(
                stats.received > 0,
                "client {number} received no entries of the {emitted} emitted, and its stream \
                 did not end: nothing measured for it"
            );
        }
        let (_, trace) = stats.trace.take().expect("trace set above");
        let connection = u32::try_from(number).expect("client count fits u32");
        schedule.extend(trace.into_iter().map(|(at, size)| ScheduledWrite {
            at_micros: u64::from(at),
            connection,
            size,
        }));
    }
    let messages = schedule.len() as u64;
    let message_bytes = schedule.iter().map(|w| u64::from(w.size)).sum();
    // The broadcaster replays the messages as framed above: they must be what the
    // server wrote (HTTP/2 PINGs and the like are a few bytes in a run).
    let share = message_bytes as f64 / (tcp_bytes as f64).max(1.0);
    assert!(
        (1.0 - MESSAGE_BYTES_TOLERANCE..=1.0 + MESSAGE_BYTES_TOLERANCE).contains(&share),
        "the received messages, framed as the server writes them, make {message_bytes} bytes \
         but the clients read {tcp_bytes}: the broadcaster would not replay what the server wrote"
    );
    let offered_rate = emitted as f64 / (emit_millis as f64 / 1000.0).max(1e-3);
    let result = RunResult {
        clients: clients.len(),
        offered_per_sec: offered_rate * clients.len() as f64,
        delivered_per_sec: received as f64 / elapsed,
        p50_ms: histogram.quantile_ms(0.50),
        p99_ms: histogram.quantile_ms(0.99),
        p99_steady_ms: steady.quantile_ms(0.99),
        max_ms: histogram.quantile_ms(1.0),
        entries_per_message: received as f64 / (entry_messages as f64).max(1.0),
        messages,
        message_bytes,
        tcp_bytes,
        server_cpu_seconds,
        disconnected,
        missing: (emitted * clients.len() as u64).saturating_sub(received),
        server_cores: server_cpu_seconds / elapsed,
        load_cores,
    };
    (result, schedule)
}

/// One load connection to the broadcaster: a task that reads and counts.
struct ReferenceReader {
    received: Arc<AtomicU64>,
    task: tokio::task::AbortHandle,
}

impl Drop for ReferenceReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

thread_local! {
    /// The readers' read buffer, one per worker thread: 5,000 buffers of their own would
    /// cost the load process hundreds of MiB.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(vec![0; 64 * 1024]);
}

/// Opens `count` connections to the broadcaster, numbered from 0 (the first 4 bytes each
/// sends), and waits until it has registered them all.
async fn connect_readers(
    broadcaster: &mut ChildProcess,
    addr: SocketAddr,
    count: usize,
    tasks: &Mutex<JoinSet<()>>,
) -> Vec<ReferenceReader> {
    let mut readers = Vec::with_capacity(count);
    for number in 0..count {
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("reader connects to the broadcaster");
        tcp.set_nodelay(true).expect("TCP_NODELAY");
        let number = u32::try_from(number).expect("client count fits u32");
        tcp.write_u32(number).await.expect("connection number");
        let received = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&received);
        let task = tasks.lock().spawn(async move {
            loop {
                if tcp.readable().await.is_err() {
                    return;
                }
                loop {
                    match READ_BUFFER.with(|buf| tcp.try_read(&mut buf.borrow_mut())) {
                        Ok(0) => return,
                        Ok(n) => counter.fetch_add(n as u64, Ordering::Relaxed),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => return,
                    };
                }
            }
        });
        readers.push(ReferenceReader { received, task });
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let registered =
            tokio::task::block_in_place(|| broadcaster.ask("connections", "connections"))[0];
        if registered == count as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broadcaster registered {registered} of {count} connections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    readers
}

struct ReferenceResult {
    writes: u64,
    bytes: u64,
    cpu_seconds: f64,
    /// CPU cores busy on average in the broadcaster, and in this (load) process.
    cores: f64,
    load_cores: f64,
}

impl ReferenceResult {
    fn us_per_write(&self) -> f64 {
        self.cpu_seconds * 1e6 / (self.writes as f64).max(1.0)
    }
}

/// Replays `schedule` through the broadcaster to `readers` and checks that each reader
/// received exactly the bytes scheduled for it.
async fn measure_reference(
    broadcaster: &mut ChildProcess,
    readers: &[ReferenceReader],
    mut schedule: Vec<ScheduledWrite>,
) -> ReferenceResult {
    schedule.sort_by_key(|w| w.at_micros);
    let mut expected = vec![0u64; readers.len()];
    for w in &schedule {
        expected[w.connection as usize] += u64::from(w.size);
    }
    let total: u64 = expected.iter().sum();
    let path = std::env::temp_dir().join(format!(
        "laredo-fanout-bench-{}.schedule",
        std::process::id()
    ));
    write_schedule(&path, &schedule);
    let loaded = tokio::task::block_in_place(|| {
        broadcaster.ask(&format!("load {}", path.display()), "loaded")
    })[0];
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        loaded,
        schedule.len() as u64,
        "the broadcaster loaded a different schedule"
    );
    let before: Vec<u64> = readers
        .iter()
        .map(|r| r.received.load(Ordering::Relaxed))
        .collect();
    let pid = broadcaster.pid();
    let (cpu, load_cpu) = (process_cpu_seconds(&pid), process_cpu_seconds("self"));
    let started = Instant::now();
    let replayed = tokio::task::block_in_place(|| broadcaster.ask("replay", "replayed"));
    assert_eq!(
        (replayed[0], replayed[1]),
        (schedule.len() as u64, total),
        "the broadcaster wrote (writes, bytes) = ({}, {}) of ({}, {total}) scheduled",
        replayed[0],
        replayed[1],
        schedule.len()
    );
    let received = |idx: usize| readers[idx].received.load(Ordering::Relaxed) - before[idx];
    let all = wait_for(
        "every broadcaster connection to deliver its bytes",
        WAIT,
        || (0..readers.len()).all(|idx| received(idx) >= expected[idx]),
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds(&pid) - cpu;
    let load_cores = (process_cpu_seconds("self") - load_cpu) / elapsed;
    assert!(all, "the broadcaster's bytes did not all arrive");
    for (idx, &asked) in expected.iter().enumerate() {
        let got = received(idx);
        assert_eq!(
            got, asked,
            "broadcaster connection {idx} delivered {got} bytes, {asked} asked"
        );
    }
    ReferenceResult {
        writes: schedule.len() as u64,
        bytes: total,
        cpu_seconds,
        cores: cpu_seconds / elapsed,
        load_cores,
    }
}

async fn connect_all(
    addr: SocketAddr,
    count: usize,
    tasks: &Arc<Mutex<JoinSet<()>>>,
) -> Vec<LoadClient> {
    let next = Arc::new(AtomicUsize::new(0));
    let made = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let mut connectors = JoinSet::new();
    for _ in 0..CONNECT_CONCURRENCY.min(count) {
        let next = Arc::clone(&next);
        let made = Arc::clone(&made);
        let tasks = Arc::clone(tasks);
        connectors.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return;
                }
                let client = connect_client(addr, n, &tasks).await;
                // Wait for the snapshot before the next connection, so the population
                // grows as clients that finished catching up.
                let stats = Arc::clone(&client.stats);
                made.lock().push(client);
                while !stats.lock().caught_up {
                    if stats.lock().ended.is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
    }
    while connectors.join_next().await.is_some() {}
    std::mem::take(&mut *made.lock())
}

fn main() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok(ROLE_SERVER) => return server_main(),
        Ok(ROLE_BROADCASTER) => return broadcaster_main(),
        _ => {}
    }
    let options = parse_options();
    let largest = options.clients.first().copied().unwrap_or(1);
    let needed = largest as u64 * 2 + 256;
    if let Some(limit) = open_files_limit()
        && limit < needed
    {
        eprintln!(
            "fanout bench: {largest} clients need about {needed} open files (a gRPC and a \
             broadcaster connection per client); the limit is {limit}. Raise it (`ulimit -n \
             {needed}`) or pass a smaller --clients."
        );
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let figures = runtime.block_on(run(options));
    println!();
    println!("{:<28} {:>16} unit", "figure", "value");
    for f in &figures {
        println!("{:<28} {:>16.2} {}", f.name, f.value, f.unit);
    }
    println!();
    for f in &figures {
        println!(
            "{{\"bench\":\"{BENCH}\",\"figure\":\"{}\",\"value\":{:.4},\"unit\":\"{}\"}}",
            f.name, f.value, f.unit
        );
    }
}

async fn run(options: Options) -> Vec<Figure> {
    let mut server = ChildProcess::start_server(options.rows, options.journal);
    let addr = server.addr();
    let mut broadcaster = ChildProcess::start_broadcaster();
    let reference_addr = broadcaster.addr();
    let tasks = Arc::new(Mutex::new(JoinSet::new()));
    let mut figures = Vec::new();
    let largest = options.clients.first().copied().unwrap_or(1);

    // Idle memory: the server with no client, then with every client idle on a live
    // stream. Settle before each reading so that startup allocations are done.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server.rss_bytes();
    let connect_started = Instant::now();
    let mut clients = connect_all(addr, largest, &tasks).await;
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let caught_up = wait_for("every client to catch up", WAIT, || {
        clients.iter().all(|c| c.stats.lock().caught_up)
    })
    .await;
    assert!(caught_up, "clients did not catch up");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = server.rss_bytes();
    let idle_per_client = rss_idle.saturating_sub(rss_before) as f64 / largest as f64;
    println!(
        "{largest} clients connected and caught up in {connect_secs:.1} s; server RSS {:.1} MiB -> {:.1} MiB",
        rss_before as f64 / 1048576.0,
        rss_idle as f64 / 1048576.0
    );
    figure(
        &mut figures,
        "idle_bytes_per_client",
        idle_per_client,
        "bytes",
    );
    figure(
        &mut figures,
        format!("connect_clients_per_sec_{largest}"),
        largest as f64 / connect_secs,
        "clients/s",
    );
    let mut readers = connect_readers(&mut broadcaster, reference_addr, largest, &tasks).await;

    let mut results = Vec::new();
    for &n in options.clients.iter().chain(std::iter::once(&1)) {
        clients.truncate(n);
        readers.truncate(n);
        let kept = tokio::task::block_in_place(|| broadcaster.ask(&format!("keep {n}"), "kept"));
        assert_eq!(
            kept[0], n as u64,
            "the broadcaster kept {} connections",
            kept[0]
        );
        // Let the dropped streams close before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (result, schedule) = measure(&mut server, &clients, &options).await;
        println!(
            "{:>5} clients: {:>10.0} changes/s delivered of {:>10.0} offered, p50 {:.2} ms, p99 {:.2} ms (after the warm-up {:.2} ms), max {:.2} ms, {:.1} entries/message, {} disconnected, {} missing; CPU cores: server {:.2}, load {:.2}",
            result.clients,
            result.delivered_per_sec,
            result.offered_per_sec,
            result.p50_ms,
            result.p99_ms,
            result.p99_steady_ms,
            result.max_ms,
            result.entries_per_message,
            result.disconnected,
            result.missing,
            result.server_cores,
            result.load_cores
        );
        // The single-client run is the latency reference only: its server CPU is the
        // engine's, not the fan-out's.
        let reference = if n > 1 {
            let reference = measure_reference(&mut broadcaster, &readers, schedule).await;
            println!(
                "{:>5} clients: {} messages, {:.0} bytes each, {:.1}% of the bytes read; CPU per message: server {:.2} us, broadcaster {:.2} us (ratio {:.2}); CPU cores: broadcaster {:.2}, load {:.2}",
                n,
                result.messages,
                result.message_bytes as f64 / (result.messages as f64).max(1.0),
                100.0 * result.message_bytes as f64 / (result.tcp_bytes as f64).max(1.0),
                result.server_us_per_message(),
                reference.us_per_write(),
                result.server_us_per_message() / reference.us_per_write(),
                reference.cores,
                reference.load_cores
            );
            Some(reference)
        } else {
            None
        };
        results.push((result, reference));
    }
    let reference_p99 = results.last().map_or(f64::NAN, |(r, _)| r.p99_ms);
    for (r, reference) in &results {
        let n = r.clients;
        figure(&mut figures, format!("p50_ms_{n}"), r.p50_ms, "ms");
        figure(&mut figures, format!("p99_ms_{n}"), r.p99_ms, "ms");
        figure(
            &mut figures,
            format!("p99_steady_ms_{n}"),
            r.p99_steady_ms,
            "ms",
        );
        figure(&mut figures, format!("max_ms_{n}"), r.max_ms, "ms");
        figure(
            &mut figures,
            format!("changes_per_sec_{n}"),
            r.delivered_per_sec,
            "changes/s",
        );
        figure(
            &mut figures,
            format!("offered_changes_per_sec_{n}"),
            r.offered_per_sec,
            "changes/s",
        );
        figure(
            &mut figures,
            format!("delivery_ratio_{n}"),
            r.delivered_per_sec / r.offered_per_sec,
            "ratio",
        );
        figure(
            &mut figures,
            format!("entries_per_message_{n}"),
            r.entries_per_message,
            "entries",
        );
        figure(
            &mut figures,
            format!("server_cpu_us_per_message_{n}"),
            r.server_us_per_message(),
            "us",
        );
        figure(
            &mut figures,
            format!("server_cpu_cores_{n}"),
            r.server_cores,
            "cores",
        );
        figure(
            &mut figures,
            format!("load_cpu_cores_{n}"),
            r.load_cores,
            "cores",
        );
        if n > 1 {
            figure(
                &mut figures,
                format!("p99_ratio_{n}"),
                r.p99_ms / reference_p99,
                "ratio",
            );
            figure(
                &mut figures,
                format!("disconnected_{n}"),
                r.disconnected as f64,
                "clients",
            );
        }
        if let Some(reference) = reference {
            figure(
                &mut figures,
                format!("bytes_per_message_{n}"),
                reference.bytes as f64 / (reference.writes as f64).max(1.0),
                "bytes",
            );
            figure(
                &mut figures,
                format!("message_bytes_share_{n}"),
                r.message_bytes as f64 / (r.tcp_bytes as f64).max(1.0),
                "ratio",
            );
            figure(
                &mut figures,
                format!("reference_cpu_us_per_message_{n}"),
                reference.us_per_write(),
                "us",
            );
            figure(
                &mut figures,
                format!("reference_cpu_cores_{n}"),
                reference.cores,
                "cores",
            );
            figure(
                &mut figures,
                format!("cpu_per_message_ratio_{n}"),
                r.server_us_per_message() / reference.us_per_write(),
                "ratio",
            );
        }
    }
    // The headline: at the largest client count (5,000 by default).
    if let Some((r, Some(reference))) = results.first() {
        figure(
            &mut figures,
            "cpu_per_message_ratio",
            r.server_us_per_message() / reference.us_per_write(),
            "ratio",
        );
    }
    drop(readers);
    drop(clients);
    drop(server);
    drop(broadcaster);
    figures
}
