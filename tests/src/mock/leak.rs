//! A leaky source (`MockConfig::leaky`): what a careless or hostile API
//! sends back that an exporter must never store or show. Every data answer
//! echoes the request's `Authorization` value in headers (one whose name
//! gives it away, one whose name does not) and, for object bodies, in the
//! body (error answers included); next-URL links point off the origin and carry a signed query value
//! ([`LEAKED_SIGNATURE`]), so following them fails validation.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::styles::Rendered;

/// The signed value in the leaky source's next links.
pub const LEAKED_SIGNATURE: &str = "SIGNED-VALUE-DO-NOT-LEAK";

/// Dresses a rendered page as the leaky source sends it.
pub(crate) fn dress(rendered: &mut Rendered, request: &HeaderMap) {
    let auth = request
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if let Ok(echo) = HeaderValue::from_str(&format!("you sent {auth}")) {
        rendered
            .headers
            .push((HeaderName::from_static("x-debug-echo"), echo));
    }
    let token = auth.split_once(' ').map_or(auth.as_str(), |(_, t)| t);
    if let Ok(key) = HeaderValue::from_str(token) {
        rendered
            .headers
            .push((HeaderName::from_static("x-apikey"), key));
    }
    if let Value::Object(body) = &mut rendered.body {
        body.insert("debug".into(), json!({ "you_sent": auth }));
        if let Some(Value::String(next)) = body.get_mut("next") {
            let query = next.split_once('?').map_or("", |(_, q)| q);
            *next = format!("http://signed.invalid/next?{query}&signature={LEAKED_SIGNATURE}");
        }
    }
}

/// An error answer as the leaky source sends it: the error, with the
/// credential echoed in its headers and body like every other answer, so
/// the answer a dead letter keeps carries it too.
pub(crate) fn error_answer(status: StatusCode, message: &str, request: &HeaderMap) -> Response {
    let mut rendered = Rendered {
        body: json!({ "error": message }),
        headers: Vec::new(),
    };
    dress(&mut rendered, request);
    let mut response = (status, axum::Json(rendered.body)).into_response();
    for (name, value) in rendered.headers {
        response.headers_mut().append(name, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leaky_source_echoes_the_credential_and_signs_its_links() {
        let mut rendered = Rendered {
            body: json!({"data": [], "next": "http://h/next-url/items?after=5&limit=5"}),
            headers: Vec::new(),
        };
        let mut request = HeaderMap::new();
        request.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        dress(&mut rendered, &request);
        assert_eq!(rendered.body["debug"]["you_sent"], "Bearer tok");
        assert_eq!(
            rendered.body["next"],
            format!("http://signed.invalid/next?after=5&limit=5&signature={LEAKED_SIGNATURE}")
        );
        let names: Vec<&str> = rendered.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-debug-echo", "x-apikey"]);
        assert_eq!(rendered.headers[1].1, "tok");
    }
}
