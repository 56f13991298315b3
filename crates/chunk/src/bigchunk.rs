//! Cortex's Bigchunk (encoding 3, its default since v0.7): a list of Prometheus XOR chunks of up
//! to 120 samples each. Read in full; written ([`encode`]) for `-ingester.chunk-encoding=Bigchunk`,
//! so a fleet still mixed with Cortex writers can flush the encoding Cortex itself flushes.
//!
//! Layout: `u16 LE` sub-chunk count, then per sub-chunk `u16 LE` length + that many bytes of a
//! Prometheus XOR chunk. Bytes after the last sub-chunk are ignored, as Cortex ignores them.

use bytes::Bytes;

use crate::xor::{XorChunk, XorIter};
use crate::ChunkError;

/// The Bigchunk bytes holding the XOR chunk bytes `subs` in order (Cortex `bigchunk.Marshal`).
/// Each sub-chunk's length must fit the format's `u16`, as must their count; a 120-sample XOR
/// chunk is far below.
pub fn encode(subs: &[&[u8]]) -> Result<Bytes, ChunkError> {
    let count = u16::try_from(subs.len()).map_err(|_| ChunkError::BigchunkTooLarge {
        what: "sub-chunk count",
        len: subs.len(),
    })?;
    let total = 2 + subs.iter().map(|s| 2 + s.len()).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&count.to_le_bytes());
    for s in subs {
        let len = u16::try_from(s.len()).map_err(|_| ChunkError::BigchunkTooLarge {
            what: "sub-chunk length",
            len: s.len(),
        })?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(s);
    }
    Ok(out.into())
}

/// A validated Bigchunk: every sub-chunk decoded once.
#[derive(Clone, Debug)]
pub struct Bigchunk {
    chunks: Vec<XorChunk>,
    len: usize,
}

impl Bigchunk {
    pub fn from_bytes(data: Bytes) -> Result<Self, ChunkError> {
        let truncated = |at: usize| ChunkError::BigchunkTruncated { at, len: data.len() };
        if data.len() < 2 {
            return Err(truncated(0));
        }
        let count = u16::from_le_bytes([data[0], data[1]]) as usize;
        // Each sub-chunk takes at least its 2-byte length: bound the allocation by the input.
        let mut chunks = Vec::with_capacity(count.min((data.len() - 2) / 2));
        let mut at = 2;
        let mut len = 0;
        for index in 0..count {
            let Some(l) = data.get(at..at + 2) else {
                return Err(truncated(at));
            };
            let sub_len = u16::from_le_bytes([l[0], l[1]]) as usize;
            at += 2;
            if at + sub_len > data.len() {
                return Err(truncated(at));
            }
            let sub = XorChunk::from_bytes(data.slice(at..at + sub_len)).map_err(|e| ChunkError::BigchunkSubchunk {
                index,
                error: Box::new(e),
            })?;
            at += sub_len;
            len += sub.num_samples();
            chunks.push(sub);
        }
        Ok(Bigchunk { chunks, len })
    }

    pub fn num_samples(&self) -> usize {
        self.len
    }

    pub fn sub_chunks(&self) -> &[XorChunk] {
        &self.chunks
    }

    pub fn iter(&self) -> BigchunkIter<'_> {
        BigchunkIter {
            rest: self.chunks.iter(),
            current: None,
        }
    }
}

/// Samples of every sub-chunk in order.
#[derive(Clone, Debug)]
pub struct BigchunkIter<'a> {
    rest: std::slice::Iter<'a, XorChunk>,
    current: Option<XorIter<'a>>,
}

impl Iterator for BigchunkIter<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        loop {
            if let Some(s) = self.current.as_mut().and_then(Iterator::next) {
                return Some(s);
            }
            self.current = Some(self.rest.next()?.iter());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xor(samples: impl IntoIterator<Item = (i64, f64)>) -> XorChunk {
        let mut c = XorChunk::new();
        for (t, v) in samples {
            c.append(t, v);
        }
        c
    }

    fn bigchunk(subs: &[&XorChunk]) -> Vec<u8> {
        let mut b = (subs.len() as u16).to_le_bytes().to_vec();
        for s in subs {
            b.extend_from_slice(&(s.size_bytes() as u16).to_le_bytes());
            b.extend_from_slice(s.bytes());
        }
        b
    }

    #[test]
    fn sub_chunks_in_order() {
        let a = xor((0..120).map(|i| (i * 15_000, i as f64)));
        let b = xor((120..130).map(|i| (i * 15_000, -(i as f64))));
        let c = Bigchunk::from_bytes(bigchunk(&[&a, &b]).into()).unwrap();
        assert_eq!(c.num_samples(), 130);
        let got: Vec<_> = c.iter().collect();
        assert_eq!(got.len(), 130);
        assert_eq!(got[119], (119 * 15_000, 119.0));
        assert_eq!(got[129], (129 * 15_000, -129.0));
        assert_eq!(Bigchunk::from_bytes(vec![0, 0].into()).unwrap().iter().count(), 0);
    }

    #[test]
    fn encode_is_the_layout_the_reader_and_cortex_read() {
        let a = xor((0..120).map(|i| (i * 15_000, i as f64 * 0.5)));
        let b = xor((120..125).map(|i| (i * 15_000, f64::from_bits(0x7ff0_0000_0000_0002))));
        let bytes = encode(&[a.bytes(), b.bytes()]).unwrap();
        assert_eq!(&bytes[..], &bigchunk(&[&a, &b])[..]);
        let back = Bigchunk::from_bytes(bytes).unwrap();
        let want: Vec<(i64, u64)> = a.iter().chain(b.iter()).map(|(t, v)| (t, v.to_bits())).collect();
        let got: Vec<(i64, u64)> = back.iter().map(|(t, v)| (t, v.to_bits())).collect();
        assert_eq!(got, want);
        assert_eq!(&encode(&[]).unwrap()[..], &[0, 0]);
        let e = encode(&[&vec![0u8; 70_000]]).unwrap_err();
        assert!(e.to_string().contains("sub-chunk length 70000"), "{e}");
    }

    #[test]
    fn truncation_is_an_error_naming_the_offset() {
        let a = xor((0..50).map(|i| (i, i as f64)));
        let full = bigchunk(&[&a, &a]);
        for cut in [1, 3, 10, full.len() - 1] {
            let e = Bigchunk::from_bytes(Bytes::copy_from_slice(&full[..cut])).unwrap_err();
            assert!(matches!(e, ChunkError::BigchunkTruncated { .. }), "cut {cut}: {e}");
        }
        // A sub-chunk whose header claims more samples than its bytes hold.
        let mut bad = full.clone();
        bad[4] = 0xff;
        let e = Bigchunk::from_bytes(bad.into()).unwrap_err();
        assert!(
            e.to_string().starts_with("bigchunk sub-chunk 0: XOR chunk truncated"),
            "{e}"
        );
        // A huge count over a tiny buffer fails without allocating for the count.
        let e = Bigchunk::from_bytes(vec![0xff, 0xff, 0, 0].into()).unwrap_err();
        assert!(e.to_string().contains("sub-chunk 0"), "{e}");
    }
}
