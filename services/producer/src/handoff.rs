//! How a source hands its candles on to the Kafka sink, and no more.
//!
//! Both sources (replay and live) give their candles to a [`CandleOut`]: the live pollers
//! call [`CandleOut::send`], the replay (on its own blocking thread) gets an `emit` that
//! the supervisor makes from [`CandleOut::blocking_send`]. Neither sees the sink's queue
//! or its other commands; only the supervisor, which also asks for a
//! [`SinkCommand::Flush`] at each switch, and the sink itself hold the queue. This module
//! sits below the sources, the supervisor and the sink, so none of them imports another
//! for the queue's type.

use candlepipe_model::Candle;
use tokio::sync::{mpsc, oneshot};

/// What goes into the sink's queue.
#[derive(Debug)]
pub enum SinkCommand {
    /// Publish this candle.
    Candle(Candle),
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

    /// [`CandleOut::send`] from a blocking thread (the replay runs on one); never call it
    /// from async code.
    pub fn blocking_send(&self, candle: Candle) -> bool {
        self.queue
            .blocking_send(SinkCommand::Candle(candle))
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
    fn blocking_send_keeps_order_and_says_false_once_the_sink_is_gone() {
        let (tx, mut rx) = mpsc::channel(4);
        let out = CandleOut::new(tx);
        assert!(out.blocking_send(candle(60_000)));
        assert!(out.blocking_send(candle(120_000)));
        let mut got = Vec::new();
        while let Ok(SinkCommand::Candle(c)) = rx.try_recv() {
            got.push(c.open_time);
        }
        assert_eq!(got, [60_000, 120_000]);
        drop(rx);
        assert!(!out.blocking_send(candle(180_000)));
    }
}
