//! Where the tenant of a request comes from: `X-Scope-OrgID` over HTTP,
//! `x-scope-orgid` metadata over gRPC, or `fake` when auth is disabled.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use model::tenant::{self, TenantError, DEFAULT_TENANT, ORG_ID_HEADER, ORG_ID_METADATA};

use crate::error::HttpError;

/// Whether requests must name their tenant. Installed as a request extension
/// by [`crate::http::router`]; absent means auth enabled.
#[derive(Debug, Clone, Copy)]
pub struct AuthConfig {
    pub enabled: bool,
}

/// The tenant of an HTTP request (extractor). Missing → 401 "no org id";
/// an unsafe ID → 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let auth_enabled = parts.extensions.get::<AuthConfig>().is_none_or(|a| a.enabled);
        let header = parts.headers.get(ORG_ID_HEADER).and_then(|v| v.to_str().ok());
        resolve(auth_enabled, header).map(Tenant)
    }
}

/// Picks the tenant from an optional header value.
pub fn resolve(auth_enabled: bool, header: Option<&str>) -> Result<String, HttpError> {
    if !auth_enabled {
        return Ok(DEFAULT_TENANT.to_string());
    }
    let id = header.unwrap_or("").trim();
    tenant::validate(id).map_err(|e| match e {
        TenantError::Missing => HttpError::new(401, "no org id"),
        other => HttpError::new(400, other.to_string()),
    })?;
    Ok(id.to_string())
}

/// The tenant of a gRPC request, from `x-scope-orgid` metadata.
pub fn from_grpc<T>(req: &tonic::Request<T>) -> Result<String, tonic::Status> {
    let id = req
        .metadata()
        .get(ORG_ID_METADATA)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tenant::validate(id).map_err(|e| HttpError::new(401, e.to_string()).to_grpc_status())?;
    Ok(id.to_string())
}

/// Wraps a message in a gRPC request carrying the tenant.
pub fn grpc_request<T>(tenant: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(v) = tenant.parse() {
        req.metadata_mut().insert(ORG_ID_METADATA, v);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_rules() {
        assert_eq!(resolve(false, None).unwrap(), "fake");
        assert_eq!(resolve(true, None).unwrap_err().code, 401);
        assert_eq!(resolve(true, Some("a/b")).unwrap_err().code, 400);
        assert_eq!(resolve(true, Some("team-1")).unwrap(), "team-1");
    }

    #[test]
    fn grpc_round_trip() {
        let req = grpc_request("t1", ());
        assert_eq!(from_grpc(&req).unwrap(), "t1");
        let missing = tonic::Request::new(());
        let st = from_grpc(&missing).unwrap_err();
        assert_eq!(HttpError::from_grpc_status(&st).code, 401);
    }
}
