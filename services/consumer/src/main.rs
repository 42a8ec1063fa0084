//! `consumer`: wires Kafka, the micro-batch engine, InfluxDB and the HTTP server together.

use anyhow::Context;
use candlepipe_consumer::batch::{BatchOptions, MicroBatchEngine};
use candlepipe_consumer::config::ConsumerConfig;
use candlepipe_consumer::dlq::DeadLetters;
use candlepipe_consumer::metrics::ConsumerMetrics;
use candlepipe_consumer::sink::InfluxSink;
use candlepipe_model::http::{self, Readiness};
use candlepipe_model::{alloc, kafka, shutdown, telemetry};
use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

fn main() -> ExitCode {
    // Before the runtime exists: malloc settings should hold for every thread it starts.
    let malloc = alloc::tune();
    start(malloc)
}

#[tokio::main]
async fn start(malloc: alloc::Tuned) -> ExitCode {
    telemetry::init();
    tracing::debug!(settings = %malloc.describe(), "malloc");
    let mut cfg = ConsumerConfig::parse();
    let result = match cfg.resolve_secrets() {
        Ok(()) => run(cfg).await,
        Err(e) => Err(e.into()),
    };
    telemetry::exit_code("consumer", result)
}

async fn run(cfg: ConsumerConfig) -> anyhow::Result<()> {
    let metrics = ConsumerMetrics::new();
    let readiness = Readiness::default();
    readiness.register("kafka", "not connected yet");
    readiness.register("influxdb", "not checked yet");
    let (trigger, shutdown) = shutdown::channel();
    trigger.fire_on_signals();

    let sink = InfluxSink::new(cfg.influx(), metrics.clone())?;
    let dlq = DeadLetters::new(&cfg.kafka, &cfg.dlq_topic)?;

    let app = http::router(metrics.registry.clone(), readiness.clone());
    let server = tokio::spawn(http::serve(cfg.http_addr, app, shutdown.clone()).await?);
    let probe = dlq.producer();
    http::spawn_probe(
        readiness.clone(),
        "kafka",
        Duration::from_secs(5),
        shutdown.clone(),
        move || kafka::probe_brokers(probe.clone()),
    );
    let pinger = Arc::new(InfluxSink::new(cfg.influx(), metrics.clone())?);
    http::spawn_probe(
        readiness.clone(),
        "influxdb",
        Duration::from_secs(5),
        shutdown.clone(),
        move || {
            let pinger = pinger.clone();
            async move {
                if pinger.ping().await {
                    Ok("answers".to_owned())
                } else {
                    Err("does not answer".to_owned())
                }
            }
        },
    );

    // InfluxDB first: a database to write into (v1) or a bucket that exists (v2).
    match sink.prepare(&shutdown).await {
        Ok(()) => {}
        Err(_) if shutdown.is_shutdown() => return Ok(()),
        Err(e) => return Err(e).context("preparing InfluxDB"),
    }
    if !kafka::ensure_topic_retrying(&cfg.kafka, &cfg.dlq_topic, 1, 1, &shutdown).await? {
        return Ok(());
    }

    let engine = MicroBatchEngine::new(
        cfg.kafka.clone(),
        BatchOptions {
            group: cfg.group.clone(),
            group_instance_id: cfg.group_instance_id(),
            session_timeout: cfg.session_timeout,
            max_poll_interval: cfg.max_poll_interval,
            trigger: cfg.trigger,
            max_batch: cfg.max_batch,
            horizon: cfg.late_horizon,
            rebuild_messages: cfg.rebuild_messages,
            max_future: cfg.max_future,
        },
        sink,
        dlq,
        metrics.clone(),
    )?;
    let result = engine.run(shutdown.clone()).await;
    trigger.fire();
    let _ = server.await;
    result
}
