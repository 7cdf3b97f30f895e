//! A redirecting front: a second listener that answers every request with a redirect to the
//! mock (another port, and the context path), as a site's `http://` front redirects to its
//! `https://` XNAT. An HTTP client drops `Authorization` and `Cookie` on a redirect to another
//! scheme or port and turns a redirected POST into a GET (reqwest: `src/redirect.rs`,
//! `remove_sensitive_headers`), so a redirect to another port shows the client the same as
//! one to https would.

use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the front saw.
#[derive(Debug, Default)]
pub struct FrontStats {
    pub requests: AtomicU64,
    /// Requests that carried credentials (Basic auth or a session cookie) to the front.
    pub with_credentials: AtomicU64,
}

/// A running redirecting front. Dropping it stops it.
pub struct RedirectFront {
    pub addr: SocketAddr,
    pub stats: Arc<FrontStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RedirectFront {
    /// Starts on `addr` (port 0: any), redirecting `PATH?QUERY` to `target` + `PATH?QUERY`
    /// with a 301, as http-to-https fronts do.
    pub fn start(addr: SocketAddr, target: &str) -> std::io::Result<RedirectFront> {
        // Bound here, served by a runtime of its own on its thread (so that it can be started
        // from inside another runtime too).
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let stats = Arc::new(FrontStats::default());
        let target = target.trim_end_matches('/').to_string();
        let seen = stats.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let location = format!(
                "{target}{}",
                uri.path_and_query().map_or("/", |p| p.as_str())
            );
            seen.requests.fetch_add(1, Ordering::SeqCst);
            if headers.contains_key(header::AUTHORIZATION) || headers.contains_key(header::COOKIE) {
                seen.with_credentials.fetch_add(1, Ordering::SeqCst);
            }
            async move { redirect(&location) }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("xnat-mock-front".into())
            .spawn(move || {
                let served = runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await
                });
                if let Err(e) = served {
                    tracing::error!("redirecting front stopped: {e}");
                }
                runtime.shutdown_timeout(Duration::from_millis(200));
            })?;
        Ok(RedirectFront {
            addr,
            stats,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn redirect(location: &str) -> Response {
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

impl Drop for RedirectFront {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
