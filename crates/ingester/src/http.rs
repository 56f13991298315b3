//! The ingester's HTTP endpoints (spec §3.9): a per-tenant stats listing.
//!
//! There is deliberately no raw remote-write route (Cortex's `/push`,
//! `/ingester/push`): on the all-in-one's public port it would let a client
//! write past the distributor's validation, rate limits and replication.
//! Samples reach an ingester only through the distributor (gRPC `Push`, or
//! the in-process hand-off when both run in one process).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::Ingester;

pub(crate) fn routes(ingester: Arc<Ingester>) -> Router {
    Router::new()
        .route("/ingester/all_user_stats", get(all_user_stats))
        .with_state(ingester)
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
