//! `GET /v1/exports/{id}/download`: an export's published CSV, streamed
//! from the tenant's own directory (a path that resolves anywhere else is
//! not served), with its SHA-256 for the client to check.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use pagefleet_shared::model::ExportState;

use crate::api::{parse_id, ApiError, ApiState};
use crate::auth::Tenant;

/// The header with the file's SHA-256, as its manifest states it.
pub const SHA256_HEADER: &str = "x-pagefleet-sha256";

#[utoipa::path(get, path = "/v1/exports/{id}/download", tag = "exports",
    params(("id" = Uuid, Path, description = "the export")),
    responses(
        (status = 200, description = "the published CSV; `X-Pagefleet-SHA256` is its digest", content_type = "text/csv"),
        (status = 404, description = "no such export of this tenant's", body = ApiError),
        (status = 409, description = "the export has published no CSV (yet)", body = ApiError),
        (status = 401, description = "no token, or not a valid one", body = ApiError)))]
pub async fn download(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("no export {id}"));
    let status = match state.store.export_status(id).await? {
        Some(s) if s.tenant_id == tenant.as_str() => s,
        _ => return Err(not_found()),
    };
    let published = matches!(
        status.state,
        ExportState::Completed | ExportState::CompletedWithGaps
    );
    let (true, Some(path)) = (published, status.output_path.as_deref()) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "export {id} is {}: only a published CSV is downloaded",
                status.state
            ),
        ));
    };
    // Resolved, links and all, it must still be inside the tenant's own
    // directory.
    let root = tokio::fs::canonicalize(state.output_root.join(tenant.as_str())).await;
    let file = tokio::fs::canonicalize(path).await;
    let (Ok(root), Ok(file)) = (root, file) else {
        return Err(gone(id));
    };
    if !file.starts_with(&root) {
        tracing::warn!(export = %id, "a published file outside its tenant's directory was not served");
        return Err(not_found());
    }
    let opened = tokio::fs::File::open(&file).await.map_err(|_| gone(id))?;
    let length = opened.metadata().await.map(|m| m.len()).ok();
    let mut response = Body::from_stream(tokio_util::io::ReaderStream::new(opened)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    let name = file_name(&file);
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Some(Ok(sha)) = status.csv_sha256.as_deref().map(HeaderValue::from_str) {
        headers.insert(SHA256_HEADER, sha);
    }
    Ok(response)
}

fn gone(id: uuid::Uuid) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!("export {id}'s CSV is no longer where it was published"),
    )
}

/// The file's name with anything but plain characters replaced, for a
/// header.
fn file_name(path: &std::path::Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_in_a_header_is_plain() {
        assert_eq!(
            file_name(std::path::Path::new("/o/acme/orders.csv")),
            "orders.csv"
        );
        assert_eq!(
            file_name(std::path::Path::new("/o/a/x\";\r\nSet-Cookie: y.csv")),
            "x____Set-Cookie__y.csv"
        );
    }
}
