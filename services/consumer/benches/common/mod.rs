//! The hot path's input and one pass over it, shared by the criterion bench
//! (`benches/hot_path.rs`) and the profiling driver (`examples/hot_path_profile.rs`), so the
//! instruction counts callgrind reports are for exactly the work criterion times.

use candlepipe_consumer::lineproto::encode_all;
use candlepipe_consumer::state::Aggregator;
use candlepipe_model::codec;
use candlepipe_testkit::fixtures::synthetic;

/// Messages per micro-batch, as the batch loop's default.
pub const BATCH: usize = 10_000;
/// The consumer's default late-data horizon.
pub const HORIZON_MS: i64 = 3_600_000;

/// 100 symbols × 1,000 minutes of synthetic candles as schema v1 messages.
pub fn messages() -> Vec<Vec<u8>> {
    synthetic(100, 1_000, 3)
        .iter()
        .map(|c| {
            let mut buf = Vec::new();
            codec::encode(c, 1_700_000_000_000, &mut buf).unwrap();
            buf
        })
        .collect()
}

/// decode → aggregate → flush → line protocol over every message, batch by batch, as the
/// batch loop and the sink run it; returns the line-protocol bytes.
pub fn decode_aggregate_encode(agg: &mut Aggregator, msgs: &[Vec<u8>]) -> usize {
    let mut points = Vec::new();
    let mut bytes = 0;
    for batch in msgs.chunks(BATCH) {
        for m in batch {
            let c = codec::decode(m).unwrap();
            agg.apply(&c);
        }
        points.clear();
        agg.flush(&mut points);
        let encoded = encode_all(&points);
        bytes += encoded.body(0..encoded.lines.len()).len();
    }
    bytes
}
