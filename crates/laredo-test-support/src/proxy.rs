//! A TCP fault-injection proxy: cut, stall and restore the network between a client
//! (laredo) and a real server (PostgreSQL) on loopback.
//!
//! [`FaultProxy::start`] binds `127.0.0.1:0` and spawns one listener task. Every accepted
//! connection gets its own task, which connects to the upstream and copies bytes in both
//! directions. The proxy's controls are a [`watch`] channel of [`Control`]:
//!
//! - `cut` bumps a generation counter. Each connection remembers the generation it was
//!   accepted in and, when the counter moves on, ends at once with `SO_LINGER` 0 on both
//!   sockets, so both peers see a reset (RST) rather than an orderly close. Until
//!   `restore`, the listener resets each new connection right after accepting it. A
//!   counter rather than a flag, because a `cut` directly followed by a `restore` must
//!   still end every connection that was open before it.
//! - `stall` makes each copy loop wait, after a read and before it acts on it (write,
//!   half-close or reset), until the stall is lifted: nothing is closed and nothing is
//!   delivered, like a black-holed route. Bytes read meanwhile are held (one buffer per
//!   direction, then TCP backpressure) and delivered on `restore`, as TCP retransmission
//!   would after a partition heals. Connections accepted during a stall wait before
//!   connecting upstream.
//! - Dropping the [`FaultProxy`] marks it closed: the listener task closes the
//!   listening socket, every connection ends with a reset, and the task ends once they
//!   have.
//!
//! An orderly close (FIN) and a reset from either peer are passed on as such.
//! [`FaultProxy`]'s docs have an example.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Bytes copied per read, per direction.
const BUFFER_SIZE: usize = 16 * 1024;

/// Pause after a failed `accept` (for example, out of file descriptors) so the
/// listener does not spin; a backoff, not synchronisation.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// What the proxy's tasks are told to do; see the module docs.
#[derive(Debug, Default)]
struct Control {
    /// Bumped by every `cut`; a connection from an older generation ends.
    generation: u64,
    /// Between `cut` and `restore`: new connections are reset on accept.
    refusing: bool,
    /// Between `stall` and `restore`: no bytes move.
    stalled: bool,
    /// The proxy was dropped: everything ends.
    closed: bool,
}

#[derive(Debug, Default)]
struct Counters {
    /// Connections forwarded to the upstream so far.
    forwarded: AtomicUsize,
    /// Forwarded connections not yet closed.
    open: AtomicUsize,
}

/// A TCP proxy on a free loopback port that forwards to one upstream address and can
/// cut, stall and restore the connections it carries.
///
/// Dropping it closes the listener and resets every connection. The controls act on
/// the proxy's tasks, right after each call returns: a test observes their effect on
/// its sockets (or through [`open_connections`](Self::open_connections)), never by
/// sleeping.
///
/// ```
/// use laredo_test_support::FaultProxy;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// use tokio::net::{TcpListener, TcpStream};
///
/// # fn main() -> std::io::Result<()> {
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// runtime.block_on(async {
///     // Stands in for PostgreSQL: greets every connection, then waits for it to close.
///     let server = TcpListener::bind("127.0.0.1:0").await?;
///     let upstream = server.local_addr()?;
///     tokio::spawn(async move {
///         while let Ok((mut socket, _)) = server.accept().await {
///             tokio::spawn(async move {
///                 socket.write_all(b"hello").await?;
///                 socket.read(&mut [0; 1]).await
///             });
///         }
///     });
///
///     // Point the client at the proxy, e.g. `host=127.0.0.1 port={proxy.port()}`.
///     let proxy = FaultProxy::start(upstream).await?;
///     let mut client = TcpStream::connect(proxy.addr()).await?;
///     let mut greeting = [0; 5];
///     client.read_exact(&mut greeting).await?;
///     assert_eq!(&greeting, b"hello");
///
///     // The network goes down: the open connection is reset...
///     proxy.cut();
///     assert!(matches!(client.read(&mut greeting).await, Ok(0) | Err(_)));
///
///     // ...and comes back for new connections.
///     proxy.restore();
///     let mut client = TcpStream::connect(proxy.addr()).await?;
///     client.read_exact(&mut greeting).await?;
///     assert_eq!(&greeting, b"hello");
///     assert_eq!(proxy.connections(), 2);
///     Ok(())
/// })
/// # }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    control: watch::Sender<Control>,
    counters: Arc<Counters>,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:<free port>` and forwards every accepted connection to
    /// `upstream` (e.g. `127.0.0.1:5432`).
    ///
    /// Connecting to the upstream happens per connection; when that fails, the client's
    /// connection is reset and not counted.
    ///
    /// # Errors
    /// When the listening socket cannot be bound.
    ///
    /// # Panics
    /// When called outside a tokio runtime (it spawns the listener task).
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (control, control_rx) = watch::channel(Control::default());
        let counters = Arc::new(Counters::default());
        // The task's handle is not kept (against house style): the task ends by itself
        // once `Drop` marks the proxy closed, and aborting it instead would drop its
        // connections without the reset `Drop` promises.
        tokio::spawn(listen(
            listener,
            upstream,
            control_rx,
            Arc::clone(&counters),
        ));
        Ok(FaultProxy {
            addr,
            control,
            counters,
        })
    }

    /// The loopback port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The loopback address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Abruptly closes every open connection and, until [`restore`](Self::restore),
    /// refuses new ones.
    ///
    /// Both peers of an open connection see a reset (`SO_LINGER` 0). A new connection
    /// is accepted and reset at once. The connections end on the proxy's tasks right
    /// after this returns; wait for [`open_connections`](Self::open_connections) to
    /// reach 0 to observe it.
    pub fn cut(&self) {
        self.control.send_modify(|control| {
            control.generation += 1;
            control.refusing = true;
        });
    }

    /// Accepts and forwards new connections again, and lifts a [`stall`](Self::stall):
    /// bytes held by the stall are delivered.
    pub fn restore(&self) {
        self.control.send_modify(|control| {
            control.refusing = false;
            control.stalled = false;
        });
    }

    /// Silently stops forwarding bytes on current connections until
    /// [`restore`](Self::restore): a black hole where nothing is closed and nothing is
    /// delivered.
    ///
    /// Connections accepted during the stall are held too: they are connected to the
    /// upstream only after `restore`. A write already under way when the stall starts
    /// may still complete.
    pub fn stall(&self) {
        self.control.send_modify(|control| control.stalled = true);
    }

    /// Number of connections accepted and forwarded to the upstream so far.
    pub fn connections(&self) -> usize {
        self.counters.forwarded.load(Ordering::SeqCst)
    }

    /// Number of forwarded connections currently open.
    pub fn open_connections(&self) -> usize {
        self.counters.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    /// Stops the listener task and resets every connection (on the proxy's tasks, right
    /// after this returns).
    fn drop(&mut self) {
        self.control.send_modify(|control| control.closed = true);
    }
}

/// Accepts connections until the proxy is closed, then waits for every connection
/// task to end.
async fn listen(
    listener: TcpListener,
    upstream: SocketAddr,
    mut control: watch::Receiver<Control>,
    counters: Arc<Counters>,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            // Also ends when the sender is gone.
            _ = control.wait_for(|control| control.closed) => break,
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else {
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            continue;
        };
        let (refusing, generation) = {
            let control = control.borrow();
            (control.refusing, control.generation)
        };
        if refusing {
            reset(&client);
            continue;
        }
        connections.spawn(serve(
            client,
            upstream,
            control.clone(),
            generation,
            Arc::clone(&counters),
        ));
    }
    // Refuse at the TCP level from now on; each connection task sees `closed` (or the
    // sender gone) and resets its sockets.
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Carries one connection until either peer closes it, or it is cut.
async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    control: watch::Receiver<Control>,
    generation: u64,
    counters: Arc<Counters>,
) {
    let mut cut_rx = control.clone();
    let cut = async move {
        // Ends on a newer generation, on close, or when the sender is gone.
        let _ = cut_rx
            .wait_for(|control| control.closed || control.generation != generation)
            .await;
    };
    tokio::pin!(cut);

    let connected = tokio::select! {
        () = &mut cut => None,
        connected = connect_when_flowing(upstream, control.clone()) => connected.ok(),
    };
    let Some(upstream) = connected else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    counters.forwarded.fetch_add(1, Ordering::SeqCst);
    counters.open.fetch_add(1, Ordering::SeqCst);

    let (mut client, mut upstream) = (client, upstream);
    let abrupt = tokio::select! {
        () = &mut cut => true,
        copied = forward(&mut client, &mut upstream, control) => copied.is_err(),
    };
    if abrupt {
        reset(&client);
        reset(&upstream);
    }
    // Close the sockets before the connection stops counting as open.
    drop((client, upstream));
    counters.open.fetch_sub(1, Ordering::SeqCst);
}

/// Connects to the upstream once no stall is in force.
async fn connect_when_flowing(
    upstream: SocketAddr,
    mut control: watch::Receiver<Control>,
) -> io::Result<TcpStream> {
    flowing(&mut control).await?;
    TcpStream::connect(upstream).await
}

/// Copies both directions until both have closed in order; an error ends both.
async fn forward(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    control: watch::Receiver<Control>,
) -> io::Result<()> {
    let (mut client_read, mut client_write) = client.split();
    let (mut upstream_read, mut upstream_write) = upstream.split();
    tokio::try_join!(
        pump(&mut client_read, &mut upstream_write, control.clone()),
        pump(&mut upstream_read, &mut client_write, control),
    )?;
    Ok(())
}

/// Copies `from` to `to` until `from` ends, passing its end on as a half-close.
///
/// Every result of a read (bytes, end, error) waits for the stall to lift before it is
/// acted on, so a stall delivers nothing, not even a close.
async fn pump(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    mut control: watch::Receiver<Control>,
) -> io::Result<()> {
    let mut buffer = vec![0; BUFFER_SIZE];
    loop {
        let read = from.read(&mut buffer).await;
        flowing(&mut control).await?;
        let read_len = read?;
        if read_len == 0 {
            return to.shutdown().await;
        }
        let mut rest = &buffer[..read_len];
        while !rest.is_empty() {
            flowing(&mut control).await?;
            let written = to.write(rest).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            rest = &rest[written..];
        }
    }
}

/// Waits until no stall is in force.
///
/// # Errors
/// When the proxy is gone.
async fn flowing(control: &mut watch::Receiver<Control>) -> io::Result<()> {
    match control.wait_for(|control| !control.stalled).await {
        Ok(_) => Ok(()),
        Err(_) => Err(io::Error::other("fault proxy closed")),
    }
}

/// Makes closing `stream` send a reset (RST) instead of an orderly FIN.
///
/// `SO_LINGER` 0 never blocks on close, which is why tokio's general `set_linger`
/// warning does not apply.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}
