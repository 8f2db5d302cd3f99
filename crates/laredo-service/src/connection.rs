//! Accepted connections that can be closed from outside once the drain deadline passes.
//!
//! tonic's graceful shutdown stops accepting and then waits for every connection to
//! finish its calls, with no deadline: a long server stream (a health or status watch,
//! a subscription) would hold shutdown forever. tonic serves each connection in a task
//! of its own, out of our reach, so the deadline is enforced one level down: every
//! accepted socket is wrapped in [`Closable`], whose reads and writes fail once the
//! shared token is cancelled. hyper then ends the connection (cancelling its calls) and
//! tonic's serve future completes.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Pause after a failed accept.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts one connection with TCP_NODELAY set. A failed accept is logged and returned
/// after a pause: accepting again at once, out of file descriptors, would spin.
pub(crate) async fn accept(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    let accepted = listener.accept().await.and_then(|(stream, addr)| {
        // gRPC sends small frames that must not wait for Nagle's algorithm.
        stream.set_nodelay(true)?;
        Ok((stream, addr))
    });
    if let Err(e) = &accepted {
        tracing::warn!(error = %e, "accepting a connection failed");
        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
    }
    accepted
}

/// The accepted connections of `listener`, closable through `force_close`.
pub(crate) fn incoming(
    listener: TcpListener,
    force_close: CancellationToken,
) -> impl Stream<Item = io::Result<Closable>> {
    futures_util::stream::unfold(listener, move |listener| {
        let force_close = force_close.clone();
        async move {
            let accepted = accept(&listener)
                .await
                .map(|(stream, _)| Closable::new(stream, force_close));
            Some((accepted, listener))
        }
    })
}

/// A TCP stream whose I/O fails once its token is cancelled.
pub(crate) struct Closable {
    stream: TcpStream,
    // Boxed: the future is not `Unpin`, and this keeps `Closable` `Unpin`.
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    is_closed: bool,
}

impl Closable {
    fn new(stream: TcpStream, force_close: CancellationToken) -> Self {
        Self {
            stream,
            closed: Box::pin(force_close.cancelled_owned()),
            is_closed: false,
        }
    }

    /// An error once closed. Polling the token registers the task's waker, so a
    /// connection that is blocked on a read (they always are) wakes up to fail.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.is_closed && self.closed.as_mut().poll(cx).is_ready() {
            self.is_closed = true;
        }
        if self.is_closed {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed by the server: drain deadline passed",
            ));
        }
        Ok(())
    }
}

impl Connected for Closable {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Closable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.poll_closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Closable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.poll_closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.poll_closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.poll_closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
