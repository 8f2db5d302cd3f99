//! The limits of one gRPC port.

use std::time::Duration;

use laredo_core::ConfigError;

/// What one port allows a client, so that no caller (authenticated or not) can take
/// the server's memory, file descriptors or tasks. Every limit has a sound default
/// ([`Limits::default`]); each field names its config key in laredo-server
/// (`grpc.limits.<field>`, `fanout.grpc.limits.<field>`).
///
/// The largest message is a property of each service (tonic's
/// `max_decoding_message_size` on the generated server, 4 MiB by default, answered with
/// `RESOURCE_EXHAUSTED`); laredo-server sets it from `grpc.limits.max_message_size`.
///
/// What a client sees when it hits one:
///
/// | Limit | Answer |
/// |---|---|
/// | `max_connections` | calls on a connection over the limit: `RESOURCE_EXHAUSTED` naming it; the connection closes after 2 s |
/// | `max_concurrent_streams` | advertised in SETTINGS; a stream beyond it: `RST_STREAM(REFUSED_STREAM)` |
/// | `max_header_list_size` | advertised in SETTINGS; a larger header block fails the call |
/// | `max_pending_accept_reset_streams`, `max_local_error_reset_streams` | `GOAWAY(ENHANCE_YOUR_CALM)` |
/// | `max_cancelled_calls` | the connection is closed |
/// | `request_timeout` | `DEADLINE_EXCEEDED` naming it |
/// | `idle_timeout`, `keepalive_*` | the connection is closed |
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Connections open at once on the port (default 1,024). A connection beyond it is
    /// answered `RESOURCE_EXHAUSTED` naming the limit on each call and closed.
    pub max_connections: usize,
    /// Calls (HTTP/2 streams) open at once on one connection (default 128), advertised
    /// as `SETTINGS_MAX_CONCURRENT_STREAMS`; the server refuses streams beyond it.
    pub max_concurrent_streams: u32,
    /// Largest request header block in bytes (default 16 KiB), advertised as
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`.
    pub max_header_list_size: u32,
    /// How often the server pings an HTTP/2 connection (default 30 s); `None` never.
    pub keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is closed (default
    /// 20 s).
    pub keepalive_timeout: Duration,
    /// Streams a client may reset before the server accepted them (default 20), the
    /// "rapid reset" guard of the HTTP/2 stack; beyond it, `GOAWAY(ENHANCE_YOUR_CALM)`.
    pub max_pending_accept_reset_streams: usize,
    /// Streams the server may reset for a client's protocol errors (default 256)
    /// before it ends the connection with `GOAWAY(ENHANCE_YOUR_CALM)`.
    pub max_local_error_reset_streams: usize,
    /// Calls a client may cancel (reset after the server accepted them, or let their
    /// deadline pass) on one connection within 10 s (default 200); beyond it the
    /// connection is closed. Completes the rapid-reset guard for streams already
    /// accepted, which cost the server a task each.
    pub max_cancelled_calls: u32,
    /// How long a unary call (or a stream until its first answer) may run (default
    /// 30 s); then `DEADLINE_EXCEEDED` naming the limit. Streams that live long
    /// (`Sync`, `WatchStatus`, `Subscribe`) are not bounded by it once they answer;
    /// keepalive still ends them when the client is gone.
    pub request_timeout: Duration,
    /// A connection with no call in flight for this long is closed (default 5 min);
    /// this also bounds how long a new connection may wait before its first call
    /// (a handshake that never completes).
    pub idle_timeout: Duration,
    /// TCP keepalive idle time and probe interval on accepted sockets (default 60 s);
    /// `None` leaves the system's setting.
    pub tcp_keepalive: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_concurrent_streams: 128,
            max_header_list_size: 16 * 1024,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(20),
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 256,
            max_cancelled_calls: 200,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            tcp_keepalive: Some(Duration::from_secs(60)),
        }
    }
}

impl Limits {
    /// Checks that every limit lets something through, pushing each problem with its
    /// key (`limits.<field>`) to `errors`.
    pub(crate) fn check(&self, errors: &mut Vec<ConfigError>) {
        let mut zero = |key: &str, is_zero: bool| {
            if is_zero {
                errors.push(ConfigError::at(
                    format!("limits.{key}"),
                    "must be greater than 0",
                ));
            }
        };
        zero("max_connections", self.max_connections == 0);
        zero("max_concurrent_streams", self.max_concurrent_streams == 0);
        zero("max_header_list_size", self.max_header_list_size == 0);
        zero("keepalive_timeout", self.keepalive_timeout.is_zero());
        zero("request_timeout", self.request_timeout.is_zero());
        zero("idle_timeout", self.idle_timeout.is_zero());
        zero(
            "keepalive_interval",
            self.keepalive_interval.is_some_and(|d| d.is_zero()),
        );
        zero(
            "tcp_keepalive",
            self.tcp_keepalive.is_some_and(|d| d.is_zero()),
        );
    }
}
