//! `POST /api/prom/push` and `POST /api/v1/push`: Prometheus remote write.

use std::sync::Arc;

use axum::body::{Body, HttpBody};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use server::{HttpError, Tenant};

use crate::decode::{decode_write_request, DecodeError};
use crate::Distributor;

pub(crate) fn routes(d: Arc<Distributor>) -> Router {
    Router::new()
        .route("/api/prom/push", post(push_handler))
        .route("/api/v1/push", post(push_handler))
        .with_state(d)
}

async fn push_handler(
    State(d): State<Arc<Distributor>>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, HttpError> {
    let max = d.cfg.max_recv_msg_size;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .or_else(|| body.size_hint().exact());
    if let Some(size) = declared.filter(|&size| size > max as u64) {
        return Err(DecodeError::CompressedTooLarge { size, max }.into());
    }
    // The body is read here rather than through axum's `Bytes` extractor, whose
    // 2 MB default limit is not Cortex's limit.
    let body = axum::body::to_bytes(body, max).await.map_err(|e| {
        if is_length_limit(&e) {
            DecodeError::BodyTooLarge { max }
        } else {
            DecodeError::Read(e.to_string())
        }
    })?;
    let req = decode_write_request(&body, max)?;
    drop(body);
    d.push(&tenant, req).await?;
    Ok(StatusCode::OK)
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}
