//! The push pipeline (spec §1.2): count, normalise and validate, rate-limit,
//! shard, replicate with quorum.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use proto::cortex::{MetricMetadata, TimeSeries, WriteRequest};
use server::HttpError;

use crate::config::{Config, Limits};
use crate::metrics::{
    DistributorMetrics, IngesterTypeLabels, ReasonUserLabels, UserLabel, TYPE_METADATA, TYPE_SAMPLES,
};
use crate::rate_limit::RateLimiter;
use server::tenant_activity::TenantActivity;
use crate::replication::{do_batch, IngesterJob, IngesterPusher, QuorumTracker, Replica, ReplicaPicker};
use crate::validation::{metric_name, normalize_labels, ValidationError, Validator, REASON_RATE_LIMITED};

/// The distributor role: accepts writes and forwards them to ingesters.
pub struct Distributor {
    pub(crate) cfg: Config,
    limits: Limits,
    replicas: Arc<dyn ReplicaPicker>,
    pusher: Arc<dyn IngesterPusher>,
    rate_limiter: RateLimiter,
    metrics: DistributorMetrics,
    /// Last push per tenant: per-tenant metrics and rate-limiter buckets of
    /// tenants idle for [`INACTIVE_TENANT_TIMEOUT`] are dropped.
    activity: TenantActivity,
}

/// After this long without a push, a tenant's metric label sets and its
/// rate-limiter bucket are freed (Cortex's distributor: 15 minutes).
pub const INACTIVE_TENANT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

impl Distributor {
    /// A distributor over any replica picker and ingester transport (the ring
    /// and the gRPC client pool in production; fakes in tests).
    pub fn with_replica_picker(
        cfg: Config,
        limits: Limits,
        replicas: Arc<dyn ReplicaPicker>,
        pusher: Arc<dyn IngesterPusher>,
        metrics: &server::Metrics,
    ) -> Arc<Distributor> {
        let metrics = DistributorMetrics::register(metrics);
        metrics.replication_factor.set(replicas.replication_factor() as i64);
        let d = Arc::new(Distributor {
            cfg,
            limits,
            replicas,
            pusher,
            rate_limiter: RateLimiter::default(),
            metrics,
            activity: TenantActivity::default(),
        });
        d.start_client_cleanup();
        d.start_inactive_tenant_cleanup();
        d
    }

    /// Every fifth of the timeout, frees the state of tenants idle for
    /// [`INACTIVE_TENANT_TIMEOUT`] (inside a tokio runtime; stops with the distributor).
    fn start_inactive_tenant_cleanup(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Distributor> = Arc::downgrade(self);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(INACTIVE_TENANT_TIMEOUT / 5);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(d) = weak.upgrade() else { return };
                d.purge_inactive_tenants(Instant::now(), INACTIVE_TENANT_TIMEOUT);
            }
        });
    }

    /// Removes the metric label sets and rate-limiter bucket of every tenant
    /// without a push for `idle` before `now`. Returns how many tenants went.
    pub fn purge_inactive_tenants(&self, now: Instant, idle: Duration) -> usize {
        let gone = self.activity.purge_idle(now, idle, |_| false);
        let m = &self.metrics;
        for t in &gone {
            let user = UserLabel { user: t.tenant.clone() };
            m.samples_in.remove(&user);
            m.metadata_in.remove(&user);
            m.received_samples.remove(&user);
            m.received_metadata.remove(&user);
            m.latest_seen_sample_timestamp.remove(&user);
            for reason in &t.reasons {
                let labels = ReasonUserLabels {
                    reason: reason.to_string(),
                    user: t.tenant.clone(),
                };
                m.discarded_samples.remove(&labels);
                m.discarded_metadata.remove(&labels);
            }
        }
        self.rate_limiter.purge_idle(now, idle);
        gone.len()
    }

    /// Tenants with a rate-limiter bucket (for tests of the clean-up).
    pub fn rate_limited_tenants(&self) -> usize {
        self.rate_limiter.len()
    }

    /// Periodically drops pooled connections to ingesters that left the ring,
    /// so a churned ingester's address does not keep a connection forever.
    /// Runs only inside a tokio runtime and stops with the distributor.
    fn start_client_cleanup(self: &Arc<Self>) {
        if !self.cfg.health_check_ingesters || self.cfg.client_cleanup_period.is_zero() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Distributor> = Arc::downgrade(self);
        let period: Duration = self.cfg.client_cleanup_period.into();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(d) = weak.upgrade() else { return };
                if let Some(members) = d.replicas.member_addrs() {
                    d.pusher.retain(&|addr| members.iter().any(|m| &**m == addr));
                }
            }
        });
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Shard token of a series whose labels are sorted.
    fn series_token(&self, tenant: &str, ts: &TimeSeries) -> u32 {
        if self.cfg.shard_by_all_labels {
            model::shard_token_by_all_labels(tenant, ts.labels.iter().map(|l| (&l.name[..], &l.value[..])))
        } else {
            model::shard_token_by_metric(tenant, metric_name(&ts.labels).unwrap_or_default())
        }
    }

    /// Shard token of a metadata entry: per metric family when sharding by all
    /// labels, else per tenant (Cortex's `shardByUser`).
    fn metadata_token(&self, tenant: &str, m: &MetricMetadata) -> u32 {
        let family: &[u8] = if self.cfg.shard_by_all_labels {
            m.metric_family_name.as_bytes()
        } else {
            b""
        };
        model::shard_token_by_metric(tenant, family)
    }

    fn discard(&self, family_is_metadata: bool, reason: &'static str, tenant: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.activity.discarded(tenant, reason, Instant::now());
        let family = if family_is_metadata {
            &self.metrics.discarded_metadata
        } else {
            &self.metrics.discarded_samples
        };
        family
            .get_or_create(&ReasonUserLabels {
                reason: reason.to_string(),
                user: tenant.to_string(),
            })
            .inc_by(n);
    }

    /// Validates `req` for `tenant` and writes what is valid to the ingesters.
    ///
    /// Ok: everything stored. Err 400: some or all series were invalid (the
    /// valid ones were stored). Err 429: rate limited (nothing stored). Other
    /// errors: the ingester error that broke the write quorum.
    pub async fn push(&self, tenant: &str, req: WriteRequest) -> Result<(), HttpError> {
        let WriteRequest {
            timeseries,
            metadata,
            skip_label_name_validation,
            source,
        } = req;
        self.activity.touch(tenant, Instant::now());
        let user = UserLabel {
            user: tenant.to_string(),
        };
        let samples_in: usize = timeseries.iter().map(|ts| ts.samples.len()).sum();
        self.metrics.samples_in.get_or_create(&user).inc_by(samples_in as u64);
        self.metrics
            .metadata_in
            .get_or_create(&user)
            .inc_by(metadata.len() as u64);

        let validator = Validator::new(&self.limits, skip_label_name_validation, model::now_ms());
        let mut first_error: Option<ValidationError> = None;
        let mut series = Vec::with_capacity(timeseries.len());
        let mut series_tokens = Vec::with_capacity(timeseries.len());
        let mut validated_samples = 0usize;
        let mut latest_ms = i64::MIN;
        for mut ts in timeseries {
            normalize_labels(&mut ts.labels);
            if ts.labels.is_empty() {
                continue;
            }
            if let Err(e) = validator.validate_series(&ts) {
                self.discard(false, e.reason(), tenant, ts.samples.len() as u64);
                first_error.get_or_insert(e);
                continue;
            }
            series_tokens.push(self.series_token(tenant, &ts));
            validated_samples += ts.samples.len();
            if let Some(last) = ts.samples.iter().map(|s| s.timestamp_ms).max() {
                latest_ms = latest_ms.max(last);
            }
            series.push(ts);
        }
        let mut valid_metadata = Vec::with_capacity(metadata.len());
        let mut metadata_tokens = Vec::with_capacity(metadata.len());
        for m in metadata {
            if let Err(e) = validator.validate_metadata(&m) {
                self.discard(true, e.reason(), tenant, 1);
                first_error.get_or_insert(e);
                continue;
            }
            metadata_tokens.push(self.metadata_token(tenant, &m));
            valid_metadata.push(m);
        }
        self.metrics
            .received_samples
            .get_or_create(&user)
            .inc_by(validated_samples as u64);
        self.metrics
            .received_metadata
            .get_or_create(&user)
            .inc_by(valid_metadata.len() as u64);

        let partial = first_error.map(HttpError::from);
        if series.is_empty() && valid_metadata.is_empty() {
            return partial.map_or(Ok(()), Err);
        }

        let total = validated_samples + valid_metadata.len();
        if !self.rate_limiter.allow_n(
            tenant,
            self.limits.ingestion_rate,
            self.limits.ingestion_burst_size,
            total,
            Instant::now(),
        ) {
            self.discard(false, REASON_RATE_LIMITED, tenant, validated_samples as u64);
            self.discard(true, REASON_RATE_LIMITED, tenant, valid_metadata.len() as u64);
            return Err(HttpError::new(
                429,
                format!(
                    "ingestion rate limit ({}) exceeded while adding {} samples and {} metadata \
                     (err-cortex-tenant-rate-limited: raise -distributor.ingestion-rate-limit or \
                     -distributor.ingestion-burst-size ({}))",
                    self.limits.ingestion_rate,
                    validated_samples,
                    valid_metadata.len(),
                    self.limits.ingestion_burst_size
                ),
            ));
        }
        if latest_ms > 0 {
            self.metrics
                .latest_seen_sample_timestamp
                .get_or_create(&user)
                .set(latest_ms as f64 / 1000.0);
        }

        self.replicate(tenant, source, series, series_tokens, valid_metadata, metadata_tokens)
            .await?;
        partial.map_or(Ok(()), Err)
    }

    /// Fans validated series and metadata out to their replicas with quorum.
    async fn replicate(
        &self,
        tenant: &str,
        source: i32,
        series: Vec<TimeSeries>,
        series_tokens: Vec<u32>,
        metadata: Vec<MetricMetadata>,
        metadata_tokens: Vec<u32>,
    ) -> Result<(), HttpError> {
        struct Group {
            replica: Replica,
            series: Vec<u32>,
            metadata: Vec<u32>,
        }
        let mut group_of: HashMap<Arc<str>, usize> = HashMap::new();
        let mut groups: Vec<Group> = Vec::new();
        let mut quorum = Vec::with_capacity(series_tokens.len() + metadata_tokens.len());
        let tokens = series_tokens
            .iter()
            .map(|&t| (t, false))
            .chain(metadata_tokens.iter().map(|&t| (t, true)));
        for (i, (token, is_metadata)) in tokens.enumerate() {
            let set = self.replicas.get(token, self.cfg.extend_writes)?;
            quorum.push((set.instances.len(), set.max_errors));
            let index = if is_metadata { i - series_tokens.len() } else { i } as u32;
            for replica in set.instances {
                let g = *group_of.entry(replica.id.clone()).or_insert_with(|| {
                    groups.push(Group {
                        replica,
                        series: Vec::new(),
                        metadata: Vec::new(),
                    });
                    groups.len() - 1
                });
                if is_metadata {
                    groups[g].metadata.push(index);
                } else {
                    groups[g].series.push(index);
                }
            }
        }

        let timeout: Duration = self.cfg.remote_timeout.into();
        let n_series = series.len() as u32;
        let mut jobs = Vec::with_capacity(groups.len());
        for g in groups {
            // Cloning a series clones its label `Bytes` (reference counts into
            // the decoded request buffer) and copies its samples once.
            let req = WriteRequest {
                timeseries: g.series.iter().map(|&i| series[i as usize].clone()).collect(),
                metadata: g.metadata.iter().map(|&i| metadata[i as usize].clone()).collect(),
                source,
                skip_label_name_validation: false,
            };
            let has_samples = !req.timeseries.is_empty();
            let has_metadata = !req.metadata.is_empty();
            let addr = g.replica.addr.to_string();
            let rpc = self.pusher.push(&addr, tenant, req, timeout);
            let metrics = self.metrics.clone();
            let keys = g
                .series
                .into_iter()
                .chain(g.metadata.into_iter().map(|i| i + n_series))
                .collect();
            jobs.push(IngesterJob {
                keys,
                rpc: Box::pin(async move {
                    let result = match tokio::time::timeout(timeout, rpc).await {
                        Ok(r) => r,
                        Err(_) => Err(HttpError::internal(format!(
                            "push to ingester {addr} timed out after {} (-distributor.remote-timeout)",
                            model::GoDuration(timeout)
                        ))),
                    };
                    for (present, kind) in [(has_samples, TYPE_SAMPLES), (has_metadata, TYPE_METADATA)] {
                        if !present {
                            continue;
                        }
                        let labels = IngesterTypeLabels {
                            ingester: addr.clone(),
                            r#type: kind.to_string(),
                        };
                        metrics.ingester_appends.get_or_create(&labels).inc();
                        if result.is_err() {
                            metrics.ingester_append_failures.get_or_create(&labels).inc();
                        }
                    }
                    match &result {
                        // Rejected data (out of order, limits) is the sender's problem.
                        Err(e) if e.is_client_error() => {
                            tracing::debug!(ingester = %addr, code = e.code, error = %e.message, "ingester rejected push")
                        }
                        Err(e) => tracing::warn!(ingester = %addr, code = e.code, error = %e.message, "push to ingester failed"),
                        Ok(()) => {}
                    }
                    result
                }),
            });
        }
        do_batch(QuorumTracker::new(quorum), jobs).await
    }
}
