//! The admin plane's reads, logged (bounded: `bulkhead_app::reads`): a
//! successful `GET` under `/admin/v1` is an `admin.read` entry in the operator
//! log — and in the tenant's log when the path names one — before its answer
//! leaves. If the entry cannot be written the answer does not leave (503).

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bulkhead_types::TenantId;

use crate::AppState;
use crate::audit::RequestId;
use crate::error::ApiError;

/// Admin `GET`s that are not logged here: the public key is public, and an
/// export is logged by its handler (`tenant.export`, with what it holds).
const NOT_LOGGED: &[&str] = &[
    "/admin/v1/audit/public-key",
    "/admin/v1/tenants/{id}/export",
];

pub async fn log_admin_read(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::GET {
        return next.run(request).await;
    }
    let template = request
        .extensions()
        .get::<MatchedPath>()
        // Inside the nested admin router the matched path may lack its prefix.
        .map(|m| match m.as_str() {
            full if full.starts_with("/admin/v1") => full.to_owned(),
            inner => format!("/admin/v1{inner}"),
        });
    let path = request.uri().path().to_owned();
    let rid = request
        .extensions()
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(RequestId::generate);
    let response = next.run(request).await;
    let Some(template) = template else {
        return response;
    };
    if !response.status().is_success() || NOT_LOGGED.contains(&template.as_str()) {
        return response;
    }
    let tenant = tenant_in(&template, &path);
    match bulkhead_app::reads::admin_read(&state, &rid, "admin", &template, tenant.as_ref()).await {
        Ok(()) => response,
        Err(e) => {
            tracing::error!(error = %e, read = %template,
                "an admin read could not be logged; it was refused. Check the store");
            ApiError::from(e).into_response()
        }
    }
}

/// The tenant a path names (`…/tenants/{id}…`), if it does. Segments are
/// matched from the end: inside the nested router the path lacks its prefix.
fn tenant_in(template: &str, path: &str) -> Option<TenantId> {
    let t: Vec<&str> = template.split('/').rev().collect();
    let p: Vec<&str> = path.split('/').rev().collect();
    (0..t.len().min(p.len()))
        .find(|&i| t[i] == "{id}" && t.get(i + 1) == Some(&"tenants"))
        .and_then(|i| TenantId::parse(p[i]).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_is_taken_from_a_tenants_segment_only() {
        let id = TenantId::from_random([7; 12]);
        let path = format!("/tenants/{id}/usage");
        assert_eq!(
            tenant_in("/admin/v1/tenants/{id}/usage", &path),
            Some(id.clone())
        );
        let audit = format!("/admin/v1/audit/tenants/{id}/entries");
        assert_eq!(
            tenant_in("/admin/v1/audit/tenants/{id}/entries", &audit),
            Some(id)
        );
        assert_eq!(
            tenant_in("/admin/v1/incidents/{id}", "/admin/v1/incidents/in_1"),
            None
        );
        assert_eq!(
            tenant_in("/admin/v1/tenants/{id}", "/admin/v1/tenants/nonsense"),
            None
        );
    }
}
