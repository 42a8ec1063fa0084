//! An axum app served in-process on a free loopback port, on its own thread with its own
//! tokio runtime: the fake servers of the tests (Yahoo's chart API, the alert webhook) run
//! this way, so blocking tests and async tests can both use them. Dropping it stops it.

use axum::Router;

/// A running in-process HTTP server; stopped (gracefully) and joined on drop.
pub struct BackgroundServer {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundServer {
    /// Serves `app` on a free loopback port from a thread named `name`.
    pub fn start(name: &str, app: Router) -> BackgroundServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("bind {name}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let base_url = format!("http://{}", listener.local_addr().expect("local addr"));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let label = name.to_owned();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("{label} runtime: {e}"));
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stop_rx.await;
                        })
                        .await
                        .unwrap_or_else(|e| panic!("{label} server: {e}"));
                });
            })
            .unwrap_or_else(|e| panic!("{name} thread: {e}"));
        BackgroundServer {
            base_url,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
