//! Where the live source resumes after a restart: the newest *closed* live candle of each
//! symbol that is already on the topic (read with `source/tail.rs`).
//!
//! Only messages that are `source=live` and `closed=true` count; in-progress
//! (`closed=false`) messages are superseded anyway. The scan looks no further back than
//! Yahoo's 1m retention: nothing older could be fetched again.

use crate::source::tail::{self, Found};
use candlepipe_model::kafka::KafkaArgs;
use candlepipe_model::Source;

/// Per symbol, the open time (Unix ms) of its newest closed live candle on `kafka.topic`,
/// looking no further back than messages written at `not_before` (Unix ms). Blocking: run
/// it on a blocking thread.
pub(crate) fn newest_closed_live(
    kafka: &KafkaArgs,
    symbols: &[String],
    not_before: i64,
) -> anyhow::Result<Found<i64>> {
    tail::newest_per_symbol(kafka, symbols, not_before, |c, _| {
        (c.source == Source::Live && c.closed).then_some(c.open_time)
    })
}
