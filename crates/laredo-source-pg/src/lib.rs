//! PostgreSQL source for laredo: a consistent baseline, then the `pgoutput` logical
//! replication stream.
//!
//! In progress: this crate holds the `pgoutput` decoder ([`pgoutput`]), the mapping of
//! PostgreSQL text values to laredo values ([`types`]), the catalog and publication work
//! ([`catalog`]), the streaming baseline read ([`baseline`]) and slot creation with an
//! exported snapshot ([`replication`]) so far; the source itself
//! (slots, publications, baseline handoff, streaming, reconnects) lands next.
//!
//! ```
//! use laredo_source_pg::pgoutput::{self, Message};
//!
//! // A Begin message: final LSN, commit time, xid.
//! let mut bytes = vec![b'B'];
//! bytes.extend_from_slice(&0x16B3748u64.to_be_bytes());
//! bytes.extend_from_slice(&0i64.to_be_bytes());
//! bytes.extend_from_slice(&742u32.to_be_bytes());
//! match pgoutput::decode(&bytes).expect("a valid message") {
//!     Message::Begin(begin) => assert_eq!(begin.xid, 742),
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```

pub mod baseline;
pub mod catalog;
pub mod config;
pub mod pgoutput;
pub mod replication;
mod source;
pub mod types;

pub use crate::catalog::PublicationConfig;
pub use crate::config::{PgSourceConfig, ReconnectPolicy, SlotMode};
pub use crate::source::{PgSource, format_lsn, parse_lsn};
