//! The `laredo` binary against a real gRPC server (OAM + Query over an engine on the
//! test source) on a loopback port.
#![allow(clippy::unwrap_used, reason = "tests")]

mod admin;
mod basics;
mod fanout;
mod query;
mod reads;
mod replay;
mod streams;
mod support;
mod tls;
