//! `producer`: wires the sources, the Kafka sink and the HTTP server together.

use anyhow::Context;
use candlepipe_producer::config::ProducerConfig;
use candlepipe_producer::metrics::ProducerMetrics;
use candlepipe_producer::mode::{Supervisor, SupervisorEnd};
use candlepipe_producer::mode_choice::Mode;
use candlepipe_producer::sink::{KafkaSink, SinkOptions};
use candlepipe_producer::source::live::{LiveOptions, LiveSource};
use candlepipe_producer::source::replay::{ReplayOptions, ReplaySource, Speed};
use candlepipe_producer::{admin, progress};
use candlepipe_runtime::http::{self, Readiness};
use candlepipe_runtime::{entry, kafka, shutdown};
use std::process::ExitCode;

/// Live symbols when `--symbols` is not given.
const DEFAULT_LIVE_SYMBOLS: [&str; 5] = ["BTC-USD", "ETH-USD", "USDT-USD", "BNB-USD", "USDC-USD"];

fn main() -> ExitCode {
    // After a shutdown that gave up, a source thread may still wait on the sink: `entry`
    // gives it one second, so it cannot hold the exit past --shutdown-timeout.
    entry::main("producer", ProducerConfig::resolve_secrets, run)
}

async fn run(cfg: ProducerConfig) -> anyhow::Result<()> {
    let metrics = ProducerMetrics::new();
    let readiness = Readiness::default();
    readiness.register("kafka", "not connected yet");
    let (trigger, shutdown) = shutdown::channel();
    trigger.fire_on_signals();

    let speed: Speed = cfg
        .speed
        .parse()
        .map_err(|e| anyhow::anyhow!("--speed / REPLAY_SPEED: {e}"))?;
    let replay_opts = ReplayOptions {
        dataset: cfg.dataset.clone(),
        symbols: cfg.replay_symbols(),
        start: cfg.start,
        end: cfg.end,
        speed,
        looping: cfg.looping(),
        rebase: cfg.rebase(),
        backfill: cfg.backfill,
        skip_bad_files: cfg.skip_bad_files,
        cache_dir: cfg.replay_cache.clone(),
        page_budget: cfg.replay_page_budget,
    };
    let replay = match ReplaySource::open_until(replay_opts, &shutdown) {
        Ok(r) => Some(r),
        // A signal during the one-time cache fill: stop; the next start goes on.
        Err(e) if shutdown.is_shutdown() => {
            tracing::warn!("{e}");
            return Ok(());
        }
        Err(e) if cfg.mode == Mode::Live => {
            tracing::warn!("replay unavailable: {e}");
            None
        }
        Err(e) => {
            return Err(e).with_context(|| format!("opening the dataset {}", cfg.dataset.display()))
        }
    };
    if let Some(r) = &replay {
        progress::spawn_replay_gauges(r.stats(), metrics.clone(), shutdown.clone());
    }
    let live_symbols = cfg
        .live_symbols()
        .unwrap_or_else(|| DEFAULT_LIVE_SYMBOLS.iter().map(|s| s.to_string()).collect());
    let live = LiveSource::new(
        LiveOptions {
            symbols: live_symbols,
            poll_interval: cfg.poll_interval,
            backfill: cfg.live_backfill,
            base_url: cfg.yahoo_base_url.clone(),
            cookie_url: cfg.yahoo_cookie_url.clone(),
            request_timeout: cfg.live_request_timeout,
            max_response_bytes: cfg.live_max_response_bytes,
            kafka: cfg.kafka.clone(),
        },
        metrics.clone(),
    )?
    .with_readiness(readiness.clone());

    let sink = KafkaSink::new(
        &cfg.kafka,
        SinkOptions {
            topic: cfg.kafka.topic.clone(),
            compression: cfg.compression.clone(),
            linger: cfg.linger,
            delivery_timeout: cfg.delivery_timeout,
        },
        metrics.clone(),
    )?;
    let (sink_tx, sink_rx) = tokio::sync::mpsc::channel(4096);
    let (supervisor, control) = Supervisor::new(
        cfg.mode,
        replay,
        Some(live),
        cfg.replay_on_switch,
        cfg.kafka.clone(),
        sink_tx,
        metrics.clone(),
    );

    let app = http::router(metrics.registry.clone(), readiness.clone())
        .merge(admin::router(control, cfg.admin_token.clone()));
    let server = tokio::spawn(http::serve(cfg.http_addr, app, shutdown.clone()).await?);
    kafka::spawn_readiness_probe(&readiness, sink.producer(), &shutdown);

    // The topic must exist before the first candle: create it (6 partitions, keeping
    // everything: it is the log of record) if missing.
    let created = kafka::ensure_topic_retrying(
        &cfg.kafka,
        &cfg.kafka.topic,
        kafka::TopicSpec {
            partitions: cfg.partitions,
            replication: cfg.replication_factor,
            retention: kafka::Retention::Forever,
        },
        &shutdown,
    )
    .await?;
    if !created {
        return Ok(());
    }

    let mut sink_task = tokio::spawn(sink.run(sink_rx));
    // Once a shutdown fires, stopping the source and draining the sink get
    // --shutdown-timeout together; whatever is not acknowledged by then is given up.
    let deadline = {
        let mut shutdown = shutdown.clone();
        let timeout = cfg.shutdown_timeout;
        async move {
            shutdown.recv().await;
            tokio::time::sleep(timeout).await;
        }
    };
    tokio::pin!(deadline);
    let gave_up = || {
        anyhow::anyhow!(
            "gave up after --shutdown-timeout {:?}: {} candles were not acknowledged by Kafka; \
             they were not delivered",
            cfg.shutdown_timeout,
            metrics.in_flight.get()
        )
    };
    let end = tokio::select! {
        end = supervisor.run(shutdown.clone()) => end?,
        _ = &mut deadline => return Err(gave_up()),
    };
    // The supervisor (and with it the last sender) is gone: the sink drains and stops.
    let drained = if end == SupervisorEnd::Shutdown {
        tokio::select! {
            joined = &mut sink_task => joined,
            _ = &mut deadline => return Err(gave_up()),
        }
    } else {
        sink_task.await
    };
    let summary = drained.context("Kafka sink task panicked")??;
    tracing::info!(
        acknowledged = summary.acked,
        resent = summary.resent,
        "every candle is acknowledged; exiting"
    );
    trigger.fire();
    let _ = server.await;
    Ok(())
}
