//! Latency and faults injected before an answer, as [`super::state::Controls`] asks.

use super::responses::html;
use super::state::{MockState, data_seed};
use axum::body::Body;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use futures::StreamExt;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A page of the reverse proxy in front of XNAT, under its own name (`Server: nginx/...`).
fn front_page(status: StatusCode, message: &str) -> Response {
    let mut page = html(status, message);
    page.headers_mut().insert(
        axum::http::header::SERVER,
        axum::http::HeaderValue::from_static("nginx/1.24.0"),
    );
    page
}

/// Waits out the added latency, then gives the answer to send instead of the real one when
/// the server is down, failing or (pseudo-randomly) faulty, or `None` to go on. A truncation
/// fault is left in `truncate_next` for the request's file body to take up.
pub(super) async fn inject(state: &MockState, uri: &Uri) -> Option<Response> {
    let c = &state.controls;
    let latency = c.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if c.down.load(Ordering::SeqCst) {
        return Some(html(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"));
    }
    if c.gateway_timeout_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        // A reverse proxy in front of XNAT that gave up waiting: its own page, its own name.
        return Some(front_page(
            StatusCode::GATEWAY_TIMEOUT,
            "504 Gateway Time-out",
        ));
    }
    if c.proxy_page_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        // A maintenance page the front serves while XNAT is being restarted: 200, HTML.
        return Some(front_page(
            StatusCode::OK,
            "<h1>This site is down for maintenance</h1><p>Please come back later.</p>",
        ));
    }
    if c.fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return Some(html(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
        ));
    }

    let n = c.requests.load(Ordering::SeqCst);
    let fault =
        data_seed(n ^ 0x5EED) % 1000 < u64::from(c.fault_percent.load(Ordering::SeqCst)) * 10;
    let file_body = uri
        .path()
        .split_once("/files/")
        .is_some_and(|(_, rest)| !rest.is_empty());
    if file_body && c.files_down.load(Ordering::SeqCst) {
        return Some(html(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"));
    }
    // A third of the faults is a 2 s stall before an otherwise normal answer; of the rest,
    // file bodies are cut short half the time, and everything else is a 500.
    let kind = data_seed(n) % 6;
    if fault && kind < 2 {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let fault = fault && kind >= 2;
    let truncate_fault = fault && file_body && kind % 2 == 1;
    if fault && !truncate_fault {
        return Some(html(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error (injected)",
        ));
    }
    if truncate_fault {
        // Taken up by this request's file body.
        c.truncate_next.fetch_add(1, Ordering::SeqCst);
    }
    None
}

/// The answer as it is, or sent one byte at a time when `drip_ms` is set.
pub(super) fn drip(state: &MockState, answer: Response) -> Response {
    let every = state.controls.drip_ms.load(Ordering::SeqCst);
    if every == 0 {
        return answer;
    }
    let (parts, body) = answer.into_parts();
    let bytes = body.into_data_stream().flat_map(|chunk| {
        let chunk = chunk.unwrap_or_default();
        futures::stream::iter((0..chunk.len()).map(move |i| chunk.slice(i..i + 1)))
    });
    let dripping = bytes.then(move |b| async move {
        tokio::time::sleep(Duration::from_millis(every)).await;
        Ok::<_, std::io::Error>(b)
    });
    Response::from_parts(parts, Body::from_stream(dripping))
}
