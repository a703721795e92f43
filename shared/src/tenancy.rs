//! Tenant isolation: what a tenant's spec may reach on a worker. It is
//! always on (the output root defaults to `./out`):
//! - each tenant writes only under `<root>/<tenant>/`; a spec's
//!   `output.dir` is relative to that (an absolute one must already lie
//!   inside it);
//! - a spec may name only its own tenant's secrets: environment variables
//!   `PAGEFLEET_SECRET_<tenant>__<NAME>` (the tenant id exactly as it is),
//!   or files under `<secrets_dir>/<tenant>/` when the operator configured
//!   a secrets directory. So no spec can send the fleet's database URL or
//!   another tenant's key to a server of its choice. Tenant ids never
//!   contain `__`, so no tenant's prefix is the start of another's.

use std::path::{Component, Path, PathBuf};

use crate::spec::SecretRef;

/// Why a spec reaches for something that is not its tenant's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsolationError {
    #[error(
        "output.dir {dir:?} must be relative: this fleet writes each tenant's files under its own directory of the output root"
    )]
    Absolute { dir: String },
    #[error(
        "secret {reference} is a file, and this fleet has no secrets directory: name an environment variable starting with {prefix}"
    )]
    NoSecretsDir { reference: String, prefix: String },
    #[error(
        "secret {reference} must name a file by a relative path without `..`, under the tenant's secrets directory"
    )]
    SecretFile { reference: String },
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

/// Where a tenant's secret is read from, once it is known to be its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

/// Where a tenant's spec may read this secret, if it may: its own
/// environment variables, or a file under `<secrets_dir>/<tenant>/`.
pub fn secret_source(
    secrets_dir: Option<&Path>,
    tenant: &str,
    secret: &SecretRef,
) -> Result<SecretSource, IsolationError> {
    let prefix = secret_prefix(tenant);
    let reference = secret.describe();
    match (&secret.env, &secret.file) {
        (Some(var), _) if is_own_secret(var, &prefix) => Ok(SecretSource::Env(var.clone())),
        (None, Some(name)) => {
            let Some(dir) = secrets_dir else {
                return Err(IsolationError::NoSecretsDir { reference, prefix });
            };
            let path = Path::new(name);
            let plain = path.components().count() > 0
                && path.components().all(|c| matches!(c, Component::Normal(_)));
            if !plain || !valid_tenant(tenant) {
                return Err(IsolationError::SecretFile { reference });
            }
            Ok(SecretSource::File(dir.join(tenant).join(path)))
        }
        _ => Err(IsolationError::Secret { reference, prefix }),
    }
}

/// Whether a tenant's spec may read this secret.
pub fn check_secret(
    secrets_dir: Option<&Path>,
    tenant: &str,
    secret: &SecretRef,
) -> Result<(), IsolationError> {
    secret_source(secrets_dir, tenant, secret).map(|_| ())
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
    crate::model::is_plain_name(tenant)
        && !tenant.starts_with('.')
        && !tenant.ends_with('_')
        && !tenant.contains("__")
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
pub fn resolve_dir(root: &Path, tenant: &str, dir: &str) -> Result<PathBuf, IsolationError> {
    Ok(root.join(tenant).join(below_tenant_dir(root, tenant, dir)?))
}

/// `dir` as a path below the tenant's directory: as written when relative;
/// an absolute one must lie inside the tenant's directory already.
fn below_tenant_dir(root: &Path, tenant: &str, dir: &str) -> Result<PathBuf, IsolationError> {
    let path = Path::new(dir);
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(IsolationError::ParentDir { dir: dir.into() });
    }
    if !valid_tenant(tenant) {
        return Err(IsolationError::Tenant(tenant.into()));
    }
    if !(path.has_root() || path.is_absolute()) {
        return Ok(path.to_path_buf());
    }
    path.strip_prefix(root.join(tenant))
        .map(Path::to_path_buf)
        .map_err(|_| IsolationError::Absolute { dir: dir.into() })
}

/// Creates the directory `resolve_dir` gave, one component at a time under
/// the tenant's directory, refusing to pass through a symlink (a plain
/// `create_dir_all` would follow one and create directories outside).
pub fn create_output_dir(root: &Path, tenant: &str, dir: &str) -> Result<PathBuf, CreateDirError> {
    let below = below_tenant_dir(root, tenant, dir)?;
    let mut path = root.join(tenant);
    std::fs::create_dir_all(&path).map_err(|e| CreateDirError::Io(path.clone(), e))?;
    for component in below.components() {
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
    fn an_absolute_dir_is_accepted_only_inside_the_tenant_s_directory() {
        let root = Path::new("/srv/exports");
        assert_eq!(
            resolve_dir(root, "acme", "/srv/exports/acme/nightly"),
            Ok(PathBuf::from("/srv/exports/acme/nightly"))
        );
        for outside in [
            "/srv/exports/globex/x",
            "/srv/exports",
            "/etc",
            "/srv/exports/acmex",
        ] {
            assert_eq!(
                resolve_dir(root, "acme", outside),
                Err(IsolationError::Absolute {
                    dir: outside.into()
                }),
                "{outside}"
            );
        }
    }

    #[test]
    fn with_a_root_each_tenant_writes_under_its_own_directory() {
        let root = Path::new("/srv/exports");
        assert_eq!(
            resolve_dir(root, "acme", "orders/2026"),
            Ok(PathBuf::from("/srv/exports/acme/orders/2026"))
        );
        assert_eq!(
            resolve_dir(root, "acme", "."),
            Ok(PathBuf::from("/srv/exports/acme/."))
        );
    }

    #[test]
    fn escapes_are_refused() {
        let root = Path::new("/srv/exports");
        assert!(matches!(
            resolve_dir(root, "acme", "/etc"),
            Err(IsolationError::Absolute { .. })
        ));
        assert!(matches!(
            resolve_dir(root, "acme", "a/../../other"),
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
    fn a_spec_reads_only_its_tenant_s_secrets() {
        let secrets = Some(Path::new("/run/pagefleet/secrets"));
        let env = |v: &str| SecretRef {
            env: Some(v.into()),
            file: None,
        };
        let file = |f: &str| SecretRef {
            env: None,
            file: Some(f.into()),
        };
        assert_eq!(secret_prefix("acme-eu.1"), "PAGEFLEET_SECRET_acme-eu.1__");
        assert_eq!(
            secret_source(secrets, "acme", &env("PAGEFLEET_SECRET_acme__TOKEN")),
            Ok(SecretSource::Env("PAGEFLEET_SECRET_acme__TOKEN".into()))
        );
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
        ] {
            assert!(
                matches!(
                    check_secret(secrets, "acme", &refused),
                    Err(IsolationError::Secret { .. })
                ),
                "{refused:?}"
            );
        }
        // Files: only under the tenant's own secrets directory.
        assert_eq!(
            secret_source(secrets, "acme", &file("orders/key")),
            Ok(SecretSource::File(
                "/run/pagefleet/secrets/acme/orders/key".into()
            ))
        );
        for escaping in ["/etc/hostname", "../globex/key", "a/../../key", "", "."] {
            assert!(
                matches!(
                    check_secret(secrets, "acme", &file(escaping)),
                    Err(IsolationError::SecretFile { .. })
                ),
                "{escaping:?}"
            );
        }
        assert!(matches!(
            check_secret(None, "acme", &file("key")),
            Err(IsolationError::NoSecretsDir { .. })
        ));
    }

    #[test]
    fn the_output_dir_is_created_without_following_symlinks() {
        let base = std::env::temp_dir().join(format!("pagefleet-tenancy-{}", std::process::id()));
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("acme")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("acme/link")).unwrap();
        let made = create_output_dir(&root, "acme", "a/b").unwrap();
        assert_eq!(made, root.join("acme/a/b"));
        assert!(made.is_dir());
        for dir in ["link", "link/sub"] {
            assert!(
                matches!(
                    create_output_dir(&root, "acme", dir),
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
            create_output_dir(&root, "acme", "a/file.csv/sub"),
            Err(CreateDirError::Isolation(
                IsolationError::NotADirectory { .. }
            ))
        ));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
