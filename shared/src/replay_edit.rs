//! What an operator may change about a dead page before replaying it
//! (`dlq replay --set key=value`), parsed and checked before anything is
//! written:
//!
//! - `page_size=N` — ask for pages of N records from this page on (a page
//!   of a chain that follows the source's pointers only: offsets, page
//!   numbers and numbered links assume the export's page size, so another
//!   would skip or repeat records);
//! - `secret.env=NAME` or `secret.file=NAME` — the secret reference the
//!   page is fetched with (a rotated key), never the secret itself;
//! - `window=split` — cut the page's backfill window in two halves, each a
//!   partition of its own (the first page of a window only).
//!
//! A task's edits ([`TaskOverrides`]) are stored on the task, carried to
//! the pages it plans (the page size to chain pages only), and laid over
//! the export's spec when a worker fetches it ([`TaskOverrides::apply`]).

use serde::{Deserialize, Serialize};

use crate::spec::{AuthSpec, ExportSpec, SecretRef};

/// The styles whose next page is where the source points (a cursor, the
/// last record, a URL), whatever the size of the pages before it.
pub const SIZE_FREE_STYLES: [&str; 3] = ["cursor", "last_record", "next_url"];

/// At most this many `--set` edits in one replay.
pub const MAX_EDITS: usize = 8;

/// The edits one replay asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayEdits {
    #[serde(default, skip_serializing_if = "TaskOverrides::is_empty")]
    pub overrides: TaskOverrides,
    /// Cut the page's window in two.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub split_window: bool,
}

/// What a task is fetched with instead of its export's spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("`--set {0}`: expected key=value")]
    NotKeyValue(String),
    #[error("`--set {key}`: unknown key (page_size, secret.env, secret.file, window=split)")]
    UnknownKey { key: String },
    #[error("`--set {key}={value}`: {why}")]
    BadValue {
        key: String,
        value: String,
        why: String,
    },
    #[error("`--set {0}` is given twice")]
    Repeated(String),
    #[error("at most {MAX_EDITS} edits in one replay")]
    TooMany,
    #[error("page {page} of partition {partition}: {why}")]
    NotForPage {
        partition: i32,
        page: i64,
        why: String,
    },
}

impl ReplayEdits {
    /// Parses `key=value` edits.
    pub fn parse(edits: &[String]) -> Result<Self, EditError> {
        if edits.len() > MAX_EDITS {
            return Err(EditError::TooMany);
        }
        let mut parsed = ReplayEdits::default();
        for edit in edits {
            let (key, value) = edit
                .split_once('=')
                .ok_or_else(|| EditError::NotKeyValue(edit.clone()))?;
            let (key, value) = (key.trim(), value.trim());
            let bad = |why: &str| EditError::BadValue {
                key: key.into(),
                value: value.into(),
                why: why.into(),
            };
            match key {
                "page_size" => {
                    let n: u32 = value.parse().map_err(|_| bad("not a whole number"))?;
                    if n == 0 || n > 100_000 {
                        return Err(bad("must be between 1 and 100000"));
                    }
                    set_once(&mut parsed.overrides.page_size, n, key)?;
                }
                "secret.env" | "secret.file" => {
                    if value.is_empty() || value.len() > 200 {
                        return Err(bad("must be 1-200 characters"));
                    }
                    let secret = match key {
                        "secret.env" => SecretRef {
                            env: Some(value.into()),
                            file: None,
                        },
                        _ => SecretRef {
                            env: None,
                            file: Some(value.into()),
                        },
                    };
                    set_once(&mut parsed.overrides.secret, secret, "secret")?;
                }
                "window" => {
                    if value != "split" {
                        return Err(bad("the one window edit is `window=split`"));
                    }
                    if parsed.split_window {
                        return Err(EditError::Repeated(key.into()));
                    }
                    parsed.split_window = true;
                }
                _ => return Err(EditError::UnknownKey { key: key.into() }),
            }
        }
        Ok(parsed)
    }

    pub fn is_empty(&self) -> bool {
        self.overrides.is_empty() && !self.split_window
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, key: &str) -> Result<(), EditError> {
    if slot.is_some() {
        return Err(EditError::Repeated(key.into()));
    }
    *slot = Some(value);
    Ok(())
}

impl TaskOverrides {
    pub fn is_empty(&self) -> bool {
        self.page_size.is_none() && self.secret.is_none()
    }

    /// These overrides on top of the ones a task already had.
    pub fn over(&self, earlier: Option<&TaskOverrides>) -> TaskOverrides {
        let earlier = earlier.cloned().unwrap_or_default();
        TaskOverrides {
            page_size: self.page_size.or(earlier.page_size),
            secret: self.secret.clone().or(earlier.secret),
        }
    }

    /// Whether these overrides fit the page: a chain page for a page size,
    /// a spec with a credential for a secret.
    pub fn check_for(
        &self,
        spec: &ExportSpec,
        is_chain: bool,
        partition: i32,
        page: i64,
    ) -> Result<(), EditError> {
        let refuse = |why: &str| EditError::NotForPage {
            partition,
            page,
            why: why.into(),
        };
        if self.page_size.is_some() && !is_chain {
            return Err(refuse(
                "a page size applies to a chain page only: this page is one of a fanned-out \
                 set whose offsets assume the export's page size",
            ));
        }
        // Offsets, page numbers and numbered links are counted in pages of
        // the export's size: another size would skip or repeat records.
        if self.page_size.is_some() && !SIZE_FREE_STYLES.contains(&spec.pagination.style_name()) {
            return Err(refuse(&format!(
                "a page size applies to a chain that follows the source's own pointers \
                 ({}); `{}` positions pages by the export's page size",
                SIZE_FREE_STYLES.join(", "),
                spec.pagination.style_name()
            )));
        }
        if self.secret.is_some() && spec.source.auth.is_none() {
            return Err(refuse("the export's spec has no `source.auth` to change"));
        }
        Ok(())
    }

    /// The spec this task is fetched with.
    pub fn apply(&self, mut spec: ExportSpec) -> ExportSpec {
        if let Some(n) = self.page_size {
            spec.page_size = n;
        }
        if let (Some(new), Some(auth)) = (&self.secret, spec.source.auth.as_mut()) {
            match auth {
                AuthSpec::Bearer { secret } | AuthSpec::Header { secret, .. } => {
                    *secret = new.clone()
                }
            }
        }
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edits(list: &[&str]) -> Result<ReplayEdits, EditError> {
        ReplayEdits::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn each_edit_parses_and_a_bad_one_names_itself() {
        let e = edits(&["page_size=25", "secret.env=ROTATED", "window=split"]).unwrap();
        assert_eq!(e.overrides.page_size, Some(25));
        assert_eq!(e.overrides.secret.unwrap().env.as_deref(), Some("ROTATED"));
        assert!(e.split_window);
        assert_eq!(
            edits(&["page_size=0"]).unwrap_err().to_string(),
            "`--set page_size=0`: must be between 1 and 100000"
        );
        assert_eq!(
            edits(&["pagesize=5"]).unwrap_err(),
            EditError::UnknownKey {
                key: "pagesize".into()
            }
        );
        assert_eq!(
            edits(&["page_size"]).unwrap_err(),
            EditError::NotKeyValue("page_size".into())
        );
        assert_eq!(
            edits(&["secret.env=A", "secret.file=B"]).unwrap_err(),
            EditError::Repeated("secret".into())
        );
        assert!(edits(&["window=thirds"]).is_err());
        assert_eq!(edits(&["page_size=1"; 9]).unwrap_err(), EditError::TooMany);
        assert!(edits(&[]).unwrap().is_empty());
    }

    #[test]
    fn later_overrides_win_and_earlier_ones_stay() {
        let earlier = TaskOverrides {
            page_size: Some(10),
            secret: Some(SecretRef {
                env: Some("OLD".into()),
                file: None,
            }),
        };
        let now = TaskOverrides {
            page_size: Some(5),
            secret: None,
        };
        let merged = now.over(Some(&earlier));
        assert_eq!(merged.page_size, Some(5));
        assert_eq!(merged.secret, earlier.secret);
    }

    fn spec(auth: bool) -> ExportSpec {
        let auth = if auth {
            "auth = { type = \"bearer\", secret = { env = \"KEY\" } }\n"
        } else {
            ""
        };
        let text = format!(
            "name = \"e\"\nprimary_key = [\"id\"]\n[source]\nbase_url = \"https://api.example.com\"\n\
             path = \"/items\"\nrecords_path = \"data\"\n{auth}[rate_limit]\nrate = 5\n\
             [output]\ndir = \".\"\n[pagination]\nstyle = \"cursor\"\ncursor_param = \"cursor\"\n\
             cursor_path = \"next_cursor\"\n"
        );
        ExportSpec::from_toml(&text).unwrap()
    }

    #[test]
    fn a_page_size_fits_a_chain_page_only_and_a_secret_needs_a_credential() {
        let size = TaskOverrides {
            page_size: Some(5),
            secret: None,
        };
        assert!(size.check_for(&spec(false), true, 0, 3).is_ok());
        let refused = size.check_for(&spec(false), false, 2, 7).unwrap_err();
        assert!(refused
            .to_string()
            .starts_with("page 7 of partition 2: a page size"));
        let secret = TaskOverrides {
            page_size: None,
            secret: Some(SecretRef {
                env: None,
                file: Some("rotated".into()),
            }),
        };
        assert!(secret.check_for(&spec(false), true, 0, 0).is_err());
        let applied = secret.apply(size.apply(spec(true)));
        assert_eq!(applied.page_size, 5);
        assert_eq!(
            applied.source.auth.unwrap().secret().describe(),
            "file:rotated"
        );
    }
}
