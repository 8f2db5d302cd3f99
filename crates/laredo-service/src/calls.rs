//! The tower layer that sees every call of a connection: it tells the connection when
//! calls start and end (for its idle timer and its count of cancelled calls), refuses
//! the calls of a connection accepted over the connection limit, and bounds how long a
//! call may take to answer (`request_timeout`).
//!
//! A call ends when its answer is complete (the response body reached its end) or when
//! hyper drops it; dropped before its end means the client reset the stream, or went
//! away, or its deadline passed: a cancelled call.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::TlsConnectInfo;
use tower::{Layer, Service};

use crate::connection::{ConnInfo, ConnState};

/// Layer made of the port's request timeout.
#[derive(Debug, Clone)]
pub(crate) struct CallTrackingLayer {
    request_timeout: Duration,
}

impl CallTrackingLayer {
    pub(crate) fn new(request_timeout: Duration) -> Self {
        Self { request_timeout }
    }
}

impl<S> Layer<S> for CallTrackingLayer {
    type Service = CallTracking<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallTracking {
            inner,
            request_timeout: self.request_timeout,
        }
    }
}

/// The service made by [`CallTrackingLayer`].
#[derive(Debug, Clone)]
pub(crate) struct CallTracking<S> {
    inner: S,
    request_timeout: Duration,
}

fn connection_of<B>(request: &http::Request<B>) -> Option<Arc<ConnState>> {
    let extensions = request.extensions();
    extensions
        .get::<ConnInfo>()
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<ConnInfo>>()
                .map(TlsConnectInfo::get_ref)
        })
        .map(|info| Arc::clone(&info.0))
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for CallTracking<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let connection = connection_of(&request);
        if let Some(connection) = &connection {
            if let Some(limit) = connection.over_limit() {
                let status = Status::resource_exhausted(format!(
                    "this port serves at most {limit} connections at once \
                     (limit max_connections): try again later"
                ));
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
            // `Request::remote_addr` looks for the plain TCP addresses.
            let tcp = connection.tcp_info().clone();
            request.extensions_mut().insert(tcp);
        }
        let guard = CallGuard::new(connection);
        let timeout = self.request_timeout;
        let path = request.uri().path().to_owned();
        let answer = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(response)) => Ok(size_limit_status(response).map(|body| {
                    let done = body.is_end_stream();
                    if done {
                        guard.finish();
                    }
                    Body::new(TrackedBody { inner: body, guard })
                })),
                Ok(Err(e)) => {
                    guard.finish();
                    Err(e)
                }
                Err(_) => {
                    guard.finish();
                    tracing::warn!(method = path, ?timeout, "call exceeded request_timeout");
                    Ok(Status::deadline_exceeded(format!(
                        "{path} did not answer within {timeout:?} (limit request_timeout)"
                    ))
                    .into_http())
                }
            }
        })
    }
}

/// tonic answers a request message over the service's `max_decoding_message_size`
/// with `OUT_OF_RANGE`; gRPC's own servers, and every other limit here, say
/// `RESOURCE_EXHAUSTED`. The answer is rewritten so clients see one code for "over a
/// limit", naming the limit's key.
fn size_limit_status(response: http::Response<Body>) -> http::Response<Body> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() == tonic::Code::OutOfRange
        && status.message().contains("message length too large")
    {
        return Status::resource_exhausted(format!(
            "the request message is larger than this service accepts (limit \
             max_message_size): {}",
            status.message()
        ))
        .into_http();
    }
    response
}

/// Counts one call on its connection from start to end.
struct CallGuard {
    connection: Option<Arc<ConnState>>,
    finished: AtomicBool,
}

impl CallGuard {
    fn new(connection: Option<Arc<ConnState>>) -> Self {
        if let Some(connection) = &connection {
            connection.call_started();
        }
        Self {
            connection,
            finished: AtomicBool::new(false),
        }
    }

    /// The answer is complete: dropping the guard now is no cancellation.
    fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(connection) = &self.connection {
            connection.call_ended(!self.finished.load(Ordering::Relaxed));
        }
    }
}

/// A response body that finishes its call's guard when it reaches its end.
struct TrackedBody {
    inner: Body,
    guard: CallGuard,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.guard.finish(),
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => this.guard.finish(),
            Poll::Ready(Some(Err(_))) => this.guard.finish(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.guard.finish();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
