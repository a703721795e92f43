//! Where an export's CSV may be written. A fleet serving several tenants
//! sets an output root; each tenant then writes only under
//! `<root>/<tenant>/`, and a spec's `output.dir` is relative to that. Without
//! a root (one team, one machine) `output.dir` is used as written.

use std::path::{Component, Path, PathBuf};

/// Why an output directory was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    #[error(
        "output.dir {dir:?} must be relative: this fleet writes each tenant's files under its own directory of the output root"
    )]
    Absolute { dir: String },
    #[error("output.dir {dir:?} must not contain `..`")]
    ParentDir { dir: String },
    #[error("tenant {0:?} must be 1-64 characters of [A-Za-z0-9_.-], not starting with `.`")]
    Tenant(String),
}

/// Whether a tenant id is safe as one path component (and in logs).
pub fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 64
        && !tenant.starts_with('.')
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The directory an export of `tenant` with `output.dir` = `dir` writes to.
pub fn resolve_dir(root: Option<&Path>, tenant: &str, dir: &str) -> Result<PathBuf, OutputError> {
    let path = Path::new(dir);
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(OutputError::ParentDir { dir: dir.into() });
    }
    let Some(root) = root else {
        return Ok(path.to_path_buf());
    };
    if !valid_tenant(tenant) {
        return Err(OutputError::Tenant(tenant.into()));
    }
    if path.has_root() || path.is_absolute() {
        return Err(OutputError::Absolute { dir: dir.into() });
    }
    Ok(root.join(tenant).join(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_root_the_dir_is_used_as_written() {
        assert_eq!(
            resolve_dir(None, "acme", "/data/out"),
            Ok(PathBuf::from("/data/out"))
        );
        assert_eq!(resolve_dir(None, "acme", "out"), Ok(PathBuf::from("out")));
    }

    #[test]
    fn with_a_root_each_tenant_writes_under_its_own_directory() {
        let root = Path::new("/srv/exports");
        assert_eq!(
            resolve_dir(Some(root), "acme", "orders/2026"),
            Ok(PathBuf::from("/srv/exports/acme/orders/2026"))
        );
        assert_eq!(
            resolve_dir(Some(root), "acme", "."),
            Ok(PathBuf::from("/srv/exports/acme/."))
        );
    }

    #[test]
    fn escapes_are_refused() {
        let root = Some(Path::new("/srv/exports"));
        assert!(matches!(
            resolve_dir(root, "acme", "/etc"),
            Err(OutputError::Absolute { .. })
        ));
        assert!(matches!(
            resolve_dir(root, "acme", "a/../../other"),
            Err(OutputError::ParentDir { .. })
        ));
        assert!(matches!(
            resolve_dir(None, "acme", "../x"),
            Err(OutputError::ParentDir { .. })
        ));
        for tenant in ["", "..", ".hidden", "a/b", "a\\b", &"x".repeat(65)] {
            assert_eq!(
                resolve_dir(root, tenant, "out"),
                Err(OutputError::Tenant(tenant.to_string())),
                "{tenant:?}"
            );
        }
    }
}
