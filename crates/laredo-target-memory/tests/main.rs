//! IndexedTarget and CompiledTarget driven through their `SyncTarget` methods, as the
//! engine drives them.
#![allow(
    clippy::unwrap_used,
    reason = "tests: helper functions outside #[test] unwrap too"
)]

mod memory;
