//! One shutdown signal, fanned out to every task.
//!
//! As in mini-redis: instead of ad-hoc flags, each task holds a [`Shutdown`] and either
//! awaits [`Shutdown::recv`] (async tasks) or polls [`Shutdown::is_shutdown`] (loops on
//! blocking threads). The [`ShutdownTrigger`] fires it once, from SIGINT/SIGTERM or from the
//! program itself (for example when a `--no-loop` replay is done). A `watch` channel is used
//! so a task that subscribes late still sees a shutdown that already happened.

use tokio::sync::watch;

/// Fires the shutdown. Cloneable; firing twice is harmless.
#[derive(Clone, Debug)]
pub struct ShutdownTrigger {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

/// Observes the shutdown.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// A new, un-fired shutdown pair.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (
        ShutdownTrigger {
            tx: std::sync::Arc::new(tx),
        },
        Shutdown { rx },
    )
}

impl ShutdownTrigger {
    /// Tells every [`Shutdown`] to stop.
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }

    /// A new observer.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }

    /// Fires on the first SIGINT or SIGTERM. Spawns a task on the current runtime.
    pub fn fire_on_signals(&self) {
        let trigger = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received; finishing in-flight work");
            trigger.fire();
        });
    }
}

impl Shutdown {
    /// True once the shutdown fired.
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes when the shutdown fires (at once if it already has).
    pub async fn recv(&mut self) {
        // An error means every trigger is gone, which can only happen at exit: treat as fired.
        let _ = self.rx.wait_for(|fired| *fired).await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn late_subscribers_see_an_earlier_shutdown() {
        let (trigger, early) = channel();
        assert!(!early.is_shutdown());
        trigger.fire();
        let mut late = trigger.subscribe();
        late.recv().await;
        assert!(late.is_shutdown());
        assert!(early.is_shutdown());
    }
}
