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
                // Metrics first, so whoever sees the new ring also sees its metrics.
                let snapshot = Arc::new(Snapshot::new(desc));
                inner.update_metrics_from(&snapshot);
                inner.snapshot.send_replace(snapshot);
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
        let snap = self.snapshot.borrow().clone();
        self.update_metrics_from(&snap);
    }

    fn update_metrics_from(&self, snap: &Snapshot) {
        let Some(m) = &self.metrics else { return };
        let now = now_secs();
        let timeout = self.cfg.heartbeat_timeout.0;
        let mut counts: HashMap<&'static str, i64> = MEMBER_STATES.iter().map(|s| (*s, 0)).collect();
        let mut oldest: HashMap<&'static str, i64> = HashMap::new();
        for d in snap.desc.ingesters.values() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::InMemoryKv;
    use crate::{cas_desc, InstanceDesc};
    use InstanceState::*;

    /// (id, state, tokens, heartbeat is fresh)
    type Member<'a> = (&'a str, InstanceState, &'a [u32], bool);

    fn desc(members: &[Member]) -> Desc {
        let now = now_secs();
        let mut d = Desc::default();
        for (id, state, tokens, fresh) in members {
            d.ingesters.insert(
                id.to_string(),
                InstanceDesc {
                    addr: format!("{id}:9095"),
                    timestamp: if *fresh { now } else { now - 120 },
                    state: *state as i32,
                    tokens: tokens.to_vec(),
                    zone: String::new(),
                    registered_timestamp: now - 1000,
                },
            );
        }
        d
    }

    fn ring(rf: usize, members: &[Member]) -> Ring {
        Ring::from_desc(
            RingConfig {
                replication_factor: rf,
                ..RingConfig::default()
            },
            desc(members),
        )
    }

    fn ids(set: &ReplicationSet) -> Vec<&str> {
        set.instances.iter().map(|i| &*i.id).collect()
    }

    /// Four instances at 100/200/300/400; a key of 50 walks a, b, c, d.
    fn four(states: [InstanceState; 4], fresh: [bool; 4]) -> Vec<Member<'static>> {
        vec![
            ("a", states[0], &[100], fresh[0]),
            ("b", states[1], &[200], fresh[1]),
            ("c", states[2], &[300], fresh[2]),
            ("d", states[3], &[400], fresh[3]),
        ]
    }
    const ALL_FRESH: [bool; 4] = [true; 4];

    #[test]
    fn a_hash_maps_to_the_first_token_at_or_after_it_wrapping_around() {
        let r = ring(
            1,
            &[
                ("a", Active, &[100, 1000], true),
                ("b", Active, &[200], true),
                ("c", Active, &[300], true),
            ],
        );
        for (hash, owner) in [
            (0, "a"),
            (50, "a"),
            (100, "a"),
            (101, "b"),
            (200, "b"),
            (250, "c"),
            (300, "c"),
            (301, "a"),
            (1000, "a"),
            (1001, "a"),
            (u32::MAX, "a"),
        ] {
            let set = r.get(hash, Operation::Write).unwrap();
            assert_eq!(ids(&set), vec![owner], "hash {hash}");
            assert_eq!(set.max_errors, 0);
        }
        // Replicas are the next distinct instances clockwise, wrapping.
        let r3 = ring(
            3,
            &[
                ("a", Active, &[100, 150], true),
                ("b", Active, &[200], true),
                ("c", Active, &[300], true),
            ],
        );
        assert_eq!(ids(&r3.get(250, Operation::Write).unwrap()), vec!["c", "a", "b"]);
        assert_eq!(ids(&r3.get(120, Operation::Write).unwrap()), vec!["a", "b", "c"]);
    }

    #[test]
    fn empty_ring() {
        let r = ring(3, &[]);
        assert!(matches!(r.get(1, Operation::Write), Err(RingError::Empty)));
        assert!(matches!(
            r.replication_set_for_operation(Operation::Read),
            Err(RingError::Empty)
        ));
        // Members without tokens (all PENDING) do not make a usable ring either.
        let r = ring(3, &[("a", Pending, &[], true)]);
        assert_eq!(r.get(1, Operation::Write).unwrap_err().to_string(), "empty ring");
    }

    #[test]
    fn rf3_all_healthy() {
        let r = ring(3, &four([Active; 4], ALL_FRESH));
        let set = r.get(50, Operation::Write).unwrap();
        assert_eq!(ids(&set), vec!["a", "b", "c"]);
        assert_eq!((set.max_errors, set.min_success()), (1, 2));
        let set = r.get(50, Operation::Read).unwrap();
        assert_eq!(ids(&set), vec!["a", "b", "c"]);
        assert_eq!(set.max_errors, 1);
    }

    #[test]
    fn rf3_one_unhealthy() {
        let r = ring(3, &four([Active; 4], [true, false, true, true]));
        for op in [Operation::Write, Operation::Read] {
            let set = r.get(50, op).unwrap();
            assert_eq!(ids(&set), vec!["a", "c"], "{op:?}");
            assert_eq!(set.max_errors, 0, "{op:?}");
        }
    }

    #[test]
    fn rf3_one_leaving() {
        let r = ring(3, &four([Active, Leaving, Active, Active], ALL_FRESH));
        // Write extends past the LEAVING instance: 4 collected, quorum 3 of the 3 healthy.
        let set = r.get(50, Operation::Write).unwrap();
        assert_eq!(ids(&set), vec!["a", "c", "d"]);
        assert_eq!(set.max_errors, 0);
        // WriteNoExtend does not: 3 collected, 2 healthy, quorum 2.
        let set = r.get(50, Operation::WriteNoExtend).unwrap();
        assert_eq!(ids(&set), vec!["a", "c"]);
        assert_eq!(set.max_errors, 0);
        // LEAVING still serves reads.
        let set = r.get(50, Operation::Read).unwrap();
        assert_eq!(ids(&set), vec!["a", "b", "c"]);
        assert_eq!(set.max_errors, 1);
    }

    #[test]
    fn rf3_one_pending() {
        let r = ring(3, &four([Active, Pending, Active, Active], ALL_FRESH));
        let set = r.get(50, Operation::Write).unwrap();
        assert_eq!(ids(&set), vec!["a", "c", "d"]);
        assert_eq!(set.max_errors, 0);
        // Reads extend on PENDING and PENDING is readable: 4 collected, 4 healthy, quorum 3.
        let set = r.get(50, Operation::Read).unwrap();
        assert_eq!(ids(&set), vec!["a", "b", "c", "d"]);
        assert_eq!(set.max_errors, 1);
        // JOINING extends reads too but cannot serve them.
        let r = ring(3, &four([Active, Joining, Active, Active], ALL_FRESH));
        let set = r.get(50, Operation::Read).unwrap();
        assert_eq!(ids(&set), vec!["a", "c", "d"]);
        assert_eq!(set.max_errors, 0);
    }

    #[test]
    fn rf3_too_few() {
        let r = ring(3, &four([Active; 4], [true, false, false, true]));
        let err = r.get(50, Operation::Write).unwrap_err();
        assert_eq!(err.to_string(), "at least 2 live replicas required, could only find 1");
        // A ring smaller than RF still needs a quorum of RF.
        let r = ring(3, &[("a", Active, &[100], true)]);
        let err = r.get(50, Operation::Write).unwrap_err();
        assert!(
            matches!(err, RingError::TooFewReplicas { required: 2, found: 1 }),
            "{err}"
        );
    }

    #[test]
    fn rf1_cases() {
        let r = ring(1, &four([Active; 4], ALL_FRESH));
        let set = r.get(150, Operation::Write).unwrap();
        assert_eq!((ids(&set), set.max_errors), (vec!["b"], 0));

        let r = ring(1, &four([Active; 4], [true, false, true, true]));
        assert_eq!(
            r.get(150, Operation::Write).unwrap_err().to_string(),
            "at least 1 live replicas required, could only find 0"
        );

        // LEAVING owner: the set grows to 2, so the quorum becomes 2 of which only 1 is healthy.
        let r = ring(1, &four([Active, Leaving, Active, Active], ALL_FRESH));
        assert_eq!(
            r.get(150, Operation::Write).unwrap_err().to_string(),
            "at least 2 live replicas required, could only find 1"
        );
        let set = r.get(150, Operation::Read).unwrap();
        assert_eq!((ids(&set), set.max_errors), (vec!["b"], 0));

        // PENDING owner: writes fail the same way; reads ask both and need both.
        let r = ring(1, &four([Active, Pending, Active, Active], ALL_FRESH));
        assert!(matches!(
            r.get(150, Operation::Write),
            Err(RingError::TooFewReplicas { required: 2, found: 1 })
        ));
        let set = r.get(150, Operation::Read).unwrap();
        assert_eq!((ids(&set), set.max_errors), (vec!["b", "c"], 0));
    }

    #[test]
    fn replication_set_for_whole_ring_operations() {
        let r = ring(3, &four([Active; 4], ALL_FRESH));
        let set = r.replication_set_for_operation(Operation::Read).unwrap();
        assert_eq!(ids(&set), vec!["a", "b", "c", "d"]);
        // max(N, RF) − RF/2 = 4 − 1 = 3 needed.
        assert_eq!(set.max_errors, 1);

        let r = ring(3, &four([Active; 4], [true, false, true, true]));
        let set = r.replication_set_for_operation(Operation::Read).unwrap();
        assert_eq!((ids(&set), set.max_errors), (vec!["a", "c", "d"], 0));

        let r = ring(3, &four([Active; 4], [true, false, false, true]));
        assert_eq!(
            r.replication_set_for_operation(Operation::Read)
                .unwrap_err()
                .to_string(),
            "too many unhealthy instances in the ring"
        );

        // JOINING is not readable; LEAVING and PENDING are.
        let r = ring(3, &four([Leaving, Pending, Joining, Active], ALL_FRESH));
        let set = r.replication_set_for_operation(Operation::Read).unwrap();
        assert_eq!((ids(&set), set.max_errors), (vec!["a", "b", "d"], 0));

        // RF=1 tolerates no unhealthy instance at all.
        let r = ring(1, &four([Active; 4], [true, true, true, false]));
        assert!(matches!(
            r.replication_set_for_operation(Operation::Read),
            Err(RingError::TooManyUnhealthy)
        ));
        let r = ring(1, &[("a", Active, &[1], true)]);
        let set = r.replication_set_for_operation(Operation::Read).unwrap();
        assert_eq!((ids(&set), set.max_errors), (vec!["a"], 0));
    }

    #[test]
    fn heartbeat_timeout_zero_disables_the_check() {
        let r = Ring::from_desc(
            RingConfig {
                replication_factor: 1,
                heartbeat_timeout: GoDuration::secs(0),
                ..RingConfig::default()
            },
            desc(&[("a", Active, &[1], false)]),
        );
        assert_eq!(ids(&r.get(1, Operation::Write).unwrap()), vec!["a"]);
    }

    #[test]
    fn ownership_of_the_hash_space() {
        let snap = Snapshot::new(desc(&[
            ("a", Active, &[0x4000_0000], true),
            ("b", Active, &[0x8000_0000], true),
        ]));
        // a owns (0x8000_0000, 2^32) and [0, 0x4000_0000]: three quarters.
        assert_eq!(snap.ownership(), vec![0.75, 0.25]);
        let snap = Snapshot::new(desc(&[("a", Active, &[7], true)]));
        assert_eq!(snap.ownership(), vec![1.0]);
    }

    #[tokio::test]
    async fn ring_follows_the_kv_store_and_exports_metrics() {
        let kv = InMemoryKv::new();
        let metrics = server::Metrics::new();
        let cfg = RingConfig {
            replication_factor: 1,
            ..RingConfig::default()
        };
        let r = Ring::start(cfg, kv.clone(), "ring", "ingester", &metrics)
            .await
            .unwrap();
        assert!(matches!(r.get(1, Operation::Write), Err(RingError::Empty)));
        let d = desc(&[("a", Active, &[10, 20], true), ("b", Leaving, &[30], false)]);
        cas_desc(kv.as_ref(), "ring", |_| Ok(Some(d.clone()))).await.unwrap();
        assert!(r.wait_until(Duration::from_secs(5), |d| d.ingesters.len() == 2).await);
        assert_eq!(ids(&r.get(15, Operation::Write).unwrap()), vec!["a"]);
        assert_eq!(r.instances_count(), 2);
        let text = metrics.encode();
        for line in [
            r#"cortex_ring_members{name="ingester",state="ACTIVE"} 1"#,
            r#"cortex_ring_members{name="ingester",state="Unhealthy"} 1"#,
            r#"cortex_ring_members{name="ingester",state="LEAVING"} 0"#,
            r#"cortex_ring_tokens_total{name="ingester"} 3"#,
            r#"cortex_ring_tokens_owned{name="ingester",member="a"} 2"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // A second ring client on the same registry shares the families.
        let _r2 = Ring::start(RingConfig::default(), kv.clone(), "ring", "querier", &metrics)
            .await
            .unwrap();
        let text = metrics.encode();
        assert_eq!(text.matches("# TYPE cortex_ring_members gauge").count(), 1, "{text}");
        assert!(text.contains(r#"cortex_ring_tokens_total{name="querier"} 3"#), "{text}");
        // A member that leaves disappears from the per-member series.
        cas_desc(kv.as_ref(), "ring", |mut d| Ok(d.ingesters.remove("a").map(|_| d)))
            .await
            .unwrap();
        assert!(r.wait_until(Duration::from_secs(5), |d| d.ingesters.len() == 1).await);
        let text = metrics.encode();
        assert!(!text.contains(r#"member="a""#), "{text}");
    }
}
