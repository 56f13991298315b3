//! A tenant's series as the WAL and the flush loop see them: checkpoint
//! snapshots, restoring checkpointed series, choosing and marking chunks to
//! flush, and dropping flushed chunks and empty series.
//!
//! Lock order is the one of the parent module: shard → creation → index.

use model::{Fingerprint, Labels};
use proto::cortex::Chunk;

use super::{FpSlot, UserState};
use crate::flush::{FlushPolicy, FlushReason, PendingChunk, PendingSeries};
use crate::series::{ChunkDesc, MemorySeries};
use crate::symbols::SymbolId;
use crate::wal::record::{labels_to_pairs, CheckpointSeries};

/// What a sweep of one tenant did, folded into metrics by the caller.
#[derive(Debug)]
pub(crate) struct SweepStats {
    pub(crate) chunks_dropped: u64,
    pub(crate) series_removed: u64,
    /// First time of the oldest unflushed chunk (ms), `i64::MAX` if none.
    pub(crate) oldest_unflushed_ms: i64,
}

impl Default for SweepStats {
    fn default() -> Self {
        SweepStats {
            chunks_dropped: 0,
            series_removed: 0,
            oldest_unflushed_ms: i64::MAX,
        }
    }
}

impl UserState {
    /// Appends a checkpoint record for every series of shard `shard`
    /// (including series without chunks, so later samples find their labels).
    pub(crate) fn checkpoint_shard(&self, shard: usize, out: &mut Vec<CheckpointSeries>) {
        let shard = self.shards[shard].lock();
        for (&fp, slot) in &shard.by_fp {
            for s in slot.iter() {
                let labels = self.symbols.read().labels(&s.labels);
                out.push(CheckpointSeries {
                    user_id: self.tenant.to_string(),
                    fingerprint: fp,
                    labels: labels_to_pairs(&labels),
                    chunks: s
                        .chunks
                        .iter()
                        .map(|c| Chunk {
                            start_timestamp_ms: c.first_time,
                            end_timestamp_ms: c.last_time,
                            encoding: chunk::ENCODING_PROMETHEUS_XOR,
                            data: c.chunk.to_bytes(),
                        })
                        .collect(),
                });
            }
        }
    }

    /// Installs a checkpointed series. Returns (series created, chunks added).
    pub(crate) fn restore_series(&self, fp: Fingerprint, labels: Labels, chunks: Vec<ChunkDesc>) -> (u64, u64) {
        let n = chunks.len() as u64;
        let mut shard = self.shard(fp).lock();
        if let Some(slot) = shard.by_fp.get_mut(&fp) {
            let symbols = self.symbols.read();
            if let Some(s) = slot.iter_mut().find(|s| symbols.equals_labels(&s.labels, &labels)) {
                if !s.chunks.is_empty() {
                    return (0, 0);
                }
                s.restore_chunks(chunks);
                return (0, n);
            }
        }
        let ids = {
            let mut per_metric = self.creation.lock();
            *per_metric.entry(labels.metric_name().to_string()).or_insert(0) += 1;
            self.num_series.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.symbols
                .intern_pairs(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
        };
        self.index.add(fp, &ids);
        let mut series = MemorySeries::new(ids);
        series.restore_chunks(chunks);
        match shard.by_fp.get_mut(&fp) {
            Some(slot) => {
                slot.push_collision(series);
            }
            None => {
                shard.by_fp.insert(fp, FpSlot::new(series));
            }
        }
        (1, n)
    }

    /// Labels of the (first) series with fingerprint `fp`.
    pub(crate) fn labels_of(&self, fp: Fingerprint) -> Option<Labels> {
        self.shard(fp)
            .lock()
            .by_fp
            .get(&fp)
            .map(|slot| self.symbols.read().labels(&slot.series.labels))
    }

    /// Sweeps shard `shard`: drops flushed chunks older than the retain
    /// period, removes series left without chunks, and (with a store)
    /// collects `(fp, first time, reason)` of series due for flushing.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sweep_shard(
        &self,
        shard: usize,
        now: i64,
        policy: &FlushPolicy,
        immediate: bool,
        has_store: bool,
        ops: &mut Vec<(Fingerprint, i64, FlushReason)>,
        stats: &mut SweepStats,
    ) {
        let mut shard = self.shards[shard].lock();
        let mut emptied: Vec<Fingerprint> = Vec::new();
        for (&fp, slot) in shard.by_fp.iter_mut() {
            let mut due: Option<(i64, FlushReason)> = None;
            let mut removed: Vec<Box<[SymbolId]>> = Vec::new();
            for s in slot.iter_mut() {
                let before = s.chunks.len();
                let keep_from = s
                    .chunks
                    .iter()
                    .position(|c| !(c.flushed && now - c.last_update_ms > policy.retain_ms))
                    .unwrap_or(before);
                if keep_from > 0 {
                    s.chunks.drain(..keep_from);
                    stats.chunks_dropped += keep_from as u64;
                    if s.chunks.is_empty() {
                        removed.push(s.labels.clone());
                        continue;
                    }
                }
                if let Some(c) = s.chunks.iter().find(|c| !c.flushed) {
                    stats.oldest_unflushed_ms = stats.oldest_unflushed_ms.min(c.first_time);
                }
                if has_store {
                    if let Some(reason) = policy.should_flush_series(s, fp, immediate, now) {
                        let first = s.chunks[0].first_time;
                        if due.is_none_or(|(t, _)| first < t) {
                            due = Some((first, reason));
                        }
                    }
                }
            }
            if let Some((first, reason)) = due {
                ops.push((fp, first, reason));
            }
            if !removed.is_empty() {
                if let Some(c) = slot.collisions.as_mut() {
                    c.retain(|s| !s.chunks.is_empty());
                }
                if slot.series.chunks.is_empty() {
                    match slot.collisions.as_mut().and_then(|c| c.pop()) {
                        Some(next) => slot.series = next,
                        None => emptied.push(fp),
                    }
                }
                if slot.collisions.as_ref().is_some_and(|c| c.is_empty()) {
                    slot.collisions = None;
                }
                let still: Vec<&[SymbolId]> = if emptied.last() == Some(&fp) {
                    Vec::new()
                } else {
                    slot.iter().map(|s| &s.labels[..]).collect()
                };
                self.forget_series(fp, &removed, &still);
                stats.series_removed += removed.len() as u64;
            }
        }
        for fp in emptied {
            shard.by_fp.remove(&fp);
        }
    }

    /// Uncounts removed series, takes them out of the index and releases
    /// their label strings (in that order: index entries must never name a
    /// released symbol).
    fn forget_series(&self, fp: Fingerprint, removed: &[Box<[SymbolId]>], still_present: &[&[SymbolId]]) {
        {
            let mut per_metric = self.creation.lock();
            for ids in removed {
                let metric = self.symbols.read().value_of(ids, model::METRIC_NAME).to_string();
                if let Some(n) = per_metric.get_mut(metric.as_str()) {
                    *n -= 1;
                    if *n == 0 {
                        per_metric.remove(metric.as_str());
                    }
                }
            }
            self.num_series
                .fetch_sub(removed.len(), std::sync::atomic::Ordering::Relaxed);
        }
        for ids in removed {
            self.index.remove(fp, ids, still_present);
            self.symbols.release(ids);
        }
    }

    /// Chunks of the series with fingerprint `fp` to flush now (Cortex
    /// `flushUserSeries` under the series lock): the head chunk is closed
    /// and included if it is itself due (or immediate), else left out.
    pub(crate) fn take_for_flush(
        &self,
        fp: Fingerprint,
        now: i64,
        policy: &FlushPolicy,
        immediate: bool,
    ) -> Vec<PendingSeries> {
        let mut shard = self.shard(fp).lock();
        let Some(slot) = shard.by_fp.get_mut(&fp) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for s in slot.iter_mut() {
            let Some(reason) = policy.should_flush_series(s, fp, immediate, now) else {
                continue;
            };
            let stale = s.last_value_is_stale();
            let head = s.chunks.last().expect("a series due for flush has chunks");
            let head_due = immediate || s.head_closed || policy.should_flush_chunk(head, fp, stale, now).is_some();
            if head_due {
                s.close_head(reason);
            }
            let upto = if head_due { s.chunks.len() } else { s.chunks.len() - 1 };
            let chunks: Vec<PendingChunk> = s.chunks[..upto]
                .iter()
                .filter(|c| !c.flushed)
                .map(|c| PendingChunk {
                    first_time: c.first_time,
                    last_time: c.last_time,
                    num_samples: c.chunk.num_samples(),
                    data: c.chunk.to_bytes(),
                })
                .collect();
            if !chunks.is_empty() {
                out.push(PendingSeries {
                    labels: self.symbols.read().labels(&s.labels),
                    chunks,
                });
            }
        }
        out
    }

    /// Marks the chunks of `flushed` as stored (they are dropped once the
    /// retain period has passed).
    pub(crate) fn mark_flushed(&self, fp: Fingerprint, flushed: &[PendingSeries], now: i64) {
        let mut shard = self.shard(fp).lock();
        let Some(slot) = shard.by_fp.get_mut(&fp) else { return };
        let symbols = self.symbols.read();
        for p in flushed {
            let Some(s) = slot.iter_mut().find(|s| symbols.equals_labels(&s.labels, &p.labels)) else {
                continue;
            };
            for c in s.chunks.iter_mut() {
                if p.chunks.iter().any(|f| f.first_time == c.first_time) {
                    c.flushed = true;
                    c.last_update_ms = now;
                }
            }
        }
    }
}

impl FpSlot {
    fn iter_mut(&mut self) -> impl Iterator<Item = &mut MemorySeries> {
        std::iter::once(&mut self.series).chain(self.collisions.iter_mut().flat_map(|c| c.iter_mut()))
    }
}
