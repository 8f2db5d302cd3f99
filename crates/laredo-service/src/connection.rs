//! Accepted connections under the port's [`Limits`]: a cap on how many are open, an
//! idle timer, a guard against clients that cancel calls in a flood, TCP keepalive, and
//! a close from outside once the drain deadline passes.
//!
//! tonic serves each connection in a task of its own, out of our reach, so these are
//! enforced one level down: every accepted socket is wrapped in [`Connection`], whose
//! reads fail once the connection must end (the drain deadline passed, it was idle too
//! long, it cancelled too many calls); hyper then ends the connection. What happens on
//! the connection is reported by [`CallTracking`](crate::calls), the tower layer that
//! sees every call: it finds the connection's [`ConnState`] in the request extensions,
//! where tonic puts [`Connection::connect_info`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::limits::Limits;

/// Pause after a failed accept.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Connections accepted over [`Limits::max_connections`] that are kept open at once,
/// long enough to answer their calls with a status naming the limit. Beyond these, a
/// connection over the limit is closed at once.
const OVER_LIMIT_CONNECTIONS: usize = 64;

/// How long a connection accepted over the limit lives.
const OVER_LIMIT_LIFETIME: Duration = Duration::from_secs(2);

/// The window over which cancelled calls are counted against
/// [`Limits::max_cancelled_calls`].
pub(crate) const CANCEL_WINDOW: Duration = Duration::from_secs(10);

/// Accepts one connection with TCP_NODELAY and TCP keepalive set. A failed accept is
/// logged and returned after a pause: accepting again at once, out of file
/// descriptors, would spin.
pub(crate) async fn accept(
    listener: &TcpListener,
    tcp_keepalive: Option<Duration>,
) -> io::Result<(TcpStream, SocketAddr)> {
    let accepted = listener.accept().await.and_then(|(stream, addr)| {
        // gRPC sends small frames that must not wait for Nagle's algorithm.
        stream.set_nodelay(true)?;
        if let Some(idle) = tcp_keepalive {
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(idle)
                .with_interval(idle);
            socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
        }
        Ok((stream, addr))
    });
    if let Err(e) = &accepted {
        tracing::warn!(error = %e, "accepting a connection failed");
        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
    }
    accepted
}

/// The accepted connections of `listener` under `limits`, closable through
/// `force_close`.
pub(crate) fn incoming(
    listener: TcpListener,
    limits: &Limits,
    force_close: CancellationToken,
) -> impl Stream<Item = io::Result<Connection>> + use<> {
    let admission = Arc::new(Admission::new(limits));
    // Once the drain deadline passes, end every connection still open. Reads then look
    // at one atomic flag per connection instead of polling the shared token.
    let watched = Arc::clone(&admission);
    tokio::spawn(async move {
        force_close.cancelled().await;
        for state in watched.open_connections() {
            state.end("closed by the server: drain deadline passed");
        }
    });
    futures_util::stream::unfold(listener, move |listener| {
        let admission = Arc::clone(&admission);
        async move {
            loop {
                let (stream, remote_addr) =
                    match accept(&listener, admission.limits.tcp_keepalive).await {
                        Ok(accepted) => accepted,
                        Err(e) => return Some((Err(e), listener)),
                    };
                if let Some(connection) = admission.admit(stream, remote_addr) {
                    return Some((Ok(connection), listener));
                }
            }
        }
    })
}

/// Decides whether an accepted connection is served, served only to be told the
/// connection limit, or closed.
struct Admission {
    limits: Limits,
    permits: Arc<Semaphore>,
    over_limit: Arc<Semaphore>,
    /// Connections refused since the last warning, and when that was (seconds since
    /// `started`): one warning a second at most.
    refused: AtomicU64,
    last_warning: AtomicU64,
    started: Instant,
    /// Every connection accepted, to end them at the drain deadline (pruned of the
    /// closed ones as it grows).
    connections: Mutex<Vec<std::sync::Weak<ConnState>>>,
}

impl Admission {
    fn new(limits: &Limits) -> Self {
        Self {
            limits: limits.clone(),
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            over_limit: Arc::new(Semaphore::new(OVER_LIMIT_CONNECTIONS)),
            refused: AtomicU64::new(0),
            last_warning: AtomicU64::new(u64::MAX),
            started: Instant::now(),
            connections: Mutex::new(Vec::new()),
        }
    }

    /// Remembers a connection for the drain deadline.
    fn register(&self, state: &Arc<ConnState>) {
        let mut connections = lock(&self.connections);
        if connections.len() == connections.capacity() {
            connections.retain(|c| c.strong_count() > 0);
        }
        connections.push(Arc::downgrade(state));
    }

    /// The connections still open.
    fn open_connections(&self) -> Vec<Arc<ConnState>> {
        lock(&self.connections)
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect()
    }

    fn admit(&self, stream: TcpStream, remote_addr: SocketAddr) -> Option<Connection> {
        let info = TcpConnectInfo {
            local_addr: stream.local_addr().ok(),
            remote_addr: Some(remote_addr),
        };
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            let state = ConnState::new(info, None, &self.limits);
            self.register(&state);
            return Some(Connection::new(
                stream,
                state,
                permit,
                self.limits.idle_timeout,
                None,
            ));
        }
        self.note_refused(remote_addr);
        let permit = Arc::clone(&self.over_limit).try_acquire_owned().ok()?;
        let state = ConnState::new(info, Some(self.limits.max_connections), &self.limits);
        self.register(&state);
        // Lives just long enough to answer its calls with the limit's name.
        Some(Connection::new(
            stream,
            state,
            permit,
            OVER_LIMIT_LIFETIME,
            Some(Instant::now() + OVER_LIMIT_LIFETIME),
        ))
    }

    fn note_refused(&self, remote_addr: SocketAddr) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.started.elapsed().as_secs();
        let last = self.last_warning.load(Ordering::Relaxed);
        if (last == u64::MAX || now > last)
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.refused.store(0, Ordering::Relaxed);
            tracing::warn!(
                max_connections = self.limits.max_connections,
                refused,
                %remote_addr,
                "connection limit reached: new connections are refused (limit max_connections)"
            );
        }
    }
}

/// What one connection shares with the calls on it: how many are in flight, since when
/// it has been idle, how many its client cancelled lately, and whether it must end.
#[derive(Debug)]
pub(crate) struct ConnState {
    tcp: TcpConnectInfo,
    /// `Some(limit)` when accepted over `max_connections`: every call is refused.
    over_limit: Option<usize>,
    open_calls: AtomicUsize,
    /// When the last call ended (or the connection was accepted).
    idle_since: Mutex<Instant>,
    /// Cancelled calls in the current window, and when the window started.
    cancelled: Mutex<(Instant, u32)>,
    max_cancelled_calls: u32,
    /// Why the connection must end, once it must.
    kill: Mutex<Option<&'static str>>,
    killed: AtomicBool,
    /// The connection task, woken when it must look at the state again.
    waker: AtomicWaker,
}

impl ConnState {
    fn new(tcp: TcpConnectInfo, over_limit: Option<usize>, limits: &Limits) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            tcp,
            over_limit,
            open_calls: AtomicUsize::new(0),
            idle_since: Mutex::new(now),
            cancelled: Mutex::new((now, 0)),
            max_cancelled_calls: limits.max_cancelled_calls,
            kill: Mutex::new(None),
            killed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        })
    }

    /// The TCP addresses, for `Request::remote_addr`.
    pub(crate) fn tcp_info(&self) -> &TcpConnectInfo {
        &self.tcp
    }

    /// `Some(max_connections)` when this connection was accepted over the limit.
    pub(crate) fn over_limit(&self) -> Option<usize> {
        self.over_limit
    }

    /// A call started.
    pub(crate) fn call_started(&self) {
        self.open_calls.fetch_add(1, Ordering::SeqCst);
    }

    /// A call ended; `cancelled` when the client abandoned it (reset the stream) before
    /// its answer was complete.
    pub(crate) fn call_ended(&self, cancelled: bool) {
        if cancelled {
            self.note_cancelled();
        }
        if self.open_calls.fetch_sub(1, Ordering::SeqCst) == 1 {
            *lock(&self.idle_since) = Instant::now();
            // The connection task may be waiting on a read with no idle timer running.
            self.waker.wake();
        }
    }

    fn note_cancelled(&self) {
        let mut window = lock(&self.cancelled);
        let now = Instant::now();
        if now.duration_since(window.0) > CANCEL_WINDOW {
            *window = (now, 0);
        }
        window.1 += 1;
        if window.1 > self.max_cancelled_calls {
            drop(window);
            tracing::warn!(
                remote_addr = ?self.tcp.remote_addr,
                max_cancelled_calls = self.max_cancelled_calls,
                window = ?CANCEL_WINDOW,
                "closing a connection whose client cancelled too many calls (limit max_cancelled_calls)"
            );
            self.end("the client cancelled more calls than max_cancelled_calls allows");
        }
    }

    /// Ends the connection: its next read fails with `reason`.
    pub(crate) fn end(&self, reason: &'static str) {
        lock(&self.kill).get_or_insert(reason);
        self.killed.store(true, Ordering::SeqCst);
        self.waker.wake();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What tonic puts in every request's extensions for a [`Connection`].
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo(pub(crate) Arc<ConnState>);

/// An accepted TCP stream whose reads fail once the connection must end.
pub(crate) struct Connection {
    stream: TcpStream,
    state: Arc<ConnState>,
    _permit: OwnedSemaphorePermit,
    // Boxed: `Sleep` is not `Unpin`, and this keeps `Connection` `Unpin`.
    idle_timer: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    /// An absolute end, for connections over the limit.
    deadline: Option<Instant>,
    closed: Option<&'static str>,
}

impl Connection {
    fn new(
        stream: TcpStream,
        state: Arc<ConnState>,
        permit: OwnedSemaphorePermit,
        idle_timeout: Duration,
        deadline: Option<Instant>,
    ) -> Self {
        let idle_timer = Box::pin(tokio::time::sleep(idle_timeout));
        Self {
            stream,
            state,
            _permit: permit,
            idle_timer,
            idle_timeout,
            deadline,
            closed: None,
        }
    }

    /// An error once the connection must end. Registers the task's waker with
    /// everything that can end it, so a connection blocked on a read (they always are)
    /// wakes up to fail.
    fn poll_alive(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.closed.is_none() {
            self.closed = self.why_closed(cx);
            if let Some(reason) = self.closed {
                tracing::debug!(remote_addr = ?self.state.tcp.remote_addr, reason, "closing a connection");
            }
        }
        match self.closed {
            Some(reason) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, reason)),
            None => Ok(()),
        }
    }

    fn why_closed(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        self.state.waker.register(cx.waker());
        if self.state.killed.load(Ordering::SeqCst) {
            return Some(lock(&self.state.kill).unwrap_or("closed by the server"));
        }
        let deadline = self.deadline;
        let idle_deadline = if self.state.open_calls.load(Ordering::SeqCst) == 0 {
            Some(*lock(&self.state.idle_since) + self.idle_timeout)
        } else {
            None
        };
        let next = match (deadline, idle_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let next = next?;
        if self.idle_timer.deadline() != next {
            self.idle_timer.as_mut().reset(next);
        }
        if self.idle_timer.as_mut().poll(cx).is_pending() {
            return None;
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Some("closed by the server: connection limit reached (max_connections)");
        }
        // A call may have started after the check above.
        (self.state.open_calls.load(Ordering::SeqCst) == 0)
            .then_some("closed by the server: idle for longer than idle_timeout")
    }
}

impl Connected for Connection {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnInfo(Arc::clone(&self.state))
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.poll_alive(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(reason) = this.closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                reason,
            )));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(reason) = this.closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                reason,
            )));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(reason) = this.closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                reason,
            )));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
