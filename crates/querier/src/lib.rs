//! The querier: PromQL over the ingesters' recent data, served through the
//! Prometheus HTTP API (`/api/prom/api/v1/…`, `/prometheus/api/v1/…`) and
//! remote read.
//!
//! - [`ingesters`]: replica choice, fan-out with quorum, merge of replicas.
//! - [`api`]: HTTP handlers and Prometheus error types.
//! - [`remote_read`]: Prometheus remote read, samples or streamed XOR chunks.
//! - [`json`]: Prometheus's exact JSON encoding.
//! - `evaluation`: PromQL evaluations on their own bounded threads.
//! - `params`: API parameters (times, durations) parsed without overflow.

pub mod api;
mod evaluation;
pub mod ingesters;
pub mod json;
mod merge;
mod params;
pub mod remote_read;
pub mod store;

use std::sync::Arc;

use model::GoDuration;
use serde::{Deserialize, Serialize};
use server::config::Flag;
use server::{IngesterPool, Metrics};

pub use ingesters::IngesterQuerier;

/// `querier:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub max_concurrent: usize,
    pub timeout: GoDuration,
    pub max_samples: usize,
    pub lookback_delta: GoDuration,
    pub default_evaluation_interval: GoDuration,
    /// Ask ingesters only for data newer than this (0 = always); spec §6.1.
    pub query_ingesters_within: GoDuration,
    /// Ask the chunk store only for queries starting before now − this (0 = always).
    pub query_store_after: GoDuration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_concurrent: 20,
            timeout: GoDuration::secs(120),
            max_samples: 50_000_000,
            lookback_delta: GoDuration::secs(300),
            default_evaluation_interval: GoDuration::secs(60),
            query_ingesters_within: GoDuration::secs(0),
            query_store_after: GoDuration::secs(0),
        }
    }
}

pub const FLAGS: &[Flag] = &[
    Flag::new(
        "querier.max-concurrent",
        "max_concurrent",
        "The maximum number of concurrent queries; the rest wait.",
    ),
    Flag::new("querier.timeout", "timeout", "The timeout for a query."),
    Flag::new(
        "querier.max-samples",
        "max_samples",
        "Maximum number of samples a single query can load into memory.",
    ),
    Flag::new(
        "querier.lookback-delta",
        "lookback_delta",
        "Time since the last sample after which a time series is considered stale.",
    ),
    Flag::new(
        "querier.default-evaluation-interval",
        "default_evaluation_interval",
        "The default evaluation interval or step size for subqueries.",
    ),
    Flag::new(
        "querier.query-ingesters-within",
        "query_ingesters_within",
        "Maximum lookback beyond which queries are not sent to ingester. 0 means all queries are sent to ingester.",
    ),
    Flag::new(
        "querier.query-store-after",
        "query_store_after",
        "The time after which a metric should only be queried from storage and not just ingesters. 0 means all queries are sent to store.",
    ),
];

/// Where a querier reads series from.
enum Source {
    /// The ring's ingesters, per tenant (the querier role).
    Ingesters(IngesterQuerier),
    /// One fixed data set served to every tenant (embedding, tests).
    Queryable(Arc<dyn promql::Queryable>),
}

/// The querier role.
pub struct Querier {
    cfg: Config,
    source: Source,
    engine: promql::Engine,
    /// `-querier.max-concurrent` evaluation threads; queries beyond wait for one.
    threads: evaluation::QueryThreads,
}

impl Querier {
    pub fn new(
        cfg: Config,
        ring: ring::Ring,
        pool: IngesterPool,
        shard_by_all_labels: bool,
        metrics: &Metrics,
    ) -> Arc<Self> {
        Self::with_source(
            cfg,
            Source::Ingesters(IngesterQuerier::new(ring, pool, shard_by_all_labels)),
            metrics,
        )
    }

    /// A querier whose PromQL endpoints (`query`, `query_range`) read `data` for every
    /// tenant; endpoints that need ingesters (series, labels, metadata, remote read,
    /// user stats) answer 500.
    pub fn with_queryable(cfg: Config, data: Arc<dyn promql::Queryable>) -> Arc<Self> {
        Self::with_source(cfg, Source::Queryable(data), &Metrics::new())
    }

    fn with_source(cfg: Config, source: Source, metrics: &Metrics) -> Arc<Self> {
        let engine = promql::Engine::new(promql::EngineOpts {
            lookback_delta: cfg.lookback_delta.0,
            max_samples: cfg.max_samples,
            timeout: cfg.timeout.0,
            default_eval_interval: cfg.default_evaluation_interval.0,
        });
        Arc::new(Querier {
            threads: evaluation::QueryThreads::new(cfg.max_concurrent, metrics.panics()),
            source,
            engine,
            cfg,
        })
    }

    pub fn http_routes(self: &Arc<Self>) -> axum::Router {
        api::routes(self.clone())
    }

    /// The ingester reader, unless built [`Querier::with_queryable`].
    pub fn ingesters(&self) -> Option<&IngesterQuerier> {
        match &self.source {
            Source::Ingesters(i) => Some(i),
            Source::Queryable(_) => None,
        }
    }

    /// The ingester reader, or the 500 an endpoint that needs one answers without it.
    fn require_ingesters(&self) -> Result<&IngesterQuerier, api::ApiError> {
        self.ingesters().ok_or_else(|| {
            api::ApiError::internal("this endpoint needs ingesters; this querier reads a fixed data set")
        })
    }
}
