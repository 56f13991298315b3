//! The one place where an error's HTTP meaning is turned into an HTTP response
//! or a gRPC status, and back.
//!
//! Over gRPC an error with an HTTP meaning travels as weaveworks "httpgrpc"
//! does: the `grpc-status-details-bin` trailer holds a `google.rpc.Status`
//! whose code is the HTTP status and whose detail is an `httpgrpc.HTTPResponse`.
//! (grpc-go also puts the HTTP code in `grpc-status`; tonic cannot send codes
//! outside the gRPC range, so we send `Unknown` there and receivers, ours and
//! Cortex's alike, read the details.)

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use prost::Message;
use proto::httpgrpc::{AnyDetail, HttpResponse, RpcStatus};

const HTTP_RESPONSE_TYPE_URL: &str = "type.googleapis.com/httpgrpc.HTTPResponse";

/// An error that carries an HTTP status code and a plain-text message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HttpError {
    pub code: u16,
    pub message: String,
}

impl HttpError {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        HttpError {
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
    pub fn is_client_error(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// As a gRPC status carrying the HTTP code in its details.
    pub fn to_grpc_status(&self) -> tonic::Status {
        let resp = HttpResponse {
            code: self.code as i32,
            headers: vec![],
            body: self.message.clone().into_bytes(),
        };
        let st = RpcStatus {
            code: self.code as i32,
            message: self.message.clone(),
            details: vec![AnyDetail {
                type_url: HTTP_RESPONSE_TYPE_URL.into(),
                value: resp.encode_to_vec(),
            }],
        };
        let grpc_code = match self.code {
            // Keep the gRPC code meaningful for generic gRPC clients too.
            429 => tonic::Code::ResourceExhausted,
            500..=599 => tonic::Code::Unavailable,
            _ => tonic::Code::Unknown,
        };
        tonic::Status::with_details(grpc_code, self.message.clone(), Bytes::from(st.encode_to_vec()))
    }

    /// Recovers the HTTP meaning of a gRPC status: the httpgrpc code if the
    /// status carries one, else 500 (our own or the network's failure — retryable).
    pub fn from_grpc_status(st: &tonic::Status) -> HttpError {
        if let Ok(rpc) = RpcStatus::decode(st.details()) {
            if (100..600).contains(&rpc.code) {
                let body = rpc
                    .details
                    .iter()
                    .find(|d| d.type_url == HTTP_RESPONSE_TYPE_URL)
                    .and_then(|d| HttpResponse::decode(d.value.as_slice()).ok())
                    .map(|r| String::from_utf8_lossy(&r.body).into_owned());
                return HttpError::new(rpc.code as u16, body.unwrap_or(rpc.message));
            }
        }
        let code = match st.code() {
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => 500,
            _ => 500,
        };
        HttpError::new(
            code,
            format!("rpc error: code = {:?} desc = {}", st.code(), st.message()),
        )
    }
}

impl From<tonic::Status> for HttpError {
    fn from(st: tonic::Status) -> Self {
        HttpError::from_grpc_status(&st)
    }
}

impl From<HttpError> for tonic::Status {
    fn from(e: HttpError) -> Self {
        e.to_grpc_status()
    }
}

/// Plain-text body, as Go's `http.Error` writes it.
impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let code = axum::http::StatusCode::from_u16(self.code).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = self.message;
        body.push('\n');
        (
            code,
            [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_code_survives_grpc() {
        for code in [400u16, 401, 413, 429, 500, 503] {
            let e = HttpError::new(code, format!("boom {code}"));
            let back = HttpError::from_grpc_status(&e.to_grpc_status());
            assert_eq!(back, e);
        }
    }

    #[test]
    fn plain_grpc_errors_become_500() {
        let e = HttpError::from_grpc_status(&tonic::Status::unavailable("connection refused"));
        assert_eq!(e.code, 500);
        assert!(e.message.contains("connection refused"));
    }
}
