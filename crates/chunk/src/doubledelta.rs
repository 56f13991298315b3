//! Reading Cortex's DoubleDelta chunks (encoding 1, the Prometheus 1.x "double delta" chunk Cortex
//! wrote by default up to v0.6).
//!
//! Layout (little endian): a fixed-capacity 1024-byte buffer, of which a 37-byte header and the
//! used payload count:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | used bytes (header included) |
//! | 2 | 1 | bytes per time double-delta: 1, 2, 4 or 8 |
//! | 3 | 1 | bytes per value double-delta: 0, 1, 2, 4 or 8 |
//! | 4 | 1 | 1 if values are integers |
//! | 5 | 8 | base time (ms) — sample 0 |
//! | 13 | 8 | base value (f64) — sample 0 |
//! | 21 | 8 | base time delta; the absolute time of sample 1 when time bytes are 8 |
//! | 29 | 8 | base value delta (f64); the value of sample 1 when value bytes are 8 |
//!
//! Sample `i ≥ 2` sits at `37 + (i − 2) × (time bytes + value bytes)`: the time is
//! `base + i × Δ + ddt` (signed ddt), or the absolute time when time bytes are 8; an integer value
//! is `base + i × Δ + ddv` (signed integer ddv, 0 bytes = no ddv), a float value
//! `base + i × Δ + ddv` with a 4-byte f32 ddv, or the raw f64 when value bytes are 8.
//! A used length of 21 means one sample (the header is cut after the base value).

use bytes::Bytes;

use crate::ChunkError;

const HEADER_LEN: usize = 37;
/// A one-sample chunk stops after the base value.
const ONE_SAMPLE_LEN: usize = 21;
/// The fixed buffer Cortex allocates (`ChunkLen`); the used length can never exceed it.
pub(crate) const CHUNK_LEN: usize = 1024;

/// A validated DoubleDelta chunk; iterating it cannot fail.
#[derive(Clone, Debug)]
pub struct DoubleDeltaChunk {
    data: Bytes,
    len: usize,
    time_bytes: u8,
    value_bytes: u8,
    is_int: bool,
    base_t: i64,
    base_v: f64,
    base_dt: i64,
    base_dv: f64,
}

fn corrupt(why: String) -> ChunkError {
    ChunkError::DoubleDelta(why)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl DoubleDeltaChunk {
    /// Checks the header (as Cortex's `UnmarshalFromBuf` does, plus the combinations of value
    /// width and kind its iterator would fail on) and keeps the used bytes.
    pub fn from_bytes(data: Bytes) -> Result<Self, ChunkError> {
        if data.len() < ONE_SAMPLE_LEN {
            return Err(corrupt(format!("{} bytes, shorter than its header", data.len())));
        }
        let used = u16::from_le_bytes([data[0], data[1]]) as usize;
        if used > CHUNK_LEN {
            return Err(corrupt(format!(
                "used length {used} exceeds the {CHUNK_LEN}-byte chunk"
            )));
        }
        if used < ONE_SAMPLE_LEN {
            return Err(corrupt(format!("used length {used} is less than the header")));
        }
        if used > data.len() {
            return Err(corrupt(format!("used length {used} but only {} bytes", data.len())));
        }
        let (time_bytes, value_bytes, is_int) = (data[2], data[3], data[4] == 1);
        if !matches!(time_bytes, 1 | 2 | 4 | 8) {
            return Err(corrupt(format!("invalid time delta width {time_bytes}")));
        }
        if !matches!(value_bytes, 0 | 1 | 2 | 4 | 8) {
            return Err(corrupt(format!("invalid value delta width {value_bytes}")));
        }
        let sample_size = (time_bytes + value_bytes) as usize;
        let len = match used {
            ONE_SAMPLE_LEN => 1,
            u if u < HEADER_LEN => return Err(corrupt(format!("used length {u} cuts the header"))),
            u => (u - HEADER_LEN) / sample_size + 2,
        };
        if len > 2 {
            let valid = if is_int {
                value_bytes != 8
            } else {
                matches!(value_bytes, 4 | 8)
            };
            if !valid {
                let kind = if is_int { "integer" } else { "floating point" };
                return Err(corrupt(format!("invalid {kind} value delta width {value_bytes}")));
            }
        }
        let data = data.slice(..used);
        let (base_dt, base_dv) = if used >= HEADER_LEN {
            (u64_at(&data, 21) as i64, f64::from_bits(u64_at(&data, 29)))
        } else {
            (0, 0.0)
        };
        Ok(DoubleDeltaChunk {
            base_t: u64_at(&data, 5) as i64,
            base_v: f64::from_bits(u64_at(&data, 13)),
            base_dt,
            base_dv,
            data,
            len,
            time_bytes,
            value_bytes,
            is_int,
        })
    }

    pub fn num_samples(&self) -> usize {
        self.len
    }

    fn sample_at(&self, idx: usize) -> (i64, f64) {
        match idx {
            0 => (self.base_t, self.base_v),
            1 => {
                let t = if self.time_bytes == 8 {
                    self.base_dt
                } else {
                    self.base_t.wrapping_add(self.base_dt)
                };
                let v = if self.value_bytes == 8 {
                    self.base_dv
                } else {
                    self.base_v + self.base_dv
                };
                (t, v)
            }
            _ => {
                let at = HEADER_LEN + (idx - 2) * (self.time_bytes + self.value_bytes) as usize;
                let d = &self.data[at..];
                let projected_t = self.base_t.wrapping_add((idx as i64).wrapping_mul(self.base_dt));
                let t = match self.time_bytes {
                    1 => projected_t.wrapping_add(d[0] as i8 as i64),
                    2 => projected_t.wrapping_add(i16::from_le_bytes([d[0], d[1]]) as i64),
                    4 => projected_t.wrapping_add(i32::from_le_bytes([d[0], d[1], d[2], d[3]]) as i64),
                    _ => u64_at(d, 0) as i64,
                };
                let d = &d[self.time_bytes as usize..];
                // Same operation order as Cortex (no fused multiply-add), so the floats are identical.
                let projected_v = self.base_v + idx as f64 * self.base_dv;
                let v = match (self.is_int, self.value_bytes) {
                    (true, 0) => projected_v,
                    (true, 1) => projected_v + d[0] as i8 as f64,
                    (true, 2) => projected_v + i16::from_le_bytes([d[0], d[1]]) as f64,
                    (true, _) => projected_v + i32::from_le_bytes([d[0], d[1], d[2], d[3]]) as f64,
                    (false, 4) => projected_v + f32::from_le_bytes([d[0], d[1], d[2], d[3]]) as f64,
                    (false, _) => f64::from_bits(u64_at(d, 0)),
                };
                (t, v)
            }
        }
    }

    pub fn iter(&self) -> DoubleDeltaIter<'_> {
        DoubleDeltaIter { chunk: self, next: 0 }
    }
}

/// Samples of a [`DoubleDeltaChunk`], oldest first.
#[derive(Clone, Debug)]
pub struct DoubleDeltaIter<'a> {
    chunk: &'a DoubleDeltaChunk,
    next: usize,
}

impl Iterator for DoubleDeltaIter<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        if self.next >= self.chunk.len {
            return None;
        }
        let s = self.chunk.sample_at(self.next);
        self.next += 1;
        Some(s)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.chunk.len - self.next;
        (left, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk laid out by hand from the format description (not by a port of Cortex's writer).
    fn chunk(tb: u8, vb: u8, is_int: bool, base: (i64, f64, i64, f64), samples: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; CHUNK_LEN];
        let used = HEADER_LEN + samples.len() * (tb + vb) as usize;
        b[0..2].copy_from_slice(&(used as u16).to_le_bytes());
        b[2] = tb;
        b[3] = vb;
        b[4] = is_int as u8;
        b[5..13].copy_from_slice(&base.0.to_le_bytes());
        b[13..21].copy_from_slice(&base.1.to_bits().to_le_bytes());
        b[21..29].copy_from_slice(&base.2.to_le_bytes());
        b[29..37].copy_from_slice(&base.3.to_bits().to_le_bytes());
        let mut at = HEADER_LEN;
        for (t, v) in samples {
            b[at..at + t.len()].copy_from_slice(t);
            at += t.len();
            b[at..at + v.len()].copy_from_slice(v);
            at += v.len();
        }
        b
    }

    #[test]
    fn integer_double_deltas() {
        // 1000, 2000 (+1000), then projected 3000 − 3 and 4000 + 2; values 10, 12, 14+1, 16−2.
        let b = chunk(1, 1, true, (1000, 10.0, 1000, 2.0), &[(&[0xfd], &[1]), (&[2], &[0xfe])]);
        let c = DoubleDeltaChunk::from_bytes(b.into()).unwrap();
        let got: Vec<_> = c.iter().collect();
        assert_eq!(got, vec![(1000, 10.0), (2000, 12.0), (2997, 15.0), (4002, 14.0)]);
    }

    #[test]
    fn eight_byte_widths_are_absolute() {
        let t2 = 7_000_000i64.to_le_bytes();
        let v2 = 0.1f64.to_bits().to_le_bytes();
        let b = chunk(8, 8, false, (5, 1.5, 99, 2.25), &[(&t2, &v2)]);
        let c = DoubleDeltaChunk::from_bytes(b.into()).unwrap();
        let got: Vec<_> = c.iter().collect();
        assert_eq!(got, vec![(5, 1.5), (99, 2.25), (7_000_000, 0.1)]);
    }

    #[test]
    fn float32_value_deltas() {
        let dd = 0.5f32.to_le_bytes();
        let b = chunk(2, 4, false, (0, 1.0, 10, 0.25), &[(&7i16.to_le_bytes(), &dd)]);
        let c = DoubleDeltaChunk::from_bytes(b.into()).unwrap();
        assert_eq!(c.iter().nth(2), Some((27, 1.0 + 2.0 * 0.25 + 0.5)));
    }

    #[test]
    fn one_sample_chunk() {
        let mut b = chunk(1, 0, true, (42, 3.0, 0, 0.0), &[]);
        b[0..2].copy_from_slice(&(ONE_SAMPLE_LEN as u16).to_le_bytes());
        let c = DoubleDeltaChunk::from_bytes(b.into()).unwrap();
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![(42, 3.0)]);
    }

    #[test]
    fn corrupt_headers_are_errors() {
        let good = chunk(1, 1, true, (0, 0.0, 1, 1.0), &[(&[0], &[0])]);
        let mut cases = vec![];
        let mut b = good.clone();
        b[0..2].copy_from_slice(&2000u16.to_le_bytes());
        cases.push((b, "exceeds"));
        let mut b = good.clone();
        b[2] = 3;
        cases.push((b, "time delta width 3"));
        let mut b = good.clone();
        b[4] = 0; // float with 1-byte deltas
        cases.push((b, "floating point value delta width 1"));
        let mut b = good.clone();
        b[0..2].copy_from_slice(&30u16.to_le_bytes());
        cases.push((b, "cuts the header"));
        cases.push((good[..20].to_vec(), "shorter than its header"));
        cases.push((good[..38].to_vec(), "only 38 bytes"));
        for (b, want) in cases {
            let e = DoubleDeltaChunk::from_bytes(b.into()).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        }
    }
}
