//! One `Sync` stream: a producer task per client that sends the handshake, the
//! snapshot, the backlog and then live entries into the client's bounded send buffer,
//! and [`SyncStream`], the response stream tonic drains from that buffer.
//!
//! The producer holds a single cursor: the last sequence served (sent, or skipped by
//! the filters). It reads the journal after the cursor in chunks, under the target's
//! read lock, until it reaches the head; then it waits on the head watch channel, which
//! every append updates. Because the cursor is the only state and entries are read by
//! sequence, a burst of appends during catch-up is simply read in the next chunk:
//! nothing is skipped and nothing repeats. The cursor is also the client's journal pin,
//! so pruning never removes an entry the producer has yet to read.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use laredo_proto::laredo::replication::v1 as wire;
use laredo_proto::laredo::replication::v1::sync_response::Message;
use std::sync::atomic::{AtomicUsize, Ordering};

use prost::Message as _;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::Stream;
use tonic::Status;

use crate::config::ClientBufferPolicy;
use crate::encode::{self, BATCH_BYTES, JOURNAL_BATCH_ENTRIES, PositionText, SNAPSHOT_BATCH_ROWS};
use crate::filter::RowFilter;
use crate::journal::EntryKind;
use crate::target::{ClientState, DrainInfo, FanoutTarget, Opened};

/// What a producer queues: a message, or `JournalEntries` made of entries encoded once
/// and shared by every stream (see [`encode::journal_entry_field`]).
pub(crate) enum Outgoing {
    /// A message encoded for this stream alone (boxed: the send buffer's slots are
    /// allocated in blocks, so a small slot keeps an idle client's buffer small).
    Message(Box<wire::SyncResponse>),
    /// A `JournalEntries` message: its entries' shared encodings, concatenated.
    Entries { encoded: Vec<u8> },
}

impl Outgoing {
    /// The message as a decoded `SyncResponse` (for callers of the service trait
    /// rather than the wire).
    fn into_response(self) -> Result<wire::SyncResponse, Status> {
        match self {
            Self::Message(message) => Ok(*message),
            Self::Entries { encoded } => {
                let len = encoded.len();
                let mut buf = Vec::with_capacity(encode::journal_entries_encoded_len(len));
                encode::put_journal_entries_header(len, &mut buf);
                buf.extend_from_slice(&encoded);
                wire::SyncResponse::decode(buf.as_slice())
                    .map_err(|error| Status::internal(format!("journal entries: {error}")))
            }
        }
    }
}

type Item = Result<Outgoing, Status>;

/// The client's send buffer, counted in entries (journal entries and snapshot rows;
/// other messages count one), so that batching does not stretch the bound.
#[derive(Default)]
struct Queue {
    queued: AtomicUsize,
    room: Notify,
}

/// The response stream of `Sync` as the service trait returns it: decoded
/// `SyncResponse`s. (The server from [`ReplicationService::into_server`] sends the
/// shared encoded entries as they are instead.) Dropping it (the client went away)
/// stops the stream's producer and unregisters the client.
///
/// [`ReplicationService::into_server`]: crate::ReplicationService::into_server
#[derive(Debug)]
pub struct SyncStream {
    raw: RawSyncStream,
}

impl SyncStream {
    pub(crate) fn new(raw: RawSyncStream) -> Self {
        Self { raw }
    }
}

impl Stream for SyncStream {
    type Item = Result<wire::SyncResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.raw)
            .poll_next(cx)
            .map(|item| item.map(|item| item.and_then(Outgoing::into_response)))
    }
}

/// The client's send buffer as a stream of [`Outgoing`] messages.
pub(crate) struct RawSyncStream {
    rx: mpsc::Receiver<(usize, Outgoing)>,
    queue: Arc<Queue>,
    kill: Arc<Mutex<Option<Status>>>,
    producer: JoinHandle<()>,
    done: bool,
}

impl std::fmt::Debug for RawSyncStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncStream")
            .field("queued", &self.rx.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Drop for RawSyncStream {
    fn drop(&mut self) {
        self.producer.abort();
    }
}

impl Stream for RawSyncStream {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        // A disconnect drops whatever is still queued: the client resumes anyway.
        let killed = self.kill.lock().take();
        if let Some(status) = killed {
            self.done = true;
            return Poll::Ready(Some(Err(status)));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) => {
                self.done = true;
                let killed = self.kill.lock().take();
                Poll::Ready(killed.map(Err))
            }
            Poll::Ready(Some((weight, item))) => {
                self.queue.queued.fetch_sub(weight, Ordering::AcqRel);
                self.queue.room.notify_one();
                Poll::Ready(Some(Ok(item)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// How a producer stops.
enum Stop {
    /// The client went away, or the stream was closed on purpose.
    Ended(&'static str),
    /// The stream fails with this status (sent ahead of anything queued).
    Failed(&'static str, Status),
}

pub(crate) struct Session {
    pub(crate) target: Arc<FanoutTarget>,
    pub(crate) opened: Opened,
    pub(crate) filter: RowFilter,
    /// How journal rows are encoded on this stream.
    pub(crate) encoding: wire::RowEncoding,
    pub(crate) position_text: Arc<PositionText>,
    pub(crate) client_id: String,
}

/// Starts the producer of a stream and returns the response stream.
pub(crate) fn start(session: Session) -> RawSyncStream {
    let capacity = session.target.config().client_buffer_max_size.max(1);
    // Every message weighs at least one entry, so the channel never fills before the
    // entry bound is reached.
    let (tx, rx) = mpsc::channel(capacity);
    let kill = Arc::new(Mutex::new(None));
    let queue = Arc::new(Queue::default());
    let probe = Arc::downgrade(&queue);
    session
        .opened
        .guard
        .record
        .set_queue_probe(Box::new(move || {
            probe
                .upgrade()
                .map_or(0, |q| q.queued.load(Ordering::Acquire))
        }));
    let producer = Producer {
        policy: session.target.config().client_buffer_policy,
        heartbeat_interval: session.target.config().heartbeat_interval,
        cursor: session.opened.resume_from,
        cursor_position: String::new(),
        last_sent: Instant::now(),
        go_away_sent: false,
        live: false,
        behind_at_catch_up: None,
        deadline: None,
        capacity,
        queue: Arc::clone(&queue),
        head: session.target.subscribe_head(),
        lag_tick: session.target.subscribe_lag_tick(),
        tx,
        kill: Arc::clone(&kill),
        session,
    };
    let producer = tokio::spawn(producer.run());
    RawSyncStream {
        rx,
        queue,
        kill,
        producer,
        done: false,
    }
}

struct Producer {
    session: Session,
    policy: ClientBufferPolicy,
    heartbeat_interval: Duration,
    cursor: u64,
    cursor_position: String,
    last_sent: Instant,
    go_away_sent: bool,
    /// Caught up (the backlog was sent once).
    live: bool,
    /// How far behind the head the stream was when its journal catch-up began (after
    /// the snapshot, if any); `None` before.
    behind_at_catch_up: Option<u64>,
    deadline: Option<Instant>,
    capacity: usize,
    queue: Arc<Queue>,
    /// The journal's head sequence, updated by every append.
    head: tokio::sync::watch::Receiver<u64>,
    /// The head in coarse steps (see `FanoutTarget::lag_step`).
    lag_tick: tokio::sync::watch::Receiver<u64>,
    tx: mpsc::Sender<(usize, Outgoing)>,
    kill: Arc<Mutex<Option<Status>>>,
}

impl Producer {
    async fn run(mut self) {
        let stop = self.serve().await;
        let guard = &self.session.opened.guard;
        match stop {
            Stop::Ended(reason) => guard.set_reason(reason),
            Stop::Failed(reason, status) => {
                guard.set_reason(reason);
                *self.kill.lock() = Some(status);
            }
        }
        tracing::debug!(client = %self.session.client_id, cursor = self.cursor, "replication stream ended");
        // Dropping `self` drops the sender (the response stream ends after the kill
        // status, if any) and the guard (the client is unregistered, its pin released).
    }

    async fn serve(&mut self) -> Stop {
        let mut drain = self.session.target.subscribe_drain();
        if let Err(stop) = self.send_start().await {
            return stop;
        }
        self.behind_at_catch_up = Some(
            self.session
                .target
                .current_sequence()
                .saturating_sub(self.cursor),
        );
        let pending = drain.borrow_and_update().clone();
        if let Some(info) = pending
            && let Err(stop) = self.go_away(&info).await
        {
            return stop;
        }
        let mut caught_up = false;
        // One timer for heartbeats, moved only when it fires: re-arming it after every
        // send would touch the timer wheel once per batch per client.
        let heartbeat = tokio::time::sleep_until(self.last_sent + self.heartbeat_interval);
        tokio::pin!(heartbeat);
        loop {
            self.head.borrow_and_update();
            if let Err(stop) = self.catch_up(&mut drain).await {
                return stop;
            }
            if !caught_up {
                caught_up = true;
                if let Err(stop) = self.caught_up().await {
                    return stop;
                }
            }
            let record = Arc::clone(&self.session.opened.guard.record);
            let deadline = self.deadline;
            tokio::select! {
                biased;
                () = record.cancel.cancelled() => return self.disconnect().await,
                () = self.tx.closed() => return Stop::Ended("client left"),
                () = sleep_until_some(deadline) => return Stop::Ended("drain deadline passed"),
                changed = drain.changed() => {
                    let info = drain.borrow_and_update().clone();
                    if changed.is_ok() && let Some(info) = info && let Err(stop) = self.go_away(&info).await {
                        return stop;
                    }
                }
                _ = self.head.changed() => {}
                () = &mut heartbeat => {
                    if Instant::now() >= self.last_sent + self.heartbeat_interval
                        && let Err(stop) = self.heartbeat().await
                    {
                        return stop;
                    }
                    heartbeat.as_mut().reset(self.last_sent + self.heartbeat_interval);
                }
            }
        }
    }

    /// The handshake and, for FULL_SNAPSHOT, the snapshot.
    async fn send_start(&mut self) -> Result<(), Stop> {
        let opened = &self.session.opened;
        let mode = opened.mode;
        let snapshot = opened.snapshot.clone();
        let target = &self.session.target;
        let text = Arc::clone(&self.session.position_text);
        let handshake = wire::Handshake {
            mode: encode::sync_mode(opened.mode).into(),
            server_current_sequence: opened.current_sequence,
            journal_oldest_sequence: opened.oldest_sequence,
            resume_from_sequence: opened.resume_from,
            columns: encode::columns(&opened.columns),
            snapshot_id: opened
                .snapshot
                .as_ref()
                .map(|s| s.id().to_string())
                .unwrap_or_default(),
            client_id: self.session.client_id.clone(),
            server_id: target.server_id().to_string(),
            heartbeat_interval: encode::duration(self.heartbeat_interval),
            row_encoding: self.session.encoding.into(),
            row_columns: match self.session.encoding {
                wire::RowEncoding::Named => Vec::new(),
                wire::RowEncoding::Compact => encode::columns(&opened.row_columns),
            },
        };
        self.send(Message::Handshake(handshake)).await?;
        if mode != laredo_core::SyncMode::FullSnapshot {
            return Ok(());
        }
        let Some(snapshot) = snapshot else {
            return Ok(());
        };
        let position = snapshot.position().map(|p| text(p)).unwrap_or_default();
        // Counted in a first pass rather than collected: a list of the matching rows
        // per stream would cost every client a pointer per row of the table.
        let filter = &self.session.filter;
        let row_count = snapshot
            .rows()
            .iter()
            .filter(|row| filter.matches_row(row))
            .count();
        self.send(Message::SnapshotBegin(wire::SnapshotBegin {
            snapshot_id: snapshot.id().to_string(),
            sequence: snapshot.sequence(),
            row_count: row_count as u64,
            source_position: position.clone(),
            ..Default::default()
        }))
        .await?;
        let mut batch = Vec::new();
        let mut bytes = 0;
        for row in snapshot.rows() {
            if !self.session.filter.matches_row(row) {
                continue;
            }
            bytes += row.raw_size();
            batch.push(encode::row(row));
            if batch.len() >= SNAPSHOT_BATCH_ROWS || bytes >= BATCH_BYTES {
                let rows = std::mem::take(&mut batch);
                bytes = 0;
                self.send(Message::SnapshotRows(wire::SnapshotRows { rows }))
                    .await?;
            }
        }
        if !batch.is_empty() {
            self.send(Message::SnapshotRows(wire::SnapshotRows { rows: batch }))
                .await?;
        }
        self.send(Message::SnapshotEnd(wire::SnapshotEnd {
            snapshot_id: snapshot.id().to_string(),
            sequence: snapshot.sequence(),
            rows_sent: row_count as u64,
            source_position: position.clone(),
        }))
        .await?;
        self.cursor_position = position;
        Ok(())
    }

    /// Sends every entry after the cursor up to the journal's head.
    async fn catch_up(
        &mut self,
        drain: &mut tokio::sync::watch::Receiver<Option<DrainInfo>>,
    ) -> Result<(), Stop> {
        loop {
            // Under the journal's read lock: copy the shared encodings of the entries
            // that pass the filters into one frame, up to a schema change (sent on its
            // own) or a full batch. Nothing per entry is allocated or reference-counted
            // here: with thousands of streams that would be paid thousands of times.
            let text = Arc::clone(&self.session.position_text);
            let filter = &self.session.filter;
            let encoding = self.session.encoding;
            let mut batch = Batch::default();
            let mut visited = None;
            let mut schema = None;
            let covered = self.session.target.visit_after(
                self.cursor,
                JOURNAL_BATCH_ENTRIES,
                |entry, left| {
                    let mut more = true;
                    if filter.matches_entry(entry) {
                        match &entry.kind {
                            EntryKind::Change { .. } => {
                                if let Some(part) =
                                    encode::journal_entry_field(entry, &*text, encoding)
                                {
                                    if batch.encoded.is_empty() {
                                        // Entries of a table have similar sizes.
                                        batch.encoded.reserve(
                                            (part.len() * left).min(BATCH_BYTES + part.len()),
                                        );
                                    }
                                    batch.push(entry.sequence, part);
                                }
                                more = batch.encoded.len() < BATCH_BYTES;
                            }
                            EntryKind::Schema { .. } => {
                                schema = Some(Arc::clone(entry));
                                more = false;
                            }
                        }
                    }
                    if left == 1 || !more {
                        visited = Some((entry.sequence, entry.position.as_ref().map(|p| text(p))));
                    }
                    more
                },
            );
            if !covered {
                return Err(Stop::Failed(
                    "journal gap",
                    Status::aborted(format!(
                        "the journal no longer covers sequence {}: reconnect",
                        self.cursor
                    )),
                ));
            }
            let Some((sequence, position)) = visited else {
                return Ok(());
            };
            self.flush(&mut batch).await?;
            if let Some(entry) = schema
                && let Some(change) = encode::schema_change(&entry, &*text)
            {
                self.send(Message::SchemaChange(change)).await?;
            }
            self.cursor = sequence;
            self.cursor_position = position.unwrap_or_default();
            // Filtered entries were served too: move the pin past them.
            self.session.opened.guard.record.advance(self.cursor);
            if drain.has_changed().unwrap_or(false) {
                let info = drain.borrow_and_update().clone();
                if let Some(info) = info {
                    self.go_away(&info).await?;
                }
            }
            if Instant::now() >= self.last_sent + self.heartbeat_interval {
                self.heartbeat().await?;
            }
        }
    }

    async fn flush(&mut self, batch: &mut Batch) -> Result<(), Stop> {
        if batch.count == 0 {
            return Ok(());
        }
        let Batch {
            encoded,
            count,
            last,
        } = std::mem::take(batch);
        self.send_outgoing(count, Outgoing::Entries { encoded })
            .await?;
        self.session.opened.guard.record.advance(last);
        Ok(())
    }

    async fn caught_up(&mut self) -> Result<(), Stop> {
        self.send(Message::CaughtUp(wire::CaughtUp {
            sequence: self.cursor,
        }))
        .await?;
        self.live = true;
        let record = &self.session.opened.guard.record;
        if record.state() == ClientState::CatchingUp {
            record.set_state(ClientState::Live);
        }
        if let Some(observer) = self.session.target.observer() {
            observer.on_fanout_client_caught_up(
                &self.session.target.label(),
                &self.session.client_id,
                self.cursor,
            );
        }
        Ok(())
    }

    async fn heartbeat(&mut self) -> Result<(), Stop> {
        let current = self.session.target.current_sequence();
        self.send(Message::Heartbeat(wire::Heartbeat {
            current_sequence: current,
            server_time: Some(encode::timestamp(SystemTime::now())),
            delivered_sequence: self.cursor,
            delivered_source_position: self.cursor_position.clone(),
        }))
        .await
    }

    async fn go_away(&mut self, info: &DrainInfo) -> Result<(), Stop> {
        if self.go_away_sent {
            return Ok(());
        }
        self.go_away_sent = true;
        self.deadline = info.deadline_instant;
        self.session
            .opened
            .guard
            .record
            .set_state(ClientState::Draining);
        self.send(Message::GoAway(go_away_message(info))).await
    }

    /// `disconnect_all`: a last `GoAway` when there is room, then the end.
    async fn disconnect(&mut self) -> Stop {
        if !self.go_away_sent {
            self.go_away_sent = true;
            let info = DrainInfo {
                reason: crate::DrainReason::Shutdown,
                deadline: Some(SystemTime::now()),
                deadline_instant: None,
            };
            let _ = self.tx.try_send((
                1,
                Outgoing::Message(message(Message::GoAway(go_away_message(&info)))),
            ));
        }
        Stop::Ended("disconnected by the server")
    }

    /// Queues one message under the buffer policy.
    async fn send(&mut self, message_: Message) -> Result<(), Stop> {
        let weight = match &message_ {
            Message::JournalEntries(batch) => batch.entries.len(),
            Message::SnapshotRows(batch) => batch.rows.len(),
            _ => 1,
        };
        self.send_outgoing(weight, Outgoing::Message(message(message_)))
            .await
    }

    /// Queues a message of `weight` entries under the buffer policy.
    async fn send_outgoing(&mut self, weight: usize, outgoing: Outgoing) -> Result<(), Stop> {
        let weight = weight.max(1);
        let record = Arc::clone(&self.session.opened.guard.record);
        let mut waited = false;
        loop {
            let room = self.queue.room.notified();
            let queued = self.queue.queued.load(Ordering::Acquire);
            // An oversized batch still goes out alone into an empty buffer.
            if queued == 0 || queued + weight <= self.capacity {
                break;
            }
            if !waited {
                waited = true;
                if let Some(observer) = self.session.target.observer() {
                    observer.on_fanout_client_backpressure(
                        &self.session.target.label(),
                        &self.session.client_id,
                        queued,
                    );
                }
            }
            if record.state() != ClientState::Backpressured {
                record.set_state(ClientState::Backpressured);
            }
            // The journal is the real buffer: a client whose queue stays full while it
            // falls more than a buffer behind the head (live), or a buffer further
            // behind than when its catch-up began, is not keeping up, and its pin would
            // keep the journal from being pruned. While it takes its snapshot, the
            // changes meanwhile are its catch-up: only more than the journal holds count.
            let backlog = self
                .session
                .target
                .current_sequence()
                .saturating_sub(self.cursor);
            let capacity = self.capacity as u64;
            let allowed = if self.live {
                capacity
            } else if let Some(behind) = self.behind_at_catch_up {
                behind.saturating_add(capacity)
            } else {
                // Taking its snapshot, however slowly, until the changes meanwhile
                // outgrow the journal's own limit (which only its pin still holds).
                (self.session.target.config().journal_max_entries as u64).saturating_add(capacity)
            };
            if self.policy == ClientBufferPolicy::DropDisconnect && backlog > allowed {
                tracing::info!(client = %self.session.client_id, queued, backlog, "replication client too slow: disconnected");
                return Err(Stop::Failed(
                    "send buffer full",
                    Status::resource_exhausted(format!(
                        "send buffer full ({queued} entries queued, {backlog} behind): reconnect and resume"
                    )),
                ));
            }
            let deadline = self.deadline;
            tokio::select! {
                () = room => {}
                _ = self.lag_tick.changed() => {}
                () = self.tx.closed() => return Err(Stop::Ended("client left")),
                () = record.cancel.cancelled() => return Err(Stop::Ended("disconnected by the server")),
                () = sleep_until_some(deadline) => return Err(Stop::Ended("drain deadline passed")),
            }
        }
        if record.state() == ClientState::Backpressured {
            record.set_state(if self.go_away_sent {
                ClientState::Draining
            } else if self.live {
                ClientState::Live
            } else {
                ClientState::CatchingUp
            });
        }
        self.queue.queued.fetch_add(weight, Ordering::AcqRel);
        if self.tx.send((weight, outgoing)).await.is_err() {
            return Err(Stop::Ended("client left"));
        }
        self.last_sent = Instant::now();
        Ok(())
    }
}

/// Encoded journal entries waiting to be sent as one `JournalEntries`.
#[derive(Default)]
struct Batch {
    encoded: Vec<u8>,
    count: usize,
    last: u64,
}

impl Batch {
    fn push(&mut self, sequence: u64, part: &[u8]) {
        self.encoded.extend_from_slice(part);
        self.count += 1;
        self.last = sequence;
    }
}

fn message(message: Message) -> Box<wire::SyncResponse> {
    Box::new(wire::SyncResponse {
        message: Some(message),
    })
}

fn go_away_message(info: &DrainInfo) -> wire::GoAway {
    let message = match info.reason {
        crate::DrainReason::Admin => "an operator drained this table: reconnect and resume",
        // Shutdown, and any reason laredo-core adds later.
        _ => "the server is draining: reconnect and resume",
    };
    wire::GoAway {
        reason: encode::go_away_reason(info.reason).into(),
        message: message.to_string(),
        drain_deadline: info.deadline.map(encode::timestamp),
        reconnect_after: None,
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
