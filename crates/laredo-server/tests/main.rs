//! End-to-end tests of the `laredo-server` binary: the real binary as a child process,
//! against a throwaway PostgreSQL from laredo-test-support.
#![allow(clippy::unwrap_used, reason = "tests")]

mod cli;
mod operator_cli;
mod run;
mod support;
