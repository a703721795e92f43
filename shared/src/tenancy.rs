//! Tenant isolation: what a tenant's spec may reach on a worker. A fleet
//! serving several tenants sets an output root, which turns isolation on:
//! - each tenant writes only under `<root>/<tenant>/`, and a spec's
//!   `output.dir` is relative to that;
//! - a spec may name only its own tenant's secrets: environment variables
//!   `PAGEFLEET_SECRET_<tenant>__<NAME>` (the tenant id exactly as it is),
//!   never a file, so no spec can send the fleet's database URL or another
//!   tenant's key to a server of its choice. Tenant ids never contain `__`,
//!   so no tenant's prefix is the start of another's.
//!
//! Without a root (one team, one machine) specs are trusted as written.

use std::path::{Component, Path, PathBuf};

use crate::spec::SecretRef;

/// Why a spec reaches for something that is not its tenant's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsolationError {
    #[error(
        "output.dir {dir:?} must be relative: this fleet writes each tenant's files under its own directory of the output root"
    )]
    Absolute { dir: String },
    #[error("output.dir {dir:?} must not contain `..`")]
    ParentDir { dir: String },
    #[error(
        "tenant {0:?} must be 1-64 characters of [A-Za-z0-9_.-], not starting with `.`, without `__`"
    )]
    Tenant(String),
    #[error("output.dir {dir:?} leads outside the tenant's directory (through a symlink)")]
    OutsideTenant { dir: String },
    #[error("output.dir {dir:?} passes through a file that is not a directory")]
    NotADirectory { dir: String },
    #[error(
        "secret {reference} is not this tenant's: name an environment variable starting with {prefix}"
    )]
    Secret { reference: String, prefix: String },
}

/// The prefix of the environment variables a tenant's specs may read: the
/// tenant id exactly (case and all) and a `__` no tenant id contains, so
/// `acme` cannot reach `acme-prod`'s or `Acme`'s variables. No tenant id
/// ends in `_` and no secret name after the prefix starts with one, so the
/// first `__` ends the tenant id: `acme` cannot reach
/// `PAGEFLEET_SECRET_acme___TOKEN` either.
pub fn secret_prefix(tenant: &str) -> String {
    format!("PAGEFLEET_SECRET_{tenant}__")
}

/// Whether a tenant's spec may read this secret (always, without isolation).
pub fn check_secret(
    root: Option<&Path>,
    tenant: &str,
    secret: &SecretRef,
) -> Result<(), IsolationError> {
    if root.is_none() {
        return Ok(());
    }
    let prefix = secret_prefix(tenant);
    match (&secret.env, &secret.file) {
        (Some(var), _) if is_own_secret(var, &prefix) => Ok(()),
        _ => Err(IsolationError::Secret {
            reference: secret.describe(),
            prefix,
        }),
    }
}

/// `var` is the prefix and a name that does not start with `_` (which
/// would make the variable another tenant's: `acme_` + `__` + `TOKEN`).
fn is_own_secret(var: &str, prefix: &str) -> bool {
    var.strip_prefix(prefix)
        .is_some_and(|name| !name.is_empty() && !name.starts_with('_'))
}

/// A tenant id that is safe as one path component, in a secret prefix and
/// in logs: 1-64 characters of `[A-Za-z0-9_.-]`, not starting with `.`,
/// not ending with `_`, without `__`. The API parses it once, where a request enters; the store
/// and the workers still take the id as text (it comes back from the
/// database), and the workers check it again before touching files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(text: &str) -> Result<Self, IsolationError> {
        if valid_tenant(text) {
            Ok(TenantId(text.to_string()))
        } else {
            Err(IsolationError::Tenant(text.to_string()))
        }
    }

    /// The tenant of requests that name none.
    pub fn default_tenant() -> Self {
        TenantId(crate::model::DEFAULT_TENANT.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a tenant id is safe as one path component (and in logs). Kept
/// beside `TenantId` for ids read back from the database, which the
/// workers check again before they touch the file system.
pub fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 64
        && !tenant.starts_with('.')
        && !tenant.ends_with('_')
        && !tenant.contains("__")
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The tenant's directory under `output_root`, as configured and as
/// resolved (when it exists): a path may name it either way.
pub fn tenant_roots(output_root: &Path, tenant: &str) -> Vec<PathBuf> {
    let raw = output_root.join(tenant);
    let canonical = std::fs::canonicalize(&raw).ok().filter(|c| *c != raw);
    std::iter::once(raw).chain(canonical).collect()
}

/// The directory an export of `tenant` with `output.dir` = `dir` writes to.
/// Pure: `create_output_dir` creates it without following symlinks.
pub fn resolve_dir(
    root: Option<&Path>,
    tenant: &str,
    dir: &str,
) -> Result<PathBuf, IsolationError> {
    let path = Path::new(dir);
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(IsolationError::ParentDir { dir: dir.into() });
    }
    let Some(root) = root else {
        return Ok(path.to_path_buf());
    };
    if !valid_tenant(tenant) {
        return Err(IsolationError::Tenant(tenant.into()));
    }
    if path.has_root() || path.is_absolute() {
        return Err(IsolationError::Absolute { dir: dir.into() });
    }
    Ok(root.join(tenant).join(path))
}

/// Creates the directory `resolve_dir` gave, one component at a time under
/// the tenant's directory, refusing to pass through a symlink (a plain
/// `create_dir_all` would follow one and create directories outside).
pub fn create_output_dir(
    root: Option<&Path>,
    tenant: &str,
    dir: &str,
) -> Result<PathBuf, CreateDirError> {
    let target = resolve_dir(root, tenant, dir)?;
    let Some(root) = root else {
        std::fs::create_dir_all(&target).map_err(|e| CreateDirError::Io(target.clone(), e))?;
        return Ok(target);
    };
    let mut path = root.join(tenant);
    std::fs::create_dir_all(&path).map_err(|e| CreateDirError::Io(path.clone(), e))?;
    for component in Path::new(dir).components() {
        let Component::Normal(part) = component else {
            continue;
        };
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(IsolationError::OutsideTenant { dir: dir.into() }.into());
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(IsolationError::NotADirectory { dir: dir.into() }.into());
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::create_dir(&path) {
                    Ok(()) => {}
                    // Another finalizer made it meanwhile: checked below.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(CreateDirError::Io(path, e)),
                }
                let meta = std::fs::symlink_metadata(&path)
                    .map_err(|e| CreateDirError::Io(path.clone(), e))?;
                if meta.file_type().is_symlink() {
                    return Err(IsolationError::OutsideTenant { dir: dir.into() }.into());
                }
                if !meta.is_dir() {
                    return Err(IsolationError::NotADirectory { dir: dir.into() }.into());
                }
            }
            Err(e) => return Err(CreateDirError::Io(path, e)),
        }
    }
    Ok(path)
}

/// Why `create_output_dir` failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateDirError {
    #[error(transparent)]
    Isolation(#[from] IsolationError),
    #[error("cannot create {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_id_is_parsed_once() {
        assert_eq!(TenantId::parse("acme-prod").unwrap().as_str(), "acme-prod");
        assert_eq!(TenantId::default_tenant().as_str(), "default");
        for bad in ["", ".x", "a__b", "acme_", "a/b", "ü"] {
            assert_eq!(
                TenantId::parse(bad),
                Err(IsolationError::Tenant(bad.to_string())),
                "{bad:?}"
            );
        }
    }

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
            Err(IsolationError::Absolute { .. })
        ));
        assert!(matches!(
            resolve_dir(root, "acme", "a/../../other"),
            Err(IsolationError::ParentDir { .. })
        ));
        assert!(matches!(
            resolve_dir(None, "acme", "../x"),
            Err(IsolationError::ParentDir { .. })
        ));
        for tenant in ["", "..", ".hidden", "a/b", "a\\b", "a__b", &"x".repeat(65)] {
            assert_eq!(
                resolve_dir(root, tenant, "out"),
                Err(IsolationError::Tenant(tenant.to_string())),
                "{tenant:?}"
            );
        }
    }

    #[test]
    fn with_isolation_a_spec_reads_only_its_tenant_s_secrets() {
        let root = Some(Path::new("/srv/exports"));
        let env = |v: &str| SecretRef {
            env: Some(v.into()),
            file: None,
        };
        let file = SecretRef {
            env: None,
            file: Some("/run/secrets/key".into()),
        };
        assert_eq!(secret_prefix("acme-eu.1"), "PAGEFLEET_SECRET_acme-eu.1__");
        assert!(check_secret(root, "acme", &env("PAGEFLEET_SECRET_acme__TOKEN")).is_ok());
        for refused in [
            env("PAGEFLEET_DATABASE_URL"),
            env("PAGEFLEET_SECRET_globex__TOKEN"),
            env("PAGEFLEET_SECRET_acme__"),
            // Other tenants whose ids start like this one's, or differ in case.
            env("PAGEFLEET_SECRET_acme-prod__TOKEN"),
            env("PAGEFLEET_SECRET_acme_prod__TOKEN"),
            env("PAGEFLEET_SECRET_Acme__TOKEN"),
            // Tenant `acme_`'s variable: its prefix starts with this one's.
            env("PAGEFLEET_SECRET_acme___TOKEN"),
            file.clone(),
        ] {
            assert!(
                matches!(
                    check_secret(root, "acme", &refused),
                    Err(IsolationError::Secret { .. })
                ),
                "{refused:?}"
            );
        }
        assert!(check_secret(None, "acme", &env("ANYTHING")).is_ok());
        assert!(check_secret(None, "acme", &file).is_ok());
    }

    #[test]
    fn the_output_dir_is_created_without_following_symlinks() {
        let base = std::env::temp_dir().join(format!("pagefleet-tenancy-{}", std::process::id()));
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("acme")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("acme/link")).unwrap();
        let made = create_output_dir(Some(&root), "acme", "a/b").unwrap();
        assert_eq!(made, root.join("acme/a/b"));
        assert!(made.is_dir());
        for dir in ["link", "link/sub"] {
            assert!(
                matches!(
                    create_output_dir(Some(&root), "acme", dir),
                    Err(CreateDirError::Isolation(
                        IsolationError::OutsideTenant { .. }
                    ))
                ),
                "{dir}"
            );
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        std::fs::write(root.join("acme/a/file.csv"), "x").unwrap();
        assert!(matches!(
            create_output_dir(Some(&root), "acme", "a/file.csv/sub"),
            Err(CreateDirError::Isolation(
                IsolationError::NotADirectory { .. }
            ))
        ));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
