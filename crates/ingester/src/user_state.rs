//! Everything the ingester holds for one tenant: series in 128 lock-striped
//! shards keyed by fingerprint, the inverted index, series-limit accounting,
//! ingestion rates and metric metadata.
//!
//! Locking: an append takes exactly one shard lock. Creating a series
//! additionally takes the tenant's `creation` lock (limits) and one index
//! shard lock, always in the order shard → creation → index. Queries read the
//! index first, release it, then take shard locks one at a time, so no cycle exists.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use model::{Fingerprint, Labels, Matcher};
use parking_lot::Mutex;
use proto::cortex::MetricMetadata;

use crate::errors::{format_go_float, format_go_time, format_series};
use crate::index::InvertedIndex;
use crate::metrics::DiscardReason;
use crate::series::{AppendError, MemorySeries};
use crate::symbols::{SymbolId, Symbols, SymbolsRead};

mod durability;
pub(crate) use durability::SweepStats;

pub(crate) const SERIES_SHARDS: usize = 128;

/// Limits applied when a series is created (0 = unlimited).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SeriesLimits {
    pub(crate) max_series_per_user: usize,
    pub(crate) max_series_per_metric: usize,
}

/// All series sharing one fingerprint: normally one, more on a hash collision.
struct FpSlot {
    series: MemorySeries,
    /// Other series whose labels hash to the same fingerprint (rare, hence
    /// boxed: 8 bytes per series instead of an inline 24-byte `Vec`).
    #[allow(clippy::box_collection)]
    collisions: Option<Box<Vec<MemorySeries>>>,
}

impl FpSlot {
    fn new(series: MemorySeries) -> Self {
        FpSlot {
            series,
            collisions: None,
        }
    }

    /// Position of the series with exactly these labels: 0 is the primary
    /// series, i + 1 the i-th collision.
    fn position(&self, symbols: &SymbolsRead<'_>, pairs: &[(&[u8], &[u8])]) -> Option<usize> {
        if symbols.equals(&self.series.labels, pairs) {
            return Some(0);
        }
        self.collisions()
            .iter()
            .position(|s| symbols.equals(&s.labels, pairs))
            .map(|i| i + 1)
    }

    fn collisions(&self) -> &[MemorySeries] {
        self.collisions.as_deref().map_or(&[], |c| c.as_slice())
    }

    /// Adds a series whose labels differ but hash to this fingerprint.
    fn push_collision(&mut self, series: MemorySeries) -> &mut MemorySeries {
        let c = self.collisions.get_or_insert_with(Default::default);
        c.push(series);
        c.last_mut().expect("just pushed")
    }

    fn get_mut(&mut self, pos: usize) -> &mut MemorySeries {
        match pos {
            0 => &mut self.series,
            i => &mut self.collisions.as_mut().expect("collision position")[i - 1],
        }
    }

    fn iter(&self) -> impl Iterator<Item = &MemorySeries> {
        std::iter::once(&self.series).chain(self.collisions().iter())
    }
}

/// Hashes a fingerprint, which is already a hash of the labels, with one
/// folded multiply instead of SipHash over its bytes. The fold matters: all
/// fingerprints of one shard share their low bits (`fp % SERIES_SHARDS`), and
/// the map picks buckets by the low bits of the hash.
#[derive(Default, Clone, Copy)]
pub(crate) struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed with this; anything else still works.
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    fn write_u64(&mut self, n: u64) {
        let m = ((n ^ self.0) as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_u128);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

pub(crate) type FingerprintMap<V> = HashMap<Fingerprint, V, std::hash::BuildHasherDefault<FingerprintHasher>>;

#[derive(Default)]
struct SeriesShard {
    by_fp: FingerprintMap<FpSlot>,
}

/// What one push did for one tenant; folded into metrics and the response.
#[derive(Default, Debug)]
pub(crate) struct PushOutcome {
    pub(crate) appended: u64,
    pub(crate) discarded: [u64; DiscardReason::ALL.len()],
    /// First client error (reported at the end as a 400), already formatted.
    pub(crate) first_error: Option<String>,
    pub(crate) series_created: u64,
    pub(crate) chunks_created: u64,
    /// Input: where to log created series and appended samples (WAL on).
    pub(crate) wal: Option<crate::wal::WalBatch>,
    /// Input: the spread-flush cycle (max chunk age) in ms, 0 = off.
    pub(crate) spread_cycle_ms: i64,
    /// Input: samples come from the WAL, where a series' samples may be
    /// logged out of time order; they are put in place instead of rejected.
    pub(crate) replaying: bool,
}

impl PushOutcome {
    fn fail(&mut self, reason: DiscardReason, n: u64, message: impl FnOnce() -> String) {
        self.discarded[reason.index()] += n;
        if reason != DiscardReason::DuplicateSample && self.first_error.is_none() {
            self.first_error = Some(message());
        }
    }

    /// Samples rejected with an error (duplicates are ignored silently).
    pub(crate) fn failed(&self) -> u64 {
        DiscardReason::ALL
            .iter()
            .filter(|r| **r != DiscardReason::DuplicateSample)
            .map(|r| self.discarded[r.index()])
            .sum()
    }
}

/// Exponentially weighted moving average of an event rate, ticked at a
/// fixed interval (Cortex `util/math.EwmaRate`, alpha 0.2).
pub(crate) struct EwmaRate {
    new_events: AtomicU64,
    interval_secs: f64,
    state: Mutex<Option<f64>>,
}

const EWMA_ALPHA: f64 = 0.2;

impl EwmaRate {
    pub(crate) fn new(interval: std::time::Duration) -> Self {
        EwmaRate {
            new_events: AtomicU64::new(0),
            interval_secs: interval.as_secs_f64().max(1e-3),
            state: Mutex::new(None),
        }
    }

    pub(crate) fn add(&self, n: u64) {
        self.new_events.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn tick(&self) {
        let instant = self.new_events.swap(0, Ordering::Relaxed) as f64 / self.interval_secs;
        let mut state = self.state.lock();
        *state = Some(match *state {
            Some(last) => last + EWMA_ALPHA * (instant - last),
            None => instant,
        });
    }

    pub(crate) fn rate(&self) -> f64 {
        self.state.lock().unwrap_or(0.0)
    }
}

/// Limits on stored metadata (0 = unlimited).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MetadataLimits {
    pub(crate) max_per_user: usize,
    pub(crate) max_per_metric: usize,
}

/// Metric metadata per metric family, each entry with when it was last pushed.
#[derive(Default)]
struct MetadataStore {
    by_metric: HashMap<String, Vec<(MetricMetadata, i64)>>,
    total: usize,
}

impl MetadataStore {
    /// Returns false when a limit kept the entry out.
    fn add(&mut self, md: &MetricMetadata, now_ms: i64, limits: MetadataLimits) -> bool {
        if let Some(entries) = self.by_metric.get_mut(&md.metric_family_name) {
            if let Some(e) = entries.iter_mut().find(|(m, _)| m == md) {
                e.1 = now_ms;
                return true;
            }
            if limits.max_per_metric > 0 && entries.len() >= limits.max_per_metric {
                return false;
            }
        }
        if limits.max_per_user > 0 && self.total >= limits.max_per_user {
            return false;
        }
        self.by_metric
            .entry(md.metric_family_name.clone())
            .or_default()
            .push((md.clone(), now_ms));
        self.total += 1;
        true
    }

    fn purge(&mut self, older_than_ms: i64) {
        let mut removed = 0;
        self.by_metric.retain(|_, entries| {
            let before = entries.len();
            entries.retain(|(_, seen)| *seen >= older_than_ms);
            removed += before - entries.len();
            !entries.is_empty()
        });
        self.total -= removed;
    }
}

pub(crate) struct UserState {
    pub(crate) tenant: Arc<str>,
    shards: Box<[Mutex<SeriesShard>]>,
    /// Label strings of this tenant's series, shared by series and index.
    pub(crate) symbols: Symbols,
    pub(crate) index: InvertedIndex,
    num_series: AtomicUsize,
    /// Series per metric name; also serialises series creation so limit
    /// checks and counts cannot race.
    creation: Mutex<HashMap<String, usize>>,
    pub(crate) api_rate: EwmaRate,
    pub(crate) rule_rate: EwmaRate,
    metadata: Mutex<MetadataStore>,
}

impl UserState {
    pub(crate) fn new(tenant: Arc<str>, rate_interval: std::time::Duration) -> Self {
        UserState {
            tenant,
            shards: (0..SERIES_SHARDS).map(|_| Mutex::new(SeriesShard::default())).collect(),
            symbols: Symbols::default(),
            index: InvertedIndex::default(),
            num_series: AtomicUsize::new(0),
            creation: Mutex::new(HashMap::new()),
            api_rate: EwmaRate::new(rate_interval),
            rule_rate: EwmaRate::new(rate_interval),
            metadata: Mutex::new(MetadataStore::default()),
        }
    }

    pub(crate) fn num_series(&self) -> usize {
        self.num_series.load(Ordering::Relaxed)
    }

    /// No series and no metadata: nothing worth keeping the tenant for.
    pub(crate) fn is_empty(&self) -> bool {
        self.num_series() == 0 && self.metadata.lock().total == 0
    }

    fn shard(&self, fp: Fingerprint) -> &Mutex<SeriesShard> {
        &self.shards[(fp % SERIES_SHARDS as u64) as usize]
    }

    /// Appends `samples` to the series with labels `pairs` (sorted by name,
    /// unique, non-empty values) and fingerprint `fp`, creating it if needed.
    pub(crate) fn push_series(
        &self,
        fp: Fingerprint,
        pairs: &[(&[u8], &[u8])],
        samples: &[proto::cortex::Sample],
        limits: SeriesLimits,
        now_ms: i64,
        out: &mut PushOutcome,
    ) {
        if samples.is_empty() {
            return;
        }
        let mut shard = self.shard(fp).lock();
        let pos = shard
            .by_fp
            .get(&fp)
            .and_then(|slot| slot.position(&self.symbols.read(), pairs));
        let series: &mut MemorySeries = match pos {
            Some(pos) => shard.by_fp.get_mut(&fp).expect("slot exists").get_mut(pos),
            None => {
                let labels = match self.admit_new_series(pairs, limits) {
                    Ok(l) => l,
                    Err((reason, msg)) => {
                        out.fail(reason, samples.len() as u64, || msg);
                        return;
                    }
                };
                self.index.add(fp, &labels);
                if let Some(wal) = out.wal.as_mut() {
                    wal.add_series(fp, pairs);
                }
                out.series_created += 1;
                let series = MemorySeries::new(labels);
                match shard.by_fp.entry(fp) {
                    Entry::Occupied(e) => e.into_mut().push_collision(series),
                    Entry::Vacant(e) => &mut e.insert(FpSlot::new(series)).series,
                }
            }
        };
        for s in samples {
            if out.spread_cycle_ms > 0 {
                series.cut_for_spread(fp, s.timestamp_ms, out.spread_cycle_ms);
            }
            let appended = if out.replaying {
                series.replay_sample(s.timestamp_ms, s.value, now_ms)
            } else {
                series.append(s.timestamp_ms, s.value, now_ms)
            };
            match appended {
                Ok(new_chunk) => {
                    out.appended += 1;
                    out.chunks_created += new_chunk as u64;
                    if let Some(wal) = out.wal.as_mut() {
                        wal.add_sample(fp, s.timestamp_ms, s.value);
                    }
                }
                Err(AppendError::Duplicate) => out.fail(DiscardReason::DuplicateSample, 1, String::new),
                Err(AppendError::OutOfOrder { last_time, time }) => {
                    out.fail(DiscardReason::SampleOutOfOrder, 1, || {
                        format!(
                            "sample timestamp out of order; last timestamp: {}, incoming timestamp: {} for series {}",
                            format_go_time(last_time),
                            format_go_time(time),
                            format_series(&self.symbols.read().labels(&series.labels))
                        )
                    })
                }
                Err(AppendError::NewValueForTimestamp { last_value, value }) => {
                    out.fail(DiscardReason::NewValueForTimestamp, 1, || {
                        format!(
                            "sample with repeated timestamp but different value; last value: {}, incoming value: {} for series {}",
                            format_go_float(last_value),
                            format_go_float(value),
                            format_series(&self.symbols.read().labels(&series.labels))
                        )
                    })
                }
            }
        }
    }

    /// Checks the series limits and interns the series' labels, counting it
    /// in on success.
    fn admit_new_series(
        &self,
        pairs: &[(&[u8], &[u8])],
        limits: SeriesLimits,
    ) -> Result<Box<[SymbolId]>, (DiscardReason, String)> {
        let mut strs: Vec<(&str, &str)> = Vec::with_capacity(pairs.len());
        for (n, v) in pairs {
            match (std::str::from_utf8(n), std::str::from_utf8(v)) {
                (Ok(n), Ok(v)) => strs.push((n, v)),
                _ => {
                    return Err((
                        DiscardReason::InvalidLabels,
                        format!(
                            "label name or value is not valid UTF-8 for series {}",
                            crate::errors::format_pairs_lossy(pairs)
                        ),
                    ))
                }
            }
        }
        let metric = strs
            .iter()
            .find(|(n, _)| *n == model::METRIC_NAME)
            .map_or("", |(_, v)| *v);
        let mut per_metric = self.creation.lock();
        let user_limit = limits.max_series_per_user;
        if user_limit > 0 && self.num_series.load(Ordering::Relaxed) >= user_limit {
            return Err((
                DiscardReason::PerUserSeriesLimit,
                format!(
                    "per-user series limit of {user_limit} exceeded, please contact administrator to raise it \
                     (local limit: {user_limit} global limit: 0 actual local limit: {user_limit})"
                ),
            ));
        }
        let metric_limit = limits.max_series_per_metric;
        let in_metric = per_metric.get(metric).copied().unwrap_or(0);
        if metric_limit > 0 && in_metric >= metric_limit {
            return Err((
                DiscardReason::PerMetricSeriesLimit,
                format!(
                    "per-metric series limit of {metric_limit} exceeded, please contact administrator to raise it \
                     (local limit: {metric_limit} global limit: 0 actual local limit: {metric_limit}) for series {}",
                    format_series(&Labels::from_pairs(strs.iter().copied()))
                ),
            ));
        }
        match per_metric.get_mut(metric) {
            Some(n) => *n += 1,
            None => {
                per_metric.insert(metric.to_string(), 1);
            }
        }
        self.num_series.fetch_add(1, Ordering::Relaxed);
        // Interned under the creation lock, so the count and the references
        // of one series appear together.
        Ok(self.symbols.intern_pairs(strs.iter().copied()))
    }

    /// Fingerprints of candidate series for `matchers`: from the index when
    /// some matcher needs a non-empty value, else every series. Sorted, unique.
    pub(crate) fn candidate_fingerprints(&self, matchers: &[Matcher]) -> Vec<Fingerprint> {
        let indexed: Vec<&Matcher> = matchers.iter().filter(|m| !m.matches_empty()).collect();
        let mut fps = if indexed.is_empty() {
            // Only empty-matching matchers (e.g. {job!="x"}): nothing to look up, scan.
            let mut all = Vec::with_capacity(self.num_series());
            for shard in self.shards.iter() {
                all.extend(shard.lock().by_fp.keys().copied());
            }
            all
        } else {
            self.index.lookup(&self.symbols, &indexed)
        };
        fps.sort_unstable();
        fps.dedup();
        fps
    }

    /// Calls `f` with every series among `fps` whose labels satisfy all
    /// `matchers`, and its labels. Each shard lock is held only while its
    /// series are visited; the symbol table only while labels are resolved.
    pub(crate) fn for_each_matching(
        &self,
        fps: &[Fingerprint],
        matchers: &[Matcher],
        mut f: impl FnMut(&MemorySeries, &Labels),
    ) {
        let mut matched: Vec<(usize, Labels)> = Vec::new();
        for &fp in fps {
            let shard = self.shard(fp).lock();
            let Some(slot) = shard.by_fp.get(&fp) else { continue };
            {
                let symbols = self.symbols.read();
                matched.extend(
                    slot.iter()
                        .enumerate()
                        .filter(|(_, s)| symbols.matches_all(&s.labels, matchers))
                        .map(|(i, s)| (i, symbols.labels(&s.labels))),
                );
            }
            for (i, labels) in matched.drain(..) {
                f(slot.iter().nth(i).expect("matched position"), &labels);
            }
        }
    }

    pub(crate) fn add_metadata(&self, md: &MetricMetadata, now_ms: i64, limits: MetadataLimits) -> bool {
        self.metadata.lock().add(md, now_ms, limits)
    }

    pub(crate) fn purge_metadata(&self, older_than_ms: i64) {
        self.metadata.lock().purge(older_than_ms);
    }

    pub(crate) fn metadata(&self) -> Vec<MetricMetadata> {
        let store = self.metadata.lock();
        store
            .by_metric
            .values()
            .flat_map(|entries| entries.iter().map(|(m, _)| m.clone()))
            .collect()
    }

    pub(crate) fn metric_name_count(&self, metric: &str) -> usize {
        self.creation.lock().get(metric).copied().unwrap_or(0)
    }

    pub(crate) fn num_chunks(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .by_fp
                    .values()
                    .flat_map(|slot| slot.iter())
                    .map(|s| s.num_chunks())
                    .sum::<usize>()
            })
            .sum()
    }
}

impl std::fmt::Debug for UserState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserState")
            .field("tenant", &self.tenant)
            .field("num_series", &self.num_series())
            .finish()
    }
}

#[cfg(test)]
mod size_tests {
    /// Every series pays for one map entry of this size (plus the map's
    /// spare capacity), so growth here multiplies by the series count.
    #[test]
    fn per_series_slot_stays_small() {
        assert!(std::mem::size_of::<super::FpSlot>() <= 80);
        assert!(std::mem::size_of::<crate::series::MemorySeries>() <= 72);
    }
}
