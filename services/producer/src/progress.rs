//! Background work that keeps the gauges current while the replay runs on its own thread.

use crate::events::{InternalEvent, ReplayCounted, ReplayProgressed};
use candlepipe_runtime::shutdown::Shutdown;
use std::time::Duration;

/// Copies the replay's own counters into the Prometheus metrics once a second.
pub fn spawn_replay_gauges(
    stats: std::sync::Arc<crate::source::replay::ReplayStats>,
    metrics: crate::metrics::ProducerMetrics,
    mut shutdown: Shutdown,
) {
    tokio::spawn(async move {
        let (mut bad_rows, mut bad_files, mut loops) = (0u64, 0u64, 0u64);
        loop {
            ReplayProgressed { stats: &stats }.emit(&metrics);
            let advance = |seen: &mut u64, now: u64| {
                let grew = now.saturating_sub(*seen);
                *seen = now.max(*seen);
                grew
            };
            ReplayCounted {
                bad_rows: advance(&mut bad_rows, stats.bad_rows()),
                bad_files: advance(&mut bad_files, stats.bad_files()),
                loops: advance(&mut loops, stats.loops()),
            }
            .emit(&metrics);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.recv() => return,
            }
        }
    });
}
