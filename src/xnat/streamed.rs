//! A JSON answer read as it arrives: its chunks go to a parser on a blocking thread, which
//! makes what the caller wants of it row by row. A files listing of 200,000 files (a 54 MB
//! body) is then never held whole, as text or as rows, beside the listing it becomes, nor
//! beside the one a mount already holds while it fetches it again (the daemon's peak memory).
//!
//! The request stays on this side: a caller that stops waiting drops it, and the parser sees
//! the end of its input at once. A body cut short by the network is the network's error (and
//! retried as one), not the parser's.

use super::{Result, XnatError};
use futures::StreamExt;
use std::io;
use tokio_util::io::{StreamReader, SyncIoBridge};

/// Chunks on their way to the parser: what the network may run ahead of it.
const CHUNKS_AHEAD: usize = 8;

/// The body of `resp` (an answer to `path`), read by `parse` as it arrives.
pub async fn parse_as_it_arrives<T: Send + 'static>(
    mut resp: reqwest::Response,
    path: &str,
    parse: impl FnOnce(&mut dyn io::Read) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(CHUNKS_AHEAD);
    let parser = tokio::task::spawn_blocking(move || {
        let chunks = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok::<_, io::Error>);
        parse(&mut SyncIoBridge::new(StreamReader::new(chunks)))
    });
    let mut failed = None;
    loop {
        // A parser that has stopped has said why: nothing more is read, nor waited for.
        let chunk = tokio::select! {
            biased;
            _ = tx.closed() => break,
            chunk = resp.chunk() => chunk,
        };
        match chunk {
            Ok(Some(chunk)) => {
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(tx);
    drop(resp);
    let parsed = parser.await.map_err(|e| XnatError::BadResponse {
        path: path.to_string(),
        msg: format!("reading the answer failed: {e}"),
    })?;
    match failed {
        Some(e) => Err(super::error::network_error(path, e)),
        None => parsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;

    /// A server on loopback that answers one request with `head` and then `body` until it
    /// ends or the client goes, and then (`then_stall`) sends nothing more, the connection
    /// open, until the client goes; the URL to ask it.
    async fn serve(
        head: &'static str,
        body: impl Iterator<Item = Vec<u8>> + Send + 'static,
        then_stall: bool,
    ) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = [0; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut request).await;
            conn.write_all(head.as_bytes()).await.unwrap();
            for part in body {
                if conn.write_all(&part).await.is_err() {
                    return;
                }
            }
            if then_stall {
                let mut rest = [0; 16];
                let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut rest).await;
            }
        });
        url
    }

    /// A GET that never waits more than 20 s, whatever the server does.
    async fn get(url: &str) -> reqwest::Response {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(20));
        client.build().unwrap().get(url).send().await.unwrap()
    }

    fn count_bytes(body: &mut dyn io::Read) -> Result<usize> {
        let mut all = Vec::new();
        body.read_to_end(&mut all).unwrap();
        Ok(all.len())
    }

    #[tokio::test]
    async fn the_whole_body_reaches_the_parser() {
        let parts = (0..100).map(|i| vec![b'a' + (i % 26) as u8; 10_000]);
        let url = serve(
            "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n",
            parts,
            false,
        )
        .await;
        let resp = get(&url).await;
        assert_eq!(
            parse_as_it_arrives(resp, "/x", count_bytes).await.unwrap(),
            1_000_000
        );
    }

    #[tokio::test]
    async fn a_body_cut_short_is_the_networks_error_and_transient() {
        let parts = std::iter::once(vec![b'{'; 1000]);
        let url = serve(
            "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n",
            parts,
            false,
        )
        .await;
        let resp = get(&url).await;
        let err = parse_as_it_arrives(resp, "/x", count_bytes)
            .await
            .unwrap_err();
        assert!(matches!(err, XnatError::Network { .. }), "{err}");
        assert!(err.is_transient());
    }

    #[tokio::test]
    async fn a_parser_that_stops_while_the_server_stalls_is_not_kept_waiting() {
        // A few bytes, then nothing (the connection stays open): the parser's refusal is the
        // answer at once, not a timeout once the request's deadline is up.
        let parts = std::iter::once(b"<html>".to_vec());
        let url = serve(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            parts,
            true,
        )
        .await;
        assert_refusal_is_the_answer_at_once(&url, 6).await;
    }

    #[tokio::test]
    async fn a_parser_that_stops_stops_the_reading() {
        // An endless body: the answer comes once the parser gives up, not never.
        let parts = std::iter::repeat_with(|| vec![b'x'; 64 << 10]);
        let url = serve(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n",
            parts,
            false,
        )
        .await;
        assert_refusal_is_the_answer_at_once(&url, 10).await;
    }

    /// A parser that refuses the body at `url` once it has read `n` bytes of it: its refusal
    /// is the answer, within seconds.
    async fn assert_refusal_is_the_answer_at_once(url: &str, n: usize) {
        let resp = get(url).await;
        let started = Instant::now();
        let err = parse_as_it_arrives(resp, "/x", move |body| {
            body.read_exact(&mut vec![0; n]).unwrap();
            Err::<(), _>(XnatError::NotFound("refused".into()))
        })
        .await
        .unwrap_err();
        assert!(matches!(err, XnatError::NotFound(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
