//! Behaviour of the dead-letter stores: the shared contract for both, the local files,
//! and replay through the core's default `DeadLetterStore::replay`.

#![expect(
    clippy::unwrap_used,
    reason = "tests panic rather than return Result; helpers live outside #[test] fns"
)]

mod contract;
mod local;
mod replay;
mod support;
