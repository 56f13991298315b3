//! One member's life in a ring (spec §2.3): register as PENDING, join with tokens, heartbeat,
//! report readiness, leave.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use model::GoDuration;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use server::config::Flag;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::kv::KvClient;
use crate::tokens::{generate_tokens, load_tokens_file, store_tokens_file};
use crate::{cas_desc, decode_desc, heartbeat_fresh, now_secs, state_of, Desc, InstanceDesc, InstanceState, RingError};
use crate::{ring::state_name, RingConfig};

/// Lifecycler config (Cortex `ingester.lifecycler`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct LifecyclerConfig {
    pub ring: RingConfig,
    pub num_tokens: usize,
    pub heartbeat_period: GoDuration,
    /// Wait this long in PENDING before taking tokens and becoming ACTIVE.
    pub join_after: GoDuration,
    pub min_ready_duration: GoDuration,
    pub final_sleep: GoDuration,
    /// Instance ID in the ring (default: hostname).
    pub id: String,
    /// Address advertised in the ring; empty = the gRPC listen address.
    #[serde(rename = "address")]
    pub addr: String,
    /// Port advertised in the ring; 0 = the gRPC listen port.
    pub port: u16,
    #[serde(rename = "availability_zone")]
    pub zone: String,
    pub unregister_on_shutdown: bool,
    /// Where to keep the tokens across restarts; empty = not kept.
    pub tokens_file_path: String,
}

impl Default for LifecyclerConfig {
    fn default() -> Self {
        LifecyclerConfig {
            ring: RingConfig::default(),
            num_tokens: 128,
            heartbeat_period: GoDuration::secs(5),
            join_after: GoDuration::secs(0),
            min_ready_duration: GoDuration::secs(60),
            final_sleep: GoDuration::secs(30),
            id: hostname(),
            addr: String::new(),
            port: 0,
            zone: String::new(),
            unregister_on_shutdown: true,
            tokens_file_path: String::new(),
        }
    }
}

impl LifecyclerConfig {
    /// Flags, with YAML paths relative to the lifecycler section.
    pub const FLAGS: &'static [Flag] = crate::__ring_flags!("ring.", "ring.kvstore.";
        Flag::new("ingester.num-tokens", "num_tokens", "Number of tokens for each ingester."),
        Flag::new("ingester.heartbeat-period", "heartbeat_period", "Period at which to heartbeat to consul."),
        Flag::new("ingester.join-after", "join_after", "Period to wait for a claim from another member; will join automatically after this."),
        Flag::new("ingester.min-ready-duration", "min_ready_duration", "Minimum duration to wait before becoming ready. This is to work around race conditions with ingesters exiting and updating the ring."),
        Flag::new("ingester.final-sleep", "final_sleep", "Duration to sleep for before exiting, to ensure metrics are scraped."),
        Flag::new("ingester.lifecycler.ID", "id", "ID to register in the ring."),
        Flag::new("ingester.lifecycler.addr", "address", "IP address to advertise in the ring."),
        Flag::new("ingester.lifecycler.port", "port", "port to advertise in consul (defaults to server.grpc-listen-port)."),
        Flag::new("ingester.availability-zone", "availability_zone", "The availability zone of the host, this instance is running on."),
        Flag::new("ingester.unregister-on-shutdown", "unregister_on_shutdown", "Unregister from the ring upon clean shutdown. It can be useful to disable for rolling restarts with consistent naming in conjunction with -distributor.extend-writes=false."),
        Flag::new("ingester.tokens-file-path", "tokens_file_path", "File path where tokens are stored. If empty, tokens are not stored at shutdown and restored at startup."),
    );
}

/// This machine's hostname (Cortex's default instance ID).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_string())
}

/// The address to advertise: the configured one, else the gRPC listen address; an unspecified
/// listen IP (0.0.0.0) is replaced by an address of this host so peers can dial it.
fn advertised_addr(cfg: &LifecyclerConfig, grpc_addr: &str) -> Result<String, RingError> {
    let listen: Option<SocketAddr> = grpc_addr.parse().ok();
    let port = if cfg.port != 0 {
        cfg.port
    } else if let Some(l) = listen {
        l.port()
    } else {
        grpc_addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .ok_or_else(|| RingError::Config(format!("cannot find the gRPC port in {grpc_addr:?}")))?
    };
    if !cfg.addr.is_empty() {
        return Ok(join_host_port(&cfg.addr, port));
    }
    match listen {
        Some(l) if !l.ip().is_unspecified() => Ok(SocketAddr::new(l.ip(), port).to_string()),
        Some(_) => Ok(SocketAddr::new(host_ip(), port).to_string()),
        // A host name (e.g. "ingester-1:9095") is advertised as given.
        None => Ok(join_host_port(
            grpc_addr.rsplit_once(':').map_or(grpc_addr, |(h, _)| h),
            port,
        )),
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A non-loopback address this host's name resolves to, else loopback.
fn host_ip() -> IpAddr {
    (hostname().as_str(), 0u16)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.find(|a| a.is_ipv4() && !a.ip().is_loopback()))
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// Whether a member may move from `from` to `to` (Cortex's allowed external transitions, plus
/// the shutdown move ACTIVE→LEAVING).
fn transition_allowed(from: InstanceState, to: InstanceState) -> bool {
    use InstanceState::*;
    matches!(
        (from, to),
        (Pending, Joining) | (Joining, Pending) | (Joining, Active) | (Pending, Active) | (Active, Leaving)
    )
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

/// What this member believes about itself; the ring is written from it.
struct LocalState {
    state: InstanceState,
    tokens: Vec<u32>,
    registered_timestamp: i64,
}

struct Inner {
    cfg: LifecyclerConfig,
    kv: Arc<dyn KvClient>,
    key: String,
    addr: String,
    started: Instant,
    local: Mutex<LocalState>,
    /// Newest descriptor seen (watch or own CAS), for the synchronous readiness check.
    latest_desc: Mutex<Arc<Desc>>,
    ready: AtomicBool,
    heartbeats: Counter,
    tokens_owned: Gauge,
}

/// Registers this process in a ring and keeps its entry alive until [`Lifecycler::shutdown`].
pub struct Lifecycler {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    shutting_down: AtomicBool,
}

impl Lifecycler {
    /// Registers in the ring at `key` (PENDING, or as the ring/tokens file says), then runs the
    /// join timer, heartbeats and ring watch in the background. `grpc_addr` is the gRPC listen
    /// address, advertised unless `-ingester.lifecycler.addr`/`.port` say otherwise.
    pub async fn start(
        cfg: LifecyclerConfig,
        kv: Arc<dyn KvClient>,
        key: &str,
        grpc_addr: String,
        metrics: &server::Metrics,
    ) -> Result<Arc<Lifecycler>, RingError> {
        if cfg.id.is_empty() {
            return Err(RingError::Config("-ingester.lifecycler.ID is empty".into()));
        }
        let addr = advertised_addr(&cfg, &grpc_addr)?;
        let name = if key == crate::INGESTER_RING_KEY {
            "ingester".to_string()
        } else {
            key.to_string()
        };
        let label = NameLabel { name };
        let heartbeats = crate::metrics::shared_metric(
            metrics,
            "cortex_member_consul_heartbeats",
            "The total number of heartbeats sent to the KV store.",
            Family::<NameLabel, Counter>::default,
        )
        .get_or_create(&label)
        .clone();
        let tokens_owned = crate::metrics::shared_metric(
            metrics,
            "cortex_member_ring_tokens_owned",
            "The number of tokens owned in the ring.",
            Family::<NameLabel, Gauge>::default,
        )
        .get_or_create(&label)
        .clone();

        let inner = Arc::new(Inner {
            cfg,
            kv,
            key: key.to_string(),
            addr,
            started: Instant::now(),
            local: Mutex::new(LocalState {
                state: InstanceState::Pending,
                tokens: vec![],
                registered_timestamp: 0,
            }),
            latest_desc: Mutex::new(Arc::new(Desc::default())),
            ready: AtomicBool::new(false),
            heartbeats,
            tokens_owned,
        });
        inner.init_ring().await?;

        let (stop, stop_rx) = watch::channel(false);
        let updates = inner.kv.watch_key(&inner.key);
        let task = tokio::spawn(run(inner.clone(), stop_rx, updates));
        Ok(Arc::new(Lifecycler {
            inner,
            stop,
            task: Mutex::new(Some(task)),
            shutting_down: AtomicBool::new(false),
        }))
    }

    /// Spec §2.3 readiness, latched once it succeeds: at least `min_ready_duration` since start,
    /// every ring member ACTIVE with a fresh heartbeat, and this instance owns tokens.
    pub fn check_ready(&self) -> Result<(), String> {
        let inner = &self.inner;
        if inner.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        if inner.started.elapsed() < inner.cfg.min_ready_duration.0 {
            return Err(format!("waiting for {} after startup", inner.cfg.min_ready_duration));
        }
        let desc = inner.latest_desc.lock().clone();
        desc_ready(&desc, inner.cfg.ring.heartbeat_timeout.0, now_secs())?;
        if inner.local.lock().tokens.is_empty() {
            return Err("this instance owns no tokens".into());
        }
        inner.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// This member's state as it last wrote it.
    pub fn state(&self) -> InstanceState {
        self.inner.local.lock().state
    }

    /// This member's tokens, sorted.
    pub fn tokens(&self) -> Vec<u32> {
        self.inner.local.lock().tokens.clone()
    }

    pub fn id(&self) -> &str {
        &self.inner.cfg.id
    }

    /// The address advertised in the ring.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Moves this member to `to` and writes it to the ring (for hand-over protocols); only the
    /// transitions of spec §2.3 are allowed.
    pub async fn change_state(&self, to: InstanceState) -> Result<(), RingError> {
        self.inner.change_state(to).await
    }

    /// Spec §2.3 shutdown: LEAVING (so writers stop choosing us), keep heartbeating through
    /// `final_sleep`, then remove our entry if `unregister_on_shutdown`. Idempotent.
    pub async fn shutdown(&self) {
        self.shutdown_with(async {}).await
    }

    /// [`shutdown`](Self::shutdown) running `work` (flush, transfer) after switching to LEAVING
    /// and before the final sleep, while heartbeats continue.
    pub async fn shutdown_with<F: std::future::Future<Output = ()>>(&self, work: F) {
        if self.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = &self.inner;
        if let Err(e) = inner.change_state(InstanceState::Leaving).await {
            tracing::warn!(instance = %inner.cfg.id, error = %e, "could not switch to LEAVING");
        }
        work.await;
        tokio::time::sleep(inner.cfg.final_sleep.0).await;
        let _ = self.stop.send(true);
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        inner.store_tokens();
        if inner.cfg.unregister_on_shutdown {
            let id = inner.cfg.id.clone();
            let result = cas_desc(inner.kv.as_ref(), &inner.key, |mut desc| {
                Ok(desc.ingesters.remove(&id).map(|_| desc))
            })
            .await;
            match result {
                Ok(()) => tracing::info!(instance = %id, "unregistered from the ring"),
                Err(e) => tracing::error!(instance = %id, error = %e, "failed to unregister from the ring"),
            }
        }
    }
}

impl Drop for Lifecycler {
    fn drop(&mut self) {
        // Without a shutdown the entry stays (and goes stale), as after a crash.
        let _ = self.stop.send(true);
    }
}

/// Cortex `Desc.Ready`: every member ACTIVE with a fresh heartbeat and the ring has tokens.
fn desc_ready(desc: &Desc, timeout: Duration, now: i64) -> Result<(), String> {
    let mut ids: Vec<&String> = desc.ingesters.keys().collect();
    ids.sort();
    let mut tokens = 0;
    for id in ids {
        let d = &desc.ingesters[id];
        if !heartbeat_fresh(d, timeout, now) {
            return Err(format!("instance {id} past heartbeat timeout"));
        }
        let state = state_of(d);
        if state != InstanceState::Active {
            return Err(format!("instance {id} in state {}", state_name(state)));
        }
        tokens += d.tokens.len();
    }
    if tokens == 0 {
        return Err("no tokens in ring".into());
    }
    Ok(())
}

async fn run(inner: Arc<Inner>, mut stop: watch::Receiver<bool>, mut updates: crate::kv::WatchStream) {
    let join = tokio::time::sleep(inner.cfg.join_after.0);
    tokio::pin!(join);
    let mut join_pending = true;
    let period = inner.cfg.heartbeat_period.0;
    let heartbeat_enabled = !period.is_zero();
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + period,
        period.max(Duration::from_millis(1)),
    );
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watching = true;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = &mut join, if join_pending => {
                join_pending = false;
                if inner.local.lock().state == InstanceState::Pending {
                    if let Err(e) = inner.auto_join().await {
                        tracing::error!(instance = %inner.cfg.id, error = %e, "failed to join the ring");
                        // Try again on the next heartbeat period rather than staying PENDING.
                        join.as_mut().reset(tokio::time::Instant::now() + period.max(Duration::from_secs(1)));
                        join_pending = true;
                    }
                }
            }
            _ = heartbeat.tick(), if heartbeat_enabled => {
                if let Err(e) = inner.heartbeat().await {
                    tracing::warn!(instance = %inner.cfg.id, error = %e, "heartbeat to the ring failed");
                }
            }
            update = updates.next(), if watching => match update {
                Some(value) => match value.as_deref().map(decode_desc).transpose() {
                    Ok(desc) => *inner.latest_desc.lock() = Arc::new(desc.unwrap_or_default()),
                    Err(e) => tracing::error!(error = %e, "ignoring undecodable ring descriptor"),
                },
                None => watching = false,
            },
        }
    }
}

impl Inner {
    fn new_entry(&self, local: &LocalState, now: i64) -> InstanceDesc {
        InstanceDesc {
            addr: self.addr.clone(),
            timestamp: now,
            state: local.state as i32,
            tokens: local.tokens.clone(),
            zone: self.cfg.zone.clone(),
            registered_timestamp: local.registered_timestamp,
        }
    }

    fn remember(&self, desc: &Desc) {
        *self.latest_desc.lock() = Arc::new(desc.clone());
    }

    fn set_tokens(&self, tokens: Vec<u32>) {
        self.tokens_owned.set(tokens.len() as i64);
        self.local.lock().tokens = tokens;
        self.store_tokens();
    }

    fn store_tokens(&self) {
        if self.cfg.tokens_file_path.is_empty() {
            return;
        }
        let tokens = self.local.lock().tokens.clone();
        if tokens.is_empty() {
            return;
        }
        if let Err(e) = store_tokens_file(&PathBuf::from(&self.cfg.tokens_file_path), &tokens) {
            tracing::error!(error = %e, "failed to store tokens");
        }
    }

    /// Cortex `initRing`: add ourselves, or adopt what the ring says about us.
    async fn init_ring(&self) -> Result<(), RingError> {
        let file_tokens = if self.cfg.tokens_file_path.is_empty() {
            None
        } else {
            match load_tokens_file(&PathBuf::from(&self.cfg.tokens_file_path)) {
                Ok(t) => t.filter(|t| !t.is_empty()),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring unreadable tokens file");
                    None
                }
            }
        };
        let id = self.cfg.id.clone();
        let mut adopted: Option<(InstanceState, Vec<u32>, i64)> = None;
        let mut written: Option<Desc> = None;
        cas_desc(self.kv.as_ref(), &self.key, |mut desc| {
            let now = now_secs();
            written = None;
            let result = match desc.ingesters.get_mut(&id) {
                None => {
                    let (state, tokens) = match &file_tokens {
                        Some(t) if t.len() >= self.cfg.num_tokens => (InstanceState::Active, t.clone()),
                        Some(t) => (InstanceState::Pending, t.clone()),
                        None => (InstanceState::Pending, vec![]),
                    };
                    let local = LocalState {
                        state,
                        tokens,
                        registered_timestamp: now,
                    };
                    desc.ingesters.insert(id.clone(), self.new_entry(&local, now));
                    adopted = Some((local.state, local.tokens, now));
                    Some(desc)
                }
                Some(entry) => {
                    let before = entry.clone();
                    let mut state = state_of(entry);
                    if state == InstanceState::Joining {
                        // Crashed half-way through joining: start the lifecycle over.
                        state = InstanceState::Pending;
                    } else if state == InstanceState::Leaving && entry.tokens.len() == self.cfg.num_tokens {
                        // Left without unregistering (or unregistering is disabled): rejoin.
                        state = InstanceState::Active;
                    }
                    entry.state = state as i32;
                    entry.addr = self.addr.clone();
                    entry.zone = self.cfg.zone.clone();
                    adopted = Some((state, entry.tokens.clone(), entry.registered_timestamp));
                    if *entry != before {
                        entry.timestamp = now;
                        Some(desc)
                    } else {
                        None
                    }
                }
            };
            written = result.clone();
            Ok(result)
        })
        .await?;
        if let Some(desc) = &written {
            self.remember(desc);
        }
        if let Some((state, tokens, registered)) = adopted {
            {
                let mut local = self.local.lock();
                local.state = state;
                local.registered_timestamp = registered;
            }
            self.set_tokens(tokens);
            tracing::info!(instance = %id, addr = %self.addr, state = state_name(state), "registered in the ring");
        }
        Ok(())
    }

    /// Takes the missing tokens (avoiding every token already in the ring) and becomes ACTIVE.
    async fn auto_join(&self) -> Result<(), RingError> {
        let id = self.cfg.id.clone();
        let mut chosen: Vec<u32> = vec![];
        let mut written: Option<Desc> = None;
        cas_desc(self.kv.as_ref(), &self.key, |mut desc| {
            let now = now_secs();
            let local_snapshot = {
                let l = self.local.lock();
                LocalState {
                    state: l.state,
                    tokens: l.tokens.clone(),
                    registered_timestamp: l.registered_timestamp,
                }
            };
            let mut mine = desc
                .ingesters
                .get(&id)
                .map(|e| e.tokens.clone())
                .unwrap_or(local_snapshot.tokens.clone());
            if mine.len() < self.cfg.num_tokens {
                let taken: HashSet<u32> = desc.ingesters.values().flat_map(|e| e.tokens.iter().copied()).collect();
                mine.extend(generate_tokens(self.cfg.num_tokens - mine.len(), &taken));
                mine.sort_unstable();
            }
            let entry = desc
                .ingesters
                .entry(id.clone())
                .or_insert_with(|| self.new_entry(&local_snapshot, now));
            entry.tokens = mine.clone();
            entry.state = InstanceState::Active as i32;
            entry.timestamp = now;
            chosen = mine;
            written = Some(desc.clone());
            Ok(Some(desc))
        })
        .await?;
        if let Some(desc) = &written {
            self.remember(desc);
        }
        self.local.lock().state = InstanceState::Active;
        self.set_tokens(chosen);
        tracing::info!(instance = %id, tokens = self.cfg.num_tokens, "joined the ring as ACTIVE");
        Ok(())
    }

    /// Cortex `updateConsul`: refresh our entry (re-adding it if the ring lost it).
    async fn heartbeat(&self) -> Result<(), RingError> {
        let id = self.cfg.id.clone();
        let mut written: Option<Desc> = None;
        cas_desc(self.kv.as_ref(), &self.key, |mut desc| {
            let now = now_secs();
            let local = self.local.lock();
            match desc.ingesters.get_mut(&id) {
                None => {
                    tracing::info!(instance = %id, "own entry missing from the ring, re-adding it");
                    desc.ingesters.insert(id.clone(), self.new_entry(&local, now));
                }
                Some(entry) => {
                    entry.timestamp = now;
                    entry.state = local.state as i32;
                    entry.addr = self.addr.clone();
                    entry.zone = self.cfg.zone.clone();
                    entry.registered_timestamp = local.registered_timestamp;
                }
            }
            drop(local);
            written = Some(desc.clone());
            Ok(Some(desc))
        })
        .await?;
        self.heartbeats.inc();
        if let Some(desc) = &written {
            self.remember(desc);
        }
        Ok(())
    }

    async fn change_state(&self, to: InstanceState) -> Result<(), RingError> {
        {
            let mut local = self.local.lock();
            if local.state == to {
                return Ok(());
            }
            if !transition_allowed(local.state, to) {
                return Err(RingError::InvalidTransition { from: local.state, to });
            }
            local.state = to;
        }
        tracing::info!(instance = %self.cfg.id, state = state_name(to), "changing instance state");
        self.heartbeat().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::InMemoryKv;

    fn test_cfg(id: &str) -> LifecyclerConfig {
        LifecyclerConfig {
            ring: RingConfig {
                replication_factor: 1,
                ..RingConfig::default()
            },
            num_tokens: 8,
            heartbeat_period: GoDuration::millis(50),
            join_after: GoDuration::secs(0),
            min_ready_duration: GoDuration::secs(0),
            final_sleep: GoDuration::secs(0),
            id: id.into(),
            ..LifecyclerConfig::default()
        }
    }

    async fn ring_desc(kv: &InMemoryKv) -> Desc {
        kv.get(crate::INGESTER_RING_KEY)
            .await
            .unwrap()
            .map(|b| decode_desc(&b).unwrap())
            .unwrap_or_default()
    }

    /// Polls `cond` until it holds (5s at most).
    async fn eventually<F, Fut>(what: &str, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond().await {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn start(cfg: LifecyclerConfig, kv: &Arc<InMemoryKv>, metrics: &server::Metrics) -> Arc<Lifecycler> {
        Lifecycler::start(
            cfg,
            kv.clone(),
            crate::INGESTER_RING_KEY,
            "127.0.0.1:9095".into(),
            metrics,
        )
        .await
        .unwrap()
    }

    fn entry_state(desc: &Desc, id: &str) -> Option<InstanceState> {
        desc.ingesters.get(id).map(state_of)
    }

    #[tokio::test]
    async fn joins_heartbeats_and_leaves() {
        let kv = InMemoryKv::new();
        let metrics = server::Metrics::new();
        let lc = start(test_cfg("ing-1"), &kv, &metrics).await;
        eventually("ACTIVE with 8 tokens", || async {
            let d = ring_desc(&kv).await;
            entry_state(&d, "ing-1") == Some(InstanceState::Active) && d.ingesters["ing-1"].tokens.len() == 8
        })
        .await;
        assert_eq!(lc.state(), InstanceState::Active);
        let d = ring_desc(&kv).await;
        let entry = &d.ingesters["ing-1"];
        assert_eq!(entry.addr, "127.0.0.1:9095");
        assert_eq!(entry.tokens, lc.tokens());
        assert!(entry.tokens.windows(2).all(|w| w[0] < w[1]));
        assert!((now_secs() - entry.registered_timestamp).abs() <= 2);
        eventually("several heartbeats", || async {
            let text = metrics.encode();
            text.lines()
                .filter_map(|l| l.strip_prefix(r#"cortex_member_consul_heartbeats_total{name="ingester"} "#))
                .any(|n| n.parse::<u64>().unwrap() >= 3)
        })
        .await;
        assert!(metrics
            .encode()
            .contains(r#"cortex_member_ring_tokens_owned{name="ingester"} 8"#));
        assert!(lc.check_ready().is_ok());
        lc.shutdown().await;
        assert!(ring_desc(&kv).await.ingesters.is_empty(), "unregistered on shutdown");
        lc.shutdown().await; // idempotent
    }

    #[tokio::test]
    async fn leaving_without_unregistering_stays_leaving_and_rejoins_as_active() {
        let kv = InMemoryKv::new();
        let metrics = server::Metrics::new();
        let mut cfg = test_cfg("ing-1");
        cfg.unregister_on_shutdown = false;
        let lc = start(cfg.clone(), &kv, &metrics).await;
        eventually("ACTIVE", || async { lc.state() == InstanceState::Active }).await;
        let tokens = lc.tokens();
        lc.shutdown().await;
        assert_eq!(lc.state(), InstanceState::Leaving);
        assert_eq!(
            entry_state(&ring_desc(&kv).await, "ing-1"),
            Some(InstanceState::Leaving)
        );
        // A restart with the full token set goes straight back to ACTIVE with the same tokens.
        cfg.join_after = GoDuration::secs(3600);
        let again = start(cfg, &kv, &metrics).await;
        assert_eq!(again.state(), InstanceState::Active);
        assert_eq!(again.tokens(), tokens);
        assert_eq!(entry_state(&ring_desc(&kv).await, "ing-1"), Some(InstanceState::Active));
    }

    #[tokio::test]
    async fn pending_until_join_after_and_not_ready_meanwhile() {
        let kv = InMemoryKv::new();
        let metrics = server::Metrics::new();
        let mut cfg = test_cfg("ing-1");
        cfg.join_after = GoDuration::secs(3600);
        let lc = start(cfg, &kv, &metrics).await;
        let d = ring_desc(&kv).await;
        assert_eq!(entry_state(&d, "ing-1"), Some(InstanceState::Pending));
        assert!(d.ingesters["ing-1"].tokens.is_empty());
        assert_eq!(lc.check_ready().unwrap_err(), "instance ing-1 in state PENDING");
        // PENDING cannot be moved to LEAVING; shutdown still unregisters.
        assert!(matches!(
            lc.change_state(InstanceState::Leaving).await,
            Err(RingError::InvalidTransition { .. })
        ));
        lc.change_state(InstanceState::Active).await.unwrap();
        assert_eq!(entry_state(&ring_desc(&kv).await, "ing-1"), Some(InstanceState::Active));
        lc.shutdown().await;
        assert!(ring_desc(&kv).await.ingesters.is_empty());
    }

    #[tokio::test]
    async fn readiness_waits_for_min_duration_and_a_settled_ring_then_latches() {
        let kv = InMemoryKv::new();
        let metrics = server::Metrics::new();
        // A dead member left in the ring (the classic "forget it" situation).
        cas_desc(kv.as_ref(), crate::INGESTER_RING_KEY, |mut d| {
            d.ingesters.insert(
                "dead".into(),
                InstanceDesc {
                    addr: "10.0.0.9:9095".into(),
                    timestamp: now_secs() - 3600,
                    state: InstanceState::Active as i32,
                    tokens: vec![42],
                    ..InstanceDesc::default()
                },
            );
            Ok(Some(d))
        })
        .await
        .unwrap();
        let mut cfg = test_cfg("ing-1");
        cfg.min_ready_duration = GoDuration::millis(300);
        let lc = start(cfg, &kv, &metrics).await;
        assert_eq!(lc.check_ready().unwrap_err(), "waiting for 300ms after startup");
        eventually("min ready duration passed", || async {
            lc.check_ready() != Err("waiting for 300ms after startup".to_string())
        })
        .await;
        eventually("joined", || async { lc.state() == InstanceState::Active }).await;
        assert_eq!(lc.check_ready().unwrap_err(), "instance dead past heartbeat timeout");
        cas_desc(kv.as_ref(), crate::INGESTER_RING_KEY, |mut d| {
            Ok(d.ingesters.remove("dead").map(|_| d))
        })
        .await
        .unwrap();
        eventually("ready once the dead member is forgotten", || async {
            lc.check_ready().is_ok()
        })
        .await;
        // Latched: a newcomer in PENDING no longer affects this instance's readiness.
        let mut other = test_cfg("ing-2");
        other.join_after = GoDuration::secs(3600);
        let _lc2 = start(other, &kv, &metrics).await;
        assert!(lc.check_ready().is_ok());
    }

    #[tokio::test]
    async fn heartbeat_re_adds_the_entry_when_the_ring_is_lost() {
        let kv = InMemoryKv::new();
        let metrics = server::Metrics::new();
        let lc = start(test_cfg("ing-1"), &kv, &metrics).await;
        eventually("ACTIVE", || async { lc.state() == InstanceState::Active }).await;
        let tokens = lc.tokens();
        kv.delete(crate::INGESTER_RING_KEY).await.unwrap();
        eventually("entry re-added", || async {
            let d = ring_desc(&kv).await;
            d.ingesters
                .get("ing-1")
                .is_some_and(|e| e.tokens == tokens && state_of(e) == InstanceState::Active)
        })
        .await;
    }

    #[tokio::test]
    async fn tokens_file_is_written_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let metrics = server::Metrics::new();
        let mut cfg = test_cfg("ing-1");
        cfg.tokens_file_path = path.display().to_string();
        let kv = InMemoryKv::new();
        let lc = start(cfg.clone(), &kv, &metrics).await;
        eventually("ACTIVE", || async { lc.state() == InstanceState::Active }).await;
        let tokens = lc.tokens();
        assert_eq!(load_tokens_file(&path).unwrap(), Some(tokens.clone()));
        lc.shutdown().await;
        // A fresh ring (Consul lost its data): the file's tokens are reused and, being a full
        // set, the instance is ACTIVE at once without waiting for join_after.
        let fresh = InMemoryKv::new();
        cfg.join_after = GoDuration::secs(3600);
        let lc = start(cfg, &fresh, &metrics).await;
        assert_eq!(lc.state(), InstanceState::Active);
        assert_eq!(ring_desc(&fresh).await.ingesters["ing-1"].tokens, tokens);
    }

    #[tokio::test]
    async fn joining_entry_restarts_as_pending_and_members_get_distinct_tokens() {
        let kv = InMemoryKv::new();
        let metrics = server::Metrics::new();
        cas_desc(kv.as_ref(), crate::INGESTER_RING_KEY, |mut d| {
            d.ingesters.insert(
                "ing-1".into(),
                InstanceDesc {
                    addr: "old:9095".into(),
                    timestamp: now_secs(),
                    state: InstanceState::Joining as i32,
                    tokens: vec![1, 2, 3],
                    registered_timestamp: 12345,
                    ..InstanceDesc::default()
                },
            );
            Ok(Some(d))
        })
        .await
        .unwrap();
        let mut cfg = test_cfg("ing-1");
        cfg.join_after = GoDuration::secs(3600);
        let lc = start(cfg, &kv, &metrics).await;
        assert_eq!(lc.state(), InstanceState::Pending);
        let d = ring_desc(&kv).await;
        assert_eq!(entry_state(&d, "ing-1"), Some(InstanceState::Pending));
        assert_eq!(
            d.ingesters["ing-1"].registered_timestamp, 12345,
            "registration time is kept"
        );
        assert_eq!(d.ingesters["ing-1"].addr, "127.0.0.1:9095");
        drop(lc);

        let lcs = futures::future::join_all((2..5).map(|i| start(test_cfg(&format!("ing-{i}")), &kv, &metrics))).await;
        eventually("all ACTIVE", || async {
            lcs.iter().all(|l| l.state() == InstanceState::Active)
        })
        .await;
        let mut all: Vec<u32> = lcs.iter().flat_map(|l| l.tokens()).collect();
        all.extend([1, 2, 3]);
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "no token is taken twice");
    }

    #[test]
    fn flags_set_the_lifecycler_config() {
        let args: Vec<String> = [
            "-ingester.num-tokens=512",
            "-ingester.heartbeat-period=1s",
            "-ring.heartbeat-timeout=2m",
            "-ingester.lifecycler.ID=ing-7",
            "-ingester.lifecycler.addr=10.0.0.7",
            "-ingester.lifecycler.port=9999",
            "-ingester.availability-zone=zone-b",
            "-ingester.unregister-on-shutdown=false",
            "-distributor.replication-factor=1",
            "-ring.store=inmemory",
            "-consul.hostname=consul:8500",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cfg: LifecyclerConfig = server::config::load(&args, LifecyclerConfig::FLAGS).unwrap();
        assert_eq!(cfg.num_tokens, 512);
        assert_eq!(cfg.heartbeat_period, GoDuration::secs(1));
        assert_eq!(cfg.ring.heartbeat_timeout, GoDuration::secs(120));
        assert_eq!(cfg.id, "ing-7");
        assert_eq!(cfg.addr, "10.0.0.7");
        assert_eq!(cfg.port, 9999);
        assert_eq!(cfg.zone, "zone-b");
        assert!(!cfg.unregister_on_shutdown);
        assert_eq!(cfg.ring.replication_factor, 1);
        assert_eq!(cfg.ring.kvstore.store, "inmemory");
        assert_eq!(cfg.ring.kvstore.consul.host, "consul:8500");
        let d = LifecyclerConfig::default();
        assert_eq!(
            (
                d.num_tokens,
                d.heartbeat_period,
                d.join_after,
                d.min_ready_duration,
                d.final_sleep
            ),
            (
                128,
                GoDuration::secs(5),
                GoDuration::secs(0),
                GoDuration::secs(60),
                GoDuration::secs(30)
            )
        );
        assert!(d.unregister_on_shutdown && !d.id.is_empty());
        let yaml = server::config::to_yaml(&d);
        assert!(yaml.contains("availability_zone") && yaml.contains("address"), "{yaml}");
    }

    #[test]
    fn advertised_address_rules() {
        let mut cfg = LifecyclerConfig::default();
        assert_eq!(advertised_addr(&cfg, "127.0.0.1:9095").unwrap(), "127.0.0.1:9095");
        cfg.port = 1234;
        assert_eq!(advertised_addr(&cfg, "127.0.0.1:9095").unwrap(), "127.0.0.1:1234");
        cfg.addr = "10.1.2.3".into();
        assert_eq!(advertised_addr(&cfg, "0.0.0.0:9095").unwrap(), "10.1.2.3:1234");
        cfg.port = 0;
        assert_eq!(advertised_addr(&cfg, "ingester-1:9095").unwrap(), "10.1.2.3:9095");
        cfg.addr.clear();
        assert_eq!(advertised_addr(&cfg, "ingester-1:9095").unwrap(), "ingester-1:9095");
        let unspecified = advertised_addr(&cfg, "0.0.0.0:9095").unwrap();
        assert!(!unspecified.starts_with("0.0.0.0"), "{unspecified}");
        assert!(advertised_addr(&cfg, "nonsense").is_err());
    }

    #[test]
    fn allowed_transitions() {
        use InstanceState::*;
        assert!(transition_allowed(Pending, Active));
        assert!(transition_allowed(Active, Leaving));
        assert!(transition_allowed(Joining, Pending));
        assert!(!transition_allowed(Pending, Leaving));
        assert!(!transition_allowed(Leaving, Active));
        assert!(!transition_allowed(Active, Pending));
    }

    #[test]
    fn desc_readiness_messages() {
        let now = 1_000_000;
        let timeout = Duration::from_secs(60);
        let entry = |state: InstanceState, ts: i64, tokens: Vec<u32>| InstanceDesc {
            addr: "a".into(),
            timestamp: ts,
            state: state as i32,
            tokens,
            zone: String::new(),
            registered_timestamp: 0,
        };
        let mut desc = Desc::default();
        assert_eq!(desc_ready(&desc, timeout, now).unwrap_err(), "no tokens in ring");
        desc.ingesters
            .insert("a".into(), entry(InstanceState::Active, now, vec![1]));
        assert!(desc_ready(&desc, timeout, now).is_ok());
        desc.ingesters
            .insert("b".into(), entry(InstanceState::Pending, now, vec![]));
        assert_eq!(
            desc_ready(&desc, timeout, now).unwrap_err(),
            "instance b in state PENDING"
        );
        desc.ingesters
            .insert("b".into(), entry(InstanceState::Active, now - 61, vec![2]));
        assert_eq!(
            desc_ready(&desc, timeout, now).unwrap_err(),
            "instance b past heartbeat timeout"
        );
    }
}
