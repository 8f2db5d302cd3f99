//! The request body of one stream: DATA frames that the connection task pushes and the
//! service pulls.
//!
//! The connection owns the flow-control window; taking data out of the body counts it
//! as consumed and wakes the stream, whose next poll in the connection task returns the
//! window to the client with a WINDOW_UPDATE. A client that sends faster than the
//! service reads therefore stops at the window instead of filling memory.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// What the connection and the body share.
#[derive(Default)]
pub(crate) struct RecvState {
    chunks: VecDeque<Bytes>,
    /// The client ended the stream (END_STREAM).
    end: bool,
    /// The stream was reset or the connection ended before the client finished.
    aborted: bool,
    /// Bytes taken out since the connection last returned window for them.
    consumed: u32,
    /// The body was dropped: what arrives from now on counts as read at once.
    discarding: bool,
    /// The service waiting for data.
    reader: Option<Waker>,
}

/// A shared [`RecvState`].
#[derive(Clone, Default)]
pub(crate) struct RecvShared(Arc<Mutex<RecvState>>);

impl RecvShared {
    fn lock(&self) -> MutexGuard<'_, RecvState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a DATA payload (`end`: the frame had END_STREAM) and wakes the reader.
    /// `padding` counts toward flow control but is never read, so it is consumed at once.
    pub(crate) fn push(&self, data: Bytes, padding: u32, end: bool) {
        let reader = {
            let mut state = self.lock();
            if state.discarding {
                let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
                state.consumed = state.consumed.saturating_add(len);
            } else if !data.is_empty() {
                state.chunks.push_back(data);
            }
            state.consumed = state.consumed.saturating_add(padding);
            state.end |= end;
            state.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    /// Ends the body with an error for its reader: the stream was reset or the connection
    /// closed before the client finished sending.
    pub(crate) fn abort(&self) {
        let reader = {
            let mut state = self.lock();
            if state.end {
                return;
            }
            state.aborted = true;
            state.chunks.clear();
            state.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    /// Bytes read (or padding dropped) since the last call: window to give back.
    pub(crate) fn take_consumed(&self) -> u32 {
        std::mem::take(&mut self.lock().consumed)
    }
}

/// The body of a request received by the lean HTTP/2 server.
pub(crate) struct RecvBody {
    shared: RecvShared,
    /// Wakes the stream in the connection task, which then returns window.
    stream: Waker,
}

impl RecvBody {
    pub(crate) fn new(shared: RecvShared, stream: Waker) -> Self {
        Self { shared, stream }
    }
}

impl fmt::Debug for RecvBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBody").finish_non_exhaustive()
    }
}

/// The client reset the stream or the connection closed before the request ended.
#[derive(Debug)]
pub(crate) struct RecvError;

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request stream was reset before it ended")
    }
}

impl std::error::Error for RecvError {}

impl Drop for RecvBody {
    /// The service will not read the rest: what it left counts as read, so the client's
    /// window comes back and the buffered data is freed.
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.discarding = true;
            let left: usize = state.chunks.drain(..).map(|chunk| chunk.len()).sum();
            let left = u32::try_from(left).unwrap_or(u32::MAX);
            state.consumed = state.consumed.saturating_add(left);
            state.reader = None;
        }
        self.stream.wake_by_ref();
    }
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = RecvError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RecvError>>> {
        let this = self.get_mut();
        let mut state = this.shared.lock();
        if let Some(chunk) = state.chunks.pop_front() {
            let len = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            state.consumed = state.consumed.saturating_add(len);
            drop(state);
            this.stream.wake_by_ref();
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if state.aborted {
            return Poll::Ready(Some(Err(RecvError)));
        }
        if state.end {
            return Poll::Ready(None);
        }
        match &state.reader {
            Some(reader) if reader.will_wake(cx.waker()) => {}
            _ => state.reader = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let state = self.shared.lock();
        state.end && state.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
