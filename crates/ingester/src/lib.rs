//! The ingester role (chunks storage, spec §3): keeps each tenant's recent
//! samples in memory as Prometheus XOR chunks and serves them to queriers.
//!
//! - [`Ingester::push`] appends a `WriteRequest` under Cortex's rules (§3.2):
//!   duplicates are ignored, out-of-order samples and new values for an
//!   existing timestamp are rejected one by one, and the first such error is
//!   returned as a 400 after the rest of the request has been applied.
//! - Series live in [`user_state::UserState`]: 128 lock-striped shards keyed
//!   by fingerprint, with an inverted index for matcher lookups.
//! - [`Ingester::grpc_service`] serves every `cortex.Ingester` RPC; hand-over
//!   (`TransferChunks`) is refused on purpose (see [`grpc`]).
//! - [`Ingester::http_routes`]: stats, flush and shutdown endpoints (no raw
//!   push: writes go through the distributor).
//!
//! - Durability: [`wal`] logs every push before it is acknowledged and
//!   checkpoints memory; [`flush`] cuts and flushes chunks to the store.

mod errors;
pub mod flush;
pub mod grpc;
mod http;
mod index;
mod lifecycle;
mod metrics;
mod series;
mod symbols;
mod user_state;
pub mod wal;

#[cfg(test)]
mod durability_tests;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU8;
use std::sync::{Arc, OnceLock};

use model::{GoDuration, Labels, Matcher};
use parking_lot::RwLock;
use proto::cortex::{write_request::SourceEnum, MetricMetadata, UserStatsResponse, WriteRequest};
use serde::{Deserialize, Serialize};
use server::config::Flag;
use server::HttpError;

pub use grpc::IngesterService;

use metrics::{DiscardReason, IngesterMetrics, UserLabel};
use user_state::{MetadataLimits, PushOutcome, SeriesLimits, UserState};

/// `ingester:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// How this ingester registers in the ring (`-ingester.*`, `-ring.*` flags).
    pub lifecycler: ring::LifecyclerConfig,
    /// Most series one tenant may have in this ingester (0 = unlimited).
    pub max_series_per_user: usize,
    /// Most series one metric name may have per tenant in this ingester (0 = unlimited).
    pub max_series_per_metric: usize,
    /// Most series a non-streaming `Query` may return (0 = unlimited).
    pub max_series_per_query: usize,
    /// Most samples a non-streaming `Query` may return (0 = unlimited).
    pub max_samples_per_query: usize,
    /// How often the per-tenant ingestion rates are recomputed.
    pub rate_update_period: GoDuration,
    /// Most metadata entries kept per tenant (0 = unlimited).
    pub max_metadata_per_user: usize,
    /// Most metadata entries kept per metric (0 = unlimited).
    pub max_metadata_per_metric: usize,
    /// Metadata not pushed again for this long is forgotten.
    pub metadata_retain_period: GoDuration,
    /// A tenant without series that pushed nothing for this long loses its
    /// per-tenant metric label sets (its state went when its last series did).
    pub active_series_metrics_idle_timeout: GoDuration,
    /// WAL and checkpoints (`-ingester.wal-*`, `-ingester.checkpoint-*`).
    pub walconfig: wal::WalConfig,
    /// Chunk cutting and flushing; its keys sit directly in this section, as in Cortex.
    #[serde(flatten)]
    pub flush: flush::FlushConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lifecycler: ring::LifecyclerConfig::default(),
            max_series_per_user: 5_000_000,
            max_series_per_metric: 50_000,
            max_series_per_query: 100_000,
            max_samples_per_query: 1_000_000,
            rate_update_period: GoDuration::secs(15),
            max_metadata_per_user: 8000,
            max_metadata_per_metric: 10,
            metadata_retain_period: GoDuration::secs(600),
            active_series_metrics_idle_timeout: GoDuration::secs(600),
            walconfig: wal::WalConfig::default(),
            flush: flush::FlushConfig::default(),
        }
    }
}

impl Config {
    pub const FLAGS: &'static [Flag] = &[
        Flag::new(
            "ingester.max-series-per-user",
            "max_series_per_user",
            "The maximum number of active series per user, per ingester. 0 to disable.",
        ),
        Flag::new(
            "ingester.max-series-per-metric",
            "max_series_per_metric",
            "The maximum number of active series per metric name, per ingester. 0 to disable.",
        ),
        Flag::new(
            "ingester.max-series-per-query",
            "max_series_per_query",
            "The maximum number of series for which a query can fetch samples from each ingester.",
        ),
        Flag::new(
            "ingester.max-samples-per-query",
            "max_samples_per_query",
            "The maximum number of samples that a query can return.",
        ),
        Flag::new(
            "ingester.rate-update-period",
            "rate_update_period",
            "Period with which to update the per-user ingestion rates.",
        ),
        Flag::new(
            "ingester.max-metadata-per-user",
            "max_metadata_per_user",
            "The maximum number of active metrics with metadata per user, per ingester. 0 to disable.",
        ),
        Flag::new(
            "ingester.max-metadata-per-metric",
            "max_metadata_per_metric",
            "The maximum number of metadata per metric, per ingester. 0 to disable.",
        ),
        Flag::new(
            "ingester.metadata-retain-period",
            "metadata_retain_period",
            "Period at which metadata we have not seen will remain in memory before being deleted.",
        ),
        Flag::new(
            "ingester.active-series-metrics-idle-timeout",
            "active_series_metrics_idle_timeout",
            "After what time a tenant with no series in memory and no pushes has its per-tenant metrics removed.",
        ),
    ];

    /// [`Config::FLAGS`] plus the lifecycler's flags, with their YAML paths
    /// nested under `lifecycler.` (all relative to the `ingester` section).
    pub fn flags() -> Vec<Flag> {
        static LIFECYCLER: std::sync::OnceLock<Vec<Flag>> = std::sync::OnceLock::new();
        let nested = LIFECYCLER.get_or_init(|| {
            ring::LifecyclerConfig::FLAGS
                .iter()
                .map(|f| {
                    // Leaked once per process (OnceLock): Flag holds &'static str.
                    let path: &'static str = Box::leak(format!("lifecycler.{}", f.path).into_boxed_str());
                    Flag::new(f.name, path, f.help)
                })
                .collect()
        });
        Self::FLAGS
            .iter()
            .chain(wal::WAL_FLAGS)
            .chain(flush::FLUSH_FLAGS)
            .chain(nested.iter())
            .copied()
            .collect()
    }

    fn series_limits(&self) -> SeriesLimits {
        SeriesLimits {
            max_series_per_user: self.max_series_per_user,
            max_series_per_metric: self.max_series_per_metric,
        }
    }

    fn metadata_limits(&self) -> MetadataLimits {
        MetadataLimits {
            max_per_user: self.max_metadata_per_user,
            max_per_metric: self.max_metadata_per_metric,
        }
    }
}

/// Readiness source (the ring lifecycler in production).
pub type ReadinessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The ingester: per-tenant in-memory series behind `cortex.Ingester`.
pub struct Ingester {
    cfg: Config,
    /// Read-locked on every request, write-locked only to add or remove a
    /// tenant. A tenant is kept only while it has series or metadata: one
    /// whose pushes all fail leaves nothing behind ([`Ingester::release_if_empty`]).
    users: RwLock<HashMap<Arc<str>, Arc<UserState>>>,
    /// Last push per tenant, to drop the metric label sets of idle tenants.
    activity: server::tenant_activity::TenantActivity,
    metrics: IngesterMetrics,
    lifecycler: RwLock<Option<Arc<ring::Lifecycler>>>,
    readiness: RwLock<Option<ReadinessCheck>>,
    flusher: flush::Flusher,
    wal: OnceLock<Arc<wal::Wal>>,
    wal_metrics: wal::WalMetrics,
    /// Service state (lifecycle.rs): starting (WAL replay), running, stopping…
    state: AtomicU8,
    started: tokio::sync::Notify,
    start_error: parking_lot::Mutex<Option<String>>,
    replay_stats: parking_lot::Mutex<Option<wal::replay::ReplayStats>>,
}

impl std::fmt::Debug for Ingester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingester")
            .field("users", &self.users.read().len())
            .finish()
    }
}

/// A series returned by [`Ingester::query`].
pub type QueriedSeries = model::Series;

impl Ingester {
    /// Builds the ingester and, when called inside a tokio runtime, starts the
    /// loop that updates ingestion rates and purges stale metadata every
    /// `rate_update_period` (it stops when the ingester is dropped).
    pub fn new(cfg: Config, metrics: &server::Metrics) -> Arc<Ingester> {
        let ing = Arc::new(Ingester {
            flusher: flush::Flusher::new(&cfg.flush, metrics),
            cfg,
            users: RwLock::new(HashMap::new()),
            activity: Default::default(),
            metrics: IngesterMetrics::new(metrics),
            lifecycler: RwLock::new(None),
            readiness: RwLock::new(None),
            wal: OnceLock::new(),
            wal_metrics: wal::WalMetrics::new(metrics),
            state: AtomicU8::new(lifecycle::STARTING),
            started: tokio::sync::Notify::new(),
            start_error: parking_lot::Mutex::new(None),
            replay_stats: parking_lot::Mutex::new(None),
        });
        ing.start_wal();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            ing.start_flush_loops(&rt);
        }
        let period = ing.cfg.rate_update_period.0;
        if !period.is_zero() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                spawn_every(&rt, &ing, period, |ing| async move { ing.tick() });
            }
        }
        ing
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Installs the ring lifecycler this ingester registered with; from now
    /// on [`Ingester::check_ready`] is the lifecycler's readiness (spec §2.3).
    pub fn set_lifecycler(&self, lifecycler: Arc<ring::Lifecycler>) {
        *self.lifecycler.write() = Some(lifecycler);
    }

    pub fn lifecycler(&self) -> Option<Arc<ring::Lifecycler>> {
        self.lifecycler.read().clone()
    }

    /// A readiness source for set-ups without a ring (single-process tests,
    /// embedded use); the lifecycler, when set, takes precedence.
    pub fn set_readiness_check(&self, check: ReadinessCheck) {
        *self.readiness.write() = Some(check);
    }

    /// The lifecycler's readiness if one is set, else the installed check,
    /// else ready.
    pub fn check_ready(&self) -> Result<(), String> {
        self.state_ready()?;
        if let Some(l) = self.lifecycler() {
            return l.check_ready();
        }
        let check = self.readiness.read().clone();
        match check {
            Some(check) => check(),
            None => Ok(()),
        }
    }

    /// The gRPC service (`cortex.Ingester`). Message sizes are limited by
    /// the server (`-server.grpc-max-*-msg-size-bytes`, [`server::grpc`]),
    /// so tonic's own per-service limits are lifted here.
    pub fn grpc_service(self: &Arc<Self>) -> proto::cortex::ingester_server::IngesterServer<IngesterService> {
        proto::cortex::ingester_server::IngesterServer::new(IngesterService::new(self.clone()))
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// `GET /ingester/all_user_stats`, `/flush` and `/shutdown` (see [`http`]
    /// for why there is no raw push route).
    pub fn http_routes(self: &Arc<Self>) -> axum::Router {
        http::routes(self.clone()).merge(flush::routes(self.clone()))
    }

    /// Appends a write request for `tenant` (spec §3.2). Every sample is
    /// tried; the first client error is returned as a 400 prefixed
    /// `user=<tenant>: ` after the others were applied.
    pub async fn push(&self, tenant: &str, req: WriteRequest) -> Result<(), HttpError> {
        self.check_accepting()?;
        let (result, batch) = self.append(tenant, &req);
        // Logged after the in-memory append and before the acknowledgement,
        // even when some samples were rejected: the others were applied.
        self.log(batch).await?;
        result
    }

    /// The in-memory half of a push: the push's result and, with a WAL, the
    /// records to log before acknowledging it.
    pub(crate) fn append(&self, tenant: &str, req: &WriteRequest) -> (Result<(), HttpError>, Option<wal::WalBatch>) {
        let mut out = PushOutcome {
            wal: self.wal.get().map(|_| wal::WalBatch::new(tenant)),
            spread_cycle_ms: self.spread_cycle_ms(),
            ..Default::default()
        };
        let result = self.push_request(tenant, req, &mut out);
        (result, out.wal.take())
    }

    /// The durable half of a push: one WAL write for all of its records.
    pub(crate) async fn log(&self, batch: Option<wal::WalBatch>) -> Result<(), HttpError> {
        if let (Some(wal), Some(batch)) = (self.wal.get(), batch) {
            wal.log(&batch)
                .await
                .map_err(|e| HttpError::internal(format!("writing to the WAL: {e}")))?;
        }
        Ok(())
    }

    fn push_request(&self, tenant: &str, req: &WriteRequest, out: &mut PushOutcome) -> Result<(), HttpError> {
        let user = self.user_or_create(tenant);
        let now = model::now_ms();
        let limits = self.cfg.series_limits();
        // One scratch buffer per request: label pairs are borrowed from the
        // request, so no per-series or per-sample allocation happens here.
        let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
        for ts in &req.timeseries {
            pairs.clear();
            pairs.extend(
                ts.labels
                    .iter()
                    .filter(|l| !l.value.is_empty())
                    .map(|l| (&l.name[..], &l.value[..])),
            );
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            pairs.dedup_by(|later, earlier| later.0 == earlier.0);
            let fp = model::fingerprint(pairs.iter().copied());
            user.push_series(fp, &pairs, &ts.samples, limits, now, out);
        }
        if !req.metadata.is_empty() {
            self.ingest_metadata(&user, &req.metadata, now);
        }
        self.record_push(&user, req.source, out);
        if out.series_created == 0 {
            self.release_if_empty(user);
        }
        match out.first_error.take() {
            Some(e) => Err(HttpError::bad_request(format!("user={tenant}: {e}"))),
            None => Ok(()),
        }
    }

    fn ingest_metadata(&self, user: &UserState, metadata: &[MetricMetadata], now: i64) {
        let limits = self.cfg.metadata_limits();
        let mut rejected = 0;
        for md in metadata {
            if user.add_metadata(md, now, limits) {
                self.metrics.ingested_metadata.inc();
            } else {
                rejected += 1;
            }
        }
        if rejected > 0 {
            // Best effort, as Cortex: metadata over the limits is logged, not an error.
            tracing::debug!(tenant = %user.tenant, rejected, "metadata over the per-user or per-metric limit dropped");
        }
    }

    fn record_push(&self, user: &UserState, source: i32, out: &PushOutcome) {
        let m = &self.metrics;
        let now = std::time::Instant::now();
        self.activity.touch(&user.tenant, now);
        m.ingested_samples.inc_by(out.appended);
        m.ingested_samples_failures.inc_by(out.failed());
        for reason in DiscardReason::ALL {
            let n = out.discarded[reason.index()];
            if n > 0 {
                self.activity.discarded(&user.tenant, reason.as_str(), now);
                m.discard(reason, &user.tenant, n);
            }
        }
        if out.series_created > 0 {
            m.memory_series.inc_by(out.series_created as i64);
            m.series_created
                .get_or_create(&UserLabel {
                    user: user.tenant.to_string(),
                })
                .inc_by(out.series_created);
        }
        if out.chunks_created > 0 {
            m.memory_chunks.inc_by(out.chunks_created as i64);
        }
        if source == SourceEnum::Rule as i32 {
            user.rule_rate.add(out.appended);
        } else {
            user.api_rate.add(out.appended);
        }
    }

    fn user(&self, tenant: &str) -> Option<Arc<UserState>> {
        self.users.read().get(tenant).cloned()
    }

    fn user_or_create(&self, tenant: &str) -> Arc<UserState> {
        if let Some(u) = self.user(tenant) {
            return u;
        }
        let mut users = self.users.write();
        users
            .entry(Arc::from(tenant))
            .or_insert_with(|| {
                self.metrics.memory_users.inc();
                Arc::new(UserState::new(Arc::from(tenant), self.cfg.rate_update_period.0))
            })
            .clone()
    }

    /// Forgets `user` if it holds nothing (no series, no metadata) and
    /// nobody else is using it. Every other holder got its reference under
    /// the `users` lock, which is held here, so a count of one means no
    /// push can be about to add a series to it.
    fn release_if_empty(&self, user: Arc<UserState>) {
        if !user.is_empty() {
            return;
        }
        let tenant = user.tenant.clone();
        drop(user);
        let mut users = self.users.write();
        if let Some(u) = users.get(&*tenant) {
            if Arc::strong_count(u) == 1 && u.is_empty() {
                users.remove(&*tenant);
                self.metrics.memory_users.dec();
            }
        }
    }

    /// Drops every tenant left without series and metadata (their last
    /// series was flushed, their metadata expired), then the metric label
    /// sets of tenants gone and idle for `active_series_metrics_idle_timeout`.
    pub(crate) fn purge_idle_tenants(&self, now: std::time::Instant) {
        let empty: Vec<Arc<UserState>> = self.users_snapshot().into_iter().filter(|u| u.is_empty()).collect();
        for user in empty {
            self.release_if_empty(user);
        }
        let idle = self.cfg.active_series_metrics_idle_timeout.0;
        let gone = self.activity.purge_idle(now, idle, |tenant| self.users.read().contains_key(tenant));
        for t in gone {
            self.metrics.forget_user(&t.tenant, &t.reasons);
        }
    }

    fn users_snapshot(&self) -> Vec<Arc<UserState>> {
        self.users.read().values().cloned().collect()
    }

    /// Recomputes ingestion rates and forgets metadata not seen within the
    /// retain period. Runs every `rate_update_period`.
    pub fn tick(&self) {
        let older_than = model::now_ms() - self.cfg.metadata_retain_period.as_millis();
        for user in self.users_snapshot() {
            user.api_rate.tick();
            user.rule_rate.tick();
            user.purge_metadata(older_than);
        }
        self.purge_idle_tenants(std::time::Instant::now());
    }

    /// Number of tenants with state in this ingester.
    pub fn num_users(&self) -> usize {
        self.users.read().len()
    }

    /// Decoded samples in `[from, through]` of every series of `tenant`
    /// matching all `matchers` (the non-streaming `Query` RPC). Enforces
    /// `max_series_per_query` / `max_samples_per_query` with 413.
    pub fn query(
        &self,
        tenant: &str,
        from: i64,
        through: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<QueriedSeries>, HttpError> {
        self.metrics.queries.inc();
        let Some(user) = self.user(tenant) else {
            self.metrics.queried_series.observe(0.0);
            return Ok(Vec::new());
        };
        let fps = user.candidate_fingerprints(matchers);
        let (max_series, max_samples) = (self.cfg.max_series_per_query, self.cfg.max_samples_per_query);
        let mut result = Vec::new();
        let mut total_samples = 0usize;
        let mut limit_error: Option<HttpError> = None;
        user.for_each_matching(&fps, matchers, |s, labels| {
            if limit_error.is_some() {
                return;
            }
            if max_series > 0 && result.len() >= max_series {
                limit_error = Some(HttpError::new(
                    413,
                    format!("exceeded maximum number of series in a query (limit: {max_series})"),
                ));
                return;
            }
            let mut samples = Vec::new();
            for c in s.chunks.iter().filter(|c| c.overlaps(from, through)) {
                samples.extend(
                    c.chunk
                        .iter()
                        .filter(|(t, _)| *t >= from && *t <= through)
                        .map(|(t, v)| model::Sample { t, v }),
                );
            }
            if samples.is_empty() {
                return;
            }
            total_samples += samples.len();
            if max_samples > 0 && total_samples > max_samples {
                limit_error = Some(HttpError::new(
                    413,
                    format!("exceeded maximum number of samples in a query (limit: {max_samples})"),
                ));
                return;
            }
            result.push(model::Series {
                labels: labels.clone(),
                samples,
            });
        });
        if let Some(e) = limit_error {
            return Err(e);
        }
        self.metrics.queried_series.observe(result.len() as f64);
        self.metrics.queried_samples.observe(total_samples as f64);
        Ok(result)
    }

    /// Label sets of `tenant`'s series matching any of the matcher sets
    /// (`MetricsForLabelMatchers`; the time range is ignored, as in Cortex).
    pub fn series_for_matchers(&self, tenant: &str, matcher_sets: &[Vec<Matcher>]) -> Vec<Labels> {
        let Some(user) = self.user(tenant) else {
            return Vec::new();
        };
        let mut seen: HashSet<Labels> = HashSet::new();
        let mut out = Vec::new();
        for matchers in matcher_sets {
            let fps = user.candidate_fingerprints(matchers);
            user.for_each_matching(&fps, matchers, |_, labels| {
                if seen.insert(labels.clone()) {
                    out.push(labels.clone());
                }
            });
        }
        out
    }

    /// Every label name of `tenant`'s series, sorted.
    pub fn label_names(&self, tenant: &str) -> Vec<String> {
        self.user(tenant)
            .map(|u| u.index.label_names(&u.symbols))
            .unwrap_or_default()
    }

    /// Every value of label `name` among `tenant`'s series, sorted.
    pub fn label_values(&self, tenant: &str, name: &str) -> Vec<String> {
        self.user(tenant)
            .map(|u| u.index.label_values(&u.symbols, name))
            .unwrap_or_default()
    }

    /// Series count and ingestion rates of `tenant` (zero if unknown).
    pub fn user_stats(&self, tenant: &str) -> UserStatsResponse {
        self.user(tenant).map(|u| stats_of(&u)).unwrap_or_default()
    }

    /// Stats of every tenant, sorted by tenant ID.
    pub fn all_user_stats(&self) -> Vec<(String, UserStatsResponse)> {
        let mut all: Vec<_> = self
            .users_snapshot()
            .iter()
            .map(|u| (u.tenant.to_string(), stats_of(u)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Metric metadata pushed by `tenant` and still retained.
    pub fn metadata(&self, tenant: &str) -> Vec<MetricMetadata> {
        self.user(tenant).map(|u| u.metadata()).unwrap_or_default()
    }

    /// Number of series `tenant` has in memory.
    pub fn num_series(&self, tenant: &str) -> usize {
        self.user(tenant).map(|u| u.num_series()).unwrap_or(0)
    }

    /// Number of chunks `tenant` has in memory (walks every series).
    pub fn num_chunks(&self, tenant: &str) -> usize {
        self.user(tenant).map(|u| u.num_chunks()).unwrap_or(0)
    }

    /// Number of series of `tenant` named `metric`.
    pub fn num_series_for_metric(&self, tenant: &str, metric: &str) -> usize {
        self.user(tenant).map(|u| u.metric_name_count(metric)).unwrap_or(0)
    }
}

fn stats_of(u: &UserState) -> UserStatsResponse {
    let api = u.api_rate.rate();
    let rule = u.rule_rate.rate();
    UserStatsResponse {
        ingestion_rate: api + rule,
        num_series: u.num_series() as u64,
        api_ingestion_rate: api,
        rule_ingestion_rate: rule,
    }
}

/// Calls `tick` every `period` (the first time after one period) for as long
/// as `owner` lives: the loop holds only a weak reference, so dropping the
/// owner ends it.
pub(crate) fn spawn_every<T, F, Fut>(rt: &tokio::runtime::Handle, owner: &Arc<T>, period: std::time::Duration, tick: F)
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let weak = Arc::downgrade(owner);
    rt.spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // completes at once
        loop {
            ticker.tick().await;
            let Some(strong) = weak.upgrade() else { break };
            tick(strong).await;
        }
    });
}
