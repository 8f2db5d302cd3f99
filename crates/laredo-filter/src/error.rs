//! The filter crate's error.

/// An error building a filter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// A `field-regex` pattern does not compile.
    #[error("invalid regex pattern {pattern:?} for field {field:?}")]
    InvalidPattern {
        /// The filtered field.
        field: String,
        /// The pattern as given.
        pattern: String,
        /// Why it does not compile.
        #[source]
        source: regex::Error,
    },
}
