//! One in-memory series: its labels (as ids into the tenant's symbol table)
//! and its chunks, oldest first, the last one being the open head chunk.
//!
//! The structs carry what the later WAL and flush work needs (per-chunk first /
//! last sample time, last wall-clock update, a flushed flag, a closed head), so
//! those can be added without changing the append path.

use chunk::{XorChunk, MAX_SAMPLES_PER_CHUNK};

use crate::symbols::SymbolId;

mod durability;

/// One chunk of a series plus the bookkeeping the flush loop will use.
#[derive(Clone, Debug)]
pub(crate) struct ChunkDesc {
    pub(crate) chunk: XorChunk,
    pub(crate) first_time: i64,
    pub(crate) last_time: i64,
    /// Wall-clock time (ms) of the last append, for idle-chunk flushing.
    pub(crate) last_update_ms: i64,
    /// Set once the chunk is in the chunk store.
    pub(crate) flushed: bool,
    /// Why the chunk was closed early (spread flush), reported when flushed.
    pub(crate) flush_reason: Option<crate::flush::FlushReason>,
}

impl ChunkDesc {
    fn new(t: i64, now_ms: i64) -> Self {
        ChunkDesc {
            chunk: XorChunk::new(),
            first_time: t,
            last_time: t,
            last_update_ms: now_ms,
            flushed: false,
            flush_reason: None,
        }
    }

    /// Does the chunk hold samples inside `[from, through]`?
    pub(crate) fn overlaps(&self, from: i64, through: i64) -> bool {
        self.first_time <= through && self.last_time >= from
    }
}

/// Why a sample was not appended. `Duplicate` is not an error to the client
/// (Cortex ignores it silently) but is still counted as discarded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum AppendError {
    /// Same timestamp and identical value bits as the last sample.
    Duplicate,
    /// Same timestamp, different value.
    NewValueForTimestamp { last_value: f64, value: f64 },
    /// Older than the last sample.
    OutOfOrder { last_time: i64, time: i64 },
}

#[derive(Debug)]
pub(crate) struct MemorySeries {
    /// Interned labels, sorted by name: name id, value id, name id, …
    /// (8 bytes per label; the strings live once in the tenant's table).
    pub(crate) labels: Box<[SymbolId]>,
    pub(crate) chunks: Vec<ChunkDesc>,
    /// Timestamp and value bits of the last appended sample.
    last: Option<(i64, u64)>,
    /// Set when the head chunk must not take more samples (flush closes it; later).
    pub(crate) head_closed: bool,
}

impl MemorySeries {
    pub(crate) fn new(labels: Box<[SymbolId]>) -> Self {
        MemorySeries {
            labels,
            chunks: Vec::with_capacity(1),
            last: None,
            head_closed: false,
        }
    }

    /// Appends one sample following Cortex's rules (spec §3.2). Returns
    /// whether a new chunk was opened for it.
    pub(crate) fn append(&mut self, t: i64, v: f64, now_ms: i64) -> Result<bool, AppendError> {
        if let Some((last_t, last_bits)) = self.last {
            if t == last_t {
                // Compared as bits so a repeated staleness NaN counts as a
                // duplicate rather than as a different value (NaN != NaN).
                return Err(if v.to_bits() == last_bits {
                    AppendError::Duplicate
                } else {
                    AppendError::NewValueForTimestamp {
                        last_value: f64::from_bits(last_bits),
                        value: v,
                    }
                });
            }
            if t < last_t {
                return Err(AppendError::OutOfOrder {
                    last_time: last_t,
                    time: t,
                });
            }
        }
        let needs_new_chunk = self.head_closed
            || self
                .chunks
                .last()
                .is_none_or(|c| c.chunk.num_samples() >= MAX_SAMPLES_PER_CHUNK);
        if needs_new_chunk {
            // Grow one chunk at a time: a series holds a handful of chunks
            // and the default doubling (to 4 at once) would leave most
            // series with unused chunk descriptors.
            if self.chunks.len() == self.chunks.capacity() {
                self.chunks.reserve_exact(1);
            }
            self.chunks.push(ChunkDesc::new(t, now_ms));
            self.head_closed = false;
        }
        let head = self.chunks.last_mut().expect("head chunk exists");
        head.chunk.append(t, v);
        head.last_time = t;
        head.last_update_ms = now_ms;
        self.last = Some((t, v.to_bits()));
        Ok(needs_new_chunk)
    }

    // Used by flush decisions (next task) and tests.
    #[allow(dead_code)]
    pub(crate) fn last_time(&self) -> Option<i64> {
        self.last.map(|(t, _)| t)
    }

    pub(crate) fn num_chunks(&self) -> usize {
        self.chunks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series() -> MemorySeries {
        MemorySeries::new(Box::new([0, 1]))
    }

    #[test]
    fn in_order_appends_and_chunk_cutting() {
        let mut s = series();
        for i in 0..250 {
            let opened = s.append(i * 1000, i as f64, 0).unwrap();
            assert_eq!(opened, i % 120 == 0, "sample {i}");
        }
        assert_eq!(s.num_chunks(), 3);
        assert_eq!(s.chunks[0].chunk.num_samples(), 120);
        assert_eq!(s.chunks[1].first_time, 120_000);
        assert_eq!(s.chunks[2].last_time, 249_000);
        assert_eq!(s.last_time(), Some(249_000));
        let all: Vec<_> = s.chunks.iter().flat_map(|c| c.chunk.iter()).collect();
        assert_eq!(all.len(), 250);
        assert_eq!(all[200], (200_000, 200.0));
    }

    #[test]
    fn duplicate_new_value_and_out_of_order() {
        let mut s = series();
        s.append(10, 1.0, 0).unwrap();
        s.append(20, 2.0, 0).unwrap();
        assert_eq!(s.append(20, 2.0, 0), Err(AppendError::Duplicate));
        assert_eq!(
            s.append(20, 3.0, 0),
            Err(AppendError::NewValueForTimestamp {
                last_value: 2.0,
                value: 3.0
            })
        );
        assert_eq!(
            s.append(15, 1.5, 0),
            Err(AppendError::OutOfOrder {
                last_time: 20,
                time: 15
            })
        );
        // Rejected samples leave the series untouched.
        assert_eq!(s.chunks[0].chunk.iter().collect::<Vec<_>>(), vec![(10, 1.0), (20, 2.0)]);
        s.append(30, 3.0, 0).unwrap();
        assert_eq!(s.last_time(), Some(30));
    }

    #[test]
    fn repeated_stale_marker_is_a_duplicate() {
        let mut s = series();
        s.append(10, model::stale_nan(), 0).unwrap();
        assert_eq!(s.append(10, model::stale_nan(), 0), Err(AppendError::Duplicate));
        assert!(matches!(
            s.append(10, f64::NAN, 0),
            Err(AppendError::NewValueForTimestamp { .. })
        ));
    }

    #[test]
    fn closed_head_opens_a_new_chunk() {
        let mut s = series();
        s.append(1, 1.0, 0).unwrap();
        s.head_closed = true;
        assert!(s.append(2, 2.0, 0).unwrap());
        assert_eq!(s.num_chunks(), 2);
    }
}
