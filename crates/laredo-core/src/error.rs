//! The error plugins share ([`PluginError`]) and the printer that shows an error with
//! its causes ([`ErrorChain`]).
//!
//! laredo's errors keep their cause as [`std::error::Error::source`] and their
//! `Display` is their own message only. Whoever shows an error to a person (a log
//! field, a gRPC status, a dead letter entry, the CLI) is the edge and prints the whole
//! chain with [`ErrorChain`]: `cannot write /data/x: permission denied`.

use std::error::Error;
use std::fmt;

/// A boxed error, the cause type carried by every laredo error.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// The error of a plugin: a target ([`TargetError`](crate::TargetError)), a dead
/// letter store ([`DeadLetterError`](crate::DeadLetterError)) or a snapshot store or
/// serializer ([`SnapshotError`](crate::SnapshotError)); those names are aliases of
/// this type.
///
/// `Display` is the message alone; the cause, when there is one, is the
/// [`source`](std::error::Error::source). Print it with [`ErrorChain`] to see both.
///
/// ```
/// use laredo_core::{ErrorChain, PluginError};
///
/// let io = std::io::Error::other("permission denied");
/// let error = PluginError::with_source("cannot write /data/users", io);
/// assert_eq!(error.to_string(), "cannot write /data/users");
/// assert_eq!(ErrorChain(&error).to_string(), "cannot write /data/users: permission denied");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PluginError {
    message: String,
    kind: Kind,
    #[source]
    cause: Option<BoxError>,
}

/// What the caller may act on; private so that classes can be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Anything not classified.
    Failed,
    /// The thing asked for does not exist (a snapshot id, a dead letter).
    NotFound,
}

impl PluginError {
    /// An error with a message and no cause.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: Kind::Failed,
            cause: None,
        }
    }

    /// An error with a message and the error that caused it (its
    /// [`source`](std::error::Error::source)).
    pub fn with_source(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            message: message.into(),
            kind: Kind::Failed,
            cause: Some(source.into()),
        }
    }

    /// "`what` not found", classified so that callers can tell it apart
    /// ([`PluginError::is_not_found`]): `SnapshotError::not_found(format_args!("snapshot
    /// {id}"))`.
    pub fn not_found(what: impl fmt::Display) -> Self {
        Self {
            message: format!("{what} not found"),
            kind: Kind::NotFound,
            cause: None,
        }
    }

    /// The message, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind == Kind::NotFound
    }

    /// The cause, if there is one: the [`source`](std::error::Error::source), with its
    /// `Send + Sync` bounds.
    pub fn cause(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        self.cause.as_deref()
    }
}

/// Shows an error and its chain of causes, `: `-separated: `message: cause: its
/// cause`. A cause whose text the previous one already shows is left out, for errors
/// that print their cause in their own message as well as returning it as their
/// `source`.
///
/// ```
/// use laredo_core::{ErrorChain, PluginError};
///
/// let error = PluginError::with_source(
///     "cannot save snap-1",
///     PluginError::with_source("writing users.jsonl", std::io::Error::other("disk full")),
/// );
/// tracing::warn!(error = %ErrorChain(&error), "snapshot failed");
/// assert_eq!(
///     ErrorChain(&error).to_string(),
///     "cannot save snap-1: writing users.jsonl: disk full"
/// );
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !shown.contains(&text) {
                write!(f, ": {text}")?;
            }
            shown = text;
            next = cause.source();
        }
        Ok(())
    }
}

/// Writes `: cause: its cause …` for an optional cause (nothing without one).
///
/// Only [`SourceError`](crate::SourceError) uses it (`Other` and the typed variants
/// that carry a cause), until they are converted: they print their cause in their own
/// `Display` and return `None` from `source()` (so chain printers do not repeat it),
/// where [`PluginError`] keeps its cause as its `source` for [`ErrorChain`] to print.
pub(crate) struct Causes<'a>(pub(crate) Option<&'a BoxError>);

impl fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut next: Option<&(dyn Error + 'static)> =
            self.0.map(|e| &**e as &(dyn Error + 'static));
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error whose text repeats its cause's (as `std::io::Error::other(e)` and many
    /// `#[error("...: {0}")]` enums do).
    #[derive(Debug)]
    struct Repeating(std::io::Error);

    impl fmt::Display for Repeating {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "reading the file: {}", self.0)
        }
    }

    impl Error for Repeating {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    fn io(text: &str) -> std::io::Error {
        std::io::Error::other(text.to_string())
    }

    #[test]
    fn display_is_the_message_and_source_is_the_cause() {
        let error = PluginError::with_source("cannot write users", io("permission denied"));
        assert_eq!(error.to_string(), "cannot write users");
        assert_eq!(error.message(), "cannot write users");
        let source = error.source().expect("the cause is the source");
        assert_eq!(source.to_string(), "permission denied");
        assert!(
            source.downcast_ref::<std::io::Error>().is_some(),
            "{source:?}"
        );
        assert_eq!(
            error.cause().map(ToString::to_string).as_deref(),
            Some("permission denied")
        );
        assert!(!error.is_not_found());
    }

    #[test]
    fn an_error_without_a_cause_has_no_source() {
        let error = PluginError::new("row refused");
        assert_eq!(error.to_string(), "row refused");
        assert!(error.source().is_none());
        assert!(error.cause().is_none());
    }

    #[test]
    fn not_found_is_classified() {
        let error = PluginError::not_found(format_args!("snapshot {}", "snap-1"));
        assert_eq!(error.to_string(), "snapshot snap-1 not found");
        assert_eq!(error.message(), "snapshot snap-1 not found");
        assert!(error.is_not_found());
        assert!(error.source().is_none());
    }

    #[test]
    fn the_chain_shows_every_cause_in_order() {
        let error = PluginError::with_source(
            "cannot save snap-1",
            PluginError::with_source("writing users.jsonl", io("disk full")),
        );
        assert_eq!(
            ErrorChain(&error).to_string(),
            "cannot save snap-1: writing users.jsonl: disk full"
        );
    }

    #[test]
    fn the_chain_of_an_error_without_a_cause_is_its_message() {
        assert_eq!(
            ErrorChain(&PluginError::new("row refused")).to_string(),
            "row refused"
        );
    }

    #[test]
    fn the_chain_leaves_out_a_cause_its_parent_already_shows() {
        let error = PluginError::with_source("cannot load snap-1", Repeating(io("no such file")));
        assert_eq!(
            ErrorChain(&error).to_string(),
            "cannot load snap-1: reading the file: no such file"
        );
    }

    #[test]
    fn the_chain_follows_foreign_errors() {
        let error = Repeating(io("no such file"));
        assert_eq!(
            format!("{}", ErrorChain(&error)),
            "reading the file: no such file"
        );
    }

    #[test]
    fn an_engine_error_shows_its_store_error_once() {
        let error = crate::EngineError::DeadLetter(PluginError::with_source(
            "cannot read /data/dead",
            io("disk on fire"),
        ));
        assert_eq!(error.to_string(), "dead letter store");
        assert_eq!(
            ErrorChain(&error).to_string(),
            "dead letter store: cannot read /data/dead: disk on fire"
        );
    }

    #[test]
    fn an_apply_error_shows_as_its_error() {
        let error = crate::ApplyError::at(
            3,
            PluginError::with_source("row 4 refused", io("disk on fire")),
        );
        assert_eq!(error.to_string(), "row 4 refused");
        assert_eq!(
            error.source().map(ToString::to_string).as_deref(),
            Some("disk on fire")
        );
        assert_eq!(
            ErrorChain(&error).to_string(),
            "row 4 refused: disk on fire"
        );
    }

    #[test]
    fn causes_prints_the_chain_after_a_message() {
        let cause: BoxError = Box::new(PluginError::with_source("decoding", io("bad utf-8")));
        assert_eq!(
            format!("x{}", Causes(Some(&cause))),
            "x: decoding: bad utf-8"
        );
        assert_eq!(format!("x{}", Causes(None)), "x");
    }
}
