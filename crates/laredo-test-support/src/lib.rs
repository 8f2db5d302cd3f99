//! Test helpers shared by laredo's test suites (dev-only).
//!
//! - [`TestObserver`]: an [`EngineObserver`] that records every event, with waits for
//!   events to arrive.
//! - [`wait_until`]: wait for a condition with a timeout instead of sleeping.
//! - [`PgCluster`]: a throwaway PostgreSQL cluster (initdb in a temp dir, logical
//!   replication on, a free loopback port), cleaned up when the test process exits.
//! - [`TlsCluster`], [`TestCa`] and [`ServerTls`]: a throwaway cluster with `ssl = on`
//!   and a certificate from a CA made in the test (rcgen), with the client files
//!   (CA, an unrelated CA, a client certificate) beside it.
//! - [`FaultProxy`]: a TCP proxy on loopback that cuts, stalls and restores the
//!   connections between laredo and the server behind it.
//! - [`RawH2`]: a raw HTTP/2 client that writes frames as told, for tests of server
//!   limits (more streams than allowed, a flood of resets).
//! - [`CountingTarget`], [`memory_kib`], [`process_memory_kib`] and
//!   [`process_cpu_seconds`]: measure memory and CPU while changes stream into a target
//!   that keeps nothing.
//!
//! ```
//! use std::time::Duration;
//! use laredo_core::EngineObserver;
//! use laredo_test_support::TestObserver;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let observer = TestObserver::new();
//! observer.on_source_connected("main", "test");
//! let event = observer.wait_for_event("SourceConnected", Duration::from_secs(1)).await;
//! assert_eq!(event.subject, "main");
//! assert_eq!(event.field("source_type"), Some("test"));
//! # }
//! ```

mod counting;
mod observer;
mod one_change;
mod pg;
mod proxy;
pub mod raw_h2;
mod tls;
mod wait;

pub use crate::counting::{CountingTarget, memory_kib, process_cpu_seconds, process_memory_kib};
pub use crate::observer::{RecordedEvent, TestObserver};
pub use crate::one_change::OneChange;
pub use crate::pg::{PgCluster, PgError, ServerTls, find_pg_bin};
pub use crate::proxy::FaultProxy;
pub use crate::raw_h2::{RawFrame, RawH2};
pub use crate::tls::{Issued, TestCa, TlsCluster};
pub use crate::wait::{wait_until, wait_until_async};
