//! The crate's one error type and its one mapping to HTTP responses.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use proto::httpgrpc::HttpResponse;

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// The client's request is malformed: Prometheus `bad_data`, 400.
    #[error("{0}")]
    BadData(String),
    /// The tenant header is missing (401) or unsafe (400).
    #[error("{0}")]
    Tenant(server::HttpError),
    #[error("request body of more than {limit} bytes is above -frontend.max-body-size")]
    BodyTooLarge { limit: usize },
    /// The tenant's queue is full (Cortex's words).
    #[error("too many outstanding requests")]
    TooManyOutstanding,
    /// The downstream answered with an error status: passed through as it is.
    #[error("downstream answered {}", .0.code)]
    Downstream(HttpResponse),
    /// The downstream could not be reached or went away mid-request (retryable).
    #[error("{0}")]
    Unavailable(String),
    /// The downstream's answer could not be understood; our failure.
    #[error("{0}")]
    Internal(String),
    /// The caller went away or the frontend is stopping.
    #[error("{0}")]
    Canceled(String),
}

impl FrontendError {
    pub fn status(&self) -> u16 {
        match self {
            FrontendError::BadData(_) => 400,
            FrontendError::Tenant(e) => e.code,
            FrontendError::BodyTooLarge { .. } => 413,
            FrontendError::TooManyOutstanding => 429,
            FrontendError::Downstream(r) => r.code as u16,
            // A querier that died mid-request, or none connected: 502 as Go's reverse proxy answers.
            FrontendError::Unavailable(_) => 502,
            FrontendError::Internal(_) => 500,
            FrontendError::Canceled(_) => 499,
        }
    }

    /// Worth another attempt: the downstream's own 5xx or a transport failure, never the
    /// client's mistake (spec §7.4 item 6).
    pub fn is_retryable(&self) -> bool {
        match self {
            FrontendError::Downstream(r) => r.code >= 500,
            FrontendError::Unavailable(_) => true,
            _ => false,
        }
    }
}

impl IntoResponse for FrontendError {
    fn into_response(self) -> Response {
        match self {
            FrontendError::Downstream(r) => crate::http::to_axum_response(r),
            FrontendError::BadData(m) => prometheus_error(StatusCode::BAD_REQUEST, "bad_data", &m),
            FrontendError::Tenant(e) => e.into_response(),
            other => {
                let code = StatusCode::from_u16(other.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (
                    code,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    format!("{other}\n"),
                )
                    .into_response()
            }
        }
    }
}

/// `{"status":"error","errorType":…,"error":…}` as the Prometheus API writes errors.
fn prometheus_error(code: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({"status": "error", "errorType": error_type, "error": message});
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
