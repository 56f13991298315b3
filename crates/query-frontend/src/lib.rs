//! The query-frontend (spec §7): sits in front of the queriers, queues every read per tenant so
//! one tenant cannot starve another, and runs range queries through split, results cache and
//! retries. Also the querier's side of the pull protocol.
//!
//! - [`config`]: the `frontend`, `query_range` and `frontend_worker` sections and their flags.
//! - [`http`]: the Prometheus API the frontend serves.
//! - [`queue`]: the fair per-tenant queue, with shuffle sharding of queriers.
//! - [`grpc`]: `frontend.Frontend/Process`, the queriers' pull stream.
//! - [`worker`]: the querier side: pull, execute against the querier's router, answer.
//! - [`middleware`]: limits, step alignment, split by interval, results cache.
//! - [`downstream`]: queue or proxy (`-frontend.downstream-url`), with retries.
//! - [`request`], [`response`]: range queries and matrices, parsed and written.
//! - [`error`]: [`FrontendError`] and its HTTP status.

pub mod config;
pub mod downstream;
pub mod error;
pub mod grpc;
pub mod http;
pub mod middleware;
pub mod queue;
pub mod request;
pub mod response;
pub mod worker;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use server::config::ConfigError;
use server::Metrics;

pub use config::{FrontendConfig, QueryRangeConfig, WorkerConfig};
pub use error::FrontendError;
use middleware::{Handler, Instrumented};
pub use queue::RequestQueue;

/// Per-tenant limits the frontend enforces that live in other sections.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// `-store.max-query-length` (0 = none).
    pub max_query_length: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UserLabels {
    user: String,
}

/// The query-frontend role.
pub struct Frontend {
    cfg: FrontendConfig,
    /// `None` in `-frontend.downstream-url` mode.
    queue: Option<Arc<RequestQueue>>,
    /// Every request but `query_range`: straight downstream, with retries.
    round_tripper: Arc<dyn downstream::RoundTripper>,
    range_chain: Arc<dyn Handler>,
    slow_query_log: config::SlowQueryLog,
    /// `cortex_query_seconds_total{user}`: wall time of the tenant's queries.
    query_seconds: Family<UserLabels, Counter<f64, AtomicU64>>,
}

impl Frontend {
    pub fn new(
        cfg: FrontendConfig,
        qr: QueryRangeConfig,
        limits: Limits,
        metrics: &Metrics,
    ) -> Result<Arc<Self>, ConfigError> {
        let slow_query_log = cfg.slow_query_log().map_err(ConfigError::Invalid)?;
        let (queue, to_downstream): (_, Arc<dyn downstream::RoundTripper>) = if cfg.downstream_url.is_empty() {
            let q = RequestQueue::new(cfg.max_outstanding_per_tenant, cfg.max_queriers_per_tenant, metrics);
            (Some(q.clone()), Arc::new(downstream::Queue(q)))
        } else {
            let p = downstream::Proxy::new(&cfg.downstream_url).map_err(ConfigError::Invalid)?;
            (None, Arc::new(p))
        };
        let retries = Histogram::new([0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        metrics.register(
            "cortex_query_frontend_retries",
            "Number of times a request is retried.",
            retries.clone(),
        );
        let round_tripper: Arc<dyn downstream::RoundTripper> = Arc::new(downstream::Retry {
            inner: to_downstream,
            max_attempts: qr.max_retries,
            retries,
        });
        let range_chain = build_chain(&qr, &limits, round_tripper.clone(), metrics)?;
        let query_seconds = Family::default();
        metrics.register(
            "cortex_query_seconds",
            "Total amount of wall clock time spend processing queries.",
            query_seconds.clone(),
        );
        Ok(Arc::new(Frontend {
            cfg,
            queue,
            round_tripper,
            range_chain,
            slow_query_log,
            query_seconds,
        }))
    }

    pub fn http_routes(self: &Arc<Self>) -> axum::Router {
        http::routes(self.clone())
    }

    /// The queue queriers pull from (`None` when proxying to a downstream URL).
    pub fn queue(&self) -> Option<&Arc<RequestQueue>> {
        self.queue.as_ref()
    }

    /// `frontend.Frontend` for remote queriers (`None` when proxying).
    pub fn grpc_service(
        &self,
        max_msg_size: usize,
    ) -> Option<proto::frontend::frontend_server::FrontendServer<grpc::FrontendService>> {
        self.queue.clone().map(|q| grpc::server(q, max_msg_size))
    }

    /// Ready once a querier can take requests (always, when proxying).
    pub fn check_ready(&self) -> Result<(), String> {
        match &self.queue {
            Some(q) if q.connected_queriers() == 0 => {
                Err("not ready: number of queriers connected to query-frontend is 0".into())
            }
            _ => Ok(()),
        }
    }

    /// Fails queued requests and releases waiting queriers.
    pub fn stop(&self) {
        if let Some(q) = &self.queue {
            q.stop();
        }
    }

    /// Query stats and the slow-query log (`-frontend.log-queries-longer-than`).
    fn observe(&self, tenant: &str, method: &str, url: &str, status: StatusCode, took: Duration) {
        self.query_seconds
            .get_or_create(&UserLabels { user: tenant.into() })
            .inc_by(took.as_secs_f64());
        let log = match self.slow_query_log {
            config::SlowQueryLog::Off => false,
            config::SlowQueryLog::All => true,
            config::SlowQueryLog::LongerThan(d) => took > d,
        };
        if log {
            tracing::info!(
                tenant,
                method,
                url,
                status = status.as_u16(),
                time_taken = ?took,
                "slow query detected"
            );
        }
    }
}

/// The range-query chain (spec §7.4), outermost first: limits, step alignment, split, results
/// cache, then the retrying downstream.
fn build_chain(
    qr: &QueryRangeConfig,
    limits: &Limits,
    downstream: Arc<dyn downstream::RoundTripper>,
    metrics: &Metrics,
) -> Result<Arc<dyn Handler>, ConfigError> {
    let duration = middleware::duration_family();
    metrics.register(
        "cortex_frontend_query_range_duration_seconds",
        "Total time spent in seconds doing query range requests.",
        duration.clone(),
    );
    let instrument = |name: &'static str, inner: Arc<dyn Handler>| -> Arc<dyn Handler> {
        Arc::new(Instrumented {
            name,
            inner,
            duration: duration.clone(),
        })
    };
    let mut h = instrument("retry", Arc::new(middleware::ToDownstream(downstream)));
    let split_ms = qr.split_queries_by_interval.0.as_millis() as i64;
    if qr.cache_results {
        let cache = storage::cache::build("frontend", &qr.results_cache.cache, metrics).ok_or_else(|| {
            ConfigError::Invalid(
                "-querier.cache-results needs a cache: -frontend.cache.enable-fifocache or -frontend.memcached.addresses"
                    .into(),
            )
        })?;
        let snappy = match qr.results_cache.compression.as_str() {
            "" => false,
            "snappy" => true,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "-frontend.compression: unsupported compression {other:?} (supported: snappy, \"\")"
                )))
            }
        };
        h = instrument(
            "results_cache",
            Arc::new(middleware::results_cache::ResultsCache {
                cache,
                next: h,
                // Without a split interval, extents are still grouped per day (Cortex's
                // -frontend.cache-split-interval default).
                interval_ms: if split_ms > 0 { split_ms } else { 86_400_000 },
                max_freshness_ms: qr.max_cache_freshness.0.as_millis() as i64,
                snappy,
                now_ms: model::now_ms,
            }),
        );
    }
    if split_ms > 0 {
        let split_queries = Counter::default();
        metrics.register(
            "cortex_frontend_split_queries",
            "Total number of underlying query requests after the split by interval is applied.",
            split_queries.clone(),
        );
        h = instrument(
            "split_by_interval",
            Arc::new(middleware::split::SplitByInterval {
                interval_ms: split_ms,
                max_parallelism: qr.max_query_parallelism,
                next: h,
                split_queries,
            }),
        );
    }
    if qr.align_queries_with_step {
        h = instrument("step_align", Arc::new(middleware::limits::StepAlign { next: h }));
    }
    Ok(instrument(
        "limits",
        Arc::new(middleware::limits::MaxQueryLength {
            max_ms: limits.max_query_length.as_millis() as i64,
            next: h,
        }),
    ))
}
