//! [`FanoutConfig`]: the target's knobs (FO-27) and their defaults.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Default `journal.max_entries`.
pub const DEFAULT_JOURNAL_MAX_ENTRIES: usize = 1_000_000;
/// Default `journal.max_age`.
pub const DEFAULT_JOURNAL_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Default `client_buffer.max_size`.
pub const DEFAULT_CLIENT_BUFFER_MAX_SIZE: usize = 50_000;
/// Default `heartbeat_interval`.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Default `snapshot.retention.keep_count`: the newest snapshot (what new clients are
/// served) and two older ones for clients resuming by snapshot id. Each snapshot holds
/// a reference to every row of the table it was taken of, so this bounds how many
/// generations of rows the target can keep alive.
pub const DEFAULT_SNAPSHOT_KEEP_COUNT: usize = 3;
/// Default `snapshot.retention.max_age`: as long as the journal's default age. An older
/// snapshot can seldom be resumed from (the journal after it is gone), so keeping it
/// only holds memory.
pub const DEFAULT_SNAPSHOT_MAX_AGE: Duration = DEFAULT_JOURNAL_MAX_AGE;
/// Default `max_clients`. Each client holds a send buffer (up to
/// `client_buffer.max_size` entries), a task and an HTTP/2 stream; a thousand is well
/// above a typical replica fleet and keeps an anonymous flood of `Sync` calls from
/// holding unbounded memory. Raise it for bigger fleets (the fan-out bench runs 5,000).
pub const DEFAULT_MAX_CLIENTS: usize = 1_000;

/// What happens when a client's send buffer is full (`client_buffer.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientBufferPolicy {
    /// `drop_disconnect`: a client whose buffer is full while it is more than a
    /// buffer behind the journal's head (live), a buffer further behind than when its
    /// journal catch-up began, or (while it takes a snapshot) more than
    /// `journal.max_entries` plus a buffer behind, is disconnected
    /// (`RESOURCE_EXHAUSTED`); it
    /// reconnects and resumes (or re-snapshots). The engine never waits for a client,
    /// and a stalled client does not pin the journal for long.
    #[default]
    DropDisconnect,
    /// `slow_down`: the client's stream waits for room; its journal pin keeps the
    /// entries it has not been sent, so the journal may outgrow its limits.
    SlowDown,
}

impl ClientBufferPolicy {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DropDisconnect => "drop_disconnect",
            Self::SlowDown => "slow_down",
        }
    }
}

impl fmt::Display for ClientBufferPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `client_buffer.policy` that is neither `drop_disconnect` nor `slow_down`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPolicy(pub String);

impl fmt::Display for UnknownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client_buffer.policy: unknown policy {:?} (expected drop_disconnect or slow_down)",
            self.0
        )
    }
}

impl std::error::Error for UnknownPolicy {}

impl FromStr for ClientBufferPolicy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "drop_disconnect" => Ok(Self::DropDisconnect),
            "slow_down" => Ok(Self::SlowDown),
            other => Err(UnknownPolicy(other.to_string())),
        }
    }
}

/// The configuration of a [`FanoutTarget`](crate::FanoutTarget).
///
/// | Key | Field | Default |
/// |---|---|---|
/// | `journal.max_entries` | [`journal_max_entries`](Self::journal_max_entries) | 1,000,000 |
/// | `journal.max_age` | [`journal_max_age`](Self::journal_max_age) | 24 h (zero: no age limit) |
/// | `snapshot.interval` | [`snapshot_interval`](Self::snapshot_interval) | zero (off) |
/// | `snapshot.retention.keep_count` | [`snapshot_keep_count`](Self::snapshot_keep_count) | 3 (0: unbounded, explicitly) |
/// | `snapshot.retention.max_age` | [`snapshot_max_age`](Self::snapshot_max_age) | 24 h (zero: no age limit, explicitly) |
/// | `max_clients` | [`max_clients`](Self::max_clients) | 1,000 (0: unlimited, explicitly) |
/// | `client_buffer.max_size` | [`client_buffer_max_size`](Self::client_buffer_max_size) | 50,000 entries |
/// | `client_buffer.policy` | [`client_buffer_policy`](Self::client_buffer_policy) | `drop_disconnect` |
/// | `heartbeat_interval` | [`heartbeat_interval`](Self::heartbeat_interval) | 5 s |
///
/// Fields are public (set them on a `default()`), and each has a same-named chaining
/// setter. The `archive` keys (cold-tier replay) are not supported yet.
///
/// ```
/// use std::time::Duration;
/// use laredo_target_fanout::{ClientBufferPolicy, FanoutConfig};
///
/// let config = FanoutConfig::default()
///     .journal_max_entries(10_000)
///     .snapshot_interval(Duration::from_secs(300))
///     .snapshot_keep_count(5)
///     .max_clients(500)
///     .client_buffer_policy(ClientBufferPolicy::SlowDown);
/// assert_eq!(config.journal_max_age, Duration::from_secs(24 * 3600));
/// assert_eq!(config.max_clients, 500);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FanoutConfig {
    /// `journal.max_entries`: entries kept (pins may keep more). A full journal is
    /// pruned in steps of 1/64 of this (at most 4,096 entries) or once a second, so it
    /// may run over by up to one step.
    pub journal_max_entries: usize,
    /// `journal.max_age`: entries older than this are dropped (zero: no limit).
    pub journal_max_age: Duration,
    /// `snapshot.interval`: in-memory snapshot cadence once ready (zero: off).
    pub snapshot_interval: Duration,
    /// `snapshot.retention.keep_count`: snapshots kept, newest first (default 3; 0
    /// keeps every snapshot, which only a deployment that drops them some other way
    /// should set).
    pub snapshot_keep_count: usize,
    /// `snapshot.retention.max_age`: snapshots older than this are dropped, except the
    /// newest (default 24 h; zero: no age limit).
    pub snapshot_max_age: Duration,
    /// `max_clients`: concurrent `Sync` streams; one more is refused with
    /// `RESOURCE_EXHAUSTED` naming the limit (default 1,000; 0: unlimited).
    pub max_clients: usize,
    /// `client_buffer.max_size`: entries queued per client (journal entries and
    /// snapshot rows; other messages count one).
    pub client_buffer_max_size: usize,
    /// `client_buffer.policy`.
    pub client_buffer_policy: ClientBufferPolicy,
    /// `heartbeat_interval`: silence after which a heartbeat is sent.
    pub heartbeat_interval: Duration,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            journal_max_entries: DEFAULT_JOURNAL_MAX_ENTRIES,
            journal_max_age: DEFAULT_JOURNAL_MAX_AGE,
            snapshot_interval: Duration::ZERO,
            snapshot_keep_count: DEFAULT_SNAPSHOT_KEEP_COUNT,
            snapshot_max_age: DEFAULT_SNAPSHOT_MAX_AGE,
            max_clients: DEFAULT_MAX_CLIENTS,
            client_buffer_max_size: DEFAULT_CLIENT_BUFFER_MAX_SIZE,
            client_buffer_policy: ClientBufferPolicy::DropDisconnect,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
        }
    }
}

impl FanoutConfig {
    /// `journal.max_entries`: entries kept (at least 1; pins may keep more).
    #[must_use]
    pub fn journal_max_entries(mut self, entries: usize) -> Self {
        self.journal_max_entries = entries.max(1);
        self
    }

    /// `journal.max_age`: entries older than this are dropped (zero: no limit).
    #[must_use]
    pub fn journal_max_age(mut self, age: Duration) -> Self {
        self.journal_max_age = age;
        self
    }

    /// `snapshot.interval`: how often an in-memory snapshot is taken once the target
    /// is ready (zero: never, beyond the ones taken at baseline end, truncate, schema
    /// change, close and for `FULL_SNAPSHOT` clients).
    #[must_use]
    pub fn snapshot_interval(mut self, interval: Duration) -> Self {
        self.snapshot_interval = interval;
        self
    }

    /// `snapshot.retention.keep_count`: snapshots kept (0: unbounded).
    #[must_use]
    pub fn snapshot_keep_count(mut self, count: usize) -> Self {
        self.snapshot_keep_count = count;
        self
    }

    /// `snapshot.retention.max_age`: older snapshots are dropped, except the newest
    /// (zero: no limit).
    #[must_use]
    pub fn snapshot_max_age(mut self, age: Duration) -> Self {
        self.snapshot_max_age = age;
        self
    }

    /// `max_clients`: concurrent `Sync` streams (0: unlimited).
    #[must_use]
    pub fn max_clients(mut self, clients: usize) -> Self {
        self.max_clients = clients;
        self
    }

    /// `client_buffer.max_size`: entries queued per client (at least 1).
    #[must_use]
    pub fn client_buffer_max_size(mut self, entries: usize) -> Self {
        self.client_buffer_max_size = entries.max(1);
        self
    }

    /// `client_buffer.policy`.
    #[must_use]
    pub fn client_buffer_policy(mut self, policy: ClientBufferPolicy) -> Self {
        self.client_buffer_policy = policy;
        self
    }

    /// `heartbeat_interval`: silence after which a heartbeat is sent (at least 1 ms).
    #[must_use]
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval.max(Duration::from_millis(1));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec() {
        let config = FanoutConfig::default();
        assert_eq!(config.journal_max_entries, 1_000_000);
        assert_eq!(config.journal_max_age, Duration::from_secs(86_400));
        assert_eq!(config.snapshot_interval, Duration::ZERO);
        assert_eq!(config.snapshot_keep_count, 3);
        assert_eq!(config.snapshot_max_age, Duration::from_secs(86_400));
        assert_eq!(config.max_clients, 1_000);
        assert_eq!(config.client_buffer_max_size, 50_000);
        assert_eq!(
            config.client_buffer_policy,
            ClientBufferPolicy::DropDisconnect
        );
        assert_eq!(config.heartbeat_interval, Duration::from_secs(5));
    }

    #[test]
    fn policies_parse_from_their_config_spelling() {
        assert_eq!(
            "slow_down".parse::<ClientBufferPolicy>(),
            Ok(ClientBufferPolicy::SlowDown)
        );
        assert_eq!(
            "drop_disconnect".parse::<ClientBufferPolicy>(),
            Ok(ClientBufferPolicy::DropDisconnect)
        );
        let err = "drop".parse::<ClientBufferPolicy>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "client_buffer.policy: unknown policy \"drop\" (expected drop_disconnect or slow_down)"
        );
    }
}
