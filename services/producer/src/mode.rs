//! Runtime mode switching: exactly one source runs at a time, and `POST /mode` swaps it
//! without restarting the process.
//!
//! The [`Supervisor`] owns both sources. A switch stops the running source at a candle
//! boundary (sources only ever emit whole candles), waits until the sink has every candle of
//! the old source acknowledged by Kafka, then starts the other source and flips the
//! `candlepipe_producer_mode` gauge. The replay source is kept between runs, so switching
//! back resumes where it stopped (or restarts, per `--replay-on-switch`). Before the
//! replay's first run in this process, the topic's tail is read so that it continues the
//! replay timeline a previous process left there (`source/timeline.rs`).

use crate::clock::{Clock, SystemClock};
use crate::events::{InternalEvent, ModeStarted, ModeSwitched, ReplayProgressed};
use crate::handoff::{CandleOut, SinkCommand};
use crate::metrics::ProducerMetrics;
use crate::mode_choice::{Mode, ReplayOnSwitch};
use crate::source::live::LiveSource;
use crate::source::replay::{ReplayEnd, ReplaySource};
use crate::source::timeline;
use anyhow::{anyhow, Context};
use candlepipe_runtime::kafka::KafkaArgs;
use candlepipe_runtime::shutdown::{self, Shutdown};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// A request to switch, answered with the mode now running or why the switch failed.
pub type SwitchRequest = (Mode, oneshot::Sender<Result<Mode, String>>);

/// The HTTP side's handle on the supervisor.
#[derive(Clone)]
pub struct ModeControl {
    requests: mpsc::Sender<SwitchRequest>,
    current: watch::Receiver<Mode>,
}

impl ModeControl {
    /// The running mode.
    pub fn current(&self) -> Mode {
        *self.current.borrow()
    }

    /// Asks the supervisor to switch and waits for the answer.
    pub async fn switch(&self, to: Mode) -> Result<Mode, String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((to, tx))
            .await
            .map_err(|_| "the producer is shutting down".to_owned())?;
        rx.await
            .map_err(|_| "the producer is shutting down".to_owned())?
    }
}

/// How the supervisor ended.
#[derive(Debug, PartialEq, Eq)]
pub enum SupervisorEnd {
    /// `--no-loop` replay delivered the whole dataset.
    ReplayFinished,
    /// Shutdown requested (signal).
    Shutdown,
}

enum Running {
    Replay(JoinHandle<(ReplaySource, anyhow::Result<ReplayEnd>)>),
    Live(JoinHandle<(LiveSource, anyhow::Result<()>)>),
}

/// Runs one source at a time and switches on request.
pub struct Supervisor {
    replay: Option<ReplaySource>,
    live: Option<LiveSource>,
    on_switch: ReplayOnSwitch,
    /// Where the replay reads the topic's tail before its first run.
    kafka: KafkaArgs,
    sink: mpsc::Sender<SinkCommand>,
    metrics: ProducerMetrics,
    requests: mpsc::Receiver<SwitchRequest>,
    current: watch::Sender<Mode>,
}

impl Supervisor {
    /// A supervisor and the control handle for the HTTP server.
    pub fn new(
        initial: Mode,
        replay: Option<ReplaySource>,
        live: Option<LiveSource>,
        on_switch: ReplayOnSwitch,
        kafka: KafkaArgs,
        sink: mpsc::Sender<SinkCommand>,
        metrics: ProducerMetrics,
    ) -> (Supervisor, ModeControl) {
        let (req_tx, req_rx) = mpsc::channel(8);
        let (cur_tx, cur_rx) = watch::channel(initial);
        (
            Supervisor {
                replay,
                live,
                on_switch,
                kafka,
                sink,
                metrics,
                requests: req_rx,
                current: cur_tx,
            },
            ModeControl {
                requests: req_tx,
                current: cur_rx,
            },
        )
    }

    /// Runs until shutdown, or until a non-looping replay is done.
    pub async fn run(mut self, mut shutdown: Shutdown) -> anyhow::Result<SupervisorEnd> {
        let mut mode = *self.current.borrow();
        let (mut stop, mut running) = self.start(mode)?;
        loop {
            tokio::select! {
                _ = shutdown.recv() => {
                    self.stop(stop, running).await?;
                    return Ok(SupervisorEnd::Shutdown);
                }
                req = self.requests.recv() => {
                    let Some((to, reply)) = req else { continue };
                    if to == mode {
                        let _ = reply.send(Ok(mode));
                        continue;
                    }
                    tracing::info!(from = mode.as_str(), to = to.as_str(), "switching source");
                    self.stop(stop, running).await?;
                    if to == Mode::Replay && self.on_switch == ReplayOnSwitch::Restart {
                        if let Some(r) = self.replay.as_mut() {
                            r.restart();
                        }
                    }
                    match self.start(to) {
                        Ok((s, r)) => {
                            (stop, running) = (s, r);
                            mode = to;
                            ModeSwitched.emit(&self.metrics);
                            let _ = reply.send(Ok(to));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(format!("{e:#}")));
                            (stop, running) = self.start(mode)?;
                        }
                    }
                }
                end = Self::finished(&mut running) => {
                    match end {
                        SourceEnd::ReplayDone(source, result) => {
                            self.replay = Some(source);
                            match result? {
                                ReplayEnd::Finished => {
                                    self.flush().await;
                                    return Ok(SupervisorEnd::ReplayFinished);
                                }
                                ReplayEnd::Stopped => {
                                    // The sink went away: only happens on shutdown.
                                    return Ok(SupervisorEnd::Shutdown);
                                }
                            }
                        }
                        SourceEnd::LiveDone(source, result) => {
                            self.live = Some(source);
                            result.context("live source stopped")?;
                            return Ok(SupervisorEnd::Shutdown);
                        }
                    }
                }
            }
        }
    }

    fn start(&mut self, mode: Mode) -> anyhow::Result<(shutdown::ShutdownTrigger, Running)> {
        let (trigger, stop) = shutdown::channel();
        let running = match mode {
            Mode::Replay => {
                let mut source = self.replay.take().ok_or_else(|| {
                    anyhow!("replay is not available (the dataset could not be opened at start)")
                })?;
                let out = CandleOut::new(self.sink.clone());
                let metrics = self.metrics.clone();
                let kafka = self.kafka.clone();
                Running::Replay(tokio::task::spawn_blocking(move || {
                    if source.wants_topic_tail() {
                        let symbols = source.symbols();
                        match timeline::read_tails(&kafka, &symbols, &stop) {
                            Some(found) => {
                                source.continue_from_topic(&found.newest, SystemClock.now_ms())
                            }
                            None => return (source, Ok(ReplayEnd::Stopped)),
                        }
                    }
                    let stats = source.stats();
                    let mut emit = |candle, shift_ms| out.blocking_send_replayed(candle, shift_ms);
                    let result = source
                        .run_shifted(&SystemClock, &stop, &mut emit)
                        .context("replaying the dataset");
                    ReplayProgressed { stats: &stats }.emit(&metrics);
                    (source, result)
                }))
            }
            Mode::Live => {
                let mut source = self
                    .live
                    .take()
                    .ok_or_else(|| anyhow!("live mode is not available"))?;
                let out = CandleOut::new(self.sink.clone());
                Running::Live(tokio::spawn(async move {
                    let r = source.run(stop, out).await;
                    (source, r)
                }))
            }
        };
        ModeStarted { mode }.emit(&self.metrics);
        self.current.send_replace(mode);
        Ok((trigger, running))
    }

    async fn stop(
        &mut self,
        trigger: shutdown::ShutdownTrigger,
        running: Running,
    ) -> anyhow::Result<()> {
        trigger.fire();
        match running {
            Running::Replay(handle) => {
                let (source, result) = handle.await.context("replay task panicked")?;
                self.replay = Some(source);
                result?;
            }
            Running::Live(handle) => {
                let (source, result) = handle.await.context("live task panicked")?;
                self.live = Some(source);
                result?;
            }
        }
        self.flush().await;
        Ok(())
    }

    /// Waits until the sink has every candle sent so far acknowledged.
    async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.sink.send(SinkCommand::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn finished(running: &mut Running) -> SourceEnd {
        match running {
            Running::Replay(h) => match h.await {
                Ok((s, r)) => SourceEnd::ReplayDone(s, r),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            },
            Running::Live(h) => match h.await {
                Ok((s, r)) => SourceEnd::LiveDone(s, r),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            },
        }
    }
}

enum SourceEnd {
    ReplayDone(ReplaySource, anyhow::Result<ReplayEnd>),
    LiveDone(LiveSource, anyhow::Result<()>),
}

/// Polling interval of the replay progress gauge.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);
