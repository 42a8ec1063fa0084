//! `consumer`: wires Kafka, the micro-batch engine, InfluxDB and the HTTP server together.

use anyhow::Context;
use candlepipe_consumer::batch::{BatchOptions, MicroBatchEngine};
use candlepipe_consumer::config::ConsumerConfig;
use candlepipe_consumer::dlq::DeadLetters;
use candlepipe_consumer::metrics::ConsumerMetrics;
use candlepipe_consumer::sink::InfluxSink;
use candlepipe_consumer::watch;
use candlepipe_runtime::http::{self, Readiness};
use candlepipe_runtime::{entry, kafka, shutdown, telemetry};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

fn main() -> ExitCode {
    entry::main("consumer", ConsumerConfig::resolve_secrets, run)
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
    kafka::spawn_readiness_probe(&readiness, dlq.producer(), &shutdown);
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
    let dlq_spec = kafka::TopicSpec {
        partitions: 1,
        replication: 1,
        retention: kafka::Retention::BrokerDefault,
    };
    if !kafka::ensure_topic_retrying(&cfg.kafka, &cfg.dlq_topic, dlq_spec, &shutdown).await? {
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
            max_message_bytes: cfg.max_message_bytes,
        },
        sink,
        dlq,
        metrics.clone(),
    )?;
    watch::spawn(
        &cfg.kafka,
        &cfg.group,
        engine.owned(),
        engine.stalled(),
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    )?;
    let engine = tokio::spawn(engine.run(shutdown.clone()));
    let result = run_until_deadline(engine, &shutdown, cfg.shutdown_timeout).await;
    trigger.fire();
    let _ = server.await;
    result
}

/// Waits for the engine's task until it returns, or until `timeout` after a shutdown
/// signal: then the process exits at once with a non-zero code. Nothing is dropped or
/// joined on the way out, since the Kafka clients' destructors (or a commit in progress)
/// could wait on the very broker that made the shutdown late. The batch in progress stays
/// uncommitted and is read again on the next start.
async fn run_until_deadline(
    mut engine: tokio::task::JoinHandle<anyhow::Result<()>>,
    shutdown: &shutdown::Shutdown,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut signalled = shutdown.clone();
    tokio::select! {
        r = &mut engine => r.unwrap_or_else(|e| Err(anyhow::anyhow!("the consumer loop failed: {e}"))),
        _ = async {
            signalled.recv().await;
            tokio::time::sleep(timeout).await;
        } => {
            let e = anyhow::anyhow!(
                "shutdown timeout ({timeout:?}, --shutdown-timeout) ran out with work undone: \
                 the batch in progress is not committed and will be read again on the next start"
            );
            let _ = telemetry::exit_code("consumer", Err(e)); // logs it
            std::process::exit(1)
        }
    }
}
