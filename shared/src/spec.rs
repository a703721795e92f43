//! The export spec: what to fetch, how to page through it, how fast, and
//! where the CSV goes.
//!
//! A spec arrives as TOML (the CLI) or JSON (the HTTP API) and is validated
//! here before anything is planned. Every validation error names the field
//! it is about, so a user can fix the file without reading code.
//!
//! Secrets never live in a spec: auth names an environment variable or a file
//! that holds the token, and only the worker that sends the request reads it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The pagination styles live with their behaviour, one file each.
pub use crate::pagination::PaginationSpec;

/// Bounds of `rate_limit.rate`: one request every ~17 minutes up to far
/// beyond any real API. Outside them the bucket arithmetic stops making sense.
const MIN_RATE: f64 = 0.001;
const MAX_RATE: f64 = 100_000.0;

/// Deepest JSON path a spec may name; deeper paths are almost always a typo.
const MAX_PATH_SEGMENTS: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSpec {
    /// Human name; also the default CSV file name.
    pub name: String,
    pub source: SourceSpec,
    pub pagination: PaginationSpec,
    /// Field(s) that identify a record; rows are merged by this key.
    pub primary_key: Vec<String>,
    /// Requested page size; sent with the style's size parameter.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    #[serde(default)]
    pub partitions: Vec<PartitionSpec>,
    pub rate_limit: RateLimitSpec,
    #[serde(default)]
    pub retry: RetrySpec,
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    #[serde(default)]
    pub csv: CsvOptions,
    pub output: OutputSpec,
}

fn default_page_size() -> u32 {
    100
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Scheme and host (and optional base path), e.g. `https://api.example.com/v2`.
    pub base_url: String,
    /// Path of the collection, appended to `base_url`, e.g. `/orders`.
    pub path: String,
    /// Fixed query parameters sent with every request.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub auth: Option<AuthSpec>,
    /// Where the records are: a dotted path into the body, or absent when the
    /// body itself is the array of records.
    #[serde(default)]
    pub records_path: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Bodies larger than this are refused (and retried as transient).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_max_body_bytes() -> u64 {
    32 * 1024 * 1024
}

/// How a request proves who it is. Only a *reference* to the secret is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthSpec {
    /// `Authorization: Bearer <token>`.
    Bearer { secret: SecretRef },
    /// `<header>: <value>`.
    Header { header: String, secret: SecretRef },
}

impl AuthSpec {
    pub fn secret(&self) -> &SecretRef {
        match self {
            AuthSpec::Bearer { secret } | AuthSpec::Header { secret, .. } => secret,
        }
    }
}

/// Where a worker finds a secret. Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
}

impl SecretRef {
    /// A printable description that names where the secret is, never what it is.
    pub fn describe(&self) -> String {
        match (&self.env, &self.file) {
            (Some(var), _) => format!("env:{var}"),
            (None, Some(path)) => format!("file:{path}"),
            (None, None) => "none".to_string(),
        }
    }
}

/// One partition: extra query parameters (a time window, an id range, a
/// tenant...) walked independently with its own checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    pub params: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Requests per second the source allows for this credential.
    pub rate: f64,
    /// Requests that may go at once after idleness.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Overrides the bucket key; by default the bucket is the source host plus
    /// a fingerprint of the credential, so every export that shares an API
    /// key shares its budget.
    #[serde(default)]
    pub key: Option<String>,
}

fn default_burst() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_max_elapsed_ms")]
    pub max_elapsed_ms: u64,
    #[serde(default = "default_base_ms")]
    pub base_ms: u64,
    #[serde(default = "default_cap_ms")]
    pub cap_ms: u64,
    /// Fleet-wide retries allowed per first attempt against the source over
    /// a sliding 10 s window (a retry budget: outages must not multiply load).
    #[serde(default = "default_budget_ratio")]
    pub budget_ratio: f64,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            max_attempts: default_max_attempts(),
            max_elapsed_ms: default_max_elapsed_ms(),
            base_ms: default_base_ms(),
            cap_ms: default_cap_ms(),
            budget_ratio: default_budget_ratio(),
        }
    }
}

fn default_budget_ratio() -> f64 {
    0.1
}

fn default_max_attempts() -> u32 {
    8
}
fn default_max_elapsed_ms() -> u64 {
    10 * 60 * 1000
}
fn default_base_ms() -> u64 {
    250
}
fn default_cap_ms() -> u64 {
    30_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    #[serde(default = "yes")]
    pub header: bool,
    /// Prefix cells that a spreadsheet would run as a formula with `'`.
    #[serde(default = "yes")]
    pub formula_guard: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: default_delimiter(),
            header: true,
            formula_guard: true,
        }
    }
}

fn default_delimiter() -> char {
    ','
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub dir: String,
    /// File name; defaults to `<name>.csv`.
    #[serde(default)]
    pub file: Option<String>,
}

/// A spec that failed to parse or validate. `field` is a dotted path into the
/// spec (`source.base_url`, `pagination.style`, `primary_key`).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("spec is not valid {format}: {message}")]
    Syntax {
        format: &'static str,
        message: String,
    },
    #[error("spec field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

pub(crate) fn invalid(field: &str, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

impl ExportSpec {
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| SpecError::Syntax {
            format: "TOML",
            message: e.to_string(),
        })?;
        let value = serde_json::to_value(table).map_err(|e| SpecError::Syntax {
            format: "TOML",
            message: e.to_string(),
        })?;
        Self::from_value(value)
    }

    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| SpecError::Syntax {
                format: "JSON",
                message: e.to_string(),
            })?;
        Self::from_value(value)
    }

    pub fn from_value(value: serde_json::Value) -> Result<Self, SpecError> {
        check_style(&value)?;
        let spec: ExportSpec = serde_json::from_value(value).map_err(|e| SpecError::Syntax {
            format: "spec",
            message: e.to_string(),
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks everything that serde's types cannot: URLs, non-empty keys,
    /// sane numbers, safe file names.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        let base = url::Url::parse(&self.source.base_url).map_err(|e| {
            invalid(
                "source.base_url",
                format!("is not an absolute URL ({e}): {:?}", self.source.base_url),
            )
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("source.base_url", "scheme must be http or https"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(invalid(
                "source.base_url",
                "must not carry credentials; use source.auth",
            ));
        }
        if base.host_str().is_none() {
            return Err(invalid("source.base_url", "has no host"));
        }
        if !self.source.path.is_empty() && !self.source.path.starts_with('/') {
            return Err(invalid("source.path", "must start with `/`"));
        }
        if self.source.timeout_ms == 0 {
            return Err(invalid("source.timeout_ms", "must be greater than 0"));
        }
        if self.source.max_body_bytes == 0 {
            return Err(invalid("source.max_body_bytes", "must be greater than 0"));
        }
        if let Some(path) = &self.source.records_path {
            check_path("source.records_path", path)?;
        }
        if let Some(auth) = &self.source.auth {
            let secret = auth.secret();
            match (&secret.env, &secret.file) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "source.auth.secret",
                        "set either `env` or `file`, not both",
                    ))
                }
                (None, None) => return Err(invalid("source.auth.secret", "set `env` or `file`")),
                (Some(var), None) if var.trim().is_empty() => {
                    return Err(invalid("source.auth.secret.env", "must not be empty"))
                }
                (None, Some(path)) if path.trim().is_empty() => {
                    return Err(invalid("source.auth.secret.file", "must not be empty"))
                }
                _ => {}
            }
            if let AuthSpec::Header { header, .. } = auth {
                if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    return Err(invalid(
                        "source.auth.header",
                        format!("{header:?} is not a valid HTTP header name"),
                    ));
                }
            }
        }
        self.pagination.style().validate()?;
        if self.primary_key.is_empty() {
            return Err(invalid(
                "primary_key",
                "is required: name the field(s) that identify a record",
            ));
        }
        for (i, field) in self.primary_key.iter().enumerate() {
            check_path(&format!("primary_key[{i}]"), field)?;
        }
        if self.page_size == 0 || self.page_size > 100_000 {
            return Err(invalid("page_size", "must be between 1 and 100000"));
        }
        for (i, partition) in self.partitions.iter().enumerate() {
            if partition.params.is_empty() {
                return Err(invalid(
                    &format!("partitions[{i}].params"),
                    "must name at least one parameter",
                ));
            }
        }
        if !(self.rate_limit.rate.is_finite()
            && (MIN_RATE..=MAX_RATE).contains(&self.rate_limit.rate))
        {
            return Err(invalid(
                "rate_limit.rate",
                format!(
                    "must be a number of requests per second between {MIN_RATE} and {MAX_RATE}"
                ),
            ));
        }
        if self.rate_limit.burst == 0 {
            return Err(invalid("rate_limit.burst", "must be at least 1"));
        }
        if self.retry.max_attempts == 0 {
            return Err(invalid("retry.max_attempts", "must be at least 1"));
        }
        if !(self.retry.budget_ratio.is_finite()
            && self.retry.budget_ratio > 0.0
            && self.retry.budget_ratio <= 10.0)
        {
            return Err(invalid("retry.budget_ratio", "must be in (0, 10]"));
        }
        if self.retry.base_ms == 0 || self.retry.cap_ms < self.retry.base_ms {
            return Err(invalid(
                "retry",
                "base_ms must be > 0 and cap_ms must be >= base_ms",
            ));
        }
        if let Some(columns) = &self.columns {
            if columns.is_empty() {
                return Err(invalid(
                    "columns",
                    "must not be empty; omit it to infer columns",
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for (i, c) in columns.iter().enumerate() {
                if c.is_empty() || c.chars().any(|ch| ch.is_control()) {
                    return Err(invalid(
                        &format!("columns[{i}]"),
                        "must be non-empty without control characters",
                    ));
                }
                if !seen.insert(c) {
                    return Err(invalid(
                        &format!("columns[{i}]"),
                        format!("{c:?} is repeated"),
                    ));
                }
            }
        }
        let d = self.csv.delimiter;
        if !d.is_ascii() || d == '"' || d == '\r' || d == '\n' {
            return Err(invalid(
                "csv.delimiter",
                "must be one ASCII character other than quote, CR or LF",
            ));
        }
        if self.output.dir.trim().is_empty() {
            return Err(invalid("output.dir", "must not be empty"));
        }
        if std::path::Path::new(&self.output.dir)
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(invalid("output.dir", "must not contain `..`"));
        }
        let file = self.file_name();
        if file.is_empty()
            || file.starts_with('.')
            || file.contains('/')
            || file.contains('\\')
            || file.chars().any(|c| c.is_control())
        {
            return Err(invalid(
                if self.output.file.is_some() {
                    "output.file"
                } else {
                    "name"
                },
                format!("{file:?} is not a safe file name (no `/`, no leading `.`)"),
            ));
        }
        Ok(())
    }

    pub fn file_name(&self) -> String {
        self.output
            .file
            .clone()
            .unwrap_or_else(|| format!("{}.csv", self.name))
    }

    /// SHA-256 of the canonical JSON of the spec. The spec holds only secret
    /// references, so the hash is safe to publish in manifests.
    pub fn hash(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex(&Sha256::digest(&canonical))
    }
}

/// serde reports an unknown tag without saying where it was; a user needs
/// the field and the styles that exist.
fn check_style(value: &serde_json::Value) -> Result<(), SpecError> {
    use crate::pagination::STYLES;
    match value.get("pagination").map(|p| p.get("style")) {
        None => Err(invalid("pagination", "is required")),
        Some(None) => Err(invalid(
            "pagination.style",
            format!("is required; one of {}", STYLES.join(", ")),
        )),
        Some(Some(serde_json::Value::String(style))) if STYLES.contains(&style.as_str()) => Ok(()),
        Some(Some(other)) => Err(invalid(
            "pagination.style",
            format!(
                "unknown style {other}; expected one of {}",
                STYLES.join(", ")
            ),
        )),
    }
}

/// A dotted JSON path a spec names (`data.items`): no empty segment, not
/// absurdly deep.
pub(crate) fn check_path(field: &str, path: &str) -> Result<(), SpecError> {
    if path.is_empty() || path.split('.').any(|s| s.is_empty()) {
        return Err(invalid(
            field,
            format!("{path:?} is not a dotted path like `data.items`"),
        ));
    }
    if path.split('.').count() > MAX_PATH_SEGMENTS {
        return Err(invalid(field, "is nested too deeply"));
    }
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "orders"
primary_key = ["id"]
page_size = 50

[source]
base_url = "http://127.0.0.1:9000"
path = "/v1/orders"
records_path = "data"
auth = { type = "bearer", secret = { env = "MOCK_TOKEN" } }

[pagination]
style = "offset"
total_path = "total"

[rate_limit]
rate = 50
burst = 10

[output]
dir = "out"
"#;

    fn field_of(err: SpecError) -> String {
        match err {
            SpecError::Invalid { field, .. } => field,
            SpecError::Syntax { message, .. } => format!("syntax: {message}"),
        }
    }

    #[test]
    fn parses_a_good_spec_with_defaults() {
        let spec = ExportSpec::from_toml(GOOD).unwrap();
        assert_eq!(spec.page_size, 50);
        assert_eq!(spec.retry, RetrySpec::default());
        assert!(spec.csv.formula_guard);
        assert_eq!(spec.file_name(), "orders.csv");
        assert_eq!(spec.pagination.style_name(), "offset");
    }

    #[test]
    fn json_and_toml_agree_and_hash_is_stable() {
        let spec = ExportSpec::from_toml(GOOD).unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        let again = ExportSpec::from_json(&json).unwrap();
        assert_eq!(spec, again);
        assert_eq!(spec.hash(), again.hash());
        assert_eq!(spec.hash().len(), 64);
    }

    #[test]
    fn unknown_style_names_the_field() {
        let text = GOOD.replace("style = \"offset\"", "style = \"telepathy\"");
        let err = ExportSpec::from_toml(&text).unwrap_err();
        assert!(err.to_string().contains("telepathy"), "{err}");
        assert_eq!(field_of(err), "pagination.style");
    }

    #[test]
    fn missing_primary_key_is_named() {
        let text = GOOD.replace("primary_key = [\"id\"]", "primary_key = []");
        assert_eq!(
            field_of(ExportSpec::from_toml(&text).unwrap_err()),
            "primary_key"
        );
        let text = GOOD.replace("primary_key = [\"id\"]\n", "");
        let err = ExportSpec::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("primary_key"), "{err}");
    }

    #[test]
    fn bad_urls_are_named() {
        for bad in ["not a url", "ftp://x/", "http://user:pw@host/"] {
            let text = GOOD.replace("http://127.0.0.1:9000", bad);
            let err = ExportSpec::from_toml(&text).unwrap_err();
            assert_eq!(field_of(err), "source.base_url", "{bad}");
        }
        let text = GOOD.replace("path = \"/v1/orders\"", "path = \"v1\"");
        assert_eq!(
            field_of(ExportSpec::from_toml(&text).unwrap_err()),
            "source.path"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = GOOD.replace("page_size = 50", "page_size = 50\npagesize = 5");
        let err = ExportSpec::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("pagesize"), "{err}");
    }

    #[test]
    fn numbers_and_names_are_checked() {
        let cases = [
            ("rate = 50", "rate = 0", "rate_limit.rate"),
            ("burst = 10", "burst = 0", "rate_limit.burst"),
            ("page_size = 50", "page_size = 0", "page_size"),
            ("name = \"orders\"", "name = \"../etc\"", "name"),
            (
                "records_path = \"data\"",
                "records_path = \"a..b\"",
                "source.records_path",
            ),
        ];
        for (from, to, field) in cases {
            let text = GOOD.replace(from, to);
            assert_eq!(
                field_of(ExportSpec::from_toml(&text).unwrap_err()),
                field,
                "{to}"
            );
        }
    }

    #[test]
    fn cursor_needs_one_source() {
        let text = GOOD.replace(
            "style = \"offset\"\ntotal_path = \"total\"",
            "style = \"cursor\"",
        );
        assert_eq!(
            field_of(ExportSpec::from_toml(&text).unwrap_err()),
            "pagination"
        );
    }

    #[test]
    fn secret_reference_must_be_one_place() {
        let text = GOOD.replace(
            "secret = { env = \"MOCK_TOKEN\" }",
            "secret = { env = \"A\", file = \"/b\" }",
        );
        assert_eq!(
            field_of(ExportSpec::from_toml(&text).unwrap_err()),
            "source.auth.secret"
        );
    }
}
