//! The frontend's three config sections, as Cortex names them: `frontend:` (queue, downstream,
//! body limit, slow-query log), `query_range:` (the range-query middlewares and their limits) and
//! `frontend_worker:` (the querier side of the pull protocol).

use std::time::Duration;

use model::GoDuration;
use serde::{Deserialize, Serialize};
use server::config::Flag;
use storage::cache::CacheConfig;

/// `frontend:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct FrontendConfig {
    /// Bound of each tenant's queue; a full queue answers 429.
    pub max_outstanding_per_tenant: usize,
    /// Proxy to this Prometheus-compatible URL instead of queueing for queriers.
    pub downstream_url: String,
    /// Largest request body accepted (bytes).
    pub max_body_size: usize,
    /// Log queries slower than this (`0` = off, negative = every query); a string because a
    /// Go duration may be negative here.
    pub log_queries_longer_than: String,
    /// Queriers a tenant's queries may go to (0 = all); shuffle sharding.
    pub max_queriers_per_tenant: usize,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        FrontendConfig {
            max_outstanding_per_tenant: 100,
            downstream_url: String::new(),
            max_body_size: 10 << 20,
            log_queries_longer_than: "0s".into(),
            max_queriers_per_tenant: 0,
        }
    }
}

pub const FRONTEND_FLAGS: &[Flag] = &[
    Flag::new(
        "querier.max-outstanding-requests-per-tenant",
        "max_outstanding_per_tenant",
        "Maximum number of outstanding requests per tenant per frontend; requests beyond this error with HTTP 429.",
    ),
    Flag::new(
        "frontend.downstream-url",
        "downstream_url",
        "URL of downstream Prometheus (or querier prefix, e.g. http://querier:9009/prometheus); when set the frontend proxies instead of queueing.",
    ),
    Flag::new(
        "frontend.max-body-size",
        "max_body_size",
        "Max body size for downstream prometheus.",
    ),
    Flag::new(
        "frontend.log-queries-longer-than",
        "log_queries_longer_than",
        "Log queries that are slower than the specified duration. Set to 0 to disable. Set to < 0 to enable on all queries.",
    ),
    Flag::new(
        "frontend.max-queriers-per-tenant",
        "max_queriers_per_tenant",
        "Maximum number of queriers that can handle requests for a single tenant. 0 = all queriers.",
    ),
];

/// `query_range:` section, with the per-tenant read limits the middlewares enforce.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryRangeConfig {
    /// Split range queries at multiples of this (UTC); 0 = off.
    pub split_queries_by_interval: GoDuration,
    /// Snap start and end to multiples of the step.
    pub align_queries_with_step: bool,
    pub cache_results: bool,
    pub results_cache: ResultsCacheConfig,
    /// Attempts per request (5xx and transport errors only).
    pub max_retries: usize,
    /// Pieces of one split query in flight at once.
    pub max_query_parallelism: usize,
    /// Nothing newer than now − this is cached.
    pub max_cache_freshness: GoDuration,
}

impl Default for QueryRangeConfig {
    fn default() -> Self {
        QueryRangeConfig {
            split_queries_by_interval: GoDuration(Duration::ZERO),
            align_queries_with_step: false,
            cache_results: false,
            results_cache: ResultsCacheConfig::default(),
            max_retries: 5,
            max_query_parallelism: 14,
            max_cache_freshness: GoDuration::secs(60),
        }
    }
}

/// `query_range.results_cache:`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ResultsCacheConfig {
    pub cache: CacheConfig,
    /// `""` or `snappy`.
    pub compression: String,
}

const QUERY_RANGE_OWN_FLAGS: &[Flag] = &[
    Flag::new(
        "querier.split-queries-by-interval",
        "split_queries_by_interval",
        "Split queries by an interval and execute in parallel, 0 disables it. 24h is recommended.",
    ),
    Flag::new(
        "querier.align-querier-with-step",
        "align_queries_with_step",
        "Mutate incoming queries to align their start and end with their step.",
    ),
    Flag::new("querier.cache-results", "cache_results", "Cache query results."),
    Flag::new(
        "frontend.compression",
        "results_cache.compression",
        "Use compression in results cache. Supported values are: 'snappy' and '' (disable compression).",
    ),
    Flag::new(
        "querier.max-retries-per-request",
        "max_retries",
        "Maximum number of retries for a single request; beyond this, the downstream error is returned.",
    ),
    Flag::new(
        "querier.max-query-parallelism",
        "max_query_parallelism",
        "Maximum number of split queries will be scheduled in parallel by the frontend.",
    ),
    Flag::new(
        "frontend.max-cache-freshness",
        "max_cache_freshness",
        "Most recent allowed cacheable result, to prevent caching very recent results that might still be in flux.",
    ),
];

const RESULTS_CACHE_FLAGS: [Flag; 10] = storage::cache_flags!("frontend", "results_cache.cache");

pub const QUERY_RANGE_FLAGS: &[Flag] =
    &server::config::concat_flags::<17>(&[QUERY_RANGE_OWN_FLAGS, &RESULTS_CACHE_FLAGS]);

/// `frontend_worker:` section: how a querier pulls work from frontends.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerConfig {
    /// `host:port` of the frontend's gRPC server; empty = no worker.
    pub frontend_address: String,
    /// Concurrent requests pulled per frontend.
    pub parallelism: usize,
    /// This querier's ID towards the frontend (shuffle sharding); empty = the hostname.
    pub id: String,
    pub grpc_client_max_recv_msg_size: usize,
    /// Run `-querier.max-concurrent` workers instead of `parallelism` (Cortex's
    /// `-querier.worker-match-max-concurrent`); applied when the config is loaded.
    pub match_max_concurrent: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            frontend_address: String::new(),
            parallelism: 10,
            id: String::new(),
            grpc_client_max_recv_msg_size: 100 << 20,
            match_max_concurrent: false,
        }
    }
}

pub const WORKER_FLAGS: &[Flag] = &[
    Flag::new(
        "querier.frontend-address",
        "frontend_address",
        "Address of query frontend service, in host:port format.",
    ),
    Flag::new(
        "querier.worker-parallelism",
        "parallelism",
        "Number of simultaneous queries to process per query frontend.",
    ),
    Flag::new(
        "querier.id",
        "id",
        "Querier ID, sent to frontend service to identify requests from the same querier. Defaults to hostname.",
    ),
    Flag::new(
        "querier.frontend-client.grpc-max-recv-msg-size",
        "grpc_client_max_recv_msg_size",
        "gRPC client max receive message size (bytes).",
    ),
    Flag::new(
        "querier.worker-match-max-concurrent",
        "match_max_concurrent",
        "Force worker concurrency to match the -querier.max-concurrent option. Overrides querier.worker-parallelism.",
    ),
];

impl WorkerConfig {
    /// The configured ID, or the hostname, or a fixed name when there is none.
    pub fn querier_id(&self) -> String {
        if !self.id.is_empty() {
            return self.id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "querier".into())
    }
}

/// What `-frontend.log-queries-longer-than` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowQueryLog {
    Off,
    All,
    LongerThan(Duration),
}

impl FrontendConfig {
    pub fn slow_query_log(&self) -> Result<SlowQueryLog, String> {
        let s = self.log_queries_longer_than.trim();
        let (negative, d) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let d = if d == "0" {
            Duration::ZERO
        } else {
            model::duration::parse_duration(d).map_err(|e| format!("-frontend.log-queries-longer-than {s:?}: {e}"))?
        };
        Ok(match (negative, d.is_zero()) {
            (_, true) => SlowQueryLog::Off,
            (true, false) => SlowQueryLog::All,
            (false, false) => SlowQueryLog::LongerThan(d),
        })
    }
}
