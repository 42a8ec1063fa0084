//! The loop: collect, rebalance, aggregate, write, dead letters, commit (the steps of the
//! module doc of `batch`), with batch N's write in flight while batch N+1 is collected.

use super::client::MicroBatchEngine;
use super::incoming::{drop_processed, incoming, Incoming};
use super::write::InFlight;
use anyhow::Context as _;
use candlepipe_model::time;
use candlepipe_runtime::kafka_log;
use candlepipe_runtime::shutdown::Shutdown;
use rdkafka::consumer::Consumer;

impl MicroBatchEngine {
    /// Runs until `shutdown`: the batch in progress is finished and committed first.
    /// Returns an error when the client hits a fatal error, e.g. it was fenced.
    pub async fn run(mut self, shutdown: Shutdown) -> anyhow::Result<()> {
        let result = self.consume(shutdown).await;
        match (result, self.fatal()) {
            // A fatal error also fails the calls after it (commits, committed offsets);
            // the fatal error itself says what happened.
            (Err(e), Some(fatal)) => {
                tracing::debug!("after the fatal error: {e:#}");
                Err(fatal)
            }
            (result, _) => result,
        }
    }

    async fn consume(&mut self, mut shutdown: Shutdown) -> anyhow::Result<()> {
        self.consumer
            .subscribe(&[&self.kafka.topic])
            .with_context(|| format!("subscribing to {}", self.kafka.topic))?;
        tracing::info!(topic = %self.kafka.topic, group = %self.opts.group,
            instance_id = self.instance_id.as_deref().unwrap_or("(dynamic membership)"),
            trigger = ?self.opts.trigger, max_batch = self.opts.max_batch, "consuming");
        // The batch whose write is in flight while the next one is collected and aggregated.
        let mut in_flight: Option<InFlight> = None;
        loop {
            let mut batch = self.collect(&mut shutdown).await?;
            if self.rebalance_pending() {
                // Offsets are committed under the ownership they were read with.
                self.finish(in_flight.take()).await?;
            }
            self.handle_rebalances(&mut batch).await?;
            drop_processed(&mut self.expected, &mut batch);
            if !self.stalled.lock().expect("stalled").is_empty() {
                // Committed in order: the batch in flight first.
                self.finish(in_flight.take()).await?;
                self.skip_unfetchable().await?;
            }
            if batch.is_empty() {
                // Quiet: nothing to overlap with, so the batch in flight completes now.
                self.finish(in_flight.take()).await?;
            } else {
                let next = self.aggregate(batch);
                // InfluxDB gets the next batch as soon as it took this one; the dead letters
                // and the (synchronous) offset commit of this one run meanwhile.
                let written = self.await_write(in_flight.take()).await?;
                in_flight = Some(self.start_write(next, &shutdown));
                self.complete(written).await?;
            }
            if shutdown.is_shutdown() {
                self.finish(in_flight.take()).await?;
                break;
            }
        }
        self.consumer.unsubscribe();
        tracing::info!("consumer stopped after committing its last batch");
        Ok(())
    }

    /// Step 1: messages until the batch is full, the trigger fires, or shutdown. Fails on a
    /// fatal client error.
    async fn collect(&self, shutdown: &mut Shutdown) -> anyhow::Result<Vec<Incoming>> {
        let deadline = tokio::time::Instant::now() + self.opts.trigger;
        let future_limit = time::now_ms().saturating_add(self.opts.max_future.as_millis() as i64);
        let mut batch = Vec::with_capacity(self.opts.max_batch.min(65_536));
        while batch.len() < self.opts.max_batch {
            tokio::select! {
                biased;
                _ = shutdown.recv() => break,
                r = tokio::time::timeout_at(deadline, self.consumer.recv()) => match r {
                    Err(_) => break,
                    Ok(Ok(m)) => batch.push(incoming(&m, future_limit, &self.metrics)),
                    Ok(Err(e)) => {
                        // librdkafka delivers a fatal error (ERR__FATAL) as a consumer error;
                        // the underlying one is the client's fatal error.
                        if let Some(fatal) = self.fatal() {
                            return Err(fatal);
                        }
                        // Error events were logged by the context already (same kind:
                        // counted, not repeated); errors of a fetch are logged here.
                        kafka_log::on_error(&e, "");
                    }
                },
            }
        }
        Ok(batch)
    }
}
