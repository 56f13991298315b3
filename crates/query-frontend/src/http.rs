//! The frontend's HTTP face: the Prometheus API under `/api/prom` and `/prometheus`.
//! `query_range` goes through the middleware chain; everything else is forwarded unchanged.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use proto::httpgrpc::{HttpRequest, HttpResponse};
use server::Tenant;

use crate::error::FrontendError;
use crate::request::{header as proto_header, RangeRequest};
use crate::{response, Frontend};

pub fn routes(f: Arc<Frontend>) -> Router {
    Router::new()
        .route("/api/prom/{*rest}", any(serve))
        .route("/prometheus/{*rest}", any(serve))
        .with_state(f)
}

/// Headers not forwarded: connection-level ones, the tenant (set from the resolved one), and
/// Accept-Encoding (the frontend reads the bodies it gets back).
fn forwarded(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host"
            | "connection"
            | "content-length"
            | "transfer-encoding"
            | "accept-encoding"
            | "keep-alive"
            | "x-scope-orgid"
    )
}

async fn serve(State(f): State<Arc<Frontend>>, Tenant(tenant): Tenant, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, f.cfg.max_body_size).await {
        Ok(b) => b,
        Err(_) => {
            return FrontendError::BodyTooLarge {
                limit: f.cfg.max_body_size,
            }
            .into_response()
        }
    };
    let path = parts.uri.path();
    let url = parts.uri.path_and_query().map_or(path, |p| p.as_str()).to_string();
    let resp = if path.ends_with("/api/v1/query_range") {
        let mut params: Vec<(String, String)> = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if parts.method == Method::POST && is_form {
            params.extend(form_urlencoded::parse(&body).into_owned());
        }
        let no_store = parts
            .headers
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("no-store"));
        match RangeRequest::from_params(path, &params, no_store) {
            Ok(r) => match f.range_chain.handle(&tenant, r).await {
                Ok(r) => ([(header::CONTENT_TYPE, "application/json")], response::to_json(&r)).into_response(),
                Err(e) => e.into_response(),
            },
            Err(e) => e.into_response(),
        }
    } else {
        let mut headers = vec![proto_header(model::tenant::ORG_ID_HEADER, &tenant)];
        for (k, v) in parts.headers.iter().filter(|(k, _)| forwarded(k)) {
            if let Ok(v) = v.to_str() {
                headers.push(proto_header(k.as_str(), v));
            }
        }
        let r = HttpRequest {
            method: parts.method.to_string(),
            url: url.clone(),
            headers,
            body: body.to_vec(),
        };
        match f.round_tripper.round_trip(&tenant, r).await {
            Ok(r) => to_axum_response(r),
            Err(e) => e.into_response(),
        }
    };
    f.observe(&tenant, parts.method.as_str(), &url, resp.status(), started.elapsed());
    resp
}

/// A downstream answer as the client's response.
pub fn to_axum_response(r: HttpResponse) -> Response {
    let mut resp = Response::new(Body::from(r.body));
    *resp.status_mut() = StatusCode::from_u16(r.code as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    for hd in r.headers {
        let Ok(name) = HeaderName::from_bytes(hd.key.as_bytes()) else {
            continue;
        };
        if !forwarded(&name) {
            continue;
        }
        for v in hd.values {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.append(name.clone(), v);
            }
        }
    }
    resp
}
