//! The output of one connection: frames waiting to be written.
//!
//! Frame headers and small payloads are copied into a tail buffer; large DATA payloads
//! are queued as the `Bytes` the body produced, without a copy, and everything goes out
//! with vectored writes. Once all is written the buffers are released, so an idle
//! connection holds none.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;

/// DATA payloads up to this size are copied; larger ones are queued as they are.
const COPY_LIMIT: usize = 1024;
/// The tail buffer's first allocation.
const TAIL_CAPACITY: usize = 1024;
/// Slices per vectored write.
const MAX_SLICES: usize = 64;

#[derive(Default)]
pub(super) struct Out {
    /// Sealed chunks, in order, ahead of `tail`.
    chunks: VecDeque<Bytes>,
    /// Bytes of the first chunk (or of `tail` when there is none) already written.
    written: usize,
    /// Bytes appended after the last chunk.
    tail: Vec<u8>,
    /// Unwritten bytes in `chunks`, counting the first one whole.
    chunk_bytes: usize,
}

impl Out {
    /// Bytes not yet written.
    pub(super) fn len(&self) -> usize {
        self.chunk_bytes + self.tail.len() - self.written
    }

    /// The buffer to append frame bytes to.
    pub(super) fn buf(&mut self) -> &mut Vec<u8> {
        if self.tail.capacity() == 0 {
            self.tail.reserve(TAIL_CAPACITY);
        } else if self.chunks.is_empty() && self.written >= TAIL_CAPACITY.max(self.tail.len() / 2) {
            // A queue that never fully drains must not keep what it already wrote.
            self.tail.drain(..self.written);
            self.written = 0;
        }
        &mut self.tail
    }

    /// Appends a DATA payload (its frame header already appended).
    pub(super) fn push_data(&mut self, data: Bytes) {
        if data.len() <= COPY_LIMIT {
            self.buf().extend_from_slice(&data);
            return;
        }
        if !self.tail.is_empty() {
            if self.chunks.is_empty() && self.written > 0 {
                // `written` counts into the tail: keep only its unwritten part.
                self.tail.drain(..self.written);
                self.written = 0;
            }
            let tail = std::mem::take(&mut self.tail);
            self.chunk_bytes += tail.len();
            self.chunks.push_back(Bytes::from(tail));
        }
        self.chunk_bytes += data.len();
        self.chunks.push_back(data);
    }

    /// Writes what is queued; `Ready(Ok(true))` when anything was written, and with
    /// everything written the buffers are released.
    pub(super) fn poll_write<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<bool>> {
        let mut wrote = false;
        while self.len() > 0 {
            let n = {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut count = 0;
                let mut skip = self.written;
                for chunk in self.chunks.iter().take(MAX_SLICES - 1) {
                    slices[count] = IoSlice::new(&chunk[skip..]);
                    skip = 0;
                    count += 1;
                }
                if self.chunks.len() < MAX_SLICES && !self.tail.is_empty() {
                    slices[count] = IoSlice::new(&self.tail[skip..]);
                    count += 1;
                }
                match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]) {
                    Poll::Pending => {
                        return if wrote {
                            Poll::Ready(Ok(true))
                        } else {
                            Poll::Pending
                        };
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => n,
                }
            };
            wrote = true;
            self.advance(n);
        }
        self.chunks = VecDeque::new();
        self.tail = Vec::new();
        self.written = 0;
        self.chunk_bytes = 0;
        Poll::Ready(Ok(wrote))
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                self.written += n;
                return;
            };
            let rest = front.len() - self.written;
            if n < rest {
                self.written += n;
                return;
            }
            n -= rest;
            self.chunk_bytes -= front.len();
            self.chunks.pop_front();
            self.written = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `step` bytes per write and says "not now" every
    /// third call: partial writes and back-pressure, which a loopback socket produces
    /// only under load, so they are scripted here.
    struct Trickle {
        written: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls.is_multiple_of(3) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut left = self.step;
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(left);
                self.written.extend_from_slice(&buf[..take]);
                left -= take;
                n += take;
                if left == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn drain(out: &mut Out, socket: &mut Trickle) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..10_000 {
            if let Poll::Ready(result) = out.poll_write(socket, &mut cx) {
                result.expect("written");
                if out.len() == 0 {
                    return;
                }
            }
        }
        panic!("never drained");
    }

    #[test]
    fn small_and_large_pieces_arrive_in_order_through_partial_writes() {
        let mut out = Out::default();
        let mut expected = Vec::new();
        let mut socket = Trickle {
            written: Vec::new(),
            step: 7,
            calls: 0,
        };
        for round in 0..5u8 {
            let head = [round; 9];
            out.buf().extend_from_slice(&head);
            expected.extend_from_slice(&head);
            let small = Bytes::from(vec![round + 100; 10]);
            out.push_data(small.clone());
            expected.extend_from_slice(&small);
            out.buf().extend_from_slice(&head);
            expected.extend_from_slice(&head);
            let large = Bytes::from(vec![round + 200; COPY_LIMIT + 50]);
            out.push_data(large.clone());
            expected.extend_from_slice(&large);
            assert_eq!(out.len(), expected.len() - socket.written.len());
            if round % 2 == 1 {
                drain(&mut out, &mut socket);
            } else {
                // Part of it now, the rest together with the next round.
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let _ = out.poll_write(&mut socket, &mut cx);
            }
        }
        drain(&mut out, &mut socket);
        assert_eq!(socket.written, expected);
        // Everything written: nothing held.
        assert_eq!(out.tail.capacity(), 0);
        assert!(out.chunks.is_empty());
    }

    #[test]
    fn a_queue_that_never_drains_keeps_only_what_is_unwritten() {
        let mut out = Out::default();
        let mut socket = Trickle {
            written: Vec::new(),
            step: 100,
            calls: 0,
        };
        let mut expected = Vec::new();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for i in 0..2_000u32 {
            // Always a little more queued than the socket takes: never empty.
            let piece = [u8::try_from(i % 256).unwrap_or(0); 120];
            out.buf().extend_from_slice(&piece);
            expected.extend_from_slice(&piece);
            let _ = out.poll_write(&mut socket, &mut cx);
            assert!(
                out.tail.len() <= 2 * TAIL_CAPACITY + out.len(),
                "tail {} for {} unwritten",
                out.tail.len(),
                out.len()
            );
        }
        drain(&mut out, &mut socket);
        assert_eq!(socket.written, expected);
    }

    #[test]
    fn many_chunks_go_out_over_several_vectored_writes() {
        let mut out = Out::default();
        let mut expected = Vec::new();
        for i in 0..(3 * MAX_SLICES) {
            let byte = u8::try_from(i % 251).unwrap_or(0);
            out.buf().push(byte);
            expected.push(byte);
            let chunk = Bytes::from(vec![byte; COPY_LIMIT + 1]);
            expected.extend_from_slice(&chunk);
            out.push_data(chunk);
        }
        let mut socket = Trickle {
            written: Vec::new(),
            step: 100_000,
            calls: 0,
        };
        drain(&mut out, &mut socket);
        assert_eq!(socket.written, expected);
    }
}
