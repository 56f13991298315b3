//! The chunk encodings Cortex knows (`pkg/chunk/encoding`), by id and flag name, and one
//! [`StoredChunk`] that opens any of them.

use bytes::Bytes;

use crate::bigchunk::{Bigchunk, BigchunkIter};
use crate::doubledelta::{DoubleDeltaChunk, DoubleDeltaIter};
use crate::varbit::{VarbitChunk, VarbitIter};
use crate::xor::{XorChunk, XorIter};
use crate::ChunkError;

/// A chunk encoding id, as written in chunk metadata and `QueryStream` responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    DoubleDelta = 1,
    Varbit = 2,
    Bigchunk = 3,
    PrometheusXorChunk = 4,
}

/// Encoding 0: Prometheus 1.x's single-delta chunk. Cortex v1.x no longer has it.
pub const DELTA: i32 = 0;

impl Encoding {
    pub const ALL: [Encoding; 4] = [
        Encoding::DoubleDelta,
        Encoding::Varbit,
        Encoding::Bigchunk,
        Encoding::PrometheusXorChunk,
    ];

    pub fn id(self) -> i32 {
        self as i32
    }

    /// The name `-ingester.chunk-encoding` accepts (Cortex's spelling).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::DoubleDelta => "DoubleDelta",
            Encoding::Varbit => "Varbit",
            Encoding::Bigchunk => "Bigchunk",
            Encoding::PrometheusXorChunk => "PrometheusXorChunk",
        }
    }

    pub fn from_id(id: i32) -> Result<Encoding, ChunkError> {
        match id {
            DELTA => Err(ChunkError::DeltaEncoding),
            _ => Encoding::ALL
                .into_iter()
                .find(|e| e.id() == id)
                .ok_or(ChunkError::UnknownEncoding(id)),
        }
    }

    /// `-ingester.chunk-encoding`: a name or a number, as Cortex's flag accepts them.
    pub fn parse_flag(s: &str) -> Result<Encoding, ChunkError> {
        if let Some(e) = Encoding::ALL.into_iter().find(|e| e.name() == s) {
            return Ok(e);
        }
        if s == "Delta" {
            return Err(ChunkError::DeltaEncoding);
        }
        match s.trim().parse::<i32>() {
            Ok(id) => Encoding::from_id(id),
            Err(_) => Err(ChunkError::UnknownEncodingName(s.to_string())),
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A chunk of any encoding Cortex v1.13 reads, validated when opened so that iterating it
/// cannot fail.
#[derive(Clone, Debug)]
pub enum StoredChunk {
    DoubleDelta(DoubleDeltaChunk),
    Varbit(VarbitChunk),
    Bigchunk(Bigchunk),
    Xor(XorChunk),
}

impl StoredChunk {
    /// Opens `data` written in encoding `encoding`.
    pub fn open(encoding: i32, data: Bytes) -> Result<StoredChunk, ChunkError> {
        Ok(match Encoding::from_id(encoding)? {
            Encoding::DoubleDelta => StoredChunk::DoubleDelta(DoubleDeltaChunk::from_bytes(data)?),
            Encoding::Varbit => StoredChunk::Varbit(VarbitChunk::from_bytes(data)?),
            Encoding::Bigchunk => StoredChunk::Bigchunk(Bigchunk::from_bytes(data)?),
            Encoding::PrometheusXorChunk => StoredChunk::Xor(XorChunk::from_bytes(data)?),
        })
    }

    pub fn encoding(&self) -> Encoding {
        match self {
            StoredChunk::DoubleDelta(_) => Encoding::DoubleDelta,
            StoredChunk::Varbit(_) => Encoding::Varbit,
            StoredChunk::Bigchunk(_) => Encoding::Bigchunk,
            StoredChunk::Xor(_) => Encoding::PrometheusXorChunk,
        }
    }

    /// Known without decoding again (counted when the chunk was opened).
    pub fn num_samples(&self) -> usize {
        match self {
            StoredChunk::DoubleDelta(c) => c.num_samples(),
            StoredChunk::Varbit(c) => c.num_samples(),
            StoredChunk::Bigchunk(c) => c.num_samples(),
            StoredChunk::Xor(c) => c.num_samples(),
        }
    }

    pub fn iter(&self) -> StoredChunkIter<'_> {
        match self {
            StoredChunk::DoubleDelta(c) => StoredChunkIter::DoubleDelta(c.iter()),
            StoredChunk::Varbit(c) => StoredChunkIter::Varbit(c.iter()),
            StoredChunk::Bigchunk(c) => StoredChunkIter::Bigchunk(c.iter()),
            StoredChunk::Xor(c) => StoredChunkIter::Xor(c.iter()),
        }
    }

    /// The same samples as Prometheus XOR chunks of at most
    /// [`crate::MAX_SAMPLES_PER_CHUNK`] samples (for streamed remote read, which only knows XOR).
    pub fn to_xor_chunks(&self) -> Vec<XorChunk> {
        if let StoredChunk::Xor(c) = self {
            return vec![c.clone()];
        }
        if let StoredChunk::Bigchunk(b) = self {
            return b.sub_chunks().to_vec();
        }
        let mut out = Vec::with_capacity(self.num_samples().div_ceil(crate::MAX_SAMPLES_PER_CHUNK));
        let mut cur = XorChunk::new();
        for (t, v) in self.iter() {
            if cur.is_full() {
                out.push(std::mem::take(&mut cur));
            }
            cur.append(t, v);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }
}

/// Samples of a [`StoredChunk`], oldest first.
#[derive(Clone, Debug)]
pub enum StoredChunkIter<'a> {
    DoubleDelta(DoubleDeltaIter<'a>),
    Varbit(VarbitIter<'a>),
    Bigchunk(BigchunkIter<'a>),
    Xor(XorIter<'a>),
}

impl Iterator for StoredChunkIter<'_> {
    type Item = (i64, f64);

    #[inline]
    fn next(&mut self) -> Option<(i64, f64)> {
        match self {
            StoredChunkIter::DoubleDelta(i) => i.next(),
            StoredChunkIter::Varbit(i) => i.next(),
            StoredChunkIter::Bigchunk(i) => i.next(),
            StoredChunkIter::Xor(i) => i.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_accepts_cortex_names_and_numbers() {
        for e in Encoding::ALL {
            assert_eq!(Encoding::parse_flag(e.name()).unwrap(), e);
            assert_eq!(Encoding::parse_flag(&e.id().to_string()).unwrap(), e);
        }
        assert_eq!(Encoding::parse_flag("0").unwrap_err(), ChunkError::DeltaEncoding);
        assert_eq!(Encoding::parse_flag("Delta").unwrap_err(), ChunkError::DeltaEncoding);
        assert_eq!(Encoding::parse_flag("5").unwrap_err(), ChunkError::UnknownEncoding(5));
        assert!(
            Encoding::parse_flag("bigchunk").is_err(),
            "names are case-sensitive, as in Cortex"
        );
    }

    #[test]
    fn unknown_and_delta_encodings_are_refused() {
        let e = StoredChunk::open(9, Bytes::new()).unwrap_err();
        assert_eq!(e.to_string(), "unknown chunk encoding 9");
        let e = StoredChunk::open(0, Bytes::new()).unwrap_err();
        assert!(e.to_string().contains("Delta"), "{e}");
    }

    #[test]
    fn re_encodes_to_xor_in_120_sample_chunks() {
        // A DoubleDelta chunk of 300 samples built from the format (1-byte time, 0-byte value deltas).
        let mut b = vec![0u8; 1024];
        let used = 37 + 298;
        b[0..2].copy_from_slice(&(used as u16).to_le_bytes());
        b[2] = 1;
        b[4] = 1;
        b[21..29].copy_from_slice(&1000i64.to_le_bytes());
        b[29..37].copy_from_slice(&1f64.to_bits().to_le_bytes());
        let c = StoredChunk::open(1, b.into()).unwrap();
        assert_eq!(c.num_samples(), 300);
        let xs = c.to_xor_chunks();
        assert_eq!(
            xs.iter().map(XorChunk::num_samples).collect::<Vec<_>>(),
            vec![120, 120, 60]
        );
        let all: Vec<_> = xs.iter().flat_map(|x| x.iter()).collect();
        assert_eq!(all, c.iter().collect::<Vec<_>>());
        assert_eq!(all[299], (299_000, 299.0));
    }
}
