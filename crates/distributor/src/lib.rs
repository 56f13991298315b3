//! The distributor: the write path's front door (spec §1).
//!
//! A remote-write request is decoded ([`decode`]), every series normalised and
//! validated ([`validation`]), the tenant's ingestion rate enforced
//! ([`rate_limit`]), each series sharded by token and written to its replica
//! set with a per-series quorum ([`replication`]).
//!
//! - [`Distributor::push`]: the pipeline, for in-process callers (ruler).
//! - [`Distributor::http_routes`]: `POST /api/prom/push`, `POST /api/v1/push`.
//! - [`Config`] / [`FLAGS`] (`distributor:`), [`Limits`] / [`LIMITS_FLAGS`] (`limits:`).

pub mod config;
pub mod decode;
mod distributor;
mod http;
pub mod metrics;
pub mod rate_limit;
pub mod replication;
mod ring_adapter;
pub mod validation;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use config::{Config, Limits, FLAGS, LIMITS_FLAGS};
pub use decode::{decode_write_request, encode_write_request, DecodeError};
pub use distributor::{Distributor, INACTIVE_TENANT_TIMEOUT};
pub use replication::{IngesterPusher, Replica, ReplicaPicker, ReplicaSet};
pub use validation::ValidationError;

impl Distributor {
    /// `POST /api/prom/push` and `POST /api/v1/push` (tenant from `X-Scope-OrgID`).
    pub fn http_routes(self: &Arc<Self>) -> axum::Router {
        http::routes(self.clone())
    }
}
