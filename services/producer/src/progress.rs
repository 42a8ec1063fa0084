//! Background work that keeps the gauges current while the replay runs on its own thread.

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
            metrics.replay_progress.set(stats.percent_done() / 100.0);
            let advance = |counter: &prometheus::IntCounter, seen: &mut u64, now: u64| {
                counter.inc_by(now.saturating_sub(*seen));
                *seen = now.max(*seen);
            };
            advance(&metrics.replay_bad_rows, &mut bad_rows, stats.bad_rows());
            advance(&metrics.replay_bad_files, &mut bad_files, stats.bad_files());
            advance(&metrics.replay_loops, &mut loops, stats.loops());
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.recv() => return,
            }
        }
    });
}
