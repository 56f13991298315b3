//! Chunk encodings. Today: the Prometheus TSDB XOR chunk ([`XorChunk`]),
//! byte-compatible with Prometheus 2.x `tsdb/chunkenc/xor.go`, which Cortex
//! sends over `QueryStream` as encoding [`ENCODING_PROMETHEUS_XOR`] and which
//! its bigchunk encoding is built from.

mod bstream;
mod xor;

#[cfg(test)]
mod tests;

pub use xor::{XorChunk, XorIter};

/// Prometheus cuts head chunks at 120 samples; so do we.
pub const MAX_SAMPLES_PER_CHUNK: usize = 120;

/// Cortex chunk encoding id for a single Prometheus XOR chunk
/// (`PrometheusXorChunk` in Cortex `pkg/chunk/encoding`).
pub const ENCODING_PROMETHEUS_XOR: i32 = 4;

/// Why bytes are not a valid XOR chunk.
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
}
