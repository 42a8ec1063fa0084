//! The benchmark's inputs: dataset folders (written by `datagen` in `scripts/bench.sh`),
//! read back with the producer's own replay reader, and the topics they are replayed into.

use candlepipe_producer::clock::SystemClock;
use candlepipe_producer::source::replay::{ReplayOptions, ReplaySource, Speed};
use candlepipe_runtime::shutdown;
use candlepipe_testkit::pipeline::create_topic;
use candlepipe_testkit::{unique, Kafka};
use std::path::Path;

/// Partitions of every benchmark topic (the producer's default).
pub const PARTITIONS: i32 = 6;

/// Size of a dataset folder, counted by the producer's replay reader.
#[derive(Debug, Clone, Copy)]
pub struct DatasetFacts {
    /// Files, one per symbol.
    pub files: usize,
    pub candles: u64,
}

impl DatasetFacts {
    pub fn read(dir: &Path) -> DatasetFacts {
        let mut source = ReplaySource::open(replay_options(dir))
            .unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()));
        let files = source.symbols().len();
        let mut candles = 0u64;
        replay(&mut source, |_| candles += 1);
        DatasetFacts { files, candles }
    }
}

/// One pass over `dir` at max speed with the original timestamps, as the benchmark's
/// producer runs replay it.
pub fn replay_options(dir: &Path) -> ReplayOptions {
    let mut opts = ReplayOptions::new(dir);
    opts.speed = Speed::Max;
    opts.looping = false;
    opts.rebase = false;
    opts
}

/// Hands every candle of `source` to `each`, in the producer's order (by time, then symbol).
pub fn replay(source: &mut ReplaySource, mut each: impl FnMut(candlepipe_model::Candle)) {
    let (_trigger, stop) = shutdown::channel();
    source
        .run(&SystemClock, &stop, &mut |c| {
            each(c);
            true
        })
        .expect("read the dataset");
}

/// A new topic with [`PARTITIONS`] partitions (one replica) on `kafka`.
pub fn fresh_topic(kafka: &Kafka, name: &str) -> String {
    let topic = unique(name);
    create_topic(&kafka.brokers, &topic, PARTITIONS);
    topic
}
