//! Turning chunks from ingesters and the store into series: one decoder for
//! chunk payloads, one merge of replicas and overlaps.

use std::collections::HashMap;

use bytes::Bytes;
use chunk::StoredChunk;
use model::{Labels, Sample, Series};
use server::HttpError;

/// Samples per series, gathered from any number of chunks and replicas.
pub(crate) type Gathered = HashMap<Labels, Vec<Sample>>;

/// Opens a chunk payload of any encoding Cortex v1.13 reads (XOR from ingesters; DoubleDelta,
/// Varbit, Bigchunk or XOR from a store Cortex wrote); `source` names where it came from.
pub(crate) fn open_chunk(encoding: i32, data: Bytes, source: &str) -> Result<StoredChunk, HttpError> {
    StoredChunk::open(encoding, data).map_err(|e| HttpError::internal(format!("chunk from {source}: {e}")))
}

/// Appends the chunk's samples within [start, end].
pub(crate) fn append_in_range(samples: &mut Vec<Sample>, chunk: &StoredChunk, start: i64, end: i64) {
    samples.reserve(chunk.num_samples());
    samples.extend(
        chunk
            .iter()
            .filter(|(t, _)| *t >= start && *t <= end)
            .map(|(t, v)| Sample { t, v }),
    );
}

/// Series sorted by labels, each with samples in time order and one sample per
/// timestamp (replicas, and flushed chunks that the ingester still holds, carry
/// identical samples); series left without samples are dropped.
pub(crate) fn into_series(gathered: Gathered) -> Vec<Series> {
    let mut out: Vec<Series> = gathered
        .into_iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(labels, mut samples)| {
            samples.sort_by_key(|s| s.t);
            samples.dedup_by_key(|s| s.t);
            Series { labels, samples }
        })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}
