//! How a source hands its candles on to the Kafka sink, and no more.
//!
//! Both sources (replay and live) give their candles to a [`CandleOut`]: the live pollers
//! call [`CandleOut::send`], the replay (on its own blocking thread) gets an `emit` that
//! the supervisor makes from [`CandleOut::blocking_send_replayed`]. Neither sees the sink's queue
//! or its other commands; only the supervisor, which also asks for a
//! [`SinkCommand::Flush`] at each switch, and the sink itself hold the queue. This module
//! sits below the sources, the supervisor and the sink, so none of them imports another
//! for the queue's type, nor for the name of the header a replayed candle's time shift
//! travels in (the sink writes it, the replay's timeline reads it back).

use candlepipe_model::Candle;
use tokio::sync::{mpsc, oneshot};

/// The Kafka header of a replayed candle holding its time shift: how many milliseconds
/// were added to the dataset's open time (decimal, `0` without `--rebase`). The dataset
/// candle it came from opens at `open_time - shift`. See the README's Kafka contract.
pub const REPLAY_SHIFT_HEADER: &str = "candlepipe-replay-shift-ms";

/// What goes into the sink's queue.
#[derive(Debug)]
pub enum SinkCommand {
    /// Publish this candle.
    Candle(Candle),
    /// Publish this replayed candle with its time shift in [`REPLAY_SHIFT_HEADER`].
    Replayed { candle: Candle, shift_ms: i64 },
    /// Reply once every candle sent before this command is acknowledged.
    Flush(oneshot::Sender<()>),
}

/// A source's end of the sink's queue: it hands candles on, in order, and nothing else.
#[derive(Debug, Clone)]
pub struct CandleOut {
    queue: mpsc::Sender<SinkCommand>,
}

impl CandleOut {
    /// Candles handed to this go into `queue`.
    pub fn new(queue: mpsc::Sender<SinkCommand>) -> Self {
        CandleOut { queue }
    }

    /// Hands `candle` on, waiting while the queue is full (backpressure). `false` once the
    /// sink is gone: the producer is shutting down, and the candle was not taken.
    pub async fn send(&self, candle: Candle) -> bool {
        self.queue.send(SinkCommand::Candle(candle)).await.is_ok()
    }

    /// Hands on a replayed candle with its time shift (see [`SinkCommand::Replayed`]),
    /// from a blocking thread (the replay runs on one); never call it from async code.
    /// `false` once the sink is gone.
    pub fn blocking_send_replayed(&self, candle: Candle, shift_ms: i64) -> bool {
        self.queue
            .blocking_send(SinkCommand::Replayed { candle, shift_ms })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candlepipe_model::Source;

    fn candle(open_time: i64) -> Candle {
        Candle::ohlcv(
            "BTC-USDT",
            Source::Replay,
            open_time,
            1.0,
            2.0,
            0.5,
            1.5,
            3.0,
        )
    }

    #[tokio::test]
    async fn send_queues_the_candle_as_a_candle_command() {
        let (tx, mut rx) = mpsc::channel(4);
        let out = CandleOut::new(tx);
        assert!(out.send(candle(60_000)).await);
        match rx.recv().await {
            Some(SinkCommand::Candle(c)) => assert_eq!(c, candle(60_000)),
            other => panic!("expected a candle, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn send_says_false_once_the_sink_is_gone() {
        let (tx, rx) = mpsc::channel(4);
        let out = CandleOut::new(tx);
        drop(rx);
        assert!(!out.send(candle(60_000)).await);
    }

    #[test]
    fn replayed_candles_keep_order_and_shift_and_say_false_once_the_sink_is_gone() {
        let (tx, mut rx) = mpsc::channel(4);
        let out = CandleOut::new(tx);
        assert!(out.blocking_send_replayed(candle(60_000), 0));
        assert!(out.blocking_send_replayed(candle(120_000), 7 * 60_000));
        let mut got = Vec::new();
        while let Ok(SinkCommand::Replayed { candle, shift_ms }) = rx.try_recv() {
            got.push((candle.open_time, shift_ms));
        }
        assert_eq!(got, [(60_000, 0), (120_000, 420_000)]);
        drop(rx);
        assert!(!out.blocking_send_replayed(candle(180_000), 0));
    }
}
