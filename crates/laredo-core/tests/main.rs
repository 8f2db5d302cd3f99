//! Engine integration tests over the scriptable test source and real in-memory targets.
#![allow(
    clippy::unwrap_used,
    reason = "tests: helper functions outside #[test] unwrap too"
)]

mod engine;
