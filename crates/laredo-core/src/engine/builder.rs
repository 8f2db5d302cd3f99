//! Engine construction: [`EngineBuilder`], [`PipelineOptions`] and configuration errors.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::dead_letter::DeadLetterStore;
use crate::observer::{CompositeObserver, EngineObserver, NullObserver};
use crate::pipeline::{PipelineFilter, PipelineTransform};
use crate::row::Row;
use crate::source::SyncSource;
use crate::status::{BufferPolicy, ErrorPolicy, ValidationAction};
use crate::table::TableIdentifier;
use crate::target::SyncTarget;
use crate::time;
use crate::value::Value;

use super::Engine;

/// Default pipeline buffer capacity.
pub const DEFAULT_BUFFER_SIZE: usize = 10_000;
/// Default number of retries of a failing change.
pub const DEFAULT_MAX_RETRIES: u32 = 5;
/// Default first retry delay (doubles per retry).
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// Default cap on the retry delay.
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Default interval of the TTL scanner.
pub const DEFAULT_TTL_SCAN_INTERVAL: Duration = Duration::from_secs(60);
/// Default interval between lag measurements.
pub const DEFAULT_LAG_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// Options of one pipeline (one source table into one target).
#[derive(Clone)]
#[non_exhaustive]
pub struct PipelineOptions {
    pub(crate) id: Option<String>,
    pub(crate) filters: Vec<Arc<dyn PipelineFilter>>,
    pub(crate) transforms: Vec<Arc<dyn PipelineTransform>>,
    pub(crate) buffer_size: usize,
    pub(crate) buffer_policy: BufferPolicy,
    pub(crate) error_policy: ErrorPolicy,
    pub(crate) max_retries: u32,
    pub(crate) retry_backoff: Duration,
    pub(crate) retry_backoff_max: Duration,
    pub(crate) validation_action: ValidationAction,
    pub(crate) post_baseline_validation: bool,
    pub(crate) validation_interval: Option<Duration>,
    pub(crate) ttl: Option<Ttl>,
    pub(crate) ttl_scan_interval: Duration,
}

/// A row's expiry, microseconds since the Unix epoch; `None` never expires.
pub type TtlFn = Arc<dyn Fn(&Row) -> Option<i64> + Send + Sync>;

/// How a pipeline finds a row's expiry time.
#[derive(Clone)]
pub(crate) enum Ttl {
    /// A column holding a timestamp, a date or an RFC 3339 string.
    Field(String),
    /// A user function.
    Computed(TtlFn),
}

impl Ttl {
    /// The row's expiry (microseconds since the Unix epoch); missing or unparseable
    /// values never expire.
    pub(crate) fn expiry(&self, row: &Row) -> Option<i64> {
        match self {
            Ttl::Computed(f) => f(row),
            Ttl::Field(field) => match row.get(field)? {
                Value::TimestampTz(micros) | Value::Timestamp(micros) => Some(*micros),
                Value::Date(days) => Some(i64::from(*days) * 86_400_000_000),
                Value::Text(text) => time::parse_rfc3339_micros(text),
                _ => None,
            },
        }
    }

    pub(crate) fn is_expired(&self, row: &Row, now_micros: i64) -> bool {
        self.expiry(row).is_some_and(|expiry| expiry <= now_micros)
    }
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            id: None,
            filters: Vec::new(),
            transforms: Vec::new(),
            buffer_size: DEFAULT_BUFFER_SIZE,
            buffer_policy: BufferPolicy::default(),
            error_policy: ErrorPolicy::default(),
            max_retries: DEFAULT_MAX_RETRIES,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            retry_backoff_max: DEFAULT_RETRY_BACKOFF_MAX,
            validation_action: ValidationAction::default(),
            post_baseline_validation: true,
            validation_interval: None,
            ttl: None,
            ttl_scan_interval: DEFAULT_TTL_SCAN_INTERVAL,
        }
    }
}

impl fmt::Debug for PipelineOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineOptions")
            .field("id", &self.id)
            .field("filters", &self.filters.len())
            .field("transforms", &self.transforms.len())
            .field("buffer_size", &self.buffer_size)
            .field("buffer_policy", &self.buffer_policy)
            .field("error_policy", &self.error_policy)
            .field("max_retries", &self.max_retries)
            .field("retry_backoff", &self.retry_backoff)
            .field("retry_backoff_max", &self.retry_backoff_max)
            .field("validation_action", &self.validation_action)
            .field("post_baseline_validation", &self.post_baseline_validation)
            .field("validation_interval", &self.validation_interval)
            .field(
                "ttl",
                &self.ttl.as_ref().map(|t| match t {
                    Ttl::Field(f) => format!("field {f}"),
                    Ttl::Computed(_) => "computed".to_string(),
                }),
            )
            .field("ttl_scan_interval", &self.ttl_scan_interval)
            .finish()
    }
}

impl PipelineOptions {
    /// Names the pipeline explicitly instead of `{source}:{schema}.{table}:{target_type}`
    /// (lets two targets of one type read the same table).
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Adds a filter; filters run in the order added, before any transform.
    #[must_use]
    pub fn filter(mut self, filter: Arc<dyn PipelineFilter>) -> Self {
        self.filters.push(filter);
        self
    }

    /// Adds a transform; transforms run in the order added, after the filters.
    #[must_use]
    pub fn transform(mut self, transform: Arc<dyn PipelineTransform>) -> Self {
        self.transforms.push(transform);
        self
    }

    /// Buffer capacity in changes (default 10000; must be positive).
    #[must_use]
    pub fn buffer_size(mut self, size: usize) -> Self {
        self.buffer_size = size;
        self
    }

    /// What a full buffer does (default `block`).
    #[must_use]
    pub fn buffer_policy(mut self, policy: BufferPolicy) -> Self {
        self.buffer_policy = policy;
        self
    }

    /// What a failure does to the neighbours (default `isolate`).
    #[must_use]
    pub fn error_policy(mut self, policy: ErrorPolicy) -> Self {
        self.error_policy = policy;
        self
    }

    /// Retries of a failing change before dead-lettering or failing (default 5).
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// The first retry delay and its cap; the delay doubles per retry (defaults 1 s and
    /// 30 s).
    #[must_use]
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_backoff = initial;
        self.retry_backoff_max = max;
        self
    }

    /// Expires rows by the timestamp in `field` (a timestamp, a date or an RFC 3339
    /// string; missing or unparseable never expires): expired rows are skipped on
    /// baseline and insert, an update to an expired time deletes, and a scanner removes
    /// rows as they expire.
    #[must_use]
    pub fn ttl_field(mut self, field: impl Into<String>) -> Self {
        self.ttl = Some(Ttl::Field(field.into()));
        self
    }

    /// Expires rows by a function returning the expiry in microseconds since the Unix
    /// epoch (`None` never expires); otherwise as [`PipelineOptions::ttl_field`].
    #[must_use]
    pub fn ttl_fn(mut self, expiry: TtlFn) -> Self {
        self.ttl = Some(Ttl::Computed(expiry));
        self
    }

    /// How often the TTL scanner looks for expired rows (default 60 s).
    #[must_use]
    pub fn ttl_scan_interval(mut self, interval: Duration) -> Self {
        self.ttl_scan_interval = interval;
        self
    }

    /// What a row-count mismatch (after a baseline or periodic) does (default `warn`).
    #[must_use]
    pub fn validation_action(mut self, action: ValidationAction) -> Self {
        self.validation_action = action;
        self
    }

    /// Whether to validate row counts after each baseline (default true): the target's
    /// count against the rows the baseline delivered, then, for a pipeline that keeps
    /// every row (no filter, transform or TTL), against the source's own count
    /// ([`SyncSource::count_rows`](crate::SyncSource::count_rows)) once the pipeline
    /// streams. `false` skips both: no validation result is reported.
    #[must_use]
    pub fn post_baseline_validation(mut self, enabled: bool) -> Self {
        self.post_baseline_validation = enabled;
        self
    }

    /// Periodic drift validation (off by default): every `interval` while the
    /// pipeline streams, compares the target's row count with the count the engine
    /// expects and, for a pipeline that keeps every row, with the source's count; a
    /// mismatch is reported (`on_validation_result`) and handled as
    /// [`PipelineOptions::validation_action`] says.
    #[must_use]
    pub fn validation_interval(mut self, interval: Duration) -> Self {
        self.validation_interval = Some(interval);
        self
    }
}

/// One configuration problem, with the path of the setting at fault in its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    /// A problem described by `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// A problem at `path`: displays as `path: message`.
    pub fn at(path: impl fmt::Display, message: impl fmt::Display) -> Self {
        Self {
            message: format!("{path}: {message}"),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every configuration problem found, reported at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The problems.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} configuration error(s):", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

pub(crate) struct PipelineSpec {
    pub(crate) source_id: String,
    pub(crate) table: TableIdentifier,
    pub(crate) target: Arc<dyn SyncTarget>,
    pub(crate) options: PipelineOptions,
}

/// Builds an [`Engine`]; [`EngineBuilder::build`] reports every problem at once.
#[derive(Default)]
#[must_use]
pub struct EngineBuilder {
    pub(crate) sources: Vec<(String, Arc<dyn SyncSource>)>,
    pub(crate) pipelines: Vec<PipelineSpec>,
    pub(crate) observers: Vec<Arc<dyn EngineObserver>>,
    pub(crate) dead_letters: Option<Arc<dyn DeadLetterStore>>,
    pub(crate) snapshots: Option<super::SnapshotOptions>,
    pub(crate) shutdown_timeout: Option<Duration>,
    pub(crate) lag_poll_interval: Option<Duration>,
}

impl fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineBuilder")
            .field(
                "sources",
                &self.sources.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .field("pipelines", &self.pipelines.len())
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Registers a source under `id`.
    pub fn source(mut self, id: impl Into<String>, source: Arc<dyn SyncSource>) -> Self {
        self.sources.push((id.into(), source));
        self
    }

    /// Adds a pipeline: `table` of source `source_id` into `target`.
    pub fn pipeline(
        mut self,
        source_id: impl Into<String>,
        table: TableIdentifier,
        target: Arc<dyn SyncTarget>,
        options: PipelineOptions,
    ) -> Self {
        self.pipelines.push(PipelineSpec {
            source_id: source_id.into(),
            table,
            target,
            options,
        });
        self
    }

    /// Adds an observer; several are called in the order added.
    pub fn observer(mut self, observer: Arc<dyn EngineObserver>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Parks changes that still fail after their retries here instead of failing the
    /// pipeline.
    pub fn dead_letter_store(mut self, store: Arc<dyn DeadLetterStore>) -> Self {
        self.dead_letters = Some(store);
        self
    }

    /// Engine snapshots: the store, schedule, retention and restore behaviour.
    pub fn snapshots(mut self, options: super::SnapshotOptions) -> Self {
        self.snapshots = Some(options);
        self
    }

    /// Bounds [`Engine::stop`]; past it, stop returns "deadline exceeded". Zero (the
    /// default) waits for ever.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// How often source lag is measured and reported (default 10 s).
    pub fn lag_poll_interval(mut self, interval: Duration) -> Self {
        self.lag_poll_interval = Some(interval);
        self
    }

    /// Validates the configuration and builds the engine (not started).
    ///
    /// # Errors
    /// Every configuration problem found, each naming its setting.
    pub fn build(self) -> Result<Engine, ConfigErrors> {
        let mut errors = Vec::new();
        if self.sources.is_empty() {
            errors.push(ConfigError::new("at least one source is required"));
        }
        let mut source_ids = HashSet::new();
        for (idx, (id, _)) in self.sources.iter().enumerate() {
            if id.is_empty() {
                errors.push(ConfigError::at(
                    format!("source[{idx}]"),
                    "source ID must not be empty",
                ));
            } else if !source_ids.insert(id.as_str()) {
                errors.push(ConfigError::at(
                    format!("source[{idx}]"),
                    format!("duplicate source ID {id:?}"),
                ));
            }
        }
        if self.pipelines.is_empty() {
            errors.push(ConfigError::new("at least one pipeline is required"));
        }
        let mut pipeline_ids = HashSet::new();
        for (idx, p) in self.pipelines.iter().enumerate() {
            let at = format!("pipeline[{idx}]");
            if p.source_id.is_empty() {
                errors.push(ConfigError::at(&at, "source ID must not be empty"));
            } else if !source_ids.contains(p.source_id.as_str()) {
                errors.push(ConfigError::at(
                    &at,
                    format!("references unknown source {:?}", p.source_id),
                ));
            }
            if p.table.table().is_empty() || p.table.schema().is_empty() {
                errors.push(ConfigError::at(&at, "table name must not be empty"));
            }
            if p.options.buffer_size == 0 {
                errors.push(ConfigError::at(
                    &at,
                    format!(
                        "buffer size must be positive, got {}",
                        p.options.buffer_size
                    ),
                ));
            }
            if p.options.ttl.is_some() && p.options.ttl_scan_interval.is_zero() {
                errors.push(ConfigError::at(&at, "ttl scan interval must be positive"));
            }
            if p.options.validation_interval.is_some_and(|i| i.is_zero()) {
                errors.push(ConfigError::at(&at, "validation interval must be positive"));
            }
            if p.options.retry_backoff > p.options.retry_backoff_max {
                errors.push(ConfigError::at(
                    &at,
                    format!(
                        "retry backoff {:?} must not exceed its maximum {:?}",
                        p.options.retry_backoff, p.options.retry_backoff_max
                    ),
                ));
            }
            let id = pipeline_id(p);
            if !pipeline_ids.insert(id.clone()) {
                errors.push(ConfigError::at(
                    &at,
                    format!("duplicate pipeline ID {id:?}"),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let observer: Arc<dyn EngineObserver> = match self.observers.len() {
            0 => Arc::new(NullObserver),
            1 => Arc::clone(&self.observers[0]),
            _ => Arc::new(CompositeObserver::new(
                self.observers.iter().cloned().map(Some),
            )),
        };
        Ok(Engine::from_parts(self, observer))
    }
}

/// `{source_id}:{schema}.{table}:{target_type}`, or the explicit id.
pub(crate) fn pipeline_id(spec: &PipelineSpec) -> String {
    spec.options.id.clone().unwrap_or_else(|| {
        format!(
            "{}:{}:{}",
            spec.source_id,
            spec.table,
            spec.target.type_name()
        )
    })
}
