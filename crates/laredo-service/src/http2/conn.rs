//! One HTTP/2 connection, served by one task: frames in, service calls, frames out.
//!
//! Everything a connection holds while idle is the stream table, the HPACK table and
//! whatever the service keeps: reads go through a buffer on the stack (only the tail of
//! a frame that has not fully arrived is kept), and the write buffer is released each
//! time it has been fully written.
//!
//! Each stream's service future and response body are polled in this task with a waker
//! of their own, which queues the stream id and wakes the task; a wake-up polls only
//! the streams that asked for it. All frames produced by one wake-up go out in one
//! write.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::body::{RecvBody, RecvShared};
use super::hpack;
use super::out::Out;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types (RFC 9113 §6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

// Flags.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

// Error codes (RFC 9113 §7).
const NO_ERROR: u32 = 0x0;
const PROTOCOL_ERROR: u32 = 0x1;
const INTERNAL_ERROR: u32 = 0x2;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const STREAM_CLOSED: u32 = 0x5;
const FRAME_SIZE_ERROR: u32 = 0x6;
const REFUSED_STREAM: u32 = 0x7;
const COMPRESSION_ERROR: u32 = 0x9;
const ENHANCE_YOUR_CALM: u32 = 0xb;

// Settings identifiers.
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// The protocol's default frame size limit, which this server keeps for what it receives.
const DEFAULT_MAX_FRAME_SIZE: usize = 16_384;
/// The protocol's default initial window, kept for both directions.
const DEFAULT_WINDOW: i64 = 65_535;
const MAX_WINDOW: i64 = (1 << 31) - 1;
/// Connection-level receive window is given back once this much is outstanding.
const CONN_WINDOW_RETURN: i64 = DEFAULT_WINDOW / 2;
/// A header block (HEADERS plus CONTINUATION) larger than this ends the connection.
const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// Above this much unwritten output, streams are not polled and frames not read until
/// the socket takes it.
const OUT_HIGH_WATER: usize = 64 * 1024;
/// The write buffer's first allocation after it was released.
const OUT_INITIAL_CAPACITY: usize = 4096;
/// Rounds of read/poll/write per task wake-up before yielding to other tasks.
const ROUNDS_PER_POLL: usize = 32;
/// Bytes read per read call, on the stack.
const READ_CHUNK: usize = 16 * 1024;
/// Bytes of DATA one stream may queue per round before the others get their turn.
const STREAM_QUANTUM: usize = 16 * 1024;
/// Request window returned once this much was read (or the window ran below half).
const STREAM_WINDOW_RETURN: i64 = 16 * 1024;
/// The PING payload that marks the round trip after the first GOAWAY of a drain.
const DRAIN_PING: [u8; 8] = *b"laredo-d";
/// The stream id of the first GOAWAY of a drain: any stream may still be on its way.
const MAX_STREAM_ID: u32 = (1 << 31) - 1;

/// Limits this server advertises.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// SETTINGS_MAX_CONCURRENT_STREAMS: streams a client may have open at once.
    pub(crate) max_concurrent_streams: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: the decoded size of one request's headers.
    pub(crate) max_header_list_size: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 256,
            max_header_list_size: 16 * 1024,
        }
    }
}

/// A fatal protocol error: the connection ends with GOAWAY carrying `code`.
#[derive(Debug, Clone, Copy)]
struct ConnError {
    code: u32,
    reason: &'static str,
}

fn conn_err(code: u32, reason: &'static str) -> ConnError {
    ConnError { code, reason }
}

/// Serves one HTTP/2 connection over `io` until the client goes, a protocol error ends
/// it, or shutdown: once `draining` is cancelled the client gets GOAWAY, no new stream
/// is accepted and the connection closes when its streams are done; once `force_close`
/// is cancelled it closes at once.
pub(crate) async fn serve<IO, S, B>(
    io: IO,
    service: S,
    config: Config,
    extension: Option<tonic::transport::server::TcpConnectInfo>,
    draining: CancellationToken,
    force_close: CancellationToken,
) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: Service<Request<RecvBody>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes> + Unpin,
{
    let mut conn = Connection::new(io, service, config, extension);
    let mut drain_seen = false;
    let drain = draining.cancelled();
    let force = force_close.cancelled();
    let mut drain = std::pin::pin!(drain);
    let mut force = std::pin::pin!(force);
    std::future::poll_fn(|cx| {
        if force.as_mut().poll(cx).is_ready() {
            conn.close_streams();
            return Poll::Ready(Ok(()));
        }
        if !drain_seen && drain.as_mut().poll(cx).is_ready() {
            drain_seen = true;
            conn.drain();
        }
        conn.poll(cx)
    })
    .await
}

/// Queued wake-ups of the streams of one connection.
struct ConnWake {
    ready: Mutex<Vec<u32>>,
    task: AtomicWaker,
}

impl ConnWake {
    fn take_ready(&self, into: &mut Vec<u32>) {
        let mut ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        into.append(&mut ready);
    }
}

/// The waker given to one stream's future and body.
struct StreamWake {
    id: u32,
    queued: AtomicBool,
    conn: Arc<ConnWake>,
}

impl Wake for StreamWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.conn
                .ready
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(self.id);
        }
        self.conn.task.wake();
    }
}

enum StreamState<F, B> {
    /// The service is working out the response.
    Calling(Pin<Box<F>>),
    /// Headers are out; the body is being sent.
    Sending(B),
    /// The response has ended.
    Done,
}

struct Stream<F, B> {
    state: StreamState<F, B>,
    wake: Arc<StreamWake>,
    waker: Waker,
    /// What the client may still receive on this stream.
    send_window: i64,
    /// What the client may still send on this stream.
    recv_window: i64,
    /// The request body, until the client ends it.
    recv: Option<RecvShared>,
    /// Body data that did not fit the send windows.
    pending: Bytes,
    /// Request bytes read by the service but not yet returned to the client's window.
    unreturned: i64,
}

struct Continuation {
    id: u32,
    end_stream: bool,
    block: Vec<u8>,
}

struct Connection<IO, S: Service<Request<RecvBody>>, B> {
    io: IO,
    service: S,
    config: Config,
    extension: Option<tonic::transport::server::TcpConnectInfo>,
    decoder: hpack::Decoder,
    streams: HashMap<u32, Stream<S::Future, B>>,
    wake: Arc<ConnWake>,
    /// Streams to poll again (more to send, or the write buffer was full).
    retry: Vec<u32>,
    /// Unprocessed bytes: the start of a frame whose end has not arrived.
    partial: Vec<u8>,
    out: Out,
    preface_done: bool,
    settings_seen: bool,
    continuation: Option<Continuation>,
    /// The highest stream id the client used: streams above it are idle.
    last_stream_id: u32,
    /// The highest stream id accepted for service: what GOAWAY names.
    last_accepted_id: u32,
    conn_send_window: i64,
    conn_recv_window: i64,
    peer_initial_window: i64,
    peer_max_frame: usize,
    /// GOAWAY (final) sent or received: no new streams.
    going_away: bool,
    /// The first GOAWAY of a drain and its PING are out.
    drain_pinged: bool,
    /// A fatal error was sent: finish writing, then close.
    failed: bool,
    read_closed: bool,
}

impl<IO, S, B> Connection<IO, S, B>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: Service<Request<RecvBody>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes> + Unpin,
{
    fn new(
        io: IO,
        service: S,
        config: Config,
        extension: Option<tonic::transport::server::TcpConnectInfo>,
    ) -> Self {
        let mut conn = Self {
            io,
            service,
            config,
            extension,
            decoder: hpack::Decoder::new(),
            streams: HashMap::new(),
            wake: Arc::new(ConnWake {
                ready: Mutex::new(Vec::new()),
                task: AtomicWaker::new(),
            }),
            retry: Vec::new(),
            partial: Vec::new(),
            out: Out::default(),
            preface_done: false,
            settings_seen: false,
            continuation: None,
            last_stream_id: 0,
            last_accepted_id: 0,
            conn_send_window: DEFAULT_WINDOW,
            conn_recv_window: DEFAULT_WINDOW,
            peer_initial_window: DEFAULT_WINDOW,
            peer_max_frame: DEFAULT_MAX_FRAME_SIZE,
            going_away: false,
            drain_pinged: false,
            failed: false,
            read_closed: false,
        };
        let settings = [
            (
                SETTINGS_MAX_CONCURRENT_STREAMS,
                config.max_concurrent_streams,
            ),
            (SETTINGS_MAX_HEADER_LIST_SIZE, config.max_header_list_size),
        ];
        frame_header(conn.out.buf(), settings.len() * 6, SETTINGS, 0, 0);
        for (id, value) in settings {
            conn.out.buf().extend_from_slice(&id.to_be_bytes());
            conn.out.buf().extend_from_slice(&value.to_be_bytes());
        }
        conn
    }

    /// Begins a graceful close (RFC 9113 §6.8): a GOAWAY that still admits any stream
    /// already on its way, and a PING; its ACK brings the final GOAWAY naming the last
    /// stream accepted. The connection closes when its streams are done.
    fn drain(&mut self) {
        if self.going_away || self.drain_pinged {
            return;
        }
        self.drain_pinged = true;
        write_go_away(self.out.buf(), MAX_STREAM_ID, NO_ERROR, "");
        frame_header(self.out.buf(), 8, PING, 0, 0);
        self.out.buf().extend_from_slice(&DRAIN_PING);
    }

    /// Sends GOAWAY: no stream after the last one accepted is served.
    fn go_away(&mut self, code: u32, reason: &str) {
        if self.going_away && code == NO_ERROR {
            return;
        }
        self.going_away = true;
        write_go_away(self.out.buf(), self.last_accepted_id, code, reason);
    }

    fn fail(&mut self, error: ConnError) {
        tracing::debug!(
            code = error.code,
            reason = error.reason,
            "http2 connection error"
        );
        self.go_away(error.code, error.reason);
        self.failed = true;
        self.close_streams();
    }

    fn close_streams(&mut self) {
        for (_, stream) in self.streams.drain() {
            if let Some(recv) = &stream.recv {
                recv.abort();
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.wake.task.register(cx.waker());
        for _ in 0..ROUNDS_PER_POLL {
            let mut progress = false;
            if !self.read_closed && !self.failed && self.out.len() < OUT_HIGH_WATER {
                match self.poll_read(cx) {
                    Poll::Ready(Ok(())) => progress = true,
                    Poll::Ready(Err(e)) => {
                        self.close_streams();
                        return Poll::Ready(Err(e));
                    }
                    Poll::Pending => {}
                }
            }
            if !self.failed {
                progress |= self.poll_streams();
            }
            match self.out.poll_write(&mut self.io, cx) {
                Poll::Ready(Ok(wrote)) => progress |= wrote,
                Poll::Ready(Err(e)) => {
                    self.close_streams();
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {}
            }
            let flushed = self.out.len() == 0;
            if flushed
                && (self.failed || self.read_closed || (self.going_away && self.streams.is_empty()))
            {
                self.close_streams();
                return match Pin::new(&mut self.io).poll_shutdown(cx) {
                    Poll::Ready(_) => Poll::Ready(Ok(())),
                    Poll::Pending => Poll::Pending,
                };
            }
            if !progress {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Reads once and handles the complete frames; `Ready(Ok)` when anything happened.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut storage = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut storage);
        match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        let filled = buf.filled();
        if filled.is_empty() {
            self.read_closed = true;
            return Poll::Ready(Ok(()));
        }
        let result = if self.partial.is_empty() {
            self.process(filled).map(|used| {
                if used < filled.len() {
                    self.partial = filled[used..].to_vec();
                }
            })
        } else {
            let mut partial = std::mem::take(&mut self.partial);
            partial.extend_from_slice(filled);
            self.process(&partial).map(|used| {
                if used < partial.len() {
                    partial.drain(..used);
                    self.partial = partial;
                }
            })
        };
        if let Err(error) = result {
            self.fail(error);
        }
        if self.conn_recv_window <= DEFAULT_WINDOW - CONN_WINDOW_RETURN {
            self.return_conn_window();
        }
        Poll::Ready(Ok(()))
    }

    fn return_conn_window(&mut self) {
        let increment = DEFAULT_WINDOW - self.conn_recv_window;
        if increment > 0 && !self.failed {
            window_update(self.out.buf(), 0, increment);
            self.conn_recv_window = DEFAULT_WINDOW;
        }
    }

    /// Handles the complete frames at the start of `buf`; returns the bytes used.
    fn process(&mut self, buf: &[u8]) -> Result<usize, ConnError> {
        let mut pos = 0;
        if !self.preface_done {
            let n = buf.len().min(PREFACE.len());
            if buf[..n] != PREFACE[..n] {
                return Err(conn_err(PROTOCOL_ERROR, "not an HTTP/2 connection preface"));
            }
            if n < PREFACE.len() {
                return Ok(0);
            }
            self.preface_done = true;
            pos = PREFACE.len();
        }
        while buf.len() - pos >= 9 && !self.failed {
            let head = &buf[pos..pos + 9];
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            if len > DEFAULT_MAX_FRAME_SIZE {
                return Err(conn_err(
                    FRAME_SIZE_ERROR,
                    "frame larger than SETTINGS_MAX_FRAME_SIZE",
                ));
            }
            if buf.len() - pos - 9 < len {
                break;
            }
            let ty = head[3];
            let flags = head[4];
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let payload = &buf[pos + 9..pos + 9 + len];
            pos += 9 + len;
            self.on_frame(ty, flags, id, payload)?;
        }
        Ok(pos)
    }

    fn on_frame(&mut self, ty: u8, flags: u8, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        if !self.settings_seen && ty != SETTINGS {
            return Err(conn_err(PROTOCOL_ERROR, "the first frame must be SETTINGS"));
        }
        if self.continuation.is_some() && ty != CONTINUATION {
            return Err(conn_err(PROTOCOL_ERROR, "expected CONTINUATION"));
        }
        match ty {
            DATA => self.on_data(flags, id, payload),
            HEADERS => self.on_headers(flags, id, payload),
            PRIORITY => {
                if id == 0 {
                    return Err(conn_err(PROTOCOL_ERROR, "PRIORITY on stream 0"));
                }
                // Priorities are not used (RFC 9113 deprecates them).
                Ok(())
            }
            RST_STREAM => self.on_rst_stream(id, payload),
            SETTINGS => self.on_settings(flags, id, payload),
            PUSH_PROMISE => Err(conn_err(PROTOCOL_ERROR, "PUSH_PROMISE from a client")),
            PING => {
                if id != 0 {
                    return Err(conn_err(PROTOCOL_ERROR, "PING on a stream"));
                }
                if payload.len() != 8 {
                    return Err(conn_err(FRAME_SIZE_ERROR, "PING payload is not 8 bytes"));
                }
                if flags & ACK == 0 {
                    frame_header(self.out.buf(), 8, PING, ACK, 0);
                    self.out.buf().extend_from_slice(payload);
                } else if self.drain_pinged && payload == DRAIN_PING {
                    // A round trip after the first GOAWAY: every stream the client
                    // opened before it has arrived.
                    self.go_away(NO_ERROR, "");
                }
                Ok(())
            }
            GOAWAY => {
                if id != 0 {
                    return Err(conn_err(PROTOCOL_ERROR, "GOAWAY on a stream"));
                }
                if payload.len() < 8 {
                    return Err(conn_err(FRAME_SIZE_ERROR, "GOAWAY payload under 8 bytes"));
                }
                // The client opens no more streams; ours finish, then the connection closes.
                self.going_away = true;
                Ok(())
            }
            WINDOW_UPDATE => self.on_window_update(id, payload),
            CONTINUATION => self.on_continuation(flags, id, payload),
            // Unknown frame types are ignored (RFC 9113 §4.1).
            _ => Ok(()),
        }
    }

    fn on_settings(&mut self, flags: u8, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        if id != 0 {
            return Err(conn_err(PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if flags & ACK != 0 {
            if !payload.is_empty() {
                return Err(conn_err(FRAME_SIZE_ERROR, "SETTINGS ack with a payload"));
            }
            return Ok(());
        }
        if !payload.len().is_multiple_of(6) {
            return Err(conn_err(
                FRAME_SIZE_ERROR,
                "SETTINGS length not a multiple of 6",
            ));
        }
        self.settings_seen = true;
        for setting in payload.chunks_exact(6) {
            let ident = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            match ident {
                SETTINGS_ENABLE_PUSH if value > 1 => {
                    return Err(conn_err(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH above 1"));
                }
                SETTINGS_INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > MAX_WINDOW {
                        return Err(conn_err(
                            FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE too large",
                        ));
                    }
                    let delta = value - self.peer_initial_window;
                    self.peer_initial_window = value;
                    for (id, stream) in &mut self.streams {
                        stream.send_window += delta;
                        if stream.send_window > MAX_WINDOW {
                            return Err(conn_err(FLOW_CONTROL_ERROR, "stream window above 2^31-1"));
                        }
                        if !stream.pending.is_empty() {
                            queue(&mut self.retry, *id, &stream.wake);
                        }
                    }
                }
                SETTINGS_MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return Err(conn_err(
                            PROTOCOL_ERROR,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.peer_max_frame = usize::try_from(value).unwrap_or(DEFAULT_MAX_FRAME_SIZE);
                }
                // The header table size bounds an encoder's table: ours keeps none.
                // Concurrency and header-list limits are about what this server sends:
                // one response per request, headers from the service.
                SETTINGS_HEADER_TABLE_SIZE
                | SETTINGS_MAX_CONCURRENT_STREAMS
                | SETTINGS_MAX_HEADER_LIST_SIZE => {}
                _ => {}
            }
        }
        frame_header(self.out.buf(), 0, SETTINGS, ACK, 0);
        Ok(())
    }

    fn on_window_update(&mut self, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        let [a, b, c, d] = payload else {
            return Err(conn_err(
                FRAME_SIZE_ERROR,
                "WINDOW_UPDATE payload is not 4 bytes",
            ));
        };
        let increment = i64::from(u32::from_be_bytes([*a, *b, *c, *d]) & 0x7fff_ffff);
        if id == 0 {
            if increment == 0 {
                return Err(conn_err(PROTOCOL_ERROR, "WINDOW_UPDATE of 0"));
            }
            self.conn_send_window += increment;
            if self.conn_send_window > MAX_WINDOW {
                return Err(conn_err(
                    FLOW_CONTROL_ERROR,
                    "connection window above 2^31-1",
                ));
            }
            for (id, stream) in &self.streams {
                if !stream.pending.is_empty() {
                    queue(&mut self.retry, *id, &stream.wake);
                }
            }
            return Ok(());
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            if id > self.last_stream_id {
                return Err(conn_err(PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream"));
            }
            return Ok(());
        };
        if increment == 0 {
            self.reset(id, PROTOCOL_ERROR);
            return Ok(());
        }
        stream.send_window += increment;
        if stream.send_window > MAX_WINDOW {
            self.reset(id, FLOW_CONTROL_ERROR);
            return Ok(());
        }
        if !stream.pending.is_empty() {
            queue(&mut self.retry, id, &stream.wake);
        }
        Ok(())
    }

    fn on_rst_stream(&mut self, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        if id == 0 {
            return Err(conn_err(PROTOCOL_ERROR, "RST_STREAM on stream 0"));
        }
        if payload.len() != 4 {
            return Err(conn_err(
                FRAME_SIZE_ERROR,
                "RST_STREAM payload is not 4 bytes",
            ));
        }
        if id > self.last_stream_id {
            return Err(conn_err(PROTOCOL_ERROR, "RST_STREAM on an idle stream"));
        }
        self.remove(id);
        Ok(())
    }

    fn on_data(&mut self, flags: u8, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        if id == 0 {
            return Err(conn_err(PROTOCOL_ERROR, "DATA on stream 0"));
        }
        let flow = i64::try_from(payload.len()).unwrap_or(i64::MAX);
        if flow > self.conn_recv_window {
            return Err(conn_err(
                FLOW_CONTROL_ERROR,
                "DATA beyond the connection window",
            ));
        }
        self.conn_recv_window -= flow;
        let data = strip_padding(flags, payload)?;
        let Some(stream) = self.streams.get_mut(&id) else {
            if id > self.last_stream_id {
                return Err(conn_err(PROTOCOL_ERROR, "DATA on an idle stream"));
            }
            // A stream already closed here: the data is dropped.
            return Ok(());
        };
        let Some(recv) = &stream.recv else {
            self.reset(id, STREAM_CLOSED);
            return Ok(());
        };
        if flow > stream.recv_window {
            self.reset(id, FLOW_CONTROL_ERROR);
            return Ok(());
        }
        stream.recv_window -= flow;
        let padding = u32::try_from(payload.len() - data.len()).unwrap_or(u32::MAX);
        let end = flags & END_STREAM != 0;
        recv.push(Bytes::copy_from_slice(data), padding, end);
        if end {
            stream.recv = None;
        } else if padding > 0 {
            Wake::wake_by_ref(&stream.wake);
        }
        Ok(())
    }

    fn on_headers(&mut self, flags: u8, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        if id == 0 || id.is_multiple_of(2) {
            return Err(conn_err(
                PROTOCOL_ERROR,
                "HEADERS on a stream a client may not open",
            ));
        }
        let mut block = strip_padding(flags, payload)?;
        if flags & PRIORITY_FLAG != 0 {
            if block.len() < 5 {
                return Err(conn_err(
                    FRAME_SIZE_ERROR,
                    "HEADERS priority fields cut short",
                ));
            }
            block = &block[5..];
        }
        let end_stream = flags & END_STREAM != 0;
        if flags & END_HEADERS != 0 {
            return self.on_header_block(id, end_stream, block);
        }
        self.continuation = Some(Continuation {
            id,
            end_stream,
            block: block.to_vec(),
        });
        Ok(())
    }

    fn on_continuation(&mut self, flags: u8, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        let Some(mut cont) = self.continuation.take() else {
            return Err(conn_err(PROTOCOL_ERROR, "CONTINUATION without HEADERS"));
        };
        if cont.id != id {
            return Err(conn_err(PROTOCOL_ERROR, "CONTINUATION on another stream"));
        }
        cont.block.extend_from_slice(payload);
        if cont.block.len() > MAX_HEADER_BLOCK {
            return Err(conn_err(ENHANCE_YOUR_CALM, "header block too large"));
        }
        if flags & END_HEADERS != 0 {
            return self.on_header_block(id, cont.end_stream, &cont.block);
        }
        self.continuation = Some(cont);
        Ok(())
    }

    fn on_header_block(
        &mut self,
        id: u32,
        end_stream: bool,
        block: &[u8],
    ) -> Result<(), ConnError> {
        let max = usize::try_from(self.config.max_header_list_size).unwrap_or(usize::MAX);
        let mut head = RequestHead::default();
        let size = self
            .decoder
            .decode(block, max, |name, value| head.field(name, value))
            .map_err(|e| conn_err(COMPRESSION_ERROR, e.0))?;
        if let Some(stream) = self.streams.get_mut(&id) {
            // Trailers from the client end its request.
            let Some(recv) = stream.recv.take() else {
                return Err(conn_err(STREAM_CLOSED, "HEADERS on a half-closed stream"));
            };
            if !end_stream {
                return Err(conn_err(PROTOCOL_ERROR, "trailers without END_STREAM"));
            }
            recv.push(Bytes::new(), 0, true);
            return Ok(());
        }
        if id <= self.last_stream_id {
            // A stream closed here (reset, refused): nothing to do, but the block had to
            // be decoded to keep the HPACK table in step.
            return Ok(());
        }
        self.last_stream_id = id;
        if self.going_away {
            self.reset(id, REFUSED_STREAM);
            return Ok(());
        }
        self.last_accepted_id = id;
        if size == hpack::ListSize::TooLarge {
            // RFC 9113 §10.5.1: refused for this request, not for the connection.
            let mut status = HeaderMap::new();
            status.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            status.insert("grpc-status", HeaderValue::from_static("8"));
            status.insert(
                "grpc-message",
                HeaderValue::from_static("request headers larger than the server accepts"),
            );
            write_headers(
                self.out.buf(),
                id,
                self.peer_max_frame,
                Some(200),
                &status,
                true,
            );
            if !end_stream {
                self.reset(id, NO_ERROR);
            }
            return Ok(());
        }
        if self.streams.len()
            >= usize::try_from(self.config.max_concurrent_streams).unwrap_or(usize::MAX)
        {
            self.reset(id, REFUSED_STREAM);
            return Ok(());
        }
        let wake = Arc::new(StreamWake {
            id,
            queued: AtomicBool::new(false),
            conn: Arc::clone(&self.wake),
        });
        let waker = Waker::from(Arc::clone(&wake));
        let recv = RecvShared::default();
        if end_stream {
            recv.push(Bytes::new(), 0, true);
        }
        let body = RecvBody::new(recv.clone(), waker.clone());
        let Some(mut request) = head.into_request(body) else {
            self.reset(id, PROTOCOL_ERROR);
            return Ok(());
        };
        if let Some(info) = &self.extension {
            request.extensions_mut().insert(info.clone());
        }
        let mut ready_cx = Context::from_waker(Waker::noop());
        match self.service.poll_ready(&mut ready_cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Pending => {
                self.reset(id, REFUSED_STREAM);
                return Ok(());
            }
        }
        let future = self.service.call(request);
        queue(&mut self.retry, id, &wake);
        self.streams.insert(
            id,
            Stream {
                state: StreamState::Calling(Box::pin(future)),
                wake,
                waker,
                send_window: self.peer_initial_window,
                recv_window: DEFAULT_WINDOW,
                recv: (!end_stream).then_some(recv),
                pending: Bytes::new(),
                unreturned: 0,
            },
        );
        Ok(())
    }

    /// Resets a stream from this side.
    fn reset(&mut self, id: u32, code: u32) {
        frame_header(self.out.buf(), 4, RST_STREAM, 0, id);
        self.out.buf().extend_from_slice(&code.to_be_bytes());
        self.remove(id);
    }

    fn remove(&mut self, id: u32) {
        if let Some(recv) = self.streams.remove(&id).and_then(|stream| stream.recv) {
            recv.abort();
        }
    }

    /// Polls the streams that were woken or left work; `true` when anything happened.
    fn poll_streams(&mut self) -> bool {
        let mut ids = std::mem::take(&mut self.retry);
        self.wake.take_ready(&mut ids);
        if ids.is_empty() {
            return false;
        }
        // Each id is listed once: `queued` stays set from the listing to the poll.
        let mut progress = false;
        for id in ids {
            if self.out.len() >= OUT_HIGH_WATER {
                self.retry.push(id);
                continue;
            }
            let Some(stream) = self.streams.get_mut(&id) else {
                continue;
            };
            stream.wake.queued.store(false, Ordering::Release);
            let (out, conn_window, max_frame) = (
                &mut self.out,
                &mut self.conn_send_window,
                self.peer_max_frame,
            );
            // A panicking service or body ends its own stream, not the connection's others.
            let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                poll_stream(id, stream, out, conn_window, max_frame)
            }));
            let Ok(outcome) = polled else {
                tracing::error!(
                    stream = id,
                    "a service panicked serving a stream: resetting it"
                );
                self.reset(id, INTERNAL_ERROR);
                progress = true;
                continue;
            };
            progress |= outcome.progress;
            if outcome.retry {
                queue(&mut self.retry, id, &stream.wake);
            }
            if outcome.finished {
                let half_open = stream.recv.is_some();
                if half_open && !outcome.reset_sent {
                    // The response is complete; the client need not send the rest.
                    self.reset(id, NO_ERROR);
                } else {
                    self.remove(id);
                }
            }
        }
        if self.streams.is_empty() && self.streams.capacity() > 0 {
            // An idle connection keeps no table sized for a past burst of streams.
            self.streams = HashMap::new();
        }
        progress
    }
}

#[derive(Default)]
struct StreamOutcome {
    progress: bool,
    retry: bool,
    finished: bool,
    /// The stream ended with RST_STREAM already.
    reset_sent: bool,
}

fn poll_stream<F, B>(
    id: u32,
    stream: &mut Stream<F, B>,
    out: &mut Out,
    conn_window: &mut i64,
    max_frame: usize,
) -> StreamOutcome
where
    F: Future<Output = Result<Response<B>, Infallible>>,
    B: Body<Data = Bytes> + Unpin,
{
    let mut outcome = StreamOutcome::default();
    if let Some(recv) = &stream.recv {
        stream.unreturned += i64::from(recv.take_consumed());
        if stream.unreturned >= STREAM_WINDOW_RETURN
            || (stream.unreturned > 0 && stream.recv_window < DEFAULT_WINDOW / 2)
        {
            window_update(out.buf(), id, stream.unreturned);
            stream.recv_window += stream.unreturned;
            stream.unreturned = 0;
            outcome.progress = true;
        }
    }
    let quantum_end = out.len() + STREAM_QUANTUM;
    let mut cx = Context::from_waker(&stream.waker);
    if let StreamState::Calling(future) = &mut stream.state {
        let response = match future.as_mut().poll(&mut cx) {
            Poll::Pending => return outcome,
            Poll::Ready(Ok(response)) => response,
        };
        outcome.progress = true;
        let (parts, body) = response.into_parts();
        let end_stream = body.is_end_stream();
        write_headers(
            out.buf(),
            id,
            max_frame,
            Some(parts.status.as_u16()),
            &parts.headers,
            end_stream,
        );
        if end_stream {
            stream.state = StreamState::Done;
            outcome.finished = true;
            return outcome;
        }
        stream.state = StreamState::Sending(body);
    }
    let StreamState::Sending(body) = &mut stream.state else {
        outcome.finished = matches!(stream.state, StreamState::Done);
        return outcome;
    };
    loop {
        if !stream.pending.is_empty() {
            let before = stream.pending.len();
            send_data(
                out,
                id,
                &mut stream.pending,
                &mut stream.send_window,
                conn_window,
                max_frame,
            );
            outcome.progress |= stream.pending.len() != before;
            if !stream.pending.is_empty() {
                // Waits for WINDOW_UPDATE, which queues the stream again.
                return outcome;
            }
        }
        if out.len() >= OUT_HIGH_WATER.min(quantum_end) {
            // The write buffer is full, or this stream had its turn this round.
            outcome.retry = true;
            return outcome;
        }
        match Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Pending => return outcome,
            Poll::Ready(None) => {
                frame_header(out.buf(), 0, DATA, END_STREAM, id);
                break;
            }
            Poll::Ready(Some(Err(_))) => {
                tracing::debug!(stream = id, "response body failed: resetting the stream");
                frame_header(out.buf(), 4, RST_STREAM, 0, id);
                out.buf().extend_from_slice(&INTERNAL_ERROR.to_be_bytes());
                outcome.reset_sent = true;
                break;
            }
            Poll::Ready(Some(Ok(frame))) => {
                outcome.progress = true;
                match frame.into_data() {
                    Ok(data) => stream.pending = data,
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        if trailers.is_empty() {
                            frame_header(out.buf(), 0, DATA, END_STREAM, id);
                        } else {
                            write_headers(out.buf(), id, max_frame, None, &trailers, true);
                        }
                        break;
                    }
                }
            }
        }
    }
    outcome.progress = true;
    stream.state = StreamState::Done;
    outcome.finished = true;
    outcome
}

/// Puts a stream on the list to poll unless it is on it already.
fn queue(retry: &mut Vec<u32>, id: u32, wake: &StreamWake) {
    if !wake.queued.swap(true, Ordering::AcqRel) {
        retry.push(id);
    }
}

fn write_go_away(out: &mut Vec<u8>, last_stream_id: u32, code: u32, reason: &str) {
    frame_header(out, 8 + reason.len(), GOAWAY, 0, 0);
    out.extend_from_slice(&last_stream_id.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
}

/// Appends a frame header.
fn frame_header(out: &mut Vec<u8>, len: usize, ty: u8, flags: u8, id: u32) {
    if out.capacity() == 0 {
        out.reserve(OUT_INITIAL_CAPACITY);
    }
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&[len[1], len[2], len[3], ty, flags]);
    out.extend_from_slice(&id.to_be_bytes());
}

fn window_update(out: &mut Vec<u8>, id: u32, increment: i64) {
    let increment = u32::try_from(increment.clamp(1, MAX_WINDOW)).unwrap_or(1);
    frame_header(out, 4, WINDOW_UPDATE, 0, id);
    out.extend_from_slice(&increment.to_be_bytes());
}

/// Sends as much of `data` as the windows allow, in frames of at most `max_frame`.
fn send_data(
    out: &mut Out,
    id: u32,
    data: &mut Bytes,
    stream_window: &mut i64,
    conn_window: &mut i64,
    max_frame: usize,
) {
    while !data.is_empty() {
        let window = usize::try_from((*stream_window).min(*conn_window)).unwrap_or(0);
        let n = data.len().min(max_frame).min(window);
        if n == 0 {
            return;
        }
        frame_header(out.buf(), n, DATA, 0, id);
        out.push_data(data.split_to(n));
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        *stream_window -= n;
        *conn_window -= n;
    }
    // Release the buffer behind a fully sent chunk.
    *data = Bytes::new();
}

/// Response headers (with `status`) or trailers, as HEADERS plus CONTINUATION frames.
fn write_headers(
    out: &mut Vec<u8>,
    id: u32,
    max_frame: usize,
    status: Option<u16>,
    headers: &HeaderMap,
    end_stream: bool,
) {
    let mut block = Vec::with_capacity(128);
    if let Some(status) = status {
        hpack::encode_status(status, &mut block);
    }
    for (name, value) in headers {
        if is_connection_specific(name) {
            continue;
        }
        hpack::encode_literal(name.as_str().as_bytes(), value.as_bytes(), &mut block);
    }
    let mut chunks = block.chunks(max_frame).peekable();
    let mut first = true;
    loop {
        let chunk = chunks.next().unwrap_or(&[]);
        let last = chunks.peek().is_none();
        let mut flags = if last { END_HEADERS } else { 0 };
        let ty = if first {
            if end_stream {
                flags |= END_STREAM;
            }
            HEADERS
        } else {
            CONTINUATION
        };
        frame_header(out, chunk.len(), ty, flags, id);
        out.extend_from_slice(chunk);
        first = false;
        if last {
            break;
        }
    }
}

fn is_connection_specific(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
    )
}

/// The payload of a DATA or HEADERS frame without its padding.
fn strip_padding(flags: u8, payload: &[u8]) -> Result<&[u8], ConnError> {
    if flags & PADDED == 0 {
        return Ok(payload);
    }
    let Some((&pad, rest)) = payload.split_first() else {
        return Err(conn_err(
            FRAME_SIZE_ERROR,
            "padded frame without a pad length",
        ));
    };
    let pad = usize::from(pad);
    if pad > rest.len() {
        return Err(conn_err(PROTOCOL_ERROR, "padding longer than the frame"));
    }
    Ok(&rest[..rest.len() - pad])
}

/// The request line and headers of a stream, as decoded.
#[derive(Default)]
struct RequestHead {
    method: Option<Method>,
    scheme: Option<Vec<u8>>,
    authority: Option<Vec<u8>>,
    path: Option<Vec<u8>>,
    headers: HeaderMap,
    regular_seen: bool,
    malformed: bool,
}

impl RequestHead {
    fn field(&mut self, name: &[u8], value: &[u8]) {
        if self.malformed {
            return;
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            if self.regular_seen {
                self.malformed = true;
                return;
            }
            let duplicate = match pseudo {
                b"method" => {
                    let method = Method::from_bytes(value).ok();
                    self.malformed |= method.is_none();
                    self.method.replace(method.unwrap_or_default()).is_some()
                }
                b"scheme" => self.scheme.replace(value.to_vec()).is_some(),
                b"authority" => self.authority.replace(value.to_vec()).is_some(),
                b"path" => self.path.replace(value.to_vec()).is_some(),
                _ => true,
            };
            self.malformed |= duplicate;
            return;
        }
        self.regular_seen = true;
        match (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            _ => self.malformed = true,
        }
    }

    fn into_request(self, body: RecvBody) -> Option<Request<RecvBody>> {
        if self.malformed {
            return None;
        }
        let method = self.method?;
        let path = self.path.filter(|p| !p.is_empty())?;
        let uri = match (self.scheme, self.authority) {
            (Some(scheme), Some(authority)) => Uri::builder()
                .scheme(scheme.as_slice())
                .authority(authority)
                .path_and_query(path)
                .build(),
            _ => Uri::builder().path_and_query(path).build(),
        }
        .ok()?;
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = self.headers;
        Some(request)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Ready;

    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const CANCEL: u32 = 0x8;

    /// Answers every request with `200` and an empty gRPC body; reads nothing.
    #[derive(Clone)]
    struct Empty;

    impl Service<Request<RecvBody>> for Empty {
        type Response = Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<RecvBody>) -> Self::Future {
            std::future::ready(Ok(Response::new(tonic::body::Body::empty())))
        }
    }

    /// An in-memory connection served by [`Empty`]: the client's end and the task.
    fn connect() -> (
        tokio::io::DuplexStream,
        tokio::task::JoinHandle<io::Result<()>>,
    ) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let serving = tokio::spawn(serve(
            server,
            Empty,
            Config::default(),
            None,
            CancellationToken::new(),
            CancellationToken::new(),
        ));
        (client, serving)
    }

    /// xorshift64*: reproducible input without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A valid preface and SETTINGS, then mostly well-formed frames (requests on new
    /// streams, request data, window updates, pings, settings, resets) mixed with
    /// frames of random type, flags, stream id and payload.
    fn random_session(rng: &mut Rng) -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        frame_header(&mut bytes, 0, SETTINGS, 0, 0);
        let mut next_id = 1u32;
        for _ in 0..rng.below(40) {
            let open = if next_id > 1 {
                u32::try_from(rng.below(u64::from(next_id / 2))).unwrap_or(0) * 2 + 1
            } else {
                1
            };
            match rng.below(10) {
                0 | 1 => {
                    // POST http / on a new stream, ended or not.
                    let flags = END_HEADERS | if rng.below(2) == 0 { END_STREAM } else { 0 };
                    frame_header(&mut bytes, 3, HEADERS, flags, next_id);
                    bytes.extend_from_slice(&[0x83, 0x86, 0x84]);
                    next_id += 2;
                }
                2 => {
                    let len = usize::try_from(rng.below(64)).unwrap_or(0);
                    let flags = if rng.below(2) == 0 { END_STREAM } else { 0 };
                    frame_header(&mut bytes, len, DATA, flags, open);
                    bytes.extend(std::iter::repeat_n(7u8, len));
                }
                3 => {
                    let id = if rng.below(2) == 0 { 0 } else { open };
                    let increment = u32::try_from(rng.below(70_000) + 1).unwrap_or(1);
                    frame_header(&mut bytes, 4, WINDOW_UPDATE, 0, id);
                    bytes.extend_from_slice(&increment.to_be_bytes());
                }
                4 => {
                    frame_header(&mut bytes, 8, PING, 0, 0);
                    bytes.extend_from_slice(&rng.next().to_be_bytes());
                }
                5 => {
                    let window = u32::try_from(rng.below(1 << 20)).unwrap_or(0);
                    frame_header(&mut bytes, 6, SETTINGS, 0, 0);
                    bytes.extend_from_slice(&SETTINGS_INITIAL_WINDOW_SIZE.to_be_bytes());
                    bytes.extend_from_slice(&window.to_be_bytes());
                }
                6 => {
                    frame_header(&mut bytes, 4, RST_STREAM, 0, open);
                    bytes.extend_from_slice(&CANCEL.to_be_bytes());
                }
                _ => {
                    let ty = u8::try_from(rng.below(12)).unwrap_or(0);
                    let flags = u8::try_from(rng.below(256)).unwrap_or(0);
                    let id = match rng.below(3) {
                        0 => 0,
                        1 => open,
                        _ => u32::try_from(rng.next() >> 33).unwrap_or(0),
                    };
                    let len = match (ty, rng.below(3)) {
                        (PING | GOAWAY, 0) => 8,
                        (WINDOW_UPDATE | RST_STREAM, 0) => 4,
                        (PRIORITY, 0) => 5,
                        (SETTINGS, 0) => 6,
                        _ => usize::try_from(rng.below(48)).unwrap_or(0),
                    };
                    let payload: Vec<u8> = (0..len)
                        .map(|_| u8::try_from(rng.below(256)).unwrap_or(0))
                        .collect();
                    frame_header(&mut bytes, payload.len(), ty, flags, id);
                    bytes.extend_from_slice(&payload);
                }
            }
        }
        bytes
    }

    #[tokio::test]
    async fn a_request_gets_its_response() {
        let mut input = PREFACE.to_vec();
        frame_header(&mut input, 0, SETTINGS, 0, 0);
        frame_header(&mut input, 3, HEADERS, END_HEADERS | END_STREAM, 1);
        input.extend_from_slice(&[0x83, 0x86, 0x84]);
        let (mut client, serving) = connect();
        client.write_all(&input).await.expect("written");
        client.shutdown().await.expect("half-closed");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("read");
        serving.await.expect("no panic").expect("served");
        assert_eq!(frame_types(&answer), [SETTINGS, SETTINGS, HEADERS]);
    }

    #[tokio::test]
    async fn random_frames_end_in_an_answer_or_a_close_never_a_panic_or_a_hang() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut answered, mut refused) = (0, 0);
        for case in 0..400 {
            let input = random_session(&mut rng);
            let (mut client, serving) = connect();
            // Frame by frame, letting the server run in between, so that streams get
            // served before a later frame may end the connection.
            let mut rest = input.as_slice();
            let mut first = true;
            while !rest.is_empty() {
                let len = if first {
                    PREFACE.len()
                } else {
                    9 + (usize::from(rest[0]) << 16
                        | usize::from(rest[1]) << 8
                        | usize::from(rest[2]))
                };
                first = false;
                let (frame, after) = rest.split_at(len.min(rest.len()));
                if client.write_all(frame).await.is_err() {
                    break; // The server closed the connection.
                }
                rest = after;
                tokio::task::yield_now().await;
            }
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
                .await
                .unwrap_or_else(|_| panic!("case {case}: the server neither answered nor closed"))
                .expect("read");
            let served = tokio::time::timeout(Duration::from_secs(5), serving)
                .await
                .unwrap_or_else(|_| panic!("case {case}: the connection task did not end"));
            assert!(served.is_ok(), "case {case}: the connection task panicked");
            // Whatever happened, the server spoke HTTP/2 first: its SETTINGS.
            assert_eq!(answer.get(3), Some(&SETTINGS), "case {case}");
            let frames = frame_types(&answer);
            answered += usize::from(frames.contains(&HEADERS));
            refused += usize::from(frames.contains(&GOAWAY));
        }
        // The input reached both ends: requests served, and protocol errors.
        assert!(answered > 20, "{answered} sessions had a response");
        assert!(refused > 20, "{refused} sessions ended with GOAWAY");
    }

    fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
        let mut types = Vec::new();
        while bytes.len() >= 9 {
            let len =
                usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            types.push(bytes[3]);
            bytes = bytes.get(9 + len..).unwrap_or_default();
        }
        types
    }
}
