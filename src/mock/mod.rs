//! A mock XNAT server that answers XNAT's REST API the way real servers do, quirks included
//! (string numbers, HTML without `format=json`, numeric resource IDs in file URIs, base-name
//! `Name`, nested paths, JSESSION cookies that expire, no route for scans under a project
//! label, Range answered as Restlet 1.1 does, ZIP downloads). It counts requests, can add
//! latency and inject faults, so tests can assert what a client asked and how it copes.

mod auth;
pub mod bids;
mod connections;
pub mod data;
#[cfg(test)]
pub(crate) mod failing;
mod faults;
mod front;
pub mod memory_api;
mod responses;
mod routes;
pub mod sample;
mod select;
mod session_routes;
mod state;
mod zip_download;

use data::Dataset;
pub use front::RedirectFront;
pub use memory_api::MemoryXnat;
pub use state::{Controls, MockOptions, MockState, RangeMode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<MockState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .fallback(routes::handle)
        .with_state(state.clone());
    // As Tomcat in front of XNAT keeps them (see `connections`).
    let listener = connections::Connections { listener, state };
    let app = app.into_make_service_with_connect_info::<connections::ConnectionInfo>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A mock server running on its own threads, for tests and the demo. Dropping it stops it.
pub struct MockServer {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockServer {
    /// Starts on `addr` (port 0 picks a free port).
    pub fn start(addr: SocketAddr, data: Dataset, options: MockOptions) -> std::io::Result<Self> {
        Self::start_with_state(addr, MockState::new(data, options))
    }

    /// Starts serving an existing state (to bring a stopped server back with its counters).
    pub fn start_with_state(addr: SocketAddr, state: Arc<MockState>) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("xnat-mock")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = state.clone();
        let thread = std::thread::Builder::new()
            .name("xnat-mock".into())
            .spawn(move || {
                let result = runtime.block_on(serve(listener, serving, async {
                    let _ = stopped.await;
                }));
                if let Err(e) = result {
                    tracing::error!("mock server stopped: {e}");
                }
                runtime.shutdown_timeout(Duration::from_millis(200));
            })?;
        Ok(MockServer {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
