//! The PostgreSQL source's settings.

use std::time::Duration;

use crate::catalog::PublicationConfig;

/// How the source uses its replication slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlotMode {
    /// A temporary slot that lives as long as the replication connection: every start
    /// (and every lost connection) runs a fresh baseline. Nothing is left behind on the
    /// server. The default, and the right mode for in-memory targets.
    #[default]
    Ephemeral,
    /// A persistent named slot: a restart resumes from the slot's confirmed position,
    /// with no gap and no duplicate.
    Stateful,
}

/// How often and how patiently a lost replication connection is re-opened.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Attempts in a row before the stream fails (0 means the default, 10).
    pub max_attempts: u32,
    /// The wait before the first retry.
    pub initial_backoff: Duration,
    /// The longest wait between retries.
    pub max_backoff: Duration,
    /// The factor applied to the wait after each failed attempt.
    pub multiplier: f64,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            multiplier: 2.0,
        }
    }
}

impl ReconnectPolicy {
    /// A policy with these waits.
    pub fn new(
        max_attempts: u32,
        initial_backoff: Duration,
        max_backoff: Duration,
        multiplier: f64,
    ) -> Self {
        Self {
            max_attempts,
            initial_backoff,
            max_backoff,
            multiplier,
        }
    }

    /// `max_attempts`, with 0 read as the default.
    pub fn attempts(&self) -> u32 {
        if self.max_attempts == 0 {
            Self::default().max_attempts
        } else {
            self.max_attempts
        }
    }

    /// The wait before retry number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let factor = self.multiplier.max(1.0).powi(exponent);
        let wait = self.initial_backoff.as_secs_f64() * factor;
        if !wait.is_finite() || wait >= self.max_backoff.as_secs_f64() {
            self.max_backoff
        } else {
            Duration::from_secs_f64(wait)
        }
    }
}

/// Everything [`PgSource`](crate::PgSource) needs to know.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgSourceConfig {
    /// A libpq connection string (URI or `key=value`). Its `sslmode`, `sslrootcert`,
    /// `sslcert`, `sslkey`, `sslsni` and `sslnegotiation` keys choose TLS for both the
    /// query and the replication connection, with libpq's meanings (see
    /// [`SslMode`](crate::SslMode)); the default is `prefer`.
    pub connection_string: String,
    /// Ephemeral (the default) or stateful slot.
    pub slot_mode: SlotMode,
    /// The slot's name (ephemeral slots get a unique suffix).
    pub slot_name: String,
    /// The publication to stream. An empty name means `{slot_name}_pub`.
    pub publication: PublicationConfig,
    /// Stateful mode only: run a fresh baseline on every start instead of resuming.
    pub always_baseline: bool,
    /// Reconnect behaviour.
    pub reconnect: ReconnectPolicy,
    /// Rows per batch handed to the engine during the baseline.
    pub baseline_batch_rows: usize,
    /// How often acknowledged positions are reported to the server at most.
    pub status_interval: Duration,
    /// Changes read ahead from the replication connection.
    pub read_ahead: usize,
    /// A replication connection that delivers nothing at all (not even a keepalive) for
    /// this long is treated as lost and re-opened. The server sends keepalives at half
    /// its `wal_sender_timeout` (60 s by default) when idle, so keep this above that.
    pub receive_timeout: Duration,
    /// How many times in a row a replication message at one WAL position may fail to
    /// decode (the stream reconnects with backoff in between) before the source stops
    /// with an error naming the position and the cause. Default 5.
    pub max_protocol_failures: u32,
}

impl PgSourceConfig {
    /// Ephemeral slot `laredo_slot`, an existing publication `laredo_slot_pub` (named
    /// after the slot unless set), default reconnect policy.
    pub fn new(connection_string: impl Into<String>) -> Self {
        Self {
            connection_string: connection_string.into(),
            slot_mode: SlotMode::Ephemeral,
            slot_name: "laredo_slot".to_string(),
            publication: PublicationConfig::new(""),
            always_baseline: false,
            reconnect: ReconnectPolicy::default(),
            baseline_batch_rows: 1024,
            status_interval: Duration::from_secs(1),
            read_ahead: 8192,
            receive_timeout: Duration::from_secs(90),
            max_protocol_failures: 5,
        }
    }

    /// Sets how many times in a row a message at one position may fail to decode
    /// before the source stops (at least 1).
    #[must_use]
    pub fn max_protocol_failures(mut self, failures: u32) -> Self {
        self.max_protocol_failures = failures.max(1);
        self
    }

    /// Sets the slot mode.
    #[must_use]
    pub fn slot_mode(mut self, mode: SlotMode) -> Self {
        self.slot_mode = mode;
        self
    }

    /// Sets the slot name.
    #[must_use]
    pub fn slot_name(mut self, name: impl Into<String>) -> Self {
        self.slot_name = name.into();
        self
    }

    /// Sets the publication.
    #[must_use]
    pub fn publication(mut self, publication: PublicationConfig) -> Self {
        self.publication = publication;
        self
    }

    /// Sets `always_baseline`.
    #[must_use]
    pub fn always_baseline(mut self, always: bool) -> Self {
        self.always_baseline = always;
        self
    }

    /// Sets the reconnect policy.
    #[must_use]
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Sets how long a silent replication connection is trusted.
    #[must_use]
    pub fn receive_timeout(mut self, timeout: Duration) -> Self {
        self.receive_timeout = timeout;
        self
    }

    /// Sets how often acknowledged positions reach the server.
    #[must_use]
    pub fn status_interval(mut self, interval: Duration) -> Self {
        self.status_interval = interval;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = ReconnectPolicy::new(5, Duration::from_millis(100), Duration::from_secs(1), 2.0);
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(4), Duration::from_millis(800));
        assert_eq!(p.backoff(5), Duration::from_secs(1));
        assert_eq!(p.backoff(500), Duration::from_secs(1));
    }
}
