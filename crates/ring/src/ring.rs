//! The read side of a ring: a snapshot of the descriptor kept fresh by a KV watch, token lookup
//! and replication sets (spec §2.6), and the ring metrics.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use model::GoDuration;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use server::config::Flag;
use tokio::sync::watch;

use crate::kv::{KvClient, KvConfig};
use crate::{
    decode_desc, heartbeat_fresh, now_secs, state_of, Desc, Instance, InstanceState, Operation, ReplicationSet,
    RingError,
};

/// How often ring metrics are recomputed even without ring changes (health depends on time).
const METRICS_REFRESH: Duration = Duration::from_secs(10);

/// Ring client config (Cortex `ring.Config`; the ingester's is `ingester.lifecycler.ring`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct RingConfig {
    pub kvstore: KvConfig,
    /// An instance whose last heartbeat is older than this is unhealthy; 0 disables the check.
    pub heartbeat_timeout: GoDuration,
    pub replication_factor: usize,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            kvstore: KvConfig::default(),
            heartbeat_timeout: GoDuration::secs(60),
            replication_factor: 3,
        }
    }
}

/// Expands to the ring flags with YAML paths under `$p`, its kvstore flags under `$kv` (which is
/// `$p` + `kvstore.`), followed by `$extra` flags.
#[macro_export]
#[doc(hidden)]
macro_rules! __ring_flags {
    ($p:literal, $kv:literal; $($extra:expr),* $(,)?) => {
        $crate::__kv_flags!($kv;
            $($extra,)*
            ::server::config::Flag::new("ring.heartbeat-timeout", concat!($p, "heartbeat_timeout"),
                "The heartbeat timeout after which ingesters are considered unhealthy within the ring. 0 = never (timeout disabled)."),
            ::server::config::Flag::new("distributor.replication-factor", concat!($p, "replication_factor"),
                "The number of ingesters to write to and read from."),
        )
    };
}

impl RingConfig {
    /// Flags, with YAML paths relative to the ring section.
    pub const FLAGS: &'static [Flag] = crate::__ring_flags!("", "kvstore.";);
}

/// An immutable view of one version of the ring.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub desc: Desc,
    /// Instances sorted by ID.
    pub instances: Vec<Instance>,
    /// Token count of each instance (same order as `instances`).
    pub token_counts: Vec<usize>,
    /// Every token of the ring, sorted, and the index (into `instances`) of its owner.
    pub tokens: Vec<u32>,
    pub owners: Vec<u32>,
}

impl Snapshot {
    pub fn new(desc: Desc) -> Self {
        let mut ids: Vec<&String> = desc.ingesters.keys().collect();
        ids.sort();
        let mut instances = Vec::with_capacity(ids.len());
        let mut token_counts = Vec::with_capacity(ids.len());
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        for (idx, id) in ids.iter().enumerate() {
            let d = &desc.ingesters[*id];
            instances.push(Instance {
                id: Arc::from(id.as_str()),
                addr: Arc::from(d.addr.as_str()),
                zone: Arc::from(d.zone.as_str()),
                state: state_of(d),
                timestamp: d.timestamp,
                registered_timestamp: d.registered_timestamp,
            });
            token_counts.push(d.tokens.len());
            pairs.extend(d.tokens.iter().map(|t| (*t, idx as u32)));
        }
        // Two instances claiming one token (possible only with a broken writer) resolve to the
        // lower ID, deterministically, instead of depending on map order.
        pairs.sort_unstable();
        pairs.dedup_by_key(|p| p.0);
        let (tokens, owners) = pairs.into_iter().unzip();
        Snapshot {
            desc,
            instances,
            token_counts,
            tokens,
            owners,
        }
    }

    /// Fraction of the hash space (0..=1) each instance owns, by index into `instances`.
    pub fn ownership(&self) -> Vec<f64> {
        let mut owned = vec![0u64; self.instances.len()];
        let n = self.tokens.len();
        for i in 0..n {
            let prev = self.tokens[(i + n - 1) % n];
            // A token owns (previous token, token]; a lone token owns the whole space.
            let span = match self.tokens[i].wrapping_sub(prev) as u64 {
                0 => 1u64 << 32,
                s => s,
            };
            owned[self.owners[i] as usize] += span;
        }
        owned.into_iter().map(|o| o as f64 / (1u64 << 32) as f64).collect()
    }
}

pub(crate) struct RingInner {
    pub cfg: RingConfig,
    pub key: String,
    pub name: String,
    pub kv: Option<Arc<dyn KvClient>>,
    pub snapshot: watch::Sender<Arc<Snapshot>>,
    metrics: Option<RingMetrics>,
}

/// Read view of one ring key, kept fresh by a KV watch. Cheap to clone.
#[derive(Clone)]
pub struct Ring {
    pub(crate) inner: Arc<RingInner>,
}

impl Ring {
    /// Reads the ring at `key` from `kv` (failing if the store cannot be read) and follows it.
    /// `name` labels the ring's metrics (`ingester`, `distributor`, …).
    pub async fn start(
        cfg: RingConfig,
        kv: Arc<dyn KvClient>,
        key: &str,
        name: &str,
        metrics: &server::Metrics,
    ) -> Result<Ring, RingError> {
        let initial = match kv.get(key).await? {
            Some(bytes) => decode_desc(&bytes)?,
            None => Desc::default(),
        };
        let (tx, _) = watch::channel(Arc::new(Snapshot::new(initial)));
        let ring = Ring {
            inner: Arc::new(RingInner {
                cfg,
                key: key.to_string(),
                name: name.to_string(),
                kv: Some(kv.clone()),
                snapshot: tx,
                metrics: Some(RingMetrics::new(metrics, name)),
            }),
        };
        ring.inner.update_metrics();
        let updates = kv.watch_key(key);
        tokio::spawn(follow(Arc::downgrade(&ring.inner), updates));
        Ok(ring)
    }

    /// A fixed ring with no KV store behind it (tests and tools); `forget` is refused.
    pub fn from_desc(cfg: RingConfig, desc: Desc) -> Ring {
        let (tx, _) = watch::channel(Arc::new(Snapshot::new(desc)));
        Ring {
            inner: Arc::new(RingInner {
                cfg,
                key: crate::INGESTER_RING_KEY.to_string(),
                name: "static".to_string(),
                kv: None,
                snapshot: tx,
                metrics: None,
            }),
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.borrow().clone()
    }

    fn heartbeat_timeout(&self) -> Duration {
        self.inner.cfg.heartbeat_timeout.0
    }

    fn is_healthy(&self, instance: &Instance, op: Operation, now: i64) -> bool {
        op.is_healthy_state(instance.state)
            && (self.heartbeat_timeout().is_zero()
                || now - instance.timestamp <= self.heartbeat_timeout().as_secs() as i64)
    }

    /// The replicas for `token` (spec §2.6 `Get`): walk clockwise from the first token ≥ `token`
    /// collecting distinct instances until RF (plus one per instance the operation extends on)
    /// are found, drop unhealthy ones, and require a quorum of `max(RF, collected)/2 + 1`.
    pub fn get(&self, token: u32, op: Operation) -> Result<ReplicationSet, RingError> {
        let snap = self.snapshot();
        if snap.tokens.is_empty() {
            return Err(RingError::Empty);
        }
        let rf = self.replication_factor().max(1);
        let n_tokens = snap.tokens.len();
        let start = snap.tokens.partition_point(|t| *t < token) % n_tokens;
        let mut wanted = rf;
        let mut picked: Vec<u32> = Vec::with_capacity(rf + 2);
        for i in 0..n_tokens {
            if picked.len() >= wanted {
                break;
            }
            let owner = snap.owners[(start + i) % n_tokens];
            if picked.contains(&owner) {
                continue;
            }
            picked.push(owner);
            if op.extends_on(snap.instances[owner as usize].state) {
                wanted += 1;
            }
        }
        let n = rf.max(picked.len());
        let min_success = n / 2 + 1;
        let now = now_secs();
        let instances: Vec<Instance> = picked
            .iter()
            .map(|&o| &snap.instances[o as usize])
            .filter(|inst| self.is_healthy(inst, op, now))
            .cloned()
            .collect();
        if instances.len() < min_success {
            return Err(RingError::TooFewReplicas {
                required: min_success,
                found: instances.len(),
            });
        }
        let max_errors = instances.len() - min_success;
        Ok(ReplicationSet { instances, max_errors })
    }

    /// Every healthy instance, for requests that must reach the whole ring (queries in
    /// shard-by-all-labels mode, user stats). Fails when more than RF/2 instances are unhealthy.
    pub fn replication_set_for_operation(&self, op: Operation) -> Result<ReplicationSet, RingError> {
        let snap = self.snapshot();
        if snap.tokens.is_empty() {
            return Err(RingError::Empty);
        }
        let rf = self.replication_factor().max(1);
        let now = now_secs();
        let instances: Vec<Instance> = snap
            .instances
            .iter()
            .filter(|inst| self.is_healthy(inst, op, now))
            .cloned()
            .collect();
        let required = snap.instances.len().max(rf) - rf / 2;
        if instances.len() < required {
            return Err(RingError::TooManyUnhealthy);
        }
        let max_errors = instances.len() - required;
        Ok(ReplicationSet { instances, max_errors })
    }

    pub fn replication_factor(&self) -> usize {
        self.inner.cfg.replication_factor
    }

    /// The current descriptor.
    pub fn desc(&self) -> Desc {
        self.snapshot().desc.clone()
    }

    /// Number of instances in the ring, whatever their state.
    pub fn instances_count(&self) -> usize {
        self.snapshot().instances.len()
    }

    /// Instances that are healthy for `op` right now, sorted by ID.
    pub fn healthy_instances(&self, op: Operation) -> Vec<Instance> {
        let now = now_secs();
        self.snapshot()
            .instances
            .iter()
            .filter(|i| self.is_healthy(i, op, now))
            .cloned()
            .collect()
    }

    /// Waits until `pred` holds for the current descriptor, or `timeout` passes; returns whether
    /// it held. For tests and start-up sequencing (wait on conditions, not sleeps).
    pub async fn wait_until(&self, timeout: Duration, mut pred: impl FnMut(&Desc) -> bool) -> bool {
        let mut rx = self.inner.snapshot.subscribe();
        tokio::time::timeout(timeout, async {
            loop {
                if pred(&rx.borrow_and_update().desc) {
                    return;
                }
                if rx.changed().await.is_err() {
                    // Never happens while `self` holds the sender; wait out the timeout.
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .is_ok()
    }

    /// The `/ring` and `/ingester/ring` status pages (HTML, JSON with `Accept: application/json`,
    /// `POST forget=<id>`).
    pub fn http_routes(&self) -> axum::Router {
        crate::http::routes(self.clone())
    }

    /// Removes instance `id` from the ring (the status page's "Forget").
    pub async fn forget(&self, id: &str) -> Result<(), RingError> {
        let kv = self
            .inner
            .kv
            .as_ref()
            .ok_or_else(|| RingError::Config("this ring has no KV store to forget instances in".into()))?;
        crate::cas_desc(kv.as_ref(), &self.inner.key, |mut desc| {
            Ok(desc.ingesters.remove(id).map(|_| desc))
        })
        .await
    }

    pub(crate) fn name(&self) -> &str {
        &self.inner.name
    }
}

/// Applies every update of the watched key until the ring is dropped.
async fn follow(ring: Weak<RingInner>, mut updates: crate::kv::WatchStream) {
    let mut refresh = tokio::time::interval(METRICS_REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            update = updates.next() => {
                let Some(value) = update else { return };
                let Some(inner) = ring.upgrade() else { return };
                let desc = match value.as_deref().map(decode_desc).transpose() {
                    Ok(d) => d.unwrap_or_default(),
                    Err(e) => {
                        tracing::error!(ring = %inner.name, error = %e, "ignoring undecodable ring descriptor");
                        continue;
                    }
                };
                inner.snapshot.send_replace(Arc::new(Snapshot::new(desc)));
                inner.update_metrics();
            }
            _ = refresh.tick() => {
                let Some(inner) = ring.upgrade() else { return };
                inner.update_metrics();
            }
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameStateLabels {
    name: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameMemberLabels {
    name: String,
    member: String,
}

/// Member-count states of `cortex_ring_members`; an instance past its heartbeat counts as
/// `Unhealthy` instead of its stored state.
const MEMBER_STATES: [&str; 6] = ["ACTIVE", "LEAVING", "PENDING", "JOINING", "LEFT", "Unhealthy"];

struct RingMetrics {
    name: String,
    members: Family<NameStateLabels, Gauge>,
    oldest: Family<NameStateLabels, Gauge>,
    tokens_total: Family<NameLabel, Gauge>,
    tokens_owned: Family<NameMemberLabels, Gauge>,
    ownership: Family<NameMemberLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Members exported last time, to drop series of instances that left.
    exported_members: parking_lot::Mutex<Vec<String>>,
}

impl RingMetrics {
    fn new(metrics: &server::Metrics, name: &str) -> Self {
        use crate::metrics::shared_metric;
        RingMetrics {
            name: name.to_string(),
            members: shared_metric(
                metrics,
                "cortex_ring_members",
                "Number of members in the ring",
                Family::default,
            ),
            oldest: shared_metric(
                metrics,
                "cortex_ring_oldest_member_timestamp",
                "Timestamp of the oldest member in the ring.",
                Family::default,
            ),
            tokens_total: shared_metric(
                metrics,
                "cortex_ring_tokens_total",
                "Number of tokens in the ring",
                Family::default,
            ),
            tokens_owned: shared_metric(
                metrics,
                "cortex_ring_tokens_owned",
                "The number of tokens in the ring owned by the member",
                Family::default,
            ),
            ownership: shared_metric(
                metrics,
                "cortex_ring_member_ownership_percent",
                "The percent ownership of the ring by member",
                Family::default,
            ),
            exported_members: parking_lot::Mutex::new(Vec::new()),
        }
    }
}

impl RingInner {
    fn update_metrics(&self) {
        let Some(m) = &self.metrics else { return };
        let snap = self.snapshot.borrow().clone();
        let now = now_secs();
        let timeout = self.cfg.heartbeat_timeout.0;
        let mut counts: HashMap<&'static str, i64> = MEMBER_STATES.iter().map(|s| (*s, 0)).collect();
        let mut oldest: HashMap<&'static str, i64> = HashMap::new();
        for (id, d) in &snap.desc.ingesters {
            let _ = id;
            let state = if heartbeat_fresh(d, timeout, now) {
                state_name(state_of(d))
            } else {
                "Unhealthy"
            };
            *counts.entry(state).or_default() += 1;
            let o = oldest.entry(state).or_insert(d.timestamp);
            *o = (*o).min(d.timestamp);
        }
        for state in MEMBER_STATES {
            let labels = NameStateLabels {
                name: m.name.clone(),
                state,
            };
            m.members.get_or_create(&labels).set(counts[state]);
            m.oldest
                .get_or_create(&labels)
                .set(oldest.get(state).copied().unwrap_or(0));
        }
        m.tokens_total
            .get_or_create(&NameLabel { name: m.name.clone() })
            .set(snap.tokens.len() as i64);
        let ownership = snap.ownership();
        let mut exported = m.exported_members.lock();
        for old in exported.iter() {
            if !snap.desc.ingesters.contains_key(old) {
                let labels = NameMemberLabels {
                    name: m.name.clone(),
                    member: old.clone(),
                };
                m.tokens_owned.remove(&labels);
                m.ownership.remove(&labels);
            }
        }
        exported.clear();
        for (i, inst) in snap.instances.iter().enumerate() {
            let labels = NameMemberLabels {
                name: m.name.clone(),
                member: inst.id.to_string(),
            };
            m.tokens_owned.get_or_create(&labels).set(snap.token_counts[i] as i64);
            m.ownership.get_or_create(&labels).set(ownership[i]);
            exported.push(inst.id.to_string());
        }
    }
}

/// Cortex's spelling of a state (`ACTIVE`, …).
pub(crate) fn state_name(state: InstanceState) -> &'static str {
    state.as_str_name()
}
