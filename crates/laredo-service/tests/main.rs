//! laredo-service through real clients over loopback: tonic clients for gRPC (plain and
//! TLS), hand-built HTTP/1.1 requests for gRPC-Web, against an engine running the
//! scriptable test source.
#![allow(clippy::unwrap_used, reason = "tests")]

mod auth;
mod config;
mod health;
mod limits;
mod reflection;
mod shutdown;
mod support;
#[cfg(feature = "tls")]
mod tls;
mod web;
