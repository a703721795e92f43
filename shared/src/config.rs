//! Where the services are. Every address has a local default and an
//! environment variable; a TOML file can set them too (`PAGEFLEET_CONFIG`).

use serde::Deserialize;

use crate::fingerprint::FingerprintKey;
use crate::limits::{self, FleetLimits, LimitsError};
use crate::outbound::{OutboundPolicy, RuleError};
use crate::rate_keys::{self, SharedKeyError, SharedRateKey};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Postgres connection string (the source of truth).
    pub database_url: String,
    /// Redis URL (rate-limit coordination).
    pub redis_url: String,
    /// RabbitMQ URL (work distribution).
    pub amqp_url: String,
    /// Prefix of queue names and Redis keys, so several fleets (or tests)
    /// share one broker and one Redis without meeting.
    pub namespace: String,
    /// Every tenant's files go under `<output_root>/<tenant>/`, and specs
    /// name a directory relative to that (see `tenancy`). `out` by default;
    /// a relative root is made absolute against the process's working
    /// directory when the configuration is loaded.
    pub output_root: String,
    /// Where file secrets are: a tenant's spec may name
    /// `{ file = "<name>" }`, read from `<secrets_dir>/<tenant>/<name>`.
    /// Unset, specs read secrets only from their tenant's environment
    /// variables.
    pub secrets_dir: Option<String>,
    /// Addresses, networks and host names the workers may fetch although
    /// the outbound policy refuses them by default (loopback, private,
    /// link-local…); the syntax is in [`crate::outbound`].
    pub outbound_allow: Vec<String>,
    /// The key of credential fingerprints (rate-limit bucket names). The
    /// same on every worker; unset, the fleet keeps a random one in Postgres.
    pub fingerprint_key: Option<FingerprintKey>,
    /// The fleet's ceilings on pages, records and columns (`[limits]`,
    /// `PAGEFLEET_MAX_*`); see [`FleetLimits`].
    pub limits: FleetLimits,
    /// Rate-limit budgets several tenants share, declared here with their
    /// rate and burst (`[[shared_rate_keys]]`); see [`crate::rate_keys`].
    pub shared_rate_keys: Vec<SharedRateKey>,
    /// How long an export's staged rows are kept after it ended published
    /// or cancelled (`PAGEFLEET_STAGING_RETENTION_SECS`), in seconds; then
    /// the scheduler removes them. A week by default; 0 removes them as
    /// soon as it ends. A failed export's are kept, for `retry`.
    pub staging_retention_secs: u64,
}

/// A week: time to look into a published export's rows before they go.
pub const DEFAULT_STAGING_RETENTION_SECS: u64 = 7 * 24 * 3600;

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            database_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            namespace: "pagefleet".into(),
            output_root: "out".into(),
            secrets_dir: None,
            outbound_allow: Vec::new(),
            fingerprint_key: None,
            limits: FleetLimits::default(),
            shared_rate_keys: Vec::new(),
            staging_retention_secs: DEFAULT_STAGING_RETENTION_SECS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("config `namespace` {0:?} must be 1-64 characters of [A-Za-z0-9_.-]")]
    Namespace(String),
    #[error("config `output_root` {0:?} cannot be resolved: {1}")]
    OutputRoot(String, String),
    #[error("config `secrets_dir` {0:?} must be an absolute path outside the output root (and not holding it)")]
    SecretsDir(String),
    /// The rule's text names the setting already.
    #[error(transparent)]
    OutboundAllow(#[from] RuleError),
    #[error("config `fingerprint_key` must be at least 16 bytes (use 32 random ones)")]
    FingerprintKey,
    #[error("config: {0}")]
    Limits(#[from] LimitsError),
    #[error("config: {0}")]
    SharedRateKey(#[from] SharedKeyError),
    #[error("config `staging_retention_secs` (PAGEFLEET_STAGING_RETENTION_SECS) {0:?} is not a whole number of seconds")]
    StagingRetention(String),
}

impl ServiceConfig {
    /// File (if `PAGEFLEET_CONFIG` names one), then environment variables
    /// `PAGEFLEET_DATABASE_URL`, `PAGEFLEET_REDIS_URL`, `PAGEFLEET_AMQP_URL`,
    /// `PAGEFLEET_NAMESPACE`, `PAGEFLEET_OUTPUT_ROOT`, `PAGEFLEET_SECRETS_DIR`,
    /// `PAGEFLEET_FINGERPRINT_KEY`, `PAGEFLEET_OUTBOUND_ALLOW` (rules
    /// separated by commas), `PAGEFLEET_STAGING_RETENTION_SECS` and the
    /// ceilings' `PAGEFLEET_MAX_*` (see
    /// [`limits::ENV`]) on top.
    pub fn load() -> Result<Self, ConfigError> {
        let mut config = match std::env::var("PAGEFLEET_CONFIG") {
            Ok(path) if !path.is_empty() => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path,
                    message: e.to_string(),
                })?
            }
            _ => ServiceConfig::default(),
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(v) = env("PAGEFLEET_DATABASE_URL") {
            config.database_url = v;
        }
        if let Some(v) = env("PAGEFLEET_REDIS_URL") {
            config.redis_url = v;
        }
        if let Some(v) = env("PAGEFLEET_AMQP_URL") {
            config.amqp_url = v;
        }
        if let Some(v) = env("PAGEFLEET_NAMESPACE") {
            config.namespace = v;
        }
        if let Some(v) = env("PAGEFLEET_OUTPUT_ROOT") {
            config.output_root = v;
        }
        if let Some(v) = env("PAGEFLEET_SECRETS_DIR") {
            config.secrets_dir = Some(v);
        }
        if let Some(v) = env("PAGEFLEET_OUTBOUND_ALLOW") {
            config.outbound_allow = split_rules(&v);
        }
        if let Some(v) = env("PAGEFLEET_FINGERPRINT_KEY") {
            config.fingerprint_key = Some(FingerprintKey::from(v));
        }
        if let Some(v) = env("PAGEFLEET_STAGING_RETENTION_SECS") {
            config.staging_retention_secs = v
                .trim()
                .parse()
                .map_err(|_| ConfigError::StagingRetention(v))?;
        }
        config.output_root = absolute(&config.output_root)?;
        for (name, field) in limits::ENV {
            if let Some(v) = env(name) {
                config.limits.set(field, &v)?;
            }
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let ns = &self.namespace;
        if !crate::model::is_plain_name(ns) {
            return Err(ConfigError::Namespace(ns.clone()));
        }
        if let Some(dir) = &self.secrets_dir {
            let (secrets, root) = (std::path::Path::new(dir), self.output_root_path());
            // Nested either way, a tenant's export could replace a secret
            // file, or a tenant's secret could be read as another's output.
            if !secrets.is_absolute() || secrets.starts_with(&root) || root.starts_with(secrets) {
                return Err(ConfigError::SecretsDir(dir.clone()));
            }
        }
        self.outbound_policy()?;
        if self
            .fingerprint_key
            .as_ref()
            .is_some_and(|k| k.as_bytes().len() < 16)
        {
            return Err(ConfigError::FingerprintKey);
        }
        self.limits.validate()?;
        rate_keys::validate(&self.shared_rate_keys)?;
        Ok(())
    }

    /// The output root as a path (absolute once loaded).
    pub fn output_root_path(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(&self.output_root)
    }

    /// The outbound policy `outbound_allow` describes.
    pub fn outbound_policy(&self) -> Result<OutboundPolicy, ConfigError> {
        Ok(OutboundPolicy::from_rules(&self.outbound_allow)?)
    }
}

/// `root` made absolute against the working directory: every process of
/// a fleet started in one place agrees on it, whatever it later changes.
fn absolute(root: &str) -> Result<String, ConfigError> {
    std::path::absolute(root)
        .map(|p| p.display().to_string())
        .map_err(|e| ConfigError::OutputRoot(root.to_string(), e.to_string()))
}

/// `PAGEFLEET_OUTBOUND_ALLOW`'s rules: comma-separated, blanks ignored.
fn split_rules(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(String::from)
        .collect()
}

/// A service URL for logs and errors, redacted like every other URL (see
/// `redact::url_text`): no userinfo, no secret-looking parameters.
pub fn redact_url(raw: &str) -> String {
    crate::redact::url_text(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("amqp://guest:secret@host:5672/%2f"),
            "amqp://host:5672/%2f"
        );
        assert_eq!(
            redact_url("host=db user=pf password=secret"),
            "host=db user=pf password=***"
        );
    }

    #[test]
    fn a_fingerprint_key_is_long_enough_and_never_shown() {
        let mut c = ServiceConfig {
            fingerprint_key: Some(FingerprintKey::new("short")),
            ..ServiceConfig::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::FingerprintKey)));
        c.fingerprint_key = Some(FingerprintKey::new("a-long-enough-fleet-secret"));
        assert!(c.validate().is_ok());
        assert!(!format!("{c:?}").contains("fleet-secret"));
        let parsed: ServiceConfig =
            toml::from_str("fingerprint_key = \"from-the-config-file\"").unwrap();
        assert_eq!(
            parsed.fingerprint_key,
            Some(FingerprintKey::new("from-the-config-file"))
        );
    }

    #[test]
    fn namespace_is_checked() {
        let mut c = ServiceConfig::default();
        assert!(c.validate().is_ok());
        c.namespace = "a b".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn limits_come_from_the_limits_table() {
        let config: ServiceConfig =
            toml::from_str("[limits]\nmax_records_per_page = 10\n").unwrap();
        assert_eq!(config.limits.max_records_per_page, 10);
        assert_eq!(
            config.limits.max_body_bytes,
            FleetLimits::default().max_body_bytes
        );
        assert!(toml::from_str::<ServiceConfig>("[limits]\nmax_rows = 1\n").is_err());
        let zero: ServiceConfig = toml::from_str("[limits]\nmax_columns = 0\n").unwrap();
        assert!(matches!(zero.validate(), Err(ConfigError::Limits(_))));
    }

    #[test]
    fn outbound_rules_are_checked_at_load() {
        assert_eq!(
            split_rules(" 127.0.0.1:9000, ,10.0.0.0/8,"),
            ["127.0.0.1:9000", "10.0.0.0/8"]
        );
        let mut c = ServiceConfig {
            outbound_allow: vec!["127.0.0.1".into(), "[::1]:9000".into()],
            ..ServiceConfig::default()
        };
        assert!(c.validate().is_ok());
        c.outbound_allow.push("10.0.0.1/8".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("outbound_allow rule \"10.0.0.1/8\" is not valid"),
            "{err}"
        );
        let toml: ServiceConfig =
            toml::from_str("outbound_allow = [\"api.internal:8443\"]").unwrap();
        assert_eq!(toml.outbound_allow, ["api.internal:8443"]);
    }

    #[test]
    fn the_output_root_is_made_absolute_and_the_secrets_dir_must_be() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            absolute("out").unwrap(),
            cwd.join("out").display().to_string()
        );
        assert_eq!(absolute("/srv/exports").unwrap(), "/srv/exports");
        let mut c = ServiceConfig {
            secrets_dir: Some("/run/pagefleet/secrets".into()),
            ..ServiceConfig::default()
        };
        assert!(c.validate().is_ok());
        c.secrets_dir = Some("secrets".into());
        assert!(matches!(c.validate(), Err(ConfigError::SecretsDir(_))));
        c.output_root = "/srv/exports".into();
        c.secrets_dir = Some("/srv/exports/secrets".into());
        assert!(matches!(c.validate(), Err(ConfigError::SecretsDir(_))));
        c.secrets_dir = Some("/srv".into());
        assert!(matches!(c.validate(), Err(ConfigError::SecretsDir(_))));
    }
}
