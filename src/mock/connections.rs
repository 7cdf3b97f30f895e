//! Connections as Tomcat keeps them: a keep-alive connection left idle longer than its
//! `connectionTimeout` (20 s in XNAT's own docker-compose `server.xml`; nginx fronts keep 65 s)
//! is closed by the server. Modelled at its worst: the close races the client's next request
//! on that connection, so the request is sent and then the connection ends before any byte
//! of an answer (what a client sees when its reuse of a pooled connection crosses the
//! server's close). Off unless [`super::state::Controls::close_idle_ms`] is set; with
//! [`super::state::Controls::close_with_reset`] that close is a reset (RST), as when the
//! server's socket is gone by the time the request arrives.
//!
//! Tomcat also ends a connection after `maxKeepAliveRequests` (100 by default) answers on it:
//! the last answer says `Connection: close` and the connection is closed after it (Tomcat's
//! `Http11Processor`, `keepAlive` off once the count is reached). Off unless
//! [`super::state::Controls::max_keepalive_requests`] is set; see [`answered`].

use super::state::MockState;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The mock's listener: each connection with no Nagle delay on small writes (as Tomcat
/// sets it), closed when it comes back from too long an idle time.
pub struct Connections {
    pub listener: TcpListener,
    pub state: Arc<MockState>,
}

impl axum::serve::Listener for Connections {
    type Io = Connection;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Connection, std::net::SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((tcp, addr)) => {
                    let _ = tcp.set_nodelay(true);
                    let conn = Connection {
                        tcp,
                        state: self.state.clone(),
                        last: Instant::now(),
                        closed: false,
                        answers: Arc::new(AtomicU64::new(0)),
                    };
                    return (conn, addr);
                }
                // Out of file descriptors, say: wait a moment, as axum's own listener does.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

/// One connection, and when a byte last went either way on it.
pub struct Connection {
    tcp: TcpStream,
    state: Arc<MockState>,
    last: Instant,
    /// Closed by the server after an idle time: it reads nothing more.
    closed: bool,
    /// Answers sent on it (see [`answered`]).
    answers: Arc<AtomicU64>,
}

/// Which connection a request came over (axum's connect info): its count of answers.
#[derive(Clone, Debug)]
pub struct ConnectionInfo(Arc<AtomicU64>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Connections>>
    for ConnectionInfo
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Connections>) -> Self {
        ConnectionInfo(stream.io().answers.clone())
    }
}

/// Counts an answer on its connection; the one that reaches `maxKeepAliveRequests` says
/// `Connection: close`, and the server closes the connection once it is sent.
pub(super) fn answered(
    state: &MockState,
    conn: &ConnectionInfo,
    answer: &mut axum::response::Response,
) {
    let n = conn.0.fetch_add(1, Ordering::SeqCst) + 1;
    let max = state.controls.max_keepalive_requests.load(Ordering::SeqCst);
    if max > 0 && n >= max {
        answer.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        state
            .controls
            .keepalive_closes
            .fetch_add(1, Ordering::SeqCst);
    }
}

impl Connection {
    fn idle_limit(&self) -> Option<Duration> {
        let ms = self.state.controls.close_idle_ms.load(Ordering::SeqCst);
        (ms > 0).then(|| Duration::from_millis(ms))
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Ok(())); // end of input: the server is done with it
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            if this.idle_limit().is_some_and(|l| this.last.elapsed() >= l) {
                // The server closed the connection while it was idle: the request that came
                // over it is never read, and never answered.
                this.closed = true;
                let c = &this.state.controls;
                c.idle_closes.fetch_add(1, Ordering::SeqCst);
                buf.set_filled(before);
                if c.close_with_reset.load(Ordering::SeqCst) {
                    // Closed with a reset: the server drops the socket (no orderly shutdown)
                    // with no linger, so the client's read fails with ECONNRESET.
                    let _ = this.tcp.set_zero_linger();
                    return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
                }
                return Poll::Ready(Ok(()));
            }
            this.last = Instant::now();
        }
        polled
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.tcp).poll_write(cx, data);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.last = Instant::now();
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.last = Instant::now();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}
