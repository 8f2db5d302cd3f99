//! Source positions: opaque to the engine.

use std::fmt;
use std::sync::Arc;

/// A position in a source's change stream (a PostgreSQL LSN, a Kinesis shard map, a
/// test-source counter, ...).
///
/// The engine never looks inside: it compares positions with
/// [`SyncSource::compare_positions`](crate::SyncSource::compare_positions) and persists
/// them only as the strings the source produces
/// ([`SyncSource::position_to_string`](crate::SyncSource::position_to_string)).
/// Cloning is cheap and a `u64` position allocates nothing.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Position(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Number(u64),
    Pair(u64, u64),
    Text(Arc<str>),
}

impl Position {
    /// A position that is a number (an LSN, a sequence).
    pub const fn from_u64(value: u64) -> Self {
        Self(Repr::Number(value))
    }

    /// A position made of two numbers (a PostgreSQL transaction's LSN and the change's
    /// sequence in it). Allocates nothing.
    pub const fn from_pair(major: u64, minor: u64) -> Self {
        Self(Repr::Pair(major, minor))
    }

    /// The two numbers of a [`Position::from_pair`] position.
    pub fn as_pair(&self) -> Option<(u64, u64)> {
        match &self.0 {
            Repr::Pair(a, b) => Some((*a, *b)),
            _ => None,
        }
    }

    /// A position that is text (a shard map, a cursor).
    pub fn from_text(value: impl AsRef<str>) -> Self {
        Self(Repr::Text(Arc::from(value.as_ref())))
    }

    /// The number, for a numeric position.
    pub fn as_u64(&self) -> Option<u64> {
        match &self.0 {
            Repr::Number(v) => Some(*v),
            Repr::Pair(..) | Repr::Text(_) => None,
        }
    }

    /// The text, for a text position.
    pub fn as_text(&self) -> Option<&str> {
        match &self.0 {
            Repr::Number(_) | Repr::Pair(..) => None,
            Repr::Text(t) => Some(t),
        }
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Number(v) => write!(f, "Position({v})"),
            Repr::Pair(a, b) => write!(f, "Position({a}.{b})"),
            Repr::Text(t) => write!(f, "Position({t:?})"),
        }
    }
}

impl fmt::Display for Position {
    /// A generic rendering for logs; persist positions with the source's
    /// `position_to_string` instead.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Number(v) => write!(f, "{v}"),
            Repr::Pair(a, b) => write!(f, "{a}.{b}"),
            Repr::Text(t) => f.write_str(t),
        }
    }
}
