//! `[verify]`: how an export is proven complete before it is published —
//! where a style-independent total is stated, what a disagreement does, and
//! how long a partition's chain may run.
//!
//! Every field has a default, and a spec that leaves them all at the
//! default serializes without the section, so specs written before it
//! existed keep their hash.

use serde::{Deserialize, Serialize};

use super::{check_path, invalid, SpecError};
use crate::pagination::MAX_PAGES_PER_PARTITION;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// Where the body states the partition's number of records, for any
    /// style (`total`, `count`, `meta.totalSize`). Offset's `total_path`
    /// and headers such as `X-Total-Count` are read as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_path: Option<String>,
    /// What an export whose counts disagree with the source's becomes.
    #[serde(default, skip_serializing_if = "OnMismatch::is_default")]
    pub on_mismatch: OnMismatch,
    /// The most pages one partition may have; a chain that reaches it
    /// stops with that reason instead of running on.
    #[serde(
        default = "default_max_pages",
        skip_serializing_if = "is_default_max_pages"
    )]
    pub max_pages_per_partition: u64,
}

impl Default for VerifySpec {
    fn default() -> Self {
        VerifySpec {
            total_path: None,
            on_mismatch: OnMismatch::default(),
            max_pages_per_partition: default_max_pages(),
        }
    }
}

impl VerifySpec {
    pub fn is_default(&self) -> bool {
        *self == VerifySpec::default()
    }

    pub(super) fn validate(&self) -> Result<(), SpecError> {
        if let Some(path) = &self.total_path {
            check_path("verify.total_path", path)?;
        }
        if !(1..=MAX_PAGES_PER_PARTITION).contains(&self.max_pages_per_partition) {
            return Err(invalid(
                "verify.max_pages_per_partition",
                format!("must be between 1 and {MAX_PAGES_PER_PARTITION}"),
            ));
        }
        Ok(())
    }
}

/// What an export whose counts disagree with the source's becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMismatch {
    /// Ends `unverified`: the CSV is kept beside the final path under a
    /// name that says so, and nothing takes the final path.
    #[default]
    Hold,
    /// Publishes at the final path anyway, `completed`, with the
    /// disagreement recorded in the manifest and the export's status.
    Publish,
}

impl OnMismatch {
    fn is_default(&self) -> bool {
        *self == OnMismatch::default()
    }
}

fn default_max_pages() -> u64 {
    MAX_PAGES_PER_PARTITION
}

fn is_default_max_pages(n: &u64) -> bool {
    *n == MAX_PAGES_PER_PARTITION
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_section_is_not_serialized() {
        let spec = VerifySpec::default();
        assert!(spec.is_default());
        assert_eq!(serde_json::to_string(&spec).unwrap(), "{}");
        let parsed: VerifySpec = serde_json::from_str(r#"{"on_mismatch": "publish"}"#).unwrap();
        assert_eq!(parsed.on_mismatch, OnMismatch::Publish);
        assert_eq!(parsed.max_pages_per_partition, MAX_PAGES_PER_PARTITION);
    }

    #[test]
    fn bounds_are_checked() {
        let zero = VerifySpec {
            max_pages_per_partition: 0,
            ..VerifySpec::default()
        };
        let err = zero.validate().unwrap_err();
        assert!(
            err.to_string().contains("verify.max_pages_per_partition"),
            "{err}"
        );
        let bad_path = VerifySpec {
            total_path: Some(String::new()),
            ..VerifySpec::default()
        };
        assert!(bad_path.validate().is_err());
        assert!(serde_json::from_str::<VerifySpec>(r#"{"on_mismatch": "shrug"}"#).is_err());
    }
}
