//! One symbol's polling loop: ask Yahoo, hand new candles to the sink, wait, repeat.
//!
//! Each live symbol runs this loop in its own task with its own [`Backoff`], so a symbol
//! that Yahoo rate-limits, errors on or answers with garbage slows down alone; the others
//! keep their pace. The loop stops when the source's stop signal fires: an in-flight
//! request is abandoned (nothing of it was published), a batch of candles being handed to
//! the sink is finished first (the feed already counts them as published), so no candle
//! is ever half-sent or lost between two runs.

use super::backoff::Backoff;
use super::feed::{Absorbed, SymbolFeed};
use super::health::LiveHealth;
use super::yahoo::{ChartClient, FetchError};
use crate::events::{
    InternalEvent, InvalidLiveCandle, LiveFetchFailed, LiveFetched, LiveRefusedFetchingCrumb,
};
use crate::handoff::CandleOut;
use crate::metrics::ProducerMetrics;
use candlepipe_model::time::now_ms;
use candlepipe_runtime::shutdown::Shutdown;
use std::time::Duration;
use tokio::time::Instant;

/// What every symbol's loop shares.
#[derive(Clone)]
pub(crate) struct PollContext {
    pub client: ChartClient,
    pub metrics: ProducerMetrics,
    pub poll_interval: Duration,
    /// Each symbol's recent failures, for `/readyz`.
    pub health: LiveHealth,
}

/// Polls `feed`'s symbol until `stop` fires (or the sink is gone); returns the feed so the
/// next run continues where this one stopped.
pub(crate) async fn poll_symbol(
    mut feed: SymbolFeed,
    ctx: PollContext,
    mut stop: Shutdown,
    out: CandleOut,
) -> SymbolFeed {
    let mut backoff = Backoff::for_poll_interval(ctx.poll_interval);
    let mut next = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.recv() => return feed,
        }
        let window = feed.window(now_ms());
        let started = Instant::now();
        let result = tokio::select! {
            r = ctx.client.fetch(&feed.symbol, window.from, window.to, |e| {
                LiveRefusedFetchingCrumb { symbol: &feed.symbol, kind: e.kind(), error: e }
                    .emit(&ctx.metrics);
            }) => r,
            _ = stop.recv() => return feed,
        };
        LiveFetched {
            elapsed: started.elapsed(),
        }
        .emit(&ctx.metrics);
        match result {
            Ok(fetched) => {
                if backoff.failures() > 0 {
                    tracing::info!(symbol = %feed.symbol, after_failures = backoff.failures(),
                        "Yahoo answers again");
                }
                backoff.succeeded();
                ctx.health.succeeded(&feed.symbol);
                let absorbed = feed.absorb(&fetched.chart, fetched.market_now, window);
                report(&feed, &absorbed, &ctx.metrics);
                for c in absorbed.candles {
                    if !out.send(c).await {
                        return feed; // the sink is gone: the producer is shutting down
                    }
                }
                next = if window.catching_up {
                    Instant::now()
                } else {
                    started + ctx.poll_interval
                };
            }
            Err(e) => {
                let wait = backoff.failed(e.retry_after());
                fetch_failed(&feed.symbol, &e, wait, backoff.failures(), &ctx.metrics);
                ctx.health.failed(
                    &feed.symbol,
                    backoff.failures(),
                    format!("{} ({e})", e.kind()),
                );
                next = Instant::now() + wait;
            }
        }
    }
}

/// Logs and counts a failed fetch (the log line and the metric always agree).
fn fetch_failed(symbol: &str, e: &FetchError, wait: Duration, failures: u32, m: &ProducerMetrics) {
    LiveFetchFailed {
        symbol,
        kind: e.kind(),
        error: e,
        consecutive: failures,
        retry_in: wait,
    }
    .emit(m);
}

/// Logs and counts what a good answer held besides publishable candles.
fn report(feed: &SymbolFeed, a: &Absorbed, m: &ProducerMetrics) {
    for (open_time, why) in &a.invalid {
        InvalidLiveCandle {
            symbol: &feed.symbol,
            open_time: *open_time,
            why,
        }
        .emit(m);
    }
    if a.null_volumes > 0 {
        tracing::debug!(symbol = %feed.symbol, count = a.null_volumes,
            "Yahoo sent null volumes for minutes with prices; published with volume 0");
    }
}
