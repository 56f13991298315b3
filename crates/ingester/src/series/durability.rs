//! What the WAL and the flush loop need from a series: restoring chunks
//! from a checkpoint, replaying a sample logged out of order, closing the
//! head chunk, and the spread-flush cut.

use chunk::{XorChunk, MAX_SAMPLES_PER_CHUNK};

use super::{AppendError, ChunkDesc, MemorySeries};
use crate::flush::FlushReason;

impl ChunkDesc {
    /// A chunk loaded from a checkpoint: not flushed, last updated `now_ms`.
    pub(crate) fn restored(chunk: XorChunk, first_time: i64, last_time: i64, now_ms: i64) -> Self {
        ChunkDesc {
            chunk,
            first_time,
            last_time,
            last_update_ms: now_ms,
            flushed: false,
            flush_reason: None,
        }
    }
}

impl MemorySeries {
    /// Installs checkpointed chunks into a series that has none yet.
    pub(crate) fn restore_chunks(&mut self, chunks: Vec<ChunkDesc>) {
        debug_assert!(self.chunks.is_empty());
        self.last = chunks.last().and_then(|c| {
            let t = c.chunk.last_time()?;
            let v = c.chunk.last_value()?;
            Some((t, v.to_bits()))
        });
        self.chunks = chunks;
        self.head_closed = false;
    }

    /// Replays one logged sample: appended if it is the newest, else put in
    /// its place. A series only ever accepts samples in increasing time, so
    /// the time order of its logged samples *is* their append order, even
    /// when two concurrent pushes logged their records the other way round
    /// (see [`crate::wal`]). Only the chunk the sample falls into is
    /// re-encoded (and split in two if that makes it overfull). Returns
    /// whether a chunk was added.
    pub(crate) fn replay_sample(&mut self, t: i64, v: f64, now_ms: i64) -> Result<bool, AppendError> {
        if self.last.is_none_or(|(last_t, _)| t >= last_t) {
            return self.append(t, v, now_ms);
        }
        let at = self
            .chunks
            .iter()
            .position(|c| c.last_time >= t)
            .expect("t is before the last sample, so some chunk ends at or after it");
        let old = &self.chunks[at];
        let mut samples: Vec<(i64, f64)> = Vec::with_capacity(old.chunk.num_samples() + 1);
        samples.extend(old.chunk.iter());
        let pos = samples.partition_point(|&(st, _)| st < t);
        if let Some(&(st, sv)) = samples.get(pos) {
            if st == t {
                return Err(if sv.to_bits() == v.to_bits() {
                    AppendError::Duplicate
                } else {
                    AppendError::NewValueForTimestamp {
                        last_value: sv,
                        value: v,
                    }
                });
            }
        }
        samples.insert(pos, (t, v));
        // The re-encoded chunk holds a sample the store does not have.
        let reason = old.flush_reason;
        let encode = |part: &[(i64, f64)]| {
            let mut c = XorChunk::new();
            for &(t, v) in part {
                c.append(t, v);
            }
            ChunkDesc {
                chunk: c,
                first_time: part[0].0,
                last_time: part[part.len() - 1].0,
                last_update_ms: now_ms,
                flushed: false,
                flush_reason: reason,
            }
        };
        if samples.len() <= MAX_SAMPLES_PER_CHUNK {
            self.chunks[at] = encode(&samples);
            return Ok(false);
        }
        let (front, back) = samples.split_at(MAX_SAMPLES_PER_CHUNK);
        self.chunks[at] = encode(front);
        self.chunks.insert(at + 1, encode(back));
        Ok(true)
    }

    /// Whether the last appended value is a Prometheus staleness marker.
    pub(crate) fn last_value_is_stale(&self) -> bool {
        self.last.is_some_and(|(_, bits)| bits == model::stale_nan().to_bits())
    }

    /// Closes the head chunk so the next sample opens a new one; `reason`
    /// is what the closed chunk will be flushed for.
    pub(crate) fn close_head(&mut self, reason: FlushReason) {
        if let Some(head) = self.chunks.last_mut() {
            if !self.head_closed {
                head.flush_reason = Some(reason);
            }
            self.head_closed = true;
        }
    }

    /// Spread flushes (Cortex `-ingester.spread-flushes`): each series has
    /// a slot `fp mod cycle` inside every max-chunk-age cycle; a sample at or
    /// after the slot closes a head chunk that started before it. Replicas
    /// of a series thus cut identical chunks, which the store's write dedupe
    /// relies on, and flushes spread evenly over the cycle.
    pub(crate) fn cut_for_spread(&mut self, fp: u64, t: i64, cycle_ms: i64) {
        if cycle_ms <= 0 || self.head_closed {
            return;
        }
        let Some(head) = self.chunks.last() else { return };
        let start_of_cycle = t - t.rem_euclid(cycle_ms);
        let slot = start_of_cycle + (fp % cycle_ms as u64) as i64;
        if head.first_time < slot && t >= slot {
            self.close_head(FlushReason::Spread);
        }
    }
}
