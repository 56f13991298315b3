//! What the WAL and the flush loop need from a series: restoring chunks
//! from a checkpoint, closing the head chunk, and the spread-flush cut.

use chunk::XorChunk;

use super::{ChunkDesc, MemorySeries};
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
