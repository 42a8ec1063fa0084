//! Runs the consumer's hot path (the criterion bench's `decode_aggregate_encode`) once, for
//! a profiler. Callgrind counts instructions, which stay stable on a busy shared machine
//! where wall-clock benches do not:
//!
//! ```text
//! cargo build --profile bench -p consumer --example hot_path_profile
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/hot.cg \
//!     target/release/examples/hot_path_profile
//! callgrind_annotate /tmp/hot.cg | head -40
//! ```

use candlepipe_consumer::state::Aggregator;

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    let msgs = common::messages();
    let mut agg = Aggregator::new(common::HORIZON_MS);
    let bytes = common::decode_aggregate_encode(&mut agg, &msgs);
    println!("{} messages, {bytes} bytes of line protocol", msgs.len());
}
