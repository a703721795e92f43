//! What a dead letter shows of its request, and the fingerprint that
//! groups letters failing the same way.
//!
//! The fingerprint hashes the class, the HTTP status, the request's shape
//! (host, the path with its numbers and ids as placeholders, the names of
//! its query parameters) and the reason with its numbers removed. Pages
//! 3 and 40 of one endpoint refused with one message share it; another
//! status, endpoint or message does not.

use sha2::{Digest, Sha256};
use url::Url;

use crate::model::DeadLetterClass;

/// The request a dead letter shows: method, the URL already stripped of
/// secrets (`redact::url`), and the headers sent, a credential's value
/// never (only its header's name).
pub fn shown_request(shown_url: &str, credential_header: Option<&str>) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    headers.insert("accept".into(), "application/json".into());
    if let Some(name) = credential_header {
        headers.insert(name.to_ascii_lowercase(), "***".into());
    }
    serde_json::json!({ "method": "GET", "url": shown_url, "headers": headers })
}

/// 16 hex digits naming how a page failed (see the module doc).
pub fn fingerprint(
    class: DeadLetterClass,
    status: Option<u16>,
    url: Option<&Url>,
    reason: &str,
) -> String {
    let mut hash = Sha256::new();
    hash.update(class.as_str());
    hash.update(b"\0");
    hash.update(status.map(|s| s.to_string()).unwrap_or_default());
    hash.update(b"\0");
    hash.update(url.and_then(Url::host_str).unwrap_or(""));
    hash.update(b"\0");
    hash.update(url.map(|u| path_shape(u.path())).unwrap_or_default());
    hash.update(b"\0");
    let mut names: Vec<String> = (url.into_iter())
        .flat_map(|u| u.query_pairs().map(|(k, _)| k.into_owned()))
        .collect();
    names.sort();
    names.dedup();
    hash.update(names.join("&"));
    hash.update(b"\0");
    hash.update(without_numbers(reason));
    crate::spec::hex(&hash.finalize()[..8])
}

/// The path with segments that hold a digit (ids, dates, numbers) as `*`.
fn path_shape(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.chars().any(|c| c.is_ascii_digit()) {
                "*"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The text with each run of digits (and hex-looking ids) as `#`, at most
/// 500 characters of it: pages and offsets differ, the failure does not.
fn without_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(500));
    let mut in_number = false;
    for c in text.chars().take(500) {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn pages_of_one_endpoint_failing_alike_share_a_fingerprint() {
        let class = DeadLetterClass::Permanent;
        let a = fingerprint(
            class,
            Some(400),
            Some(&url(
                "https://api.example.com/v1/orders?offset=300&limit=100",
            )),
            "page 3 of partition 0: HTTP 400 at offset 300",
        );
        let b = fingerprint(
            class,
            Some(400),
            Some(&url(
                "https://api.example.com/v1/orders?limit=100&offset=4000",
            )),
            "page 40 of partition 2: HTTP 400 at offset 4000",
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 16);
        let other_status = fingerprint(
            class,
            Some(404),
            Some(&url(
                "https://api.example.com/v1/orders?offset=300&limit=100",
            )),
            "page 3 of partition 0: HTTP 400 at offset 300",
        );
        assert_ne!(a, other_status);
        let other_path = fingerprint(
            class,
            Some(400),
            Some(&url(
                "https://api.example.com/v1/users?offset=300&limit=100",
            )),
            "page 3 of partition 0: HTTP 400 at offset 300",
        );
        assert_ne!(a, other_path);
        let other_reason = fingerprint(
            class,
            Some(400),
            Some(&url(
                "https://api.example.com/v1/orders?offset=300&limit=100",
            )),
            "page 3 of partition 0: record 7 has no `id`",
        );
        assert_ne!(a, other_reason);
    }

    #[test]
    fn ids_in_a_path_do_not_split_a_group() {
        assert_eq!(
            path_shape("/v1/accounts/8812/orders"),
            "/*/accounts/*/orders"
        );
        assert_eq!(without_numbers("offset 300 of 12000"), "offset # of #");
    }

    #[test]
    fn a_shown_request_names_the_credential_header_never_its_value() {
        let shown = shown_request("https://api.example.com/items?token=***", Some("X-Api-Key"));
        assert_eq!(shown["headers"]["x-api-key"], "***");
        assert_eq!(shown["method"], "GET");
        assert!(!shown.to_string().contains("secret"));
    }
}
