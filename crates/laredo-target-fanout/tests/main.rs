//! The replication service through real tonic clients over loopback, against engines
//! running the scriptable test source into fan-out targets.
#![allow(clippy::unwrap_used, reason = "tests")]

mod access;
mod bounded;
mod drain;
mod errors;
mod filters;
mod fixture;
mod slow;
mod status;
mod sync;
