//! The ingester's HTTP endpoints (spec §3.9): remote-write straight into this
//! ingester (debugging) and a per-tenant stats listing.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use prost::Message;
use proto::cortex::WriteRequest;
use server::{HttpError, Tenant};

use crate::Ingester;

/// Largest compressed or decompressed push body accepted.
const MAX_PUSH_BYTES: usize = server::ingester_client::MAX_MESSAGE_SIZE;

pub(crate) fn routes(ingester: Arc<Ingester>) -> Router {
    Router::new()
        .route("/ingester/push", post(push))
        .route("/push", post(push))
        .route("/ingester/all_user_stats", get(all_user_stats))
        .layer(DefaultBodyLimit::max(MAX_PUSH_BYTES))
        .with_state(ingester)
}

/// Decodes a remote-write body: block-snappy compressed protobuf `WriteRequest`.
pub(crate) fn decode_write_request(body: &[u8]) -> Result<WriteRequest, HttpError> {
    let len = snap::raw::decompress_len(body).map_err(|e| HttpError::bad_request(format!("snappy: {e}")))?;
    if len > MAX_PUSH_BYTES {
        return Err(HttpError::new(
            413,
            format!("decompressed push body of {len} bytes exceeds the limit of {MAX_PUSH_BYTES} bytes"),
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| HttpError::bad_request(format!("snappy: {e}")))?;
    WriteRequest::decode(Bytes::from(raw)).map_err(|e| HttpError::bad_request(format!("protobuf: {e}")))
}

async fn push(State(ing): State<Arc<Ingester>>, Tenant(tenant): Tenant, body: Bytes) -> Result<StatusCode, HttpError> {
    let req = decode_write_request(&body)?;
    ing.push(&tenant, req).await?;
    Ok(StatusCode::OK)
}

#[derive(serde::Serialize)]
struct UserStatsJson {
    user_id: String,
    ingestion_rate: f64,
    num_series: u64,
    api_ingestion_rate: f64,
    rule_ingestion_rate: f64,
}

async fn all_user_stats(State(ing): State<Arc<Ingester>>) -> Json<Vec<UserStatsJson>> {
    Json(
        ing.all_user_stats()
            .into_iter()
            .map(|(user_id, s)| UserStatsJson {
                user_id,
                ingestion_rate: s.ingestion_rate,
                num_series: s.num_series,
                api_ingestion_rate: s.api_ingestion_rate,
                rule_ingestion_rate: s.rule_ingestion_rate,
            })
            .collect(),
    )
}
