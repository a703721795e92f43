//! Redaction: every rule that keeps a secret out of what the fleet shows.
//!
//! Logs, dead letters, API answers and manifests show URLs, headers and
//! texts the source sent or the spec holds. All of them pass through the
//! functions here and nowhere else, so one module says what is hidden:
//!
//! - a *name* rule ([`is_secret_name`]): query parameters and headers whose
//!   names look like credentials (`key`, `token`, `secret`, `password`,
//!   `signature`, `auth`, `session`, `cookie`, …) show as `***`;
//! - URLs ([`url`], [`url_text`]): userinfo removed, secret-looking query
//!   values `***`, the fragment dropped;
//! - *known values* ([`Known`]): the credential a request sent is removed by
//!   value wherever it shows up again (a source echoing our API key back in
//!   a header or a body), whatever the field is called;
//! - free text ([`text`]): known values, URL userinfo and secret-looking
//!   `name=value` pairs inside text (a body excerpt, an error message);
//! - headers ([`headers`]): by name, then by value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use reqwest::header::HeaderMap;
use url::Url;

/// What a hidden value shows as.
pub const MASK: &str = "***";

/// The longest header value a dead letter keeps (after redaction).
const HEADER_VALUE_CHARS: usize = 256;

/// Parts of a name that say its value is a credential. Matched anywhere in
/// the lower-cased name, `-`/`_` included: `x-api-key`, `x-apikey`,
/// `api_key`, `X-Amz-Security-Token`, `Proxy-Authorization`, `sig`.
const SECRET_NAME_PARTS: &[&str] = &[
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "signature",
    "sig",
    "auth",
    "session",
    "cookie",
    "credential",
];

/// Whether a query parameter's or a header's name says its value is a
/// credential. Deliberately broad: hiding a harmless value costs a
/// debugging detail, showing a secret costs the secret.
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_NAME_PARTS.iter().any(|s| lower.contains(s))
}

/// Secret values known to the process that builds a text: the credential a
/// request sent. Removed by value from whatever is shown. Debug output
/// shows only how many there are.
#[derive(Clone, Default)]
pub struct Known {
    /// Longest first, so a value containing another is removed whole.
    values: Vec<String>,
}

impl std::fmt::Debug for Known {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Known({} values: <redacted>)", self.values.len())
    }
}

impl Known {
    /// No known values: only the name and URL rules apply.
    pub fn none() -> Known {
        Known::default()
    }

    /// Adds a secret, also in the forms it takes in a URL (percent- and
    /// form-encoded) when they differ.
    pub fn add(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let percent = encoded.replace('+', "%20");
        for value in [secret.to_string(), encoded, percent] {
            if !self.values.contains(&value) {
                self.values.push(value);
            }
        }
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// The longest known value, in bytes (0 without any).
    pub fn longest(&self) -> usize {
        self.values.first().map_or(0, String::len)
    }

    fn remove_from(&self, text: &str) -> String {
        let mut out = text.to_string();
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), MASK);
            }
        }
        out
    }
}

/// A URL as it may be shown: no userinfo, no fragment, secret-looking query
/// values `***` (by name, and any query value equal to a known secret is
/// caught by [`text`] where one is known).
pub fn url(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_fragment(None);
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let value = if is_secret_name(&k) {
                MASK.to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), value)
        })
        .collect();
    if pairs.is_empty() {
        shown.set_query(None);
    } else {
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// Parameters (a spec's fixed query, a partition's parameters) as they may
/// be shown: values whose names look secret are `***`.
pub fn params(params: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    params
        .iter()
        .map(|(k, v)| {
            let shown = if is_secret_name(k) { MASK } else { v.as_str() };
            (k.clone(), shown.to_string())
        })
        .collect()
}

/// A URL given as text (a source's next link, a spec's base URL), shown as
/// [`url`] shows it; one that does not parse goes through [`text`] instead,
/// so it is shown as far as it is harmless.
pub fn url_text(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(parsed) => url(&parsed),
        Err(_) => text(raw, &Known::none()),
    }
}

/// Free text (a body excerpt, an error message, a header value) with the
/// known secrets, URL userinfo and secret-looking `name=value` pairs
/// hidden.
pub fn text(input: &str, known: &Known) -> String {
    let without_known = known.remove_from(input);
    let without_userinfo = strip_userinfo(&without_known);
    mask_pairs(&without_userinfo)
}

/// Response headers as JSON: secret-looking names `***`, every other value
/// through [`text`] (a source may echo our key in any header), cut to 256
/// characters after redaction.
pub fn headers(headers: &HeaderMap, known: &Known) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let n = name.as_str();
        let shown = if is_secret_name(n) {
            MASK.to_string()
        } else {
            let raw = String::from_utf8_lossy(value.as_bytes());
            text(&raw, known).chars().take(HEADER_VALUE_CHARS).collect()
        };
        map.insert(n.to_string(), serde_json::Value::String(shown));
    }
    serde_json::Value::Object(map)
}

/// How much of a body [`excerpt`] reads to show `limit` bytes: a known
/// value straddling `limit` must be seen whole to be removed.
pub fn excerpt_window(limit: usize, known: &Known) -> usize {
    limit.saturating_add(known.longest())
}

/// The start of a body as shown text: redacted as a whole window (a secret
/// across the cut is still seen whole), then cut to `limit` bytes on a
/// character boundary; no NUL (Postgres refuses it in text).
pub fn excerpt(body: &[u8], limit: usize, known: &Known) -> String {
    let window = &body[..body.len().min(excerpt_window(limit, known))];
    let raw = String::from_utf8_lossy(window).replace('\0', "\u{fffd}");
    let mut shown = text(&raw, known);
    if shown.len() > limit {
        let mut cut = limit;
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        shown.truncate(cut);
    }
    shown
}

/// A server path as a tenant may see it: relative to the tenant's directory
/// (`roots`: that directory as configured and as resolved). A path outside
/// every root shows as `None`: the tenant has no business with it.
pub fn tenant_path(roots: &[PathBuf], path: &Path) -> Option<String> {
    roots
        .iter()
        .find_map(|root| path.strip_prefix(root).ok())
        .map(|rel| rel.display().to_string())
}

/// Text (an export's error) as a tenant may see it: paths in its own
/// directory (`roots`) as `<output>/…`, any other path under the fleet's
/// `output_root` as `<output_root>/…`.
pub fn tenant_text(text: &str, roots: &[PathBuf], output_root: &Path) -> String {
    let mut out = text.to_string();
    let named = roots.iter().map(|r| (r.as_path(), "<output>"));
    for (path, shown) in named.chain(std::iter::once((output_root, "<output_root>"))) {
        let path = path.display().to_string();
        if !path.is_empty() && path != "/" {
            out = out.replace(&path, shown);
        }
    }
    out
}

/// Removes `user:password@` after every `//` in `text` (`scheme://` and
/// scheme-relative `//host` alike).
fn strip_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("//") {
        let (head, tail) = rest.split_at(at + 2);
        out.push_str(head);
        let authority_end = tail.find(ends_authority).unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(userinfo_end) => rest = &tail[userinfo_end + 1..],
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

fn ends_authority(c: char) -> bool {
    matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '\\') || c.is_whitespace()
}

/// Hides the value of every `name=value` whose name looks secret. A name
/// starts the text or follows `?`, `&`, `;` or a space, quote or bracket;
/// the value runs to the next separator (or the end of the text, so a
/// value cut short is hidden too).
fn mask_pairs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let (before, after) = (&rest[..eq], &rest[eq + 1..]);
        // Past the separator, which may be a multi-byte space (U+00A0).
        let name_start = before
            .char_indices()
            .rev()
            .find(|(_, c)| starts_name(*c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let name = &before[name_start..];
        let value_end = after.find(ends_value).unwrap_or(after.len());
        out.push_str(before);
        out.push('=');
        if !name.is_empty() && value_end > 0 && is_secret_name(&decoded(name)) {
            out.push_str(MASK);
        } else {
            out.push_str(&after[..value_end]);
        }
        rest = &after[value_end..];
    }
    out.push_str(rest);
    out
}

fn starts_name(c: char) -> bool {
    matches!(
        c,
        '?' | '&' | ';' | '"' | '\'' | '<' | '(' | '[' | '{' | ','
    ) || c.is_whitespace()
}

fn ends_value(c: char) -> bool {
    matches!(
        c,
        '&' | '#' | '"' | '\'' | '<' | '>' | ',' | ';' | ')' | ']' | '}' | '\\'
    ) || c.is_whitespace()
}

/// A query parameter's name percent-decoded (`api%5Fkey` is `api_key`).
fn decoded(name: &str) -> String {
    url::form_urlencoded::parse(name.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_byte_space_before_a_name_is_no_panic() {
        for text in [
            "\u{a0}a=1",
            "x\u{3000}token=abc",
            "\u{a0}=",
            "a\u{a0}\u{a0}key=v&b=2",
        ] {
            let shown = text_of(text);
            assert!(!shown.contains("abc"), "{shown}");
        }
        assert_eq!(text_of("\u{a0}token=abc"), "\u{a0}token=***");
    }

    fn text_of(text: &str) -> String {
        super::text(text, &Known::none())
    }
    use reqwest::header::HeaderValue;

    fn known(secret: &str) -> Known {
        let mut k = Known::none();
        k.add(secret);
        k
    }

    #[test]
    fn the_name_rule_covers_the_usual_credential_names() {
        for name in [
            "x-apikey",
            "X-API-Key",
            "api_key",
            "apiKey",
            "x-amz-security-token",
            "client_secret",
            "signature",
            "X-Amz-Signature",
            "sig",
            "authorization",
            "Proxy-Authorization",
            "session_id",
            "x-session",
            "password",
            "passwd",
            "set-cookie",
            "cookie",
            "aws_credential",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "offset",
            "limit",
            "page",
            "after",
            "x-ratelimit-remaining",
            "content-type",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn urls_lose_userinfo_fragments_and_secret_query_values() {
        let u =
            Url::parse("https://user:pw@h/p?api_key=abc&offset=5&Token=zz&X-Amz-Signature=s1#frag")
                .unwrap();
        assert_eq!(
            url(&u),
            "https://h/p?api_key=***&offset=5&Token=***&X-Amz-Signature=***"
        );
        let user_only = Url::parse("https://tok123@h/p").unwrap();
        assert_eq!(url(&user_only), "https://h/p");
        assert_eq!(
            url_text("http://h/x?signature=SECRET"),
            "http://h/x?signature=***"
        );
        // Unparsable: the text rules still apply.
        assert_eq!(url_text("http://[::1?sig=SECRET"), "http://[::1?sig=***");
        assert_eq!(
            url_text("//u:p@evil.test/x?token=T"),
            "//evil.test/x?token=***"
        );
        assert_eq!(url_text("http://u:p@[::1/x"), "http://[::1/x");
    }

    #[test]
    fn known_values_are_removed_in_every_form() {
        let k = known("s3cr3t/+value");
        let t = text("Bearer s3cr3t/+value, echo=s3cr3t%2F%2Bvalue", &k);
        assert_eq!(t, "Bearer ***, echo=***");
        assert!(format!("{k:?}").contains("<redacted>"));
        assert!(!format!("{k:?}").contains("s3cr3t"));
        // Nothing known, nothing removed but by the other rules.
        assert_eq!(text("plain words", &Known::none()), "plain words");
    }

    #[test]
    fn text_hides_secret_pairs_and_userinfo() {
        let k = Known::none();
        assert_eq!(
            text(r#"{"next":"http://a:b@h/x?after=3&signature=SIG&x=1"}"#, &k),
            r#"{"next":"http://h/x?after=3&signature=***&x=1"}"#
        );
        assert_eq!(text("api_key=K1&limit=5", &k), "api_key=***&limit=5");
        assert_eq!(
            text("see <http://h/?token=T>; rel=next", &k),
            "see <http://h/?token=***>; rel=next"
        );
        assert_eq!(text("cut short at ?sig=ABC", &k), "cut short at ?sig=***");
        assert_eq!(text("api%5Fkey=K", &k), "api%5Fkey=***");
        assert_eq!(text("a == b, x=1", &k), "a == b, x=1");
        assert_eq!(text("no pairs", &k), "no pairs");
    }

    #[test]
    fn headers_are_hidden_by_name_and_by_value() {
        let mut h = HeaderMap::new();
        h.insert("set-cookie", HeaderValue::from_static("sid=1"));
        h.insert("x-apikey", HeaderValue::from_static("k"));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("3"));
        h.insert(
            "x-echo",
            HeaderValue::from_static("you sent Bearer tok-SECRET"),
        );
        h.insert("location", HeaderValue::from_static("/next?signature=S"));
        let v = headers(&h, &known("tok-SECRET"));
        assert_eq!(v["set-cookie"], MASK);
        assert_eq!(v["x-apikey"], MASK);
        assert_eq!(v["x-ratelimit-remaining"], "3");
        assert_eq!(v["x-echo"], "you sent Bearer ***");
        assert_eq!(v["location"], "/next?signature=***");
    }

    #[test]
    fn an_excerpt_is_redacted_before_it_is_cut() {
        let k = known("SECRETVALUE");
        // The secret straddles the cut at 10 bytes.
        let body = b"0123456SECRETVALUE tail";
        let shown = excerpt(body, 10, &k);
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.len() <= 10);
        assert_eq!(excerpt(b"a\0b", 10, &Known::none()), "a\u{fffd}b");
        let mut wide = vec![b'y'; 9];
        wide.extend("é".as_bytes());
        assert_eq!(excerpt(&wide, 10, &Known::none()), "y".repeat(9));
    }

    #[test]
    fn params_are_hidden_by_name() {
        let p: BTreeMap<String, String> = [("region", "eu"), ("sig", "S1"), ("api_key", "K")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let shown = params(&p);
        assert_eq!(shown["region"], "eu");
        assert_eq!(shown["sig"], MASK);
        assert_eq!(shown["api_key"], MASK);
    }

    #[test]
    fn paths_are_shown_relative_to_the_tenant() {
        let roots = vec![
            PathBuf::from("/srv/out/acme"),
            PathBuf::from("/real/out/acme"),
        ];
        assert_eq!(
            tenant_path(&roots, Path::new("/real/out/acme/nightly/o.csv")),
            Some("nightly/o.csv".into())
        );
        assert_eq!(tenant_path(&roots, Path::new("/etc/passwd")), None);
        assert_eq!(
            tenant_text(
                "cannot create /real/out/acme/x: denied; see /srv/out/globex",
                &roots,
                Path::new("/srv/out")
            ),
            "cannot create <output>/x: denied; see <output_root>/globex"
        );
    }
}
