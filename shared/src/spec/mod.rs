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

pub mod backfill;
pub mod incremental;
pub mod run_naming;
mod verify;

pub use backfill::{BackfillSpec, Split};
pub use incremental::{CursorFormat, IncrementalSpec, Window};
pub use verify::{OnMismatch, VerifySpec};

/// The pagination styles live with their behaviour, one file each.
pub use crate::pagination::PaginationSpec;

/// Bounds of `rate_limit.rate`: one request every ~17 minutes up to far
/// beyond any real API. Outside them the bucket arithmetic stops making sense.
use crate::adaptive_rate::MIN_RATE;
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
    /// Optional: without a rate the fleet learns the source's limit.
    #[serde(default)]
    pub rate_limit: RateLimitSpec,
    #[serde(default)]
    pub retry: RetrySpec,
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    #[serde(default)]
    pub csv: CsvOptions,
    pub output: OutputSpec,
    #[serde(default, skip_serializing_if = "VerifySpec::is_default")]
    pub verify: VerifySpec,
    /// What changed in a window of a cursor field (see `incremental`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalSpec>,
    /// A range cut into windows, one partition each (see `backfill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillSpec>,
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
    /// Bodies larger than this are refused, and the page dead-lettered (the
    /// fleet's `limits.max_body_bytes` caps it further).
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
    /// Requests per second the source allows for this credential: where
    /// the fleet starts and the most it sends. Without it the fleet starts
    /// low and learns the limit from the source's answers (see
    /// `adaptive_rate`); with it, it learns only a lower one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
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

impl Default for RateLimitSpec {
    fn default() -> Self {
        RateLimitSpec {
            rate: None,
            burst: default_burst(),
            key: None,
        }
    }
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
    /// A pointer to the latest published run (`orders/latest.json`, under
    /// the tenant's directory like `dir`), replaced atomically after each
    /// publish: which file, its manifest, rows, SHA-256 and window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<String>,
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
    /// sane numbers, safe file names. The checks run in this order and the
    /// first failure is reported, so a spec with several mistakes always
    /// names the same field first.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        self.source.validate()?;
        self.pagination.style().validate()?;
        check_primary_key(&self.primary_key)?;
        if self.page_size == 0 || self.page_size > 100_000 {
            return Err(invalid("page_size", "must be between 1 and 100000"));
        }
        check_partitions(&self.partitions)?;
        self.rate_limit.validate()?;
        self.retry.validate()?;
        if let Some(columns) = &self.columns {
            check_columns(columns)?;
        }
        self.csv.validate()?;
        self.verify.validate()?;
        if let Some(incremental) = &self.incremental {
            incremental.validate()?;
            self.check_window_params(incremental)?;
        }
        if let Some(backfill) = &self.backfill {
            backfill.validate()?;
            backfill.validate_for(self.page_size)?;
            if self.incremental.is_some() {
                return Err(invalid(
                    "backfill",
                    "a backfill has no watermark: drop [incremental] (its range is `from`-`to`)",
                ));
            }
            if !self.partitions.is_empty() {
                return Err(invalid(
                    "partitions",
                    "a backfill makes its own partitions, one per window",
                ));
            }
        }
        self.validate_output()
    }

    /// The window's parameters are the export's to set: no partition may
    /// name them too.
    fn check_window_params(&self, incremental: &IncrementalSpec) -> Result<(), SpecError> {
        let ours = [
            Some(&incremental.since_param),
            incremental.until_param.as_ref(),
        ];
        for (i, partition) in self.partitions.iter().enumerate() {
            if let Some(param) = ours
                .into_iter()
                .flatten()
                .find(|p| partition.params.contains_key(*p))
            {
                return Err(invalid(
                    &format!("partitions[{i}].params"),
                    format!("`{param}` is the incremental window's parameter"),
                ));
            }
        }
        Ok(())
    }

    /// The spec of a run starting at `now`: an incremental export's window
    /// pinned from `watermark` (its start, for a first or one-off run),
    /// unless the spec pins one already, and the output's placeholders
    /// filled.
    pub fn pinned(
        &self,
        watermark: Option<i64>,
        now: time::OffsetDateTime,
    ) -> Result<ExportSpec, SpecError> {
        let mut run = self.clone();
        if let Some(incremental) = &mut run.incremental {
            if incremental.window.is_none() {
                let from = match watermark {
                    Some(w) => w,
                    None => incremental.start_units()?,
                };
                incremental.window = Some(incremental.window_at(from, now));
            }
        }
        let filling = run
            .incremental
            .as_ref()
            .and_then(|i| i.window.as_ref().map(|w| (i, w)));
        run.output.dir = run_naming::fill(&self.output.dir, now, filling);
        run.output.file = self
            .output
            .file
            .as_ref()
            .map(|file| run_naming::fill(file, now, filling));
        run.validate()?;
        Ok(run)
    }

    /// The export's partitions as planned: a backfill's windows, else the
    /// spec's list.
    pub fn planned_partitions(&self) -> Vec<PartitionSpec> {
        match &self.backfill {
            // A validated backfill always cuts its range.
            Some(backfill) => backfill.partitions().unwrap_or_default(),
            None => self.partitions.clone(),
        }
    }

    /// The query parameters of the pinned window (none before pinning).
    pub fn window_params(&self) -> Vec<(String, String)> {
        match &self.incremental {
            Some(incremental) => incremental
                .window
                .as_ref()
                .map(|w| incremental.params(w))
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// `output.dir` stays under wherever the worker roots it, and the file
    /// name (from `output.file`, else `name`) is one plain file.
    fn validate_output(&self) -> Result<(), SpecError> {
        if self.output.dir.trim().is_empty() {
            return Err(invalid("output.dir", "must not be empty"));
        }
        let incremental = self.incremental.is_some();
        run_naming::check_template("output.dir", &self.output.dir, incremental)?;
        if let Some(file) = &self.output.file {
            run_naming::check_template("output.file", file, incremental)?;
        }
        if std::path::Path::new(&self.output.dir)
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(invalid("output.dir", "must not contain `..`"));
        }
        if let Some(latest) = &self.output.latest {
            let path = std::path::Path::new(latest);
            let plain = path.is_relative()
                && !path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
                && path
                    .file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(is_safe_file_name)
                && !latest.contains(['{', '}']);
            let normal = |p: &std::path::Path| -> std::path::PathBuf {
                p.components()
                    .filter(|c| !matches!(c, std::path::Component::CurDir))
                    .collect()
            };
            let csv = normal(&std::path::Path::new(&self.output.dir).join(self.file_name()));
            let manifest = csv.with_file_name(format!("{}.manifest.json", self.file_name()));
            if plain && (normal(path) == csv || normal(path) == manifest) {
                return Err(invalid(
                    "output.latest",
                    "must not be the export's own file or its manifest",
                ));
            }
            if !plain {
                return Err(invalid(
                    "output.latest",
                    format!("{latest:?} must be a relative path without `..` or placeholders, ending in a plain file name"),
                ));
            }
        }
        let file = self.file_name();
        if !is_safe_file_name(&file) {
            // Name the field the file name came from.
            let field = if self.output.file.is_some() {
                "output.file"
            } else {
                "name"
            };
            return Err(invalid(
                field,
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
        // Serializing cannot fail: the spec is strings, numbers, booleans
        // and string-keyed maps, all of which JSON can hold.
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex(&Sha256::digest(&canonical))
    }
}

impl SourceSpec {
    fn validate(&self) -> Result<(), SpecError> {
        check_base_url(&self.base_url)?;
        if !self.path.is_empty() && !self.path.starts_with('/') {
            return Err(invalid("source.path", "must start with `/`"));
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(invalid(
                "source.timeout_ms",
                format!("must be between 1 and {MAX_TIMEOUT_MS} (ten minutes)"),
            ));
        }
        if !(1..=MAX_BODY_BYTES).contains(&self.max_body_bytes) {
            return Err(invalid(
                "source.max_body_bytes",
                format!("must be between 1 and {MAX_BODY_BYTES} (1 GiB)"),
            ));
        }
        if let Some(path) = &self.records_path {
            check_path("source.records_path", path)?;
        }
        match &self.auth {
            Some(auth) => auth.validate(),
            None => Ok(()),
        }
    }
}

/// An absolute http(s) URL with a host and without credentials (those
/// belong in `source.auth`, where they are a reference, not a value).
fn check_base_url(base_url: &str) -> Result<(), SpecError> {
    let field = "source.base_url";
    let base = url::Url::parse(base_url).map_err(|e| {
        let shown = crate::redact::url_text(base_url);
        invalid(field, format!("is not an absolute URL ({e}): {shown:?}"))
    })?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(invalid(field, "scheme must be http or https"));
    }
    if !base.username().is_empty() || base.password().is_some() {
        return Err(invalid(
            field,
            "must not carry credentials; use source.auth",
        ));
    }
    if base.host_str().is_none() {
        return Err(invalid(field, "has no host"));
    }
    Ok(())
}

impl AuthSpec {
    fn validate(&self) -> Result<(), SpecError> {
        self.secret().validate()?;
        if let AuthSpec::Header { header, .. } = self {
            if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(invalid(
                    "source.auth.header",
                    format!("{header:?} is not a valid HTTP header name"),
                ));
            }
        }
        Ok(())
    }
}

impl SecretRef {
    /// Exactly one place, and not a blank one.
    fn validate(&self) -> Result<(), SpecError> {
        match (&self.env, &self.file) {
            (Some(_), Some(_)) => Err(invalid(
                "source.auth.secret",
                "set either `env` or `file`, not both",
            )),
            (None, None) => Err(invalid("source.auth.secret", "set `env` or `file`")),
            (Some(var), None) if var.trim().is_empty() => {
                Err(invalid("source.auth.secret.env", "must not be empty"))
            }
            (None, Some(path)) if path.trim().is_empty() => {
                Err(invalid("source.auth.secret.file", "must not be empty"))
            }
            _ => Ok(()),
        }
    }
}

/// Rows are merged by this key, so it must exist and name real paths.
fn check_primary_key(primary_key: &[String]) -> Result<(), SpecError> {
    if primary_key.is_empty() {
        return Err(invalid(
            "primary_key",
            "is required: name the field(s) that identify a record",
        ));
    }
    for (i, field) in primary_key.iter().enumerate() {
        check_path(&format!("primary_key[{i}]"), field)?;
    }
    Ok(())
}

/// A partition without parameters would fetch the same pages as the
/// unpartitioned export.
fn check_partitions(partitions: &[PartitionSpec]) -> Result<(), SpecError> {
    for (i, partition) in partitions.iter().enumerate() {
        if partition.params.is_empty() {
            return Err(invalid(
                &format!("partitions[{i}].params"),
                "must name at least one parameter",
            ));
        }
    }
    Ok(())
}

/// Upper bounds of the numbers a spec may set: every one has one, so no
/// arithmetic on them can overflow and no spec can hold a source (or a
/// worker) for ever.
const MAX_BURST: u32 = 10_000;
const MAX_ATTEMPTS: u32 = 1_000;
const MAX_ELAPSED_MS: u64 = 24 * 60 * 60 * 1000;
const MAX_BACKOFF_MS: u64 = 10 * 60 * 1000;
const MAX_TIMEOUT_MS: u64 = 10 * 60 * 1000;
/// The fleet's `limits.max_body_bytes` is the real cap; this one only keeps
/// a spec's number sane.
const MAX_BODY_BYTES: u64 = 1 << 30;

impl RateLimitSpec {
    fn validate(&self) -> Result<(), SpecError> {
        // It names a bucket in Redis and a metric label: short, plain text.
        if let Some(key) = &self.key {
            if !crate::model::is_plain_name(key) {
                return Err(invalid(
                    "rate_limit.key",
                    "must be 1-64 characters of [A-Za-z0-9_.-]",
                ));
            }
        }
        let stated = self.rate.unwrap_or(MIN_RATE);
        if !(stated.is_finite() && (MIN_RATE..=MAX_RATE).contains(&stated)) {
            return Err(invalid(
                "rate_limit.rate",
                format!(
                    "must be a number of requests per second between {MIN_RATE} and {MAX_RATE}"
                ),
            ));
        }
        if !(1..=MAX_BURST).contains(&self.burst) {
            return Err(invalid(
                "rate_limit.burst",
                format!("must be between 1 and {MAX_BURST}"),
            ));
        }
        Ok(())
    }
}

impl RetrySpec {
    fn validate(&self) -> Result<(), SpecError> {
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(invalid(
                "retry.max_attempts",
                format!("must be between 1 and {MAX_ATTEMPTS}"),
            ));
        }
        if self.max_elapsed_ms > MAX_ELAPSED_MS {
            return Err(invalid(
                "retry.max_elapsed_ms",
                format!("must be at most {MAX_ELAPSED_MS} (a day)"),
            ));
        }
        // A backoff is also how long a 429 without `Retry-After` pauses the
        // whole source: bounded, so one spec cannot silence it for a day.
        if self.cap_ms > MAX_BACKOFF_MS {
            return Err(invalid(
                "retry.cap_ms",
                format!("must be at most {MAX_BACKOFF_MS} (ten minutes)"),
            ));
        }
        if !(self.budget_ratio.is_finite() && self.budget_ratio > 0.0 && self.budget_ratio <= 10.0)
        {
            return Err(invalid("retry.budget_ratio", "must be in (0, 10]"));
        }
        if self.base_ms == 0 || self.cap_ms < self.base_ms {
            return Err(invalid(
                "retry",
                "base_ms must be > 0 and cap_ms must be >= base_ms",
            ));
        }
        Ok(())
    }
}

/// An explicit column list: non-empty, each column a printable name, none
/// twice (a CSV header with a repeated name is ambiguous).
fn check_columns(columns: &[String]) -> Result<(), SpecError> {
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
    Ok(())
}

impl CsvOptions {
    /// The delimiter must not collide with the quoting RFC 4180 relies on.
    fn validate(&self) -> Result<(), SpecError> {
        let d = self.delimiter;
        if !d.is_ascii() || d == '"' || d == '\r' || d == '\n' {
            return Err(invalid(
                "csv.delimiter",
                "must be one ASCII character other than quote, CR or LF",
            ));
        }
        Ok(())
    }
}

/// One plain file in the output directory: no separator, not hidden (nor
/// `.` / `..`), no control characters.
fn is_safe_file_name(file: &str) -> bool {
    !(file.is_empty()
        || file.starts_with('.')
        || file.contains('/')
        || file.contains('\\')
        || file.chars().any(|c| c.is_control()))
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
        // The SHA-256 of the canonical JSON, in lower-case hex.
        let expected: String = Sha256::digest(json.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(spec.hash(), expected);
        // Pinned: the hash is stored with every export and published in
        // manifests, so a change to the spec's JSON shape must be deliberate.
        assert_eq!(
            spec.hash(),
            "67d4150acaff8f83712452cfa1077f88ae0f9b04499681a0c3435f296a0d2028"
        );
        // Any change to what is exported changes it.
        let mut other = spec.clone();
        other.page_size += 1;
        assert_ne!(other.hash(), spec.hash());
        let mut other = spec.clone();
        other.output.dir.push('x');
        assert_ne!(other.hash(), spec.hash());
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

    fn invalid_field(result: Result<(), SpecError>) -> String {
        field_of(result.unwrap_err())
    }

    fn good() -> ExportSpec {
        ExportSpec::from_toml(GOOD).unwrap()
    }

    #[test]
    fn the_latest_pointer_is_never_the_exports_own_file() {
        let mut spec = good();
        spec.output.dir = ".".into();
        spec.output.file = Some("orders.csv".into());
        for bad in [
            "orders.csv",
            "./orders.csv.manifest.json",
            "../latest.json",
            "l-{date}.json",
        ] {
            spec.output.latest = Some(bad.into());
            assert_eq!(invalid_field(spec.validate()), "output.latest", "{bad}");
        }
        spec.output.latest = Some("orders/latest.json".into());
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn base_urls_must_be_plain_http() {
        for ok in ["http://a", "https://a.b:8443/v2"] {
            assert_eq!(check_base_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/v1",
            "ftp://x/",
            "file:///x",
            "http://user@x/",
            "http://u:p@x/",
        ] {
            assert_eq!(
                invalid_field(check_base_url(bad)),
                "source.base_url",
                "{bad}"
            );
        }
    }

    #[test]
    fn source_limits_are_named() {
        let mut source = good().source;
        source.timeout_ms = 0;
        assert_eq!(invalid_field(source.validate()), "source.timeout_ms");
        let mut source = good().source;
        source.max_body_bytes = 0;
        assert_eq!(invalid_field(source.validate()), "source.max_body_bytes");
        for (timeout_ms, max_body_bytes, field) in [
            (u64::MAX, 1, "source.timeout_ms"),
            (MAX_TIMEOUT_MS + 1, 1, "source.timeout_ms"),
            (1, u64::MAX, "source.max_body_bytes"),
            (1, MAX_BODY_BYTES + 1, "source.max_body_bytes"),
        ] {
            let mut source = good().source;
            (source.timeout_ms, source.max_body_bytes) = (timeout_ms, max_body_bytes);
            assert_eq!(invalid_field(source.validate()), field);
        }
        let mut source = good().source;
        (source.timeout_ms, source.max_body_bytes) = (MAX_TIMEOUT_MS, MAX_BODY_BYTES);
        assert_eq!(source.validate(), Ok(()));
        let mut source = good().source;
        source.path = String::new();
        assert_eq!(source.validate(), Ok(()));
    }

    #[test]
    fn secret_references_name_the_blank_place() {
        let secret = |env: Option<&str>, file: Option<&str>| SecretRef {
            env: env.map(str::to_string),
            file: file.map(str::to_string),
        };
        assert_eq!(secret(Some("T"), None).validate(), Ok(()));
        assert_eq!(secret(None, Some("/run/t")).validate(), Ok(()));
        let cases = [
            (secret(None, None), "source.auth.secret"),
            (secret(Some("T"), Some("/t")), "source.auth.secret"),
            (secret(Some(" "), None), "source.auth.secret.env"),
            (secret(None, Some("")), "source.auth.secret.file"),
        ];
        for (bad, field) in cases {
            assert_eq!(invalid_field(bad.validate()), field, "{bad:?}");
        }
    }

    #[test]
    fn auth_headers_must_be_header_names() {
        let header = |name: &str| AuthSpec::Header {
            header: name.into(),
            secret: SecretRef {
                env: Some("T".into()),
                file: None,
            },
        };
        assert_eq!(header("X-Api-Key").validate(), Ok(()));
        assert_eq!(
            invalid_field(header("X Api Key").validate()),
            "source.auth.header"
        );
        // The secret is checked first.
        let both_bad = AuthSpec::Header {
            header: "X Api Key".into(),
            secret: SecretRef {
                env: None,
                file: None,
            },
        };
        assert_eq!(invalid_field(both_bad.validate()), "source.auth.secret");
    }

    #[test]
    fn primary_keys_and_partitions() {
        assert_eq!(check_primary_key(&["id".into(), "a.b".into()]), Ok(()));
        assert_eq!(invalid_field(check_primary_key(&[])), "primary_key");
        assert_eq!(
            invalid_field(check_primary_key(&["id".into(), "a..b".into()])),
            "primary_key[1]"
        );
        let partition = |pairs: &[(&str, &str)]| PartitionSpec {
            params: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert_eq!(check_partitions(&[]), Ok(()));
        assert_eq!(
            invalid_field(check_partitions(&[
                partition(&[("day", "1")]),
                partition(&[])
            ])),
            "partitions[1].params"
        );
    }

    #[test]
    fn rate_limit_bounds() {
        let rate = |rate: f64, burst: u32| RateLimitSpec {
            rate: Some(rate),
            burst,
            key: None,
        };
        let unstated = RateLimitSpec {
            rate: None,
            ..RateLimitSpec::default()
        };
        assert_eq!(unstated.validate(), Ok(()));
        assert_eq!(rate(MIN_RATE, 1).validate(), Ok(()));
        assert_eq!(rate(MAX_RATE, 1).validate(), Ok(()));
        for bad in [
            0.0,
            MIN_RATE / 2.0,
            MAX_RATE * 2.0,
            f64::NAN,
            f64::INFINITY,
            -1.0,
        ] {
            assert_eq!(
                invalid_field(rate(bad, 1).validate()),
                "rate_limit.rate",
                "{bad}"
            );
        }
        assert_eq!(invalid_field(rate(1.0, 0).validate()), "rate_limit.burst");
        assert_eq!(
            invalid_field(rate(1.0, 10_001).validate()),
            "rate_limit.burst"
        );
    }

    #[test]
    fn retry_bounds() {
        assert_eq!(RetrySpec::default().validate(), Ok(()));
        type Change = fn(&mut RetrySpec);
        let cases: [(Change, &str); 10] = [
            (|r| r.max_attempts = 0, "retry.max_attempts"),
            (|r| r.max_attempts = 1_001, "retry.max_attempts"),
            (|r| r.max_elapsed_ms = u64::MAX, "retry.max_elapsed_ms"),
            // A day's pause after one 429 without Retry-After.
            (
                |r| {
                    r.base_ms = 86_400_000;
                    r.cap_ms = 86_400_000;
                },
                "retry.cap_ms",
            ),
            (|r| r.cap_ms = 600_001, "retry.cap_ms"),
            (|r| r.budget_ratio = 0.0, "retry.budget_ratio"),
            (|r| r.budget_ratio = 10.5, "retry.budget_ratio"),
            (|r| r.budget_ratio = f64::NAN, "retry.budget_ratio"),
            (|r| r.base_ms = 0, "retry"),
            (|r| r.cap_ms = r.base_ms - 1, "retry"),
        ];
        for (change, field) in cases {
            let mut retry = RetrySpec::default();
            change(&mut retry);
            assert_eq!(invalid_field(retry.validate()), field, "{retry:?}");
        }
        let edge = RetrySpec {
            budget_ratio: 10.0,
            cap_ms: 250,
            ..RetrySpec::default()
        };
        assert_eq!(edge.validate(), Ok(()));
    }

    #[test]
    fn columns_are_named_by_index() {
        let cols = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(check_columns(&cols(&["id", "a.b"])), Ok(()));
        assert_eq!(invalid_field(check_columns(&[])), "columns");
        for bad in [
            cols(&["id", ""]),
            cols(&["id", "a\u{7}"]),
            cols(&["id", "id"]),
        ] {
            assert_eq!(invalid_field(check_columns(&bad)), "columns[1]", "{bad:?}");
        }
    }

    #[test]
    fn delimiters_must_not_break_quoting() {
        for ok in [',', ';', '\t', '|'] {
            let csv = CsvOptions {
                delimiter: ok,
                ..CsvOptions::default()
            };
            assert_eq!(csv.validate(), Ok(()), "{ok:?}");
        }
        for bad in ['"', '\r', '\n', 'é'] {
            let csv = CsvOptions {
                delimiter: bad,
                ..CsvOptions::default()
            };
            assert_eq!(invalid_field(csv.validate()), "csv.delimiter", "{bad:?}");
        }
    }

    #[test]
    fn output_names_the_field_the_file_name_came_from() {
        let mut spec = good();
        spec.output.dir = "a/../b".into();
        assert_eq!(invalid_field(spec.validate_output()), "output.dir");
        spec.output.dir = " ".into();
        assert_eq!(invalid_field(spec.validate_output()), "output.dir");
        let mut spec = good();
        spec.name = ".hidden".into();
        assert_eq!(invalid_field(spec.validate_output()), "name");
        spec.output.file = Some("ok.csv".into());
        assert_eq!(spec.validate_output(), Ok(()));
        spec.output.file = Some("a\\b.csv".into());
        assert_eq!(invalid_field(spec.validate_output()), "output.file");
    }

    #[test]
    fn safe_file_names() {
        for ok in ["orders.csv", "a b.csv", "x"] {
            assert!(is_safe_file_name(ok), "{ok}");
        }
        for bad in ["", ".csv", "..", "a/b", "a\\b", "a\nb"] {
            assert!(!is_safe_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn pagination_errors_name_their_field() {
        let cases = [
            (
                "style = \"offset\"\ntotal_path = \"a..\"",
                "pagination.total_path",
            ),
            (
                "style = \"page_number\"\ntotal_pages_path = \"\"",
                "pagination.total_pages_path",
            ),
            (
                "style = \"cursor\"\ncursor_path = \".x\"",
                "pagination.cursor_path",
            ),
            (
                "style = \"cursor\"\ncursor_header = \"a b\"",
                "pagination.cursor_header",
            ),
            (
                "style = \"cursor\"\ncursor_path = \"c\"\ncursor_header = \"C\"",
                "pagination",
            ),
            ("style = \"last_record\"\nfield = \"\"", "pagination.field"),
            (
                "style = \"last_record\"\nhas_more_path = \"a..b\"",
                "pagination.has_more_path",
            ),
            (
                "style = \"next_url\"\nnext_path = \"\"",
                "pagination.next_path",
            ),
            (
                "style = \"next_url\"\nnext_path = \"n\"\ndone_path = \"d.\"",
                "pagination.done_path",
            ),
        ];
        for (pagination, field) in cases {
            let text = GOOD.replace("style = \"offset\"\ntotal_path = \"total\"", pagination);
            assert_eq!(
                field_of(ExportSpec::from_toml(&text).unwrap_err()),
                field,
                "{pagination}"
            );
        }
        let link = GOOD.replace(
            "style = \"offset\"\ntotal_path = \"total\"",
            "style = \"link_header\"",
        );
        assert!(ExportSpec::from_toml(&link).is_ok());
    }

    #[test]
    fn the_first_mistake_in_check_order_is_reported() {
        let text = GOOD
            .replace("burst = 10", "burst = 0")
            .replace("page_size = 50", "page_size = 0")
            .replace("dir = \"out\"", "dir = \"\"");
        assert_eq!(
            field_of(ExportSpec::from_toml(&text).unwrap_err()),
            "page_size"
        );
        let text = GOOD
            .replace("total_path = \"total\"", "total_path = \"\"")
            .replace("secret = { env = \"MOCK_TOKEN\" }", "secret = {}");
        assert_eq!(
            field_of(ExportSpec::from_toml(&text).unwrap_err()),
            "source.auth.secret"
        );
    }
}
