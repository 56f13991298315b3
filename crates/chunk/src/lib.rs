//! Chunk encodings: every one Cortex v1.13 reads, and the Prometheus TSDB XOR chunk we write.
//!
//! - [`xor`]: the Prometheus 2.x XOR chunk ([`XorChunk`]), byte-compatible with
//!   `tsdb/chunkenc/xor.go`; encoding [`ENCODING_PROMETHEUS_XOR`] (Cortex `PrometheusXorChunk`),
//!   what ingesters cut and stream over `QueryStream`.
//! - [`bigchunk`]: Cortex's Bigchunk (a list of XOR chunks), its default encoding since v0.7
//!   (read, and written for `-ingester.chunk-encoding=Bigchunk`).
//! - [`doubledelta`], [`varbit`]: the Prometheus 1.x chunks Cortex wrote before that (read only).
//! - [`encoding`]: encoding ids and flag names, and [`StoredChunk`], which opens any of them.

pub mod bigchunk;
mod bstream;
pub mod doubledelta;
pub mod encoding;
pub mod varbit;
pub mod xor;

#[cfg(test)]
mod tests;

pub use encoding::{Encoding, StoredChunk, StoredChunkIter};
pub use xor::{XorChunk, XorIter};

/// Prometheus cuts head chunks at 120 samples; so do we.
pub const MAX_SAMPLES_PER_CHUNK: usize = 120;

/// Cortex chunk encoding id for a single Prometheus XOR chunk
/// (`PrometheusXorChunk` in Cortex `pkg/chunk/encoding`).
pub const ENCODING_PROMETHEUS_XOR: i32 = 4;

/// Why bytes are not a valid chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("XOR chunk too short: {0} bytes, need at least the 2-byte header")]
    TooShort(usize),
    #[error("XOR chunk truncated: header says {total} samples, stream ends in sample {sample}")]
    Truncated { sample: u16, total: u16 },
    #[error("XOR chunk corrupt: varint overflows 64 bits in sample {sample}")]
    VarintOverflow { sample: u16 },
    #[error("XOR chunk corrupt: value bit window exceeds 64 bits in sample {sample}")]
    BadValueWindow { sample: u16 },
    #[error("unknown chunk encoding {0}")]
    UnknownEncoding(i32),
    #[error(
        "unknown chunk encoding {0:?}: valid are DoubleDelta (1), Varbit (2), Bigchunk (3), PrometheusXorChunk (4)"
    )]
    UnknownEncodingName(String),
    #[error("chunk encoding 0 (Delta) is deprecated and not supported, as in Cortex v1.x")]
    DeltaEncoding,
    #[error("DoubleDelta chunk corrupt: {0}")]
    DoubleDelta(String),
    #[error("Varbit chunk corrupt: {0}")]
    Varbit(String),
    #[error("bigchunk truncated at byte {at} of {len}")]
    BigchunkTruncated { at: usize, len: usize },
    #[error("bigchunk {what} {len} exceeds the format's 65535")]
    BigchunkTooLarge { what: &'static str, len: usize },
    #[error("bigchunk sub-chunk {index}: {error}")]
    BigchunkSubchunk { index: usize, error: Box<ChunkError> },
}
