//! Response builders: JSON errors, rate-limit headers, Retry-After in both
//! forms, and the damaged bodies of the reset, truncated and slow faults.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use super::bucket::RateInfo;

/// How long the reset fault waits after the first half before failing, so
/// that the half is really on the wire when the connection is dropped.
const RESET_PAUSE: Duration = Duration::from_millis(50);

/// Chunks a slow body is split into.
const SLOW_CHUNKS: usize = 5;

/// `{"error": message}` with `status`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// A 200 JSON body sent as is.
pub(crate) fn json_ok(bytes: Bytes) -> Response {
    with_json_type(Response::new(Body::from(bytes)))
}

pub(crate) fn add_rate_headers(resp: &mut Response, info: &RateInfo) {
    let h = resp.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from(info.limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(info.remaining));
    h.insert("x-ratelimit-reset", HeaderValue::from(info.reset_secs));
}

/// A 429 telling the client to wait `secs` seconds, either as delta-seconds
/// or as an HTTP date at least that far ahead.
pub(crate) fn too_many(secs: u64, as_date: bool, now: SystemTime) -> Response {
    let mut resp = json_error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
    let value = if as_date {
        HeaderValue::from_str(&retry_date(secs, now)).ok()
    } else {
        None
    };
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        value.unwrap_or_else(|| HeaderValue::from(secs)),
    );
    resp
}

/// An HTTP date `secs` after `now`, rounded up to a whole second because the
/// format has no fractions and rounding down would invite an early retry.
pub(crate) fn retry_date(secs: u64, now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let whole = since.as_secs() + u64::from(since.subsec_nanos() > 0);
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(whole.saturating_add(secs)))
}

/// A 200 that promises all of `bytes`, sends about half and then fails the
/// body stream, which makes hyper abort the connection mid-body.
pub(crate) fn reset(bytes: Bytes) -> Response {
    let full = bytes.len();
    let half = bytes.slice(..full / 2);
    let steps = futures::stream::unfold(0u8, move |step| {
        let half = half.clone();
        async move {
            match step {
                0 => Some((Ok(half), 1)),
                1 => {
                    tokio::time::sleep(RESET_PAUSE).await;
                    Some((
                        Err(io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            "injected connection reset",
                        )),
                        2,
                    ))
                }
                _ => None,
            }
        }
    });
    let mut resp = with_json_type(Response::new(Body::from_stream(steps)));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(full));
    resp
}

/// A 200 whose body is the first `cut` fraction of `bytes`. Any proper prefix
/// of a JSON object or array is invalid JSON, and the Content-Length (set from
/// the cut body) keeps the HTTP exchange itself valid.
pub(crate) fn truncated(bytes: Bytes, cut: f64) -> Response {
    let len = bytes.len();
    let keep = ((len as f64) * cut) as usize;
    let keep = if len < 2 { 0 } else { keep.clamp(1, len - 1) };
    json_ok(bytes.slice(..keep))
}

/// A 200 with the whole body, sent in chunks with pauses adding up to about
/// `total_ms`. `done` runs when the last chunk has been handed to the server,
/// so the body counts as served only once it was.
pub(crate) fn slow(bytes: Bytes, total_ms: u64, done: impl FnOnce() + Send + 'static) -> Response {
    let full = bytes.len();
    if full == 0 {
        done();
        return json_ok(bytes);
    }
    let size = full.div_ceil(SLOW_CHUNKS).max(1);
    let chunks: VecDeque<Bytes> = (0..full)
        .step_by(size)
        .map(|start| bytes.slice(start..(start + size).min(full)))
        .collect();
    let pauses = chunks.len().saturating_sub(1).max(1) as u64;
    let pause = Duration::from_millis(total_ms / pauses);
    let steps = futures::stream::unfold(
        (chunks, Some(done), true),
        move |(mut chunks, mut done, first)| async move {
            let chunk = chunks.pop_front()?;
            if !first {
                tokio::time::sleep(pause).await;
            }
            if chunks.is_empty() {
                if let Some(done) = done.take() {
                    done();
                }
            }
            Some((Ok::<Bytes, io::Error>(chunk), (chunks, done, false)))
        },
    );
    let mut resp = with_json_type(Response::new(Body::from_stream(steps)));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(full));
    resp
}

fn with_json_type(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_date_rounds_up() {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_400);
        let text = retry_date(1, now);
        let parsed = httpdate::parse_http_date(&text).unwrap();
        assert_eq!(
            parsed.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_700_000_002
        );
        let exact = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let parsed = httpdate::parse_http_date(&retry_date(3, exact)).unwrap();
        assert_eq!(parsed, exact + Duration::from_secs(3));
    }
}
