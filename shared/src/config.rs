//! Where the services are. Every address has a local default and an
//! environment variable; a TOML file can set them too (`PAGEFLEET_CONFIG`).

use serde::Deserialize;

use crate::limits::{self, FleetLimits, LimitsError};

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
    /// When set, every tenant's files go under `<output_root>/<tenant>/` and
    /// specs name a directory relative to that (see `output`). Unset, a
    /// spec's `output.dir` is used as written: fine for one team.
    pub output_root: Option<String>,
    /// The fleet's ceilings on pages, records and columns (`[limits]`,
    /// `PAGEFLEET_MAX_*`); see [`FleetLimits`].
    pub limits: FleetLimits,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            database_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            namespace: "pagefleet".into(),
            output_root: None,
            limits: FleetLimits::default(),
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
    #[error("config `output_root` {0:?} must be an absolute path")]
    OutputRoot(String),
    #[error("config: {0}")]
    Limits(#[from] LimitsError),
}

impl ServiceConfig {
    /// File (if `PAGEFLEET_CONFIG` names one), then environment variables
    /// `PAGEFLEET_DATABASE_URL`, `PAGEFLEET_REDIS_URL`, `PAGEFLEET_AMQP_URL`,
    /// `PAGEFLEET_NAMESPACE`, `PAGEFLEET_OUTPUT_ROOT` and the ceilings'
    /// `PAGEFLEET_MAX_*` (see [`limits::ENV`]) on top.
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
            config.output_root = Some(v);
        }
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
        let ok = !ns.is_empty()
            && ns.len() <= 64
            && ns
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(ConfigError::Namespace(ns.clone()));
        }
        if let Some(root) = &self.output_root {
            if !std::path::Path::new(root).is_absolute() {
                return Err(ConfigError::OutputRoot(root.clone()));
            }
        }
        self.limits.validate()?;
        Ok(())
    }
}

/// A URL with any password replaced, for logs and errors.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparseable url>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact_url("not a url"), "<unparseable url>");
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
    fn the_output_root_must_be_absolute() {
        let mut c = ServiceConfig {
            output_root: Some("/srv/exports".into()),
            ..ServiceConfig::default()
        };
        assert!(c.validate().is_ok());
        c.output_root = Some("exports".into());
        assert!(matches!(c.validate(), Err(ConfigError::OutputRoot(_))));
    }
}
