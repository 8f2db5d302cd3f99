//! [`CountingTarget`], [`memory_kib`] and the `/proc` readers behind it: for measuring
//! laredo's own memory and CPU while changes stream into a target that keeps nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use laredo_core::{ApplyError, Change, ChangeKind, Row, SyncTarget, TableIdentifier, TargetError};

/// A target that counts streamed inserts and keeps no rows, so memory growth while it
/// runs is the engine's and the source's own. Always durable; accepts schema changes.
#[derive(Debug, Default)]
pub struct CountingTarget {
    inserts: AtomicU64,
}

impl CountingTarget {
    /// Inserts applied so far.
    pub fn inserts(&self) -> u64 {
        self.inserts.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SyncTarget for CountingTarget {
    fn type_name(&self) -> &str {
        "counting"
    }
    async fn on_baseline(&self, _: &TableIdentifier, _: &[Row]) -> Result<(), TargetError> {
        Ok(())
    }
    async fn apply(&self, _: &TableIdentifier, batch: &[Change]) -> Result<(), ApplyError> {
        let inserts = batch
            .iter()
            .filter(|c| matches!(c.kind, ChangeKind::Insert { .. }))
            .count();
        self.inserts.fetch_add(inserts as u64, Ordering::SeqCst);
        Ok(())
    }
}

/// This process's memory figure `field` from `/proc/self/status` in KiB: `VmRSS`
/// (resident now) or `VmHWM` (peak resident).
///
/// # Panics
/// When `/proc/self/status` lacks the field (not Linux).
pub fn memory_kib(field: &str) -> u64 {
    process_memory_kib("self", field)
}

/// Process `pid`'s (a number, or `self`) memory figure `field` from
/// `/proc/<pid>/status` in KiB, as [`memory_kib`].
///
/// # Panics
/// When the process is gone or its status lacks the field (not Linux).
pub fn process_memory_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc/<pid>/status")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("memory field")
}

/// User + system CPU seconds process `pid` (a number, or `self`) used so far, from
/// `/proc/<pid>/stat` (clock ticks of 1/100 s); 0 when the process is gone.
pub fn process_cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (in parentheses, and it may hold spaces): utime is
    // the 12th, stime the 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let mut fields = after.split_whitespace().skip(11);
    let mut ticks = || {
        fields
            .next()
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks() + ticks()) / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu_and_memory() {
        let before = process_cpu_seconds("self");
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while process_cpu_seconds("self") <= before && started.elapsed().as_secs() < 10 {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
        }
        assert!(x != 1, "keeps the loop");
        assert!(process_cpu_seconds("self") > before);
        assert!(memory_kib("VmRSS") > 0);
        assert!(process_memory_kib(&std::process::id().to_string(), "VmHWM") > 0);
        assert_eq!(process_cpu_seconds("0-no-such-process"), 0.0);
    }
}
