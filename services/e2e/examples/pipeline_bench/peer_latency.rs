//! End-to-end latency of any peer at a steady pace, measured from the outside: the peers
//! record nothing per candle, so the benchmark watches InfluxDB instead.
//!
//! The peer starts on an empty topic and proves it is consuming by writing one warm-up
//! candle (symbol `WARMUP`, year 2000); then candlepipe's producer replays the dataset at
//! the pace asked for while InfluxDB's count of 1m candles is polled every [`POLL`]. Every
//! message carries the producer's `produced_at`; read back from the topic and sorted, they
//! give when the k-th candle was sent, and the polls give when the k-th candle was first
//! visible in InfluxDB. latency(k) = visible(k) − sent(k), matched by rank (the k-th to
//! arrive against the k-th sent), so it is the delay a dashboard sees, not a single
//! message's trip. A candle becomes visible some time before the poll that sees it: the
//! numbers are upper bounds, by up to one poll interval (reported).

use crate::dataset::DatasetFacts;
use crate::machine::ReleaseBins;
use crate::machine::{Conditions, Watch};
use crate::peer_run::{candle_points, Peer, Running, Target, PEER_TIMEOUT};
use crate::producer_run::TimedProducer;
use candlepipe_testkit::{produce_raw, read_topic};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long to wait between two counts of the 1m candles.
const POLL: Duration = Duration::from_millis(200);

/// The warm-up candle: valid schema v1, far older than the dataset.
const WARMUP: &str = r#"{"v":1,"source":"replay","symbol":"WARMUP","interval":"1m","open_time":946771200000,"open":1.0,"high":1.0,"low":1.0,"close":1.0,"volume":0.0,"closed":true}"#;

/// One peer's latency at a steady pace.
#[derive(Debug, Clone)]
pub struct PeerLatency {
    pub name: String,
    pub p50_s: f64,
    pub p99_s: f64,
    /// Candles matched (the dataset's, when the peer wrote them all).
    pub observations: usize,
    /// Median time between two polls (the resolution), s.
    pub poll_median_s: f64,
    /// The producer's achieved rate, candles/s.
    pub achieved: f64,
    pub failure: Option<String>,
    pub conditions: Conditions,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// The `q` quantile (nearest rank) of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// latency(k) = visible(k) − sent(k), in seconds, for every rank k the polls reached.
/// `polls` are (time, 1m candles visible) in time order; `sent` is sorted.
fn rank_latencies(polls: &[(i64, u64)], sent: &[i64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(sent.len());
    let mut p = 0;
    for (k, sent_at) in sent.iter().enumerate() {
        while p < polls.len() && polls[p].1 < k as u64 + 1 {
            p += 1;
        }
        let Some(&(visible_at, _)) = polls.get(p) else {
            break;
        };
        out.push((visible_at - sent_at) as f64 / 1e3);
    }
    out
}

/// Runs `peer` on `target` (an empty topic), paces the dataset into it at `speed`, and
/// measures its latency from the outside.
pub fn measure_paced(
    peer: &Peer,
    target: &Target,
    bins: &ReleaseBins,
    dataset: &Path,
    set: &DatasetFacts,
    speed: &str,
    logs: &Path,
) -> PeerLatency {
    let (influx, bucket) = (target.influx, target.bucket);
    let watch = Watch::start();
    let started = Instant::now();
    let mut run = Running::start(peer, target, logs);
    produce_raw(
        target.brokers,
        target.topic,
        &[(Some(b"WARMUP".as_slice()), WARMUP.as_bytes())],
    );
    let mut failure = None;
    // The peer is consuming once the warm-up candle is in InfluxDB.
    while candle_points(influx, bucket, "1m") == 0 {
        if run.child.try_wait().ok().flatten().is_some() || started.elapsed() > PEER_TIMEOUT {
            failure = Some(format!(
                "never wrote the warm-up candle:\n{}",
                run.log_tail()
            ));
            break;
        }
        std::thread::sleep(POLL);
    }
    let mut polls: Vec<(i64, u64)> = Vec::new();
    let producer = std::thread::scope(|scope| {
        let producer = (failure.is_none()).then(|| {
            scope.spawn(|| {
                TimedProducer::run(bins, target.brokers, target.topic, dataset, speed, logs)
            })
        });
        while failure.is_none() {
            let visible = (candle_points(influx, bucket, "1m") as u64).saturating_sub(1);
            polls.push((now_ms(), visible));
            if visible >= set.candles {
                break;
            }
            if run.child.try_wait().ok().flatten().is_some() || started.elapsed() > PEER_TIMEOUT {
                failure = Some(format!(
                    "{visible} of {} candles visible when it stopped:\n{}",
                    set.candles,
                    run.log_tail()
                ));
            }
            std::thread::sleep(POLL);
        }
        producer.map(|p| p.join().expect("producer thread"))
    });
    let conditions = watch.end();
    let (_, stop_problem) = run.stop();
    let mut sent: Vec<i64> = read_topic(target.brokers, target.topic)
        .iter()
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(r.payload.as_deref()?).ok())
        .filter(|v| v["symbol"] != "WARMUP")
        .filter_map(|v| v["produced_at"].as_i64())
        .collect();
    sent.sort_unstable();
    let mut latencies = rank_latencies(&polls, &sent);
    latencies.sort_by(f64::total_cmp);
    let mut gaps: Vec<f64> = polls
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) as f64 / 1e3)
        .collect();
    gaps.sort_by(f64::total_cmp);
    PeerLatency {
        name: peer.name.clone(),
        p50_s: quantile(&latencies, 0.50),
        p99_s: quantile(&latencies, 0.99),
        observations: latencies.len(),
        poll_median_s: quantile(&gaps, 0.5),
        achieved: producer.map_or(f64::NAN, |p| p.rate(set.candles)),
        failure: failure.or(stop_problem),
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candles_are_matched_by_rank_to_the_first_poll_that_shows_them() {
        // Sent at 0, 10, 20, 30 ms; the polls at 100 and 200 ms see 2 and then 4 candles.
        let polls = [(50, 0), (100, 2), (200, 4)];
        let sent = [0, 10, 20, 30];
        assert_eq!(rank_latencies(&polls, &sent), vec![0.1, 0.09, 0.18, 0.17]);
        // Candles never seen are not counted.
        assert_eq!(rank_latencies(&[(100, 1)], &sent), vec![0.1]);
    }

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
