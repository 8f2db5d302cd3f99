//! The Query service through a real tonic client over loopback, against engines running
//! the scriptable test source.
#![allow(clippy::unwrap_used, reason = "tests")]

mod compiled;
mod fanout;
mod fixture;
mod list;
mod reads;
mod resolve;
mod subscribe;
