//! Positions: where a change sits in the stream, and what an acknowledgement confirms.
//!
//! A change's position is the pair (the LSN of its transaction's commit record, its
//! sequence number in the transaction, from 1); a commit, and a keepalive while no
//! transaction is open, is the pair (the commit's end LSN or the server's WAL end, 0).
//! Positions grow in commit order, and the same change has the same position when
//! the server sends its transaction again after a reconnect, so the source can skip
//! everything it already delivered ([`Inner::advance_delivered`]).
//!
//! An acknowledged position becomes the slot's confirmed flush LSN: `(lsn, 0)` confirms
//! `lsn`; a position inside a transaction confirms only the end of the transaction
//! before it, because the server resends whole transactions. `tx_starts` maps each
//! delivered transaction's commit-record LSN to the end of the transaction before it,
//! which is what [`Inner::confirm`] gets for such a position.

use std::sync::atomic::Ordering as AtomicOrdering;

use laredo_core::Position;

use super::Inner;

/// Formats an LSN as `%X/%08X` (`16/B374D848`, `0/0000A0F0`); PostgreSQL reads it.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:08X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parses PostgreSQL's LSN text.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
        return None;
    }
    Some(hi << 32 | lo)
}

/// A position as its (LSN, sequence) pair; a bare number is `(n, 0)`.
pub(super) fn pair(position: &Position) -> (u64, u64) {
    position
        .as_pair()
        .or_else(|| position.as_u64().map(|v| (v, 0)))
        .unwrap_or((0, 0))
}

impl Inner {
    /// Records `position` as delivered when it is past everything delivered so far;
    /// false for a position already delivered (a transaction sent again).
    pub(super) fn advance_delivered(&self, position: (u64, u64)) -> bool {
        let mut last = self.last_delivered.lock();
        let fresh = position > *last;
        if fresh {
            *last = position;
        }
        fresh
    }

    pub(super) fn confirm(&self, lsn: u64) {
        let previous = self.acked.fetch_max(lsn, AtomicOrdering::SeqCst);
        if lsn > previous {
            {
                let mut commits = self.commits.lock();
                while commits.front().is_some_and(|&(end, _)| end <= lsn) {
                    commits.pop_front();
                }
            }
            {
                let mut starts = self.tx_starts.lock();
                let keep = starts.split_off(&lsn);
                *starts = keep;
            }
            self.ack_changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use laredo_core::SyncSource;

    use super::*;
    use crate::config::PgSourceConfig;
    use crate::source::PgSource;

    #[test]
    fn lsns_format_and_parse() {
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(format_lsn(0xA0F0), "0/0000A0F0");
        assert_eq!(parse_lsn("0/0000a0f0"), Some(0xA0F0));
        assert_eq!(parse_lsn("nope"), None);
        assert_eq!(parse_lsn("1/100000000"), None);
    }

    #[test]
    fn positions_round_trip_through_text() {
        let source = PgSource::new(PgSourceConfig::new("postgres://u@localhost/db")).unwrap();
        for position in [
            Position::from_pair(0x16_B374_D848, 0),
            Position::from_pair(42, 7),
        ] {
            let text = source.position_to_string(&position);
            assert_eq!(source.position_from_string(&text).unwrap(), position);
        }
        assert!(source.position_from_string("x").is_err());
        assert_eq!(
            source.compare_positions(&Position::from_pair(5, 9), &Position::from_pair(6, 0)),
            Ordering::Less
        );
    }
}
