//! The ruler: keeps one evaluation task per rule group in step with the rule store
//! (polled every `-ruler.poll-interval`, and at once after an API write), evaluates each
//! group's rules in order at its interval, writes results through the [`Pusher`] and
//! queues alerts for the [`Notifier`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use proto::cortex::{write_request::SourceEnum, LabelPair, Sample, TimeSeries, WriteRequest};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::metrics::{GroupLabels, RulerMetrics};
use crate::notifier::{generator_url, Notifier, PostableAlert};
use crate::rulefmt::{Rule, RuleGroup};
use crate::rules::{AlertingRule, RecordingRule, RuleHealth, TemplateContext};
use crate::store::RuleStore;

/// Where rule results are written: the distributor's push path (in process or gRPC).
#[async_trait]
pub trait Pusher: Send + Sync {
    async fn push(&self, tenant: &str, req: WriteRequest) -> Result<(), String>;
}

/// Per-tenant read access to the same data the queriers see.
pub trait TenantQueryables: Send + Sync {
    fn queryable(&self, tenant: &str) -> Arc<dyn promql::Queryable>;
}

/// A Prometheus stale marker: the series ended.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub tenant: String,
    pub namespace: String,
    pub group: String,
}

pub enum RuleKind {
    Recording(RecordingRule),
    Alerting(AlertingRule),
}

/// A rule and the outcome of its last evaluation.
pub struct RuleState {
    pub def: Rule,
    pub kind: RuleKind,
    pub health: RuleHealth,
    pub last_error: String,
    pub last_evaluation_ms: Option<i64>,
    pub evaluation_seconds: f64,
    /// Series written last time, for stale markers when they disappear.
    last_series: HashSet<model::Labels>,
}

/// A group and its rules' states, shared with the API.
pub struct GroupState {
    pub namespace: String,
    pub def: RuleGroup,
    pub interval: Duration,
    pub rules: Vec<RuleState>,
    pub last_evaluation_ms: Option<i64>,
    pub evaluation_seconds: f64,
}

struct Running {
    def: RuleGroup,
    state: Arc<Mutex<GroupState>>,
    task: JoinHandle<()>,
}

pub struct Ruler {
    cfg: Config,
    store: Arc<dyn RuleStore>,
    queryables: Arc<dyn TenantQueryables>,
    pusher: Arc<dyn Pusher>,
    notifier: Arc<Notifier>,
    engine: promql::Engine,
    groups: Mutex<HashMap<GroupKey, Running>>,
    sync_now: Notify,
    metrics: RulerMetrics,
    ctx: TemplateContext,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// FNV-1a 32 of `tenant/namespace/group`: spreads groups' evaluation offsets (and is
/// the key Cortex shards groups by).
pub fn group_hash(k: &GroupKey) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in k
        .tenant
        .bytes()
        .chain(*b"/")
        .chain(k.namespace.bytes())
        .chain(*b"/")
        .chain(k.group.bytes())
    {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl Ruler {
    pub fn new(
        cfg: Config,
        store: Arc<dyn RuleStore>,
        queryables: Arc<dyn TenantQueryables>,
        pusher: Arc<dyn Pusher>,
        engine: promql::Engine,
        metrics: &server::Metrics,
    ) -> Arc<Self> {
        let metrics = RulerMetrics::register(metrics);
        let notifier = Notifier::new(
            &cfg.alertmanager_url,
            cfg.notification_queue_capacity,
            cfg.notification_timeout.0,
            metrics.clone(),
        );
        let ctx = TemplateContext {
            external_labels: Default::default(),
            external_url: cfg.external_url.clone(),
        };
        Arc::new(Ruler {
            cfg,
            store,
            queryables,
            pusher,
            notifier,
            engine,
            groups: Mutex::new(HashMap::new()),
            sync_now: Notify::new(),
            metrics,
            ctx,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn store(&self) -> &Arc<dyn RuleStore> {
        &self.store
    }

    /// Starts the notifier and the poll loop; both end with the returned handle.
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        let notifier = tokio::spawn(self.notifier.clone().run());
        let me = self.clone();
        tokio::spawn(async move {
            let _notifier = AbortOnDrop(notifier);
            loop {
                if let Err(e) = me.sync().await {
                    tracing::warn!(error = %e, "syncing rule groups failed; keeping the current ones");
                }
                let poll = me.cfg.poll_interval.0.max(Duration::from_millis(100));
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = me.sync_now.notified() => {}
                }
            }
        })
    }

    /// Asks the poll loop to re-read the store now (after an API write).
    pub fn request_sync(&self) {
        self.sync_now.notify_one();
    }

    /// Stops every group's evaluation.
    pub fn stop(&self) {
        for (_, r) in self.groups.lock().drain() {
            r.task.abort();
        }
    }

    /// Brings the running groups in step with the store: new and changed groups start
    /// (a changed group starts afresh), removed ones stop.
    pub async fn sync(self: &Arc<Self>) -> Result<(), crate::RulerError> {
        let mut wanted: HashMap<GroupKey, (String, RuleGroup)> = HashMap::new();
        for tenant in self.store.list_tenants().await? {
            for (ns, groups) in self.store.tenant_rules(&tenant).await? {
                for g in groups {
                    let key = GroupKey {
                        tenant: tenant.clone(),
                        namespace: ns.clone(),
                        group: g.name.clone(),
                    };
                    wanted.insert(key, (ns.clone(), g));
                }
            }
        }
        let mut groups = self.groups.lock();
        groups.retain(|k, r| {
            let keep = wanted.get(k).is_some_and(|(_, g)| *g == r.def);
            if !keep {
                r.task.abort();
                self.metrics.remove_group(&GroupLabels {
                    user: k.tenant.clone(),
                    rule_group: format!("{};{}", k.namespace, k.group),
                });
            }
            keep
        });
        for (k, (ns, g)) in wanted {
            if groups.contains_key(&k) {
                continue;
            }
            let interval = g.interval.map(|d| d.0).unwrap_or(self.cfg.evaluation_interval.0);
            let interval = interval.max(Duration::from_millis(100));
            let state = Arc::new(Mutex::new(GroupState {
                namespace: ns,
                interval,
                rules: g.rules.iter().map(rule_state).collect(),
                def: g.clone(),
                last_evaluation_ms: None,
                evaluation_seconds: 0.0,
            }));
            let task = tokio::spawn(self.clone().run_group(k.clone(), state.clone(), interval));
            groups.insert(k, Running { def: g, state, task });
        }
        Ok(())
    }

    /// The tenant's groups' states, by namespace then group name.
    pub fn tenant_groups(&self, tenant: &str) -> Vec<Arc<Mutex<GroupState>>> {
        let groups = self.groups.lock();
        let mut v: Vec<(&GroupKey, &Running)> = groups.iter().filter(|(k, _)| k.tenant == tenant).collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.into_iter().map(|(_, r)| r.state.clone()).collect()
    }

    async fn run_group(self: Arc<Self>, key: GroupKey, state: Arc<Mutex<GroupState>>, interval: Duration) {
        let iv = interval.as_millis() as i64;
        let offset = group_hash(&key) as i64 % iv;
        let labels = GroupLabels {
            user: key.tenant.clone(),
            rule_group: format!("{};{}", key.namespace, key.group),
        };
        // The first evaluation time at or after now on this group's grid.
        let now = now_ms();
        let mut next = now - (now - offset).rem_euclid(iv) + iv;
        if next - iv >= now {
            next -= iv;
        }
        loop {
            let wait = (next - now_ms()).max(0) as u64;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            self.metrics.iterations.get_or_create(&labels).inc();
            let ts = next - self.cfg.evaluation_delay_duration.as_millis();
            let start = Instant::now();
            self.evaluate_group(&key, &state, ts, iv, &labels).await;
            let took = start.elapsed().as_secs_f64();
            self.metrics.last_duration.get_or_create(&labels).set(took);
            {
                let mut s = state.lock();
                s.last_evaluation_ms = Some(now_ms());
                s.evaluation_seconds = took;
            }
            // Iterations whose time passed while this one ran are skipped and counted.
            let now = now_ms();
            let missed = ((now - next) / iv - 1).max(0);
            if missed > 0 {
                self.metrics
                    .iterations_missed
                    .get_or_create(&labels)
                    .inc_by(missed as u64);
                self.metrics.iterations.get_or_create(&labels).inc_by(missed as u64);
            }
            next += (missed + 1) * iv;
        }
    }

    /// Evaluates a group's rules in order at `ts`; each rule's results are written
    /// before the next rule runs, so later rules see them.
    pub async fn evaluate_group(
        &self,
        key: &GroupKey,
        state: &Mutex<GroupState>,
        ts: i64,
        interval_ms: i64,
        labels: &GroupLabels,
    ) {
        let (exprs, limit) = {
            let s = state.lock();
            (
                s.rules.iter().map(|r| r.def.expr.clone()).collect::<Vec<_>>(),
                s.def.limit,
            )
        };
        let q = self.queryables.queryable(&key.tenant);
        for (i, expr) in exprs.iter().enumerate() {
            self.metrics.evaluations.get_or_create(labels).inc();
            let start = Instant::now();
            let result = match self.engine.instant(q.as_ref(), expr, ts).await {
                Ok(promql::Value::Vector(v)) => Ok(v),
                Ok(promql::Value::Scalar { v, .. }) => Ok(vec![promql::VectorSample {
                    labels: model::Labels::empty(),
                    t: ts,
                    v,
                }]),
                Ok(_) => Err("rule result is not a vector or scalar".to_string()),
                Err(e) => Err(e.to_string()),
            };
            let mut to_send = vec![];
            let outcome: Result<Vec<(model::Labels, f64)>, String> = {
                let mut s = state.lock();
                let r = &mut s.rules[i];
                result.and_then(|v| match &mut r.kind {
                    RuleKind::Recording(rec) => rec.apply(v, limit).map_err(|e| e.to_string()),
                    RuleKind::Alerting(al) => {
                        let out = al.apply(ts, v, &self.ctx, limit).map_err(|e| e.to_string())?;
                        let url = generator_url(&self.cfg.external_url, expr);
                        to_send = al
                            .alerts_to_send(ts, self.cfg.resend_delay.as_millis(), interval_ms)
                            .iter()
                            .map(|a| PostableAlert::from_alert(a, &url))
                            .collect();
                        Ok(out)
                    }
                })
            };
            let samples = match outcome {
                Ok(samples) => samples,
                Err(e) => {
                    self.metrics.evaluation_failures.get_or_create(labels).inc();
                    let mut s = state.lock();
                    let r = &mut s.rules[i];
                    r.health = RuleHealth::Err;
                    r.last_error = e;
                    r.last_evaluation_ms = Some(ts);
                    r.evaluation_seconds = start.elapsed().as_secs_f64();
                    continue;
                }
            };
            self.notifier.send(&key.tenant, to_send);
            // Series written last time and not now get a stale marker.
            let stale: Vec<model::Labels> = {
                let mut s = state.lock();
                let r = &mut s.rules[i];
                let now: HashSet<model::Labels> = samples.iter().map(|(l, _)| l.clone()).collect();
                let gone = r.last_series.difference(&now).cloned().collect();
                r.last_series = now;
                gone
            };
            let write = self.write(&key.tenant, ts, &samples, &stale).await;
            let mut s = state.lock();
            let r = &mut s.rules[i];
            r.last_evaluation_ms = Some(ts);
            r.evaluation_seconds = start.elapsed().as_secs_f64();
            match write {
                Ok(()) => {
                    r.health = RuleHealth::Ok;
                    r.last_error.clear();
                }
                Err(e) => {
                    r.health = RuleHealth::Err;
                    r.last_error = format!("writing rule results: {e}");
                }
            }
        }
    }

    async fn write(
        &self,
        tenant: &str,
        ts: i64,
        samples: &[(model::Labels, f64)],
        stale: &[model::Labels],
    ) -> Result<(), String> {
        if samples.is_empty() && stale.is_empty() {
            return Ok(());
        }
        let series = |l: &model::Labels, v: f64| TimeSeries {
            labels: l
                .iter()
                .map(|p| LabelPair {
                    name: p.name.clone().into(),
                    value: p.value.clone().into(),
                })
                .collect(),
            samples: vec![Sample {
                value: v,
                timestamp_ms: ts,
            }],
        };
        let req = WriteRequest {
            timeseries: samples
                .iter()
                .map(|(l, v)| series(l, *v))
                .chain(stale.iter().map(|l| series(l, f64::from_bits(STALE_NAN))))
                .collect(),
            source: SourceEnum::Rule as i32,
            ..Default::default()
        };
        self.metrics.write_requests.inc();
        self.pusher.push(tenant, req).await.inspect_err(|_| {
            self.metrics.write_requests_failed.inc();
        })
    }
}

fn rule_state(r: &Rule) -> RuleState {
    let kind = match &r.record {
        Some(name) => RuleKind::Recording(RecordingRule {
            name: name.clone(),
            labels: r.labels.clone(),
        }),
        None => RuleKind::Alerting(AlertingRule::new(r)),
    };
    RuleState {
        def: r.clone(),
        kind,
        health: RuleHealth::Unknown,
        last_error: String::new(),
        last_evaluation_ms: None,
        evaluation_seconds: 0.0,
        last_series: HashSet::new(),
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
