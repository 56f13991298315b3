//! Chunk cutting and flushing to the chunk store (spec §3.4).
//!
//! Every `flush_period` a sweep looks at each series: flushed chunks older
//! than `retain_period` are dropped (and series left without chunks are
//! removed), and a series whose first unflushed chunk should be flushed
//! (more than one chunk, aged, idle, stale, or immediate) gets a flush op in
//! queue `fp mod concurrent_flushes`. Queues are priority queues (oldest
//! first chunk first), deduplicated by tenant+fingerprint+immediate, drained
//! by one worker each. Non-immediate ops are rate limited so a sweep's work
//! spreads over the flush period.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use model::{Fingerprint, GoDuration, Labels};
use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, linear_buckets, Histogram};
use serde::{Deserialize, Serialize};
use server::config::Flag;
use storage::{ChunkEntry, ChunkStore};
use tokio::sync::Notify;

use crate::metrics::UserLabel;
use crate::series::{ChunkDesc, MemorySeries};
use crate::Ingester;

/// Flush settings of the `ingester` section (Cortex v1.10 defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct FlushConfig {
    pub max_chunk_idle_time: GoDuration,
    pub max_stale_chunk_idle_time: GoDuration,
    pub flush_op_timeout: GoDuration,
    pub max_chunk_age: GoDuration,
    pub chunk_age_jitter: GoDuration,
    pub concurrent_flushes: usize,
    pub spread_flushes: bool,
    pub flush_period: GoDuration,
    pub retain_period: GoDuration,
    /// Encoding of flushed chunks (`-ingester.chunk-encoding`). `Bigchunk` (the default, as
    /// Cortex): a series' 120-sample chunks stay in memory until the run is due (spread cut,
    /// max-chunk-age, idle, stale, flush) and are stored as one Bigchunk object.
    /// `PrometheusXorChunk`: each 120-sample chunk is its own object, flushed once cut.
    pub chunk_encoding: WriteEncoding,
}

/// The encoding flushed chunks are written in. Cortex's flag takes a name or a number of any
/// encoding; we write the two that are XOR inside (our in-memory chunks are XOR, so either is a
/// copy at most): Bigchunk (3, the default as in Cortex: one object per series run, far fewer
/// objects and index entries) and PrometheusXorChunk (4, one object per 120 samples). DoubleDelta (1) and
/// Varbit (2) — Prometheus 1.x formats, read from old stores but not worth re-encoding into —
/// and Delta (0) are refused at start with an error naming the flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteEncoding(chunk::Encoding);

impl WriteEncoding {
    pub const XOR: WriteEncoding = WriteEncoding(chunk::Encoding::PrometheusXorChunk);
    pub const BIGCHUNK: WriteEncoding = WriteEncoding(chunk::Encoding::Bigchunk);

    /// A flag or YAML value: a name or a number, as Cortex's flag accepts them.
    pub fn parse(s: &str) -> Result<WriteEncoding, String> {
        let bad = |why: String| format!("invalid value {s:?} for -ingester.chunk-encoding: {why}");
        match chunk::Encoding::parse_flag(s.trim()).map_err(|e| bad(e.to_string()))? {
            e @ (chunk::Encoding::PrometheusXorChunk | chunk::Encoding::Bigchunk) => Ok(WriteEncoding(e)),
            e => Err(bad(format!(
                "{e} ({}) is read but not written here; write PrometheusXorChunk (4) or Bigchunk (3)",
                e.id()
            ))),
        }
    }

    pub fn encoding(self) -> chunk::Encoding {
        self.0
    }

    /// The stored payload of one in-memory (XOR) chunk.
    fn payload(self, xor: &bytes::Bytes) -> Result<bytes::Bytes, chunk::ChunkError> {
        match self.0 {
            chunk::Encoding::Bigchunk => chunk::bigchunk::encode(&[xor]),
            _ => Ok(xor.clone()),
        }
    }
}

impl Default for WriteEncoding {
    fn default() -> Self {
        WriteEncoding::BIGCHUNK
    }
}

impl Serialize for WriteEncoding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for WriteEncoding {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // YAML may spell it as a number (`chunk_encoding: 3`) or a name.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Id(i64),
            Name(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Id(n) => n.to_string(),
            Raw::Name(s) => s,
        };
        WriteEncoding::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Default for FlushConfig {
    fn default() -> Self {
        FlushConfig {
            max_chunk_idle_time: GoDuration::secs(5 * 60),
            max_stale_chunk_idle_time: GoDuration::secs(2 * 60),
            flush_op_timeout: GoDuration::secs(60),
            max_chunk_age: GoDuration::secs(12 * 3600),
            chunk_age_jitter: GoDuration::secs(0),
            concurrent_flushes: 50,
            spread_flushes: true,
            flush_period: GoDuration::secs(60),
            retain_period: GoDuration::secs(5 * 60),
            chunk_encoding: WriteEncoding::default(),
        }
    }
}

/// Flush flags; paths relative to the `ingester` section.
pub const FLUSH_FLAGS: &[Flag] = &[
    Flag::new(
        "ingester.max-chunk-idle",
        "max_chunk_idle_time",
        "Maximum chunk idle time before flushing.",
    ),
    Flag::new(
        "ingester.max-stale-chunk-idle",
        "max_stale_chunk_idle_time",
        "Maximum chunk idle time for chunks terminating in stale markers before flushing. 0 disables it and a stale series is not flushed until the max-chunk-idle timeout is reached.",
    ),
    Flag::new(
        "ingester.flush-op-timeout",
        "flush_op_timeout",
        "Timeout for individual flush operations.",
    ),
    Flag::new(
        "ingester.max-chunk-age",
        "max_chunk_age",
        "Maximum chunk age before flushing.",
    ),
    Flag::new(
        "ingester.chunk-age-jitter",
        "chunk_age_jitter",
        "Range of time to subtract from -ingester.max-chunk-age to spread out flushes",
    ),
    Flag::new(
        "ingester.concurrent-flushes",
        "concurrent_flushes",
        "Number of concurrent goroutines flushing to the chunk store.",
    ),
    Flag::new(
        "ingester.spread-flushes",
        "spread_flushes",
        "If true, spread series flushes across the whole period of -ingester.max-chunk-age.",
    ),
    Flag::new(
        "ingester.flush-period",
        "flush_period",
        "Period with which to attempt to flush chunks.",
    ),
    Flag::new(
        "ingester.retain-period",
        "retain_period",
        "Period chunks will remain in memory after flushing.",
    ),
    Flag::new(
        "ingester.chunk-encoding",
        "chunk_encoding",
        "Encoding of flushed chunks, a name or number as in Cortex: Bigchunk (3: a series' chunks up to -ingester.max-chunk-age in one object) or PrometheusXorChunk (4: one object per 120 samples); DoubleDelta (1) and Varbit (2) are read but refused for writing.",
    ),
];

/// Why a series is flushed (label values of Cortex's metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum FlushReason {
    MultipleChunksInSeries,
    Aged,
    Idle,
    Stale,
    Immediate,
    Spread,
}

impl FlushReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FlushReason::MultipleChunksInSeries => "MultipleChunksInSeries",
            FlushReason::Aged => "Aged",
            FlushReason::Idle => "Idle",
            FlushReason::Stale => "Stale",
            FlushReason::Immediate => "Immediate",
            FlushReason::Spread => "Spread",
        }
    }
}

/// The flush settings in milliseconds, as the decisions use them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FlushPolicy {
    pub(crate) max_chunk_age_ms: i64,
    pub(crate) jitter_ms: i64,
    pub(crate) max_chunk_idle_ms: i64,
    pub(crate) max_stale_chunk_idle_ms: i64,
    pub(crate) retain_ms: i64,
    /// Flush a series' closed chunks together, as one Bigchunk object.
    pub(crate) merge: bool,
}

/// Most sub-chunks one Bigchunk object takes (its count is a u16; this bounds an object to a
/// few hundred KiB when max-chunk-age is large or disabled).
pub(crate) const MAX_SUBCHUNKS: usize = 240;

impl FlushPolicy {
    pub(crate) fn from_config(c: &FlushConfig) -> Self {
        FlushPolicy {
            max_chunk_age_ms: c.max_chunk_age.as_millis(),
            jitter_ms: c.chunk_age_jitter.as_millis(),
            max_chunk_idle_ms: c.max_chunk_idle_time.as_millis(),
            max_stale_chunk_idle_ms: c.max_stale_chunk_idle_time.as_millis(),
            retain_ms: c.retain_period.as_millis(),
            merge: c.chunk_encoding == WriteEncoding::BIGCHUNK,
        }
    }

    /// Cortex `shouldFlushChunk`.
    pub(crate) fn should_flush_chunk(
        &self,
        c: &ChunkDesc,
        fp: Fingerprint,
        last_is_stale: bool,
        now: i64,
    ) -> Option<FlushReason> {
        if c.flushed {
            return None;
        }
        if self.max_chunk_age_ms > 0 {
            let jitter = if self.jitter_ms > 0 {
                (fp % self.jitter_ms as u64) as i64
            } else {
                0
            };
            if c.last_time - c.first_time > self.max_chunk_age_ms - jitter {
                return Some(FlushReason::Aged);
            }
        }
        let idle = now - c.last_update_ms;
        if idle > self.max_chunk_idle_ms {
            return Some(FlushReason::Idle);
        }
        if last_is_stale && self.max_stale_chunk_idle_ms > 0 && idle > self.max_stale_chunk_idle_ms {
            return Some(FlushReason::Stale);
        }
        None
    }

    /// Cortex `shouldFlushSeries`, decided on the first *unflushed* chunk
    /// (spec §3.4; Cortex looks at the first chunk, so a head going idle
    /// behind a flushed chunk waited for the retain period as well).
    pub(crate) fn should_flush_series(
        &self,
        s: &MemorySeries,
        fp: Fingerprint,
        immediate: bool,
        now: i64,
    ) -> Option<FlushReason> {
        let k = s.chunks.iter().position(|c| !c.flushed)?;
        if immediate {
            return Some(FlushReason::Immediate);
        }
        let first = &s.chunks[k];
        if !self.merge {
            if k + 1 < s.chunks.len() {
                return Some(first.flush_reason.unwrap_or(FlushReason::MultipleChunksInSeries));
            }
            return self.should_flush_chunk(first, fp, s.last_value_is_stale(), now);
        }
        // Bigchunk: the closed chunks wait for the head unless one was closed on purpose (spread
        // cut, flush), the run spans max-chunk-age, or it is as long as one object may be.
        let head = s.chunks.last().expect("a series with an unflushed chunk has a head");
        let closed = &s.chunks[k..s.chunks.len() - 1];
        if let Some(reason) = closed.iter().find_map(|c| c.flush_reason) {
            return Some(reason);
        }
        if closed.len() >= MAX_SUBCHUNKS {
            return Some(FlushReason::MultipleChunksInSeries);
        }
        if self.max_chunk_age_ms > 0 && !closed.is_empty() {
            let jitter = if self.jitter_ms > 0 {
                (fp % self.jitter_ms as u64) as i64
            } else {
                0
            };
            if head.last_time - first.first_time > self.max_chunk_age_ms - jitter {
                return Some(FlushReason::Aged);
            }
        }
        self.should_flush_chunk(head, fp, s.last_value_is_stale(), now)
    }
}

/// One chunk taken out for flushing (a copy; the series keeps its own).
pub(crate) struct PendingChunk {
    pub(crate) first_time: i64,
    pub(crate) last_time: i64,
    pub(crate) num_samples: usize,
    pub(crate) data: bytes::Bytes,
}

/// The chunks to flush of one series.
pub(crate) struct PendingSeries {
    pub(crate) labels: Labels,
    pub(crate) chunks: Vec<PendingChunk>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct OpKey {
    tenant: Arc<str>,
    fp: Fingerprint,
    immediate: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct FlushOp {
    /// Priority: the first time of the series' oldest chunk (older first).
    from: i64,
    tenant: Arc<str>,
    fp: Fingerprint,
    immediate: bool,
}

struct Queued {
    op: FlushOp,
    seq: u64,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    // BinaryHeap is a max-heap: the smallest `from` (then the earliest seq) is "greatest".
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.op.from.cmp(&self.op.from).then(other.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
struct QueueInner {
    heap: BinaryHeap<Queued>,
    keys: HashSet<OpKey>,
    seq: u64,
}

#[derive(Default)]
struct FlushQueue {
    inner: Mutex<QueueInner>,
    notify: Notify,
}

impl FlushQueue {
    /// False when an identical op is already queued.
    fn enqueue(&self, op: FlushOp) -> bool {
        let mut q = self.inner.lock();
        let key = OpKey {
            tenant: op.tenant.clone(),
            fp: op.fp,
            immediate: op.immediate,
        };
        if !q.keys.insert(key) {
            return false;
        }
        q.seq += 1;
        let seq = q.seq;
        q.heap.push(Queued { op, seq });
        drop(q);
        self.notify.notify_one();
        true
    }

    fn try_pop(&self) -> Option<FlushOp> {
        let mut q = self.inner.lock();
        let item = q.heap.pop()?;
        q.keys.remove(&OpKey {
            tenant: item.op.tenant.clone(),
            fp: item.op.fp,
            immediate: item.op.immediate,
        });
        Some(item.op)
    }

    fn len(&self) -> usize {
        self.inner.lock().heap.len()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone)]
struct FlushMetrics {
    queue_length: Gauge,
    in_progress: Gauge,
    enqueued: Family<ReasonLabel, Counter>,
    dequeued: Family<OutcomeLabel, Counter>,
    chunk_utilization: Histogram,
    chunk_length: Histogram,
    chunk_size: Histogram,
    chunk_age: Histogram,
    dropped_chunks: Counter,
    oldest_unflushed: Gauge<f64, AtomicU64>,
    stored_chunks: Family<UserLabel, Counter>,
    stored_bytes: Family<UserLabel, Counter>,
}

impl FlushMetrics {
    fn new(r: &server::Metrics) -> Self {
        let m = FlushMetrics {
            queue_length: Gauge::default(),
            in_progress: Gauge::default(),
            enqueued: Family::default(),
            dequeued: Family::default(),
            chunk_utilization: Histogram::new(linear_buckets(0.0, 0.2, 7)),
            chunk_length: Histogram::new(exponential_buckets(5.0, 2.0, 11)),
            chunk_size: Histogram::new(exponential_buckets(500.0, 2.0, 5)),
            // 10 minutes to 12 hours, as Cortex's buckets.
            chunk_age: Histogram::new([600.0, 1800.0, 3600.0, 7200.0, 10800.0, 21600.0, 43200.0]),
            dropped_chunks: Counter::default(),
            oldest_unflushed: Gauge::default(),
            stored_chunks: r.shared(
                "cortex_chunk_store_stored_chunks",
                "Total stored chunks per user.",
                Family::default,
            ),
            stored_bytes: r.shared(
                "cortex_chunk_store_stored_chunk_bytes",
                "Total bytes stored in chunks per user.",
                Family::default,
            ),
        };
        r.register(
            "cortex_ingester_flush_queue_length",
            "The total number of series pending in the flush queue.",
            m.queue_length.clone(),
        );
        r.register(
            "cortex_ingester_flush_series_in_progress",
            "Number of flush series operations in progress.",
            m.in_progress.clone(),
        );
        r.register(
            "cortex_ingester_flushing_enqueued_series",
            "Total number of series enqueued for flushing, with reasons.",
            m.enqueued.clone(),
        );
        r.register(
            "cortex_ingester_flushing_dequeued_series",
            "Total number of series dequeued for flushing, with outcome (superset of enqueue reasons).",
            m.dequeued.clone(),
        );
        r.register(
            "cortex_ingester_chunk_utilization",
            "Distribution of stored chunk utilization (when stored).",
            m.chunk_utilization.clone(),
        );
        r.register(
            "cortex_ingester_chunk_length",
            "Distribution of stored chunk lengths (when stored).",
            m.chunk_length.clone(),
        );
        r.register(
            "cortex_ingester_chunk_size_bytes",
            "Distribution of stored chunk sizes (when stored).",
            m.chunk_size.clone(),
        );
        r.register(
            "cortex_ingester_chunk_age_seconds",
            "Distribution of chunk ages (when stored).",
            m.chunk_age.clone(),
        );
        r.register(
            "cortex_ingester_dropped_chunks",
            "Total number of chunks dropped from flushing because they have too few samples.",
            m.dropped_chunks.clone(),
        );
        r.register(
            "cortex_oldest_unflushed_chunk_timestamp_seconds",
            "Unix timestamp of the oldest unflushed chunk in the memory",
            m.oldest_unflushed.clone(),
        );
        m
    }

    fn dequeued(&self, outcome: &str) {
        self.dequeued
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

/// Paces non-immediate flush ops: at most `rate` per second.
struct RateLimiter {
    next_ms: i64,
    interval_ms: f64,
}

/// Flush queues, workers' shared state and the chunk store.
pub(crate) struct Flusher {
    queues: Box<[FlushQueue]>,
    store: RwLock<Option<Arc<dyn ChunkStore>>>,
    metrics: FlushMetrics,
    /// Ops queued or being flushed; [`Ingester::flush_and_wait`] waits for 0.
    outstanding: AtomicUsize,
    drained: Notify,
    limiter: Mutex<RateLimiter>,
    pub(crate) policy: FlushPolicy,
}

impl Flusher {
    pub(crate) fn new(cfg: &FlushConfig, metrics: &server::Metrics) -> Self {
        Flusher {
            queues: (0..cfg.concurrent_flushes.max(1))
                .map(|_| FlushQueue::default())
                .collect(),
            store: RwLock::new(None),
            metrics: FlushMetrics::new(metrics),
            outstanding: AtomicUsize::new(0),
            drained: Notify::new(),
            limiter: Mutex::new(RateLimiter {
                next_ms: 0,
                interval_ms: 0.0,
            }),
            policy: FlushPolicy::from_config(cfg),
        }
    }

    pub(crate) fn set_store(&self, store: Arc<dyn ChunkStore>) {
        *self.store.write() = Some(store);
    }

    fn store(&self) -> Option<Arc<dyn ChunkStore>> {
        self.store.read().clone()
    }

    fn enqueue(&self, op: FlushOp, reason: FlushReason) {
        let q = &self.queues[(op.fp % self.queues.len() as u64) as usize];
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        if q.enqueue(op) {
            self.metrics.queue_length.inc();
            self.metrics
                .enqueued
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str().to_string(),
                })
                .inc();
        } else {
            self.done_one();
        }
    }

    fn done_one(&self) {
        if self.outstanding.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.drained.notify_waiters();
        }
    }

    fn queued(&self) -> usize {
        self.queues.iter().map(FlushQueue::len).sum()
    }

    /// Sets the pace for non-immediate ops: the queued work spread over the
    /// flush period (+5%), at least 100 ops per period (Cortex v1.4+).
    fn set_rate(&self, queued: usize, period: Duration) {
        let per_period = (queued as f64 * 1.05).max(100.0);
        let interval_ms = period.as_millis() as f64 / per_period;
        self.limiter.lock().interval_ms = interval_ms;
    }

    async fn pace(&self) {
        let wait_ms = {
            let mut l = self.limiter.lock();
            let now = model::now_ms();
            let at = l.next_ms.max(now);
            l.next_ms = at + l.interval_ms as i64;
            at - now
        };
        if wait_ms > 0 {
            tokio::time::sleep(Duration::from_millis(wait_ms as u64)).await;
        }
    }
}

/// What a flush op did.
enum FlushOutcome {
    Flushed,
    NothingToFlush,
    NoStore,
}

impl Ingester {
    /// The chunk store flushes write to. Without one, nothing is flushed and
    /// chunks stay in memory (and in the WAL).
    pub fn set_chunk_store(&self, store: Arc<dyn ChunkStore>) {
        self.flusher.set_store(store);
    }

    /// One sweep over every series: drops flushed chunks past the retain
    /// period, removes series left empty, and enqueues flush ops (all of
    /// them as immediate when `immediate`).
    pub fn sweep(&self, immediate: bool) {
        let now = model::now_ms();
        let policy = self.flusher.policy;
        let has_store = self.flusher.store().is_some();
        let mut ops = Vec::new();
        let mut oldest_unflushed = i64::MAX;
        for user in self.users_snapshot() {
            let mut stats = crate::user_state::SweepStats::default();
            for shard in 0..crate::user_state::SERIES_SHARDS {
                ops.clear();
                user.sweep_shard(shard, now, &policy, immediate, has_store, &mut ops, &mut stats);
                for &(fp, from, reason) in &ops {
                    self.flusher.enqueue(
                        FlushOp {
                            from,
                            tenant: user.tenant.clone(),
                            fp,
                            immediate,
                        },
                        reason,
                    );
                }
            }
            oldest_unflushed = oldest_unflushed.min(stats.oldest_unflushed_ms);
            self.count_swept(&user, &stats);
        }
        let oldest = if oldest_unflushed == i64::MAX {
            0.0
        } else {
            oldest_unflushed as f64 / 1000.0
        };
        self.flusher.metrics.oldest_unflushed.set(oldest);
        self.flusher.set_rate(
            self.flusher.queued(),
            self.cfg.flush.flush_period.0.max(Duration::from_secs(1)),
        );
    }

    fn count_swept(&self, user: &crate::user_state::UserState, stats: &crate::user_state::SweepStats) {
        let m = &self.metrics;
        if stats.chunks_dropped > 0 {
            m.memory_chunks.dec_by(stats.chunks_dropped as i64);
        }
        if stats.series_removed > 0 {
            m.memory_series.dec_by(stats.series_removed as i64);
            m.series_removed
                .get_or_create(&UserLabel {
                    user: user.tenant.to_string(),
                })
                .inc_by(stats.series_removed);
        }
    }

    /// Enqueues every unflushed chunk as an immediate flush (`/flush`).
    pub fn flush_all(&self) {
        self.sweep(true);
    }

    /// Flushes every unflushed chunk and waits until the queues are empty
    /// (or `timeout` passes). Returns whether everything was flushed.
    pub async fn flush_and_wait(&self, timeout: Duration) -> bool {
        self.sweep(true);
        let wait = async {
            loop {
                let drained = self.flusher.drained.notified();
                tokio::pin!(drained);
                drained.as_mut().enable();
                if self.flusher.outstanding.load(Ordering::SeqCst) == 0 {
                    return;
                }
                drained.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Flushes one series' due chunks (Cortex `flushUserSeries`).
    async fn flush_op(&self, op: &FlushOp) -> Result<FlushOutcome, storage::StoreError> {
        let Some(store) = self.flusher.store() else {
            return Ok(FlushOutcome::NoStore);
        };
        let Some(user) = self.user(&op.tenant) else {
            return Ok(FlushOutcome::NothingToFlush);
        };
        let now = model::now_ms();
        let pending = user.take_for_flush(op.fp, now, &self.flusher.policy, op.immediate);
        if pending.is_empty() {
            return Ok(FlushOutcome::NothingToFlush);
        }
        let m = &self.flusher.metrics;
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        for s in &pending {
            if self.flusher.policy.merge {
                if let Some(data) = bigchunk(&s.chunks) {
                    for c in &s.chunks {
                        m.chunk_utilization
                            .observe(c.num_samples as f64 / chunk::MAX_SAMPLES_PER_CHUNK as f64);
                        m.chunk_length.observe(c.num_samples as f64);
                        m.chunk_age.observe((now - c.first_time).max(0) as f64 / 1000.0);
                    }
                    m.chunk_size.observe(data.len() as f64);
                    bytes += data.len() as u64;
                    entries.push(ChunkEntry {
                        tenant: op.tenant.to_string(),
                        fingerprint: op.fp,
                        labels: s.labels.clone(),
                        from_ms: s.chunks[0].first_time,
                        through_ms: s.chunks[s.chunks.len() - 1].last_time,
                        encoding: chunk::Encoding::Bigchunk.id(),
                        data,
                    });
                    continue;
                }
            }
            for c in &s.chunks {
                m.chunk_utilization
                    .observe(c.num_samples as f64 / chunk::MAX_SAMPLES_PER_CHUNK as f64);
                m.chunk_length.observe(c.num_samples as f64);
                m.chunk_size.observe(c.data.len() as f64);
                m.chunk_age.observe((now - c.first_time).max(0) as f64 / 1000.0);
                // A run that did not merge (a single chunk) is stored as the XOR it is: every
                // reader takes it, and a one-sub-chunk Bigchunk would only add a header.
                let encoding = if self.flusher.policy.merge {
                    WriteEncoding::XOR
                } else {
                    self.cfg.flush.chunk_encoding
                };
                let data = encoding.payload(&c.data).map_err(|e| storage::StoreError {
                    code: 500,
                    message: format!(
                        "encoding a chunk of series {} as {}: {e}",
                        s.labels,
                        encoding.encoding()
                    ),
                })?;
                bytes += data.len() as u64;
                entries.push(ChunkEntry {
                    tenant: op.tenant.to_string(),
                    fingerprint: op.fp,
                    labels: s.labels.clone(),
                    from_ms: c.first_time,
                    through_ms: c.last_time,
                    encoding: encoding.encoding().id(),
                    data,
                });
            }
        }
        let n = entries.len() as u64;
        let timeout = self.cfg.flush.flush_op_timeout.0;
        let put = store.put(entries);
        let result = if timeout.is_zero() {
            put.await
        } else {
            match tokio::time::timeout(timeout, put).await {
                Ok(r) => r,
                Err(_) => Err(storage::StoreError {
                    code: 504,
                    message: format!("flush timed out after {timeout:?} (-ingester.flush-op-timeout)"),
                }),
            }
        };
        result?;
        user.mark_flushed(op.fp, &pending, model::now_ms());
        let user_label = UserLabel {
            user: op.tenant.to_string(),
        };
        m.stored_chunks.get_or_create(&user_label).inc_by(n);
        m.stored_bytes.get_or_create(&user_label).inc_by(bytes);
        Ok(FlushOutcome::Flushed)
    }

    /// Starts the sweep loop and one worker per flush queue; they stop when
    /// the ingester is dropped.
    pub(crate) fn start_flush_loops(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        let period = self.cfg.flush.flush_period.0;
        if !period.is_zero() {
            crate::spawn_every(rt, self, period, |ing| async move { ing.sweep(false) });
        }
        for q in 0..self.flusher.queues.len() {
            let weak = Arc::downgrade(self);
            rt.spawn(async move { flush_worker(weak, q).await });
        }
    }
}

async fn flush_worker(ing: std::sync::Weak<Ingester>, q: usize) {
    loop {
        let op = loop {
            let Some(strong) = ing.upgrade() else { return };
            let queue = &strong.flusher.queues[q];
            let notified = queue.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(op) = queue.try_pop() {
                break op;
            }
            // Wake up now and then so a dropped ingester ends the worker.
            let _ = tokio::time::timeout(Duration::from_secs(5), notified).await;
        };
        let Some(ing) = ing.upgrade() else { return };
        let f = &ing.flusher;
        f.metrics.queue_length.dec();
        if !op.immediate {
            f.pace().await;
        }
        f.metrics.in_progress.inc();
        let result = ing.flush_op(&op).await;
        f.metrics.in_progress.dec();
        match result {
            Ok(FlushOutcome::Flushed) => f.metrics.dequeued("flushed"),
            Ok(FlushOutcome::NothingToFlush) => f.metrics.dequeued("noFlush"),
            Ok(FlushOutcome::NoStore) => f.metrics.dequeued("noStore"),
            Err(e) => {
                f.metrics.dequeued("error");
                tracing::warn!(tenant = %op.tenant, fp = op.fp, error = %e, "flushing series failed");
                if op.immediate {
                    // Retried behind the others (1s lower priority), after a pause
                    // so an unavailable store is not hammered.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let retry = FlushOp {
                        from: op.from.saturating_add(1000),
                        ..op.clone()
                    };
                    f.enqueue(retry, FlushReason::Immediate);
                }
            }
        }
        f.done_one();
    }
}

/// Several chunks of one series as one Cortex Bigchunk payload (`u16 LE` count, then per
/// sub-chunk `u16 LE` length + its XOR bytes, passed through without re-encoding); `None` for a
/// single chunk (stored as a plain XOR chunk, as before) or one that does not fit the format.
fn bigchunk(chunks: &[PendingChunk]) -> Option<bytes::Bytes> {
    if chunks.len() < 2 || chunks.len() > u16::MAX as usize {
        return None;
    }
    let len = 2 + chunks.iter().map(|c| 2 + c.data.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(chunks.len() as u16).to_le_bytes());
    for c in chunks {
        let l = u16::try_from(c.data.len()).ok()?;
        out.extend_from_slice(&l.to_le_bytes());
        out.extend_from_slice(&c.data);
    }
    Some(out.into())
}

/// `GET|POST /flush`, `/ingester/flush` (204 at once) and `/shutdown`,
/// `/ingester/shutdown` (flush everything, leave the ring, then 204).
pub(crate) fn routes(ing: Arc<Ingester>) -> Router {
    Router::new()
        .route("/flush", get(flush_handler).post(flush_handler))
        .route("/ingester/flush", get(flush_handler).post(flush_handler))
        .route("/shutdown", get(shutdown_handler).post(shutdown_handler))
        .route("/ingester/shutdown", get(shutdown_handler).post(shutdown_handler))
        .with_state(ing)
}

async fn flush_handler(State(ing): State<Arc<Ingester>>) -> StatusCode {
    ing.flush_all();
    StatusCode::NO_CONTENT
}

async fn shutdown_handler(State(ing): State<Arc<Ingester>>) -> StatusCode {
    ing.shutdown_and_flush().await;
    StatusCode::NO_CONTENT
}

impl Ingester {
    /// The spread-flush cycle in ms (0 when spread flushes are off).
    pub(crate) fn spread_cycle_ms(&self) -> i64 {
        if self.cfg.flush.spread_flushes {
            self.cfg.flush.max_chunk_age.as_millis()
        } else {
            0
        }
    }
}
