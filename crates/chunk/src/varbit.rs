//! Reading Cortex's Varbit chunks (encoding 2, the Prometheus 1.x Gorilla-style chunk).
//!
//! A fixed 1024-byte buffer, big endian, bits counted from the first byte, MSB first:
//!
//! | byte | size | field |
//! |---|---|---|
//! | 0 | 8 | first time (ms) |
//! | 8 | 8 | first value (f64) |
//! | 16 | 8 | last time |
//! | 24 | 8 | last value |
//! | 32 | 3 | first Δt (unsigned, 24 bits) |
//! | 35 | 1 | flags: low 2 bits = value encoding, top bit = closed |
//! | 36 | 2 | bit offset of the next sample (= end of the payload) |
//! | 38 | … | payload from bit 304 (the first Δv, for value encoding 1, sits in its first 32 bits) |
//!
//! Sample 0 is the first time/value; sample 1 is first time + first Δt (a chunk of exactly two
//! open samples keeps sample 1 only as the last time/value). From sample 2 on the payload holds,
//! per sample, a time double delta — `0` + 7-bit count of repeated ΔΔt = 0 (count − 1; the
//! following samples of the run carry no time bits), `10` + 6 bits, `110` + 17 bits, `111` +
//! 23 bits (signed) — followed by the value in the chunk's value encoding:
//! 0 "zero" (no bits: every value equals the first), 1 integer double delta (`0`, `10`+6,
//! `110`+13, `1110`+20, `1111`+33 bits, signed, on the running Δv), 2 XOR (`0` same value,
//! `10` reuse the previous window, `11` + 5-bit leading zeros + 6-bit (significant − 1) + bits),
//! 3 direct (64 raw bits). A closed chunk's last sample lives only in the header (last time/value).

use bytes::Bytes;

use crate::ChunkError;

const CHUNK_LEN: usize = 1024;
const FLAGS: usize = 35;
const NEXT_SAMPLE_OFFSET: usize = 36;
const FIRST_VALUE_DELTA: usize = 38;
/// Bit offset of the third sample (where the payload starts).
const THIRD_SAMPLE_BIT: usize = FIRST_VALUE_DELTA * 8;

const ZERO_ENCODING: u8 = 0;
const INT_DOUBLE_DELTA_ENCODING: u8 = 1;
const XOR_ENCODING: u8 = 2;
const DIRECT_ENCODING: u8 = 3;

/// A validated Varbit chunk (always the full 1024 bytes); iterating it cannot fail.
#[derive(Clone, Debug)]
pub struct VarbitChunk {
    buf: Bytes,
    len: usize,
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn be_u24(b: &[u8], at: usize) -> i64 {
    (b[at] as i64) << 16 | (b[at + 1] as i64) << 8 | b[at + 2] as i64
}

impl VarbitChunk {
    /// Accepts the full 1024 bytes (what Cortex writes) or a buffer cut right after the payload
    /// (what older writers sent), like Cortex's `UnmarshalFromBuf`; then decodes every sample
    /// once to validate the stream and count it.
    pub fn from_bytes(data: Bytes) -> Result<Self, ChunkError> {
        let buf = if data.len() >= CHUNK_LEN {
            data.slice(..CHUNK_LEN)
        } else {
            let mut padded = vec![0u8; CHUNK_LEN];
            padded[..data.len()].copy_from_slice(&data);
            let next = u16::from_be_bytes([padded[NEXT_SAMPLE_OFFSET], padded[NEXT_SAMPLE_OFFSET + 1]]) as usize;
            let marshal_len = (next.max(THIRD_SAMPLE_BIT) / 8 + 1).min(CHUNK_LEN);
            if data.len() != marshal_len {
                return Err(ChunkError::Varbit(format!(
                    "{} bytes, want {marshal_len} or {CHUNK_LEN}",
                    data.len()
                )));
            }
            Bytes::from(padded)
        };
        let mut it = VarbitIter::new(&buf);
        let len = it.by_ref().count();
        if let Some(e) = it.error {
            return Err(ChunkError::Varbit(format!("{e} after {len} samples")));
        }
        Ok(VarbitChunk { buf, len })
    }

    pub fn num_samples(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> VarbitIter<'_> {
        VarbitIter::new(&self.buf)
    }
}

/// Samples of a [`VarbitChunk`], oldest first (a port of the reading state machine, not of
/// its code: every branch is from the format description above).
#[derive(Clone, Debug)]
pub struct VarbitIter<'a> {
    c: &'a [u8],
    pos: usize,
    /// Bit offset where the payload ends.
    end: usize,
    closed: bool,
    enc: u8,
    t: i64,
    dt: i64,
    repeats: u8,
    v: f64,
    dv: i64,
    leading: u32,
    significant: u32,
    error: Option<&'static str>,
}

impl<'a> VarbitIter<'a> {
    fn new(c: &'a [u8]) -> Self {
        VarbitIter {
            c,
            pos: 0,
            end: u16::from_be_bytes([c[NEXT_SAMPLE_OFFSET], c[NEXT_SAMPLE_OFFSET + 1]]) as usize,
            closed: c[FLAGS] > 0x7f,
            enc: c[FLAGS] & 0x03,
            t: i64::MIN,
            dt: 0,
            repeats: 0,
            v: 0.0,
            dv: 0,
            leading: 0,
            significant: 1,
            error: None,
        }
    }

    fn last_sample(&self) -> (i64, f64) {
        (be_u64(self.c, 16) as i64, f64::from_bits(be_u64(self.c, 24)))
    }

    fn bits(&mut self, n: u32) -> u64 {
        if self.pos + n as usize > self.c.len() * 8 {
            self.error = Some("read past the end of the chunk");
            return 0;
        }
        let mut out = 0u64;
        for _ in 0..n {
            let bit = self.c[self.pos / 8] >> (7 - self.pos % 8) & 1;
            out = out << 1 | bit as u64;
            self.pos += 1;
        }
        out
    }

    fn signed(&mut self, n: u32) -> i64 {
        let u = self.bits(n);
        if u >= 1 << (n - 1) {
            u.wrapping_sub(1 << n) as i64
        } else {
            u as i64
        }
    }

    /// Counts 1-bits up to `max`, consuming the terminating 0-bit if one comes first.
    fn control(&mut self, max: u32) -> u32 {
        let mut count = 0;
        while count < max && self.pos / 8 < self.c.len() {
            let bit = self.c[self.pos / 8] >> (7 - self.pos % 8) & 1;
            self.pos += 1;
            if bit == 0 {
                return count;
            }
            count += 1;
        }
        if self.pos / 8 >= self.c.len() {
            self.error = Some("read past the end of the chunk");
        }
        count
    }

    fn read_time(&mut self) {
        if self.repeats > 0 {
            self.repeats -= 1;
        } else {
            match self.control(3) {
                0 => self.repeats = self.bits(7) as u8,
                1 => self.dt = self.dt.wrapping_add(self.signed(6)),
                2 => self.dt = self.dt.wrapping_add(self.signed(17)),
                _ => self.dt = self.dt.wrapping_add(self.signed(23)),
            }
        }
        self.t = self.t.wrapping_add(self.dt);
    }

    fn read_int_double_delta(&mut self) {
        let dd = match self.control(4) {
            0 => 0,
            1 => self.signed(6),
            2 => self.signed(13),
            3 => self.signed(20),
            _ => self.signed(33),
        };
        self.dv = self.dv.wrapping_add(dd);
        self.v += self.dv as f64;
    }

    fn read_xor(&mut self) {
        match self.control(2) {
            0 => return,
            1 => {}
            _ => {
                self.leading = self.bits(5) as u32;
                self.significant = self.bits(6) as u32 + 1;
            }
        }
        let bits = self.bits(self.significant);
        // A window wider than 64 bits (corrupt input) shifts everything out, as in Go.
        let shift = 64i64 - self.significant as i64 - self.leading as i64;
        let x = if shift < 0 { 0 } else { bits << shift };
        self.v = f64::from_bits(self.v.to_bits() ^ x);
    }

    fn scan(&mut self) -> bool {
        if self.error.is_some() || self.pos > self.end {
            return false;
        }
        if self.pos == self.end && self.repeats == 0 {
            self.pos = self.end + 1;
            if !self.closed {
                return false;
            }
            (self.t, self.v) = self.last_sample();
            return true;
        }
        match self.pos {
            0 => {
                self.t = be_u64(self.c, 0) as i64;
                self.v = f64::from_bits(be_u64(self.c, 8));
                self.pos = 1;
                return true;
            }
            1 => {
                if self.end == THIRD_SAMPLE_BIT && !self.closed {
                    // Exactly two samples: the second is only in the header.
                    (self.t, self.v) = self.last_sample();
                    self.pos = self.end + 1;
                    return true;
                }
                self.dt = be_u24(self.c, 32);
                self.t = self.t.wrapping_add(self.dt);
                match self.enc {
                    ZERO_ENCODING => self.pos = THIRD_SAMPLE_BIT,
                    INT_DOUBLE_DELTA_ENCODING => {
                        let first_dv = i32::from_be_bytes([
                            self.c[FIRST_VALUE_DELTA],
                            self.c[FIRST_VALUE_DELTA + 1],
                            self.c[FIRST_VALUE_DELTA + 2],
                            self.c[FIRST_VALUE_DELTA + 3],
                        ]);
                        self.dv = first_dv as i64;
                        self.v += self.dv as f64;
                        self.pos = THIRD_SAMPLE_BIT + 32;
                    }
                    XOR_ENCODING => {
                        self.pos = THIRD_SAMPLE_BIT;
                        self.read_xor();
                    }
                    _ => {
                        self.v = f64::from_bits(be_u64(self.c, FIRST_VALUE_DELTA));
                        self.pos = THIRD_SAMPLE_BIT + 64;
                    }
                }
                return self.error.is_none();
            }
            _ => {}
        }
        self.read_time();
        match self.enc {
            ZERO_ENCODING => {}
            INT_DOUBLE_DELTA_ENCODING => self.read_int_double_delta(),
            XOR_ENCODING => self.read_xor(),
            DIRECT_ENCODING => self.v = f64::from_bits(self.bits(64)),
            _ => unreachable!("two bits hold 0..=3"),
        }
        self.error.is_none()
    }
}

impl Iterator for VarbitIter<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        self.scan().then_some((self.t, self.v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes bits MSB first at a bit offset of a 1024-byte buffer (an independent test encoder).
    struct Bits {
        buf: Vec<u8>,
        pos: usize,
    }

    impl Bits {
        fn new() -> Self {
            Bits {
                buf: vec![0; CHUNK_LEN],
                pos: THIRD_SAMPLE_BIT,
            }
        }
        fn put(&mut self, v: u64, n: u32) {
            for i in (0..n).rev() {
                if v >> i & 1 == 1 {
                    self.buf[self.pos / 8] |= 0x80 >> (self.pos % 8);
                }
                self.pos += 1;
            }
        }
        fn header(mut self, first: (i64, f64), last: (i64, f64), first_dt: i64, enc: u8, closed: bool) -> Vec<u8> {
            self.buf[0..8].copy_from_slice(&first.0.to_be_bytes());
            self.buf[8..16].copy_from_slice(&first.1.to_bits().to_be_bytes());
            self.buf[16..24].copy_from_slice(&last.0.to_be_bytes());
            self.buf[24..32].copy_from_slice(&last.1.to_bits().to_be_bytes());
            self.buf[32..35].copy_from_slice(&first_dt.to_be_bytes()[5..]);
            self.buf[FLAGS] = enc | if closed { 0x80 } else { 0 };
            self.buf[36..38].copy_from_slice(&(self.pos as u16).to_be_bytes());
            self.buf
        }
    }

    #[test]
    fn zero_encoding_with_repeat_runs() {
        // t = 0, 10, then ΔΔt = 0 for 3 samples (one run), then ΔΔt = −2 (6-bit bucket).
        let mut b = Bits::new();
        b.put(0, 1);
        b.put(2, 7); // run of 3
        b.put(0b10, 2);
        b.put((-2i64 as u64) & 0x3f, 6);
        let c = VarbitChunk::from_bytes(b.header((0, 7.0), (48, 7.0), 10, ZERO_ENCODING, false).into()).unwrap();
        let ts: Vec<i64> = c.iter().map(|(t, _)| t).collect();
        assert_eq!(ts, vec![0, 10, 20, 30, 40, 48]);
        assert!(c.iter().all(|(_, v)| v == 7.0));
        assert_eq!(c.num_samples(), 6);
    }

    #[test]
    fn int_double_delta_values_and_closed_last_sample() {
        let mut b = Bits::new();
        b.put(5, 32); // first Δv = 5
                      // sample 2: ΔΔt = 0 run of 1, ΔΔv = +3 (6-bit bucket)
        b.put(0, 1);
        b.put(0, 7);
        b.put(0b10, 2);
        b.put(3, 6);
        // sample 3: ΔΔt 17-bit bucket +1000, ΔΔv 0
        b.put(0b110, 3);
        b.put(1000, 17);
        b.put(0, 1);
        let c = VarbitChunk::from_bytes(
            b.header((100, 1.0), (9999, -4.0), 15, INT_DOUBLE_DELTA_ENCODING, true)
                .into(),
        )
        .unwrap();
        let got: Vec<_> = c.iter().collect();
        assert_eq!(
            got,
            vec![(100, 1.0), (115, 6.0), (130, 14.0), (1145, 22.0), (9999, -4.0)]
        );
    }

    #[test]
    fn xor_and_direct_values() {
        let (v0, v1, v2) = (1.5f64, 3.25f64, -0.0f64);
        let mut b = Bits::new();
        let x = v0.to_bits() ^ v1.to_bits();
        let (lead, sig) = (x.leading_zeros(), 64 - x.leading_zeros() - x.trailing_zeros());
        b.put(0b11, 2);
        b.put(lead as u64, 5);
        b.put(sig as u64 - 1, 6);
        b.put(x >> (64 - lead - sig), sig);
        // sample 2: ΔΔt run of 1, value -0.0 with a new window
        b.put(0, 8);
        let x2 = v1.to_bits() ^ v2.to_bits();
        let (l2, s2) = (x2.leading_zeros(), 64 - x2.leading_zeros() - x2.trailing_zeros());
        b.put(0b11, 2);
        b.put(l2 as u64, 5);
        b.put(s2 as u64 - 1, 6);
        b.put(x2 >> (64 - l2 - s2), s2);
        let c = VarbitChunk::from_bytes(b.header((0, v0), (20, v2), 10, XOR_ENCODING, false).into()).unwrap();
        let got: Vec<(i64, u64)> = c.iter().map(|(t, v)| (t, v.to_bits())).collect();
        assert_eq!(got, vec![(0, v0.to_bits()), (10, v1.to_bits()), (20, v2.to_bits())]);

        let mut d = Bits::new();
        d.put(2.5f64.to_bits(), 64); // second value, direct
        d.put(0, 8);
        d.put(f64::NAN.to_bits(), 64);
        let c = VarbitChunk::from_bytes(d.header((0, 1.0), (2, f64::NAN), 1, DIRECT_ENCODING, false).into()).unwrap();
        let got: Vec<(i64, u64)> = c.iter().map(|(t, v)| (t, v.to_bits())).collect();
        assert_eq!(
            got,
            vec![(0, 1f64.to_bits()), (1, 2.5f64.to_bits()), (2, f64::NAN.to_bits())]
        );
    }

    #[test]
    fn two_sample_chunk_keeps_the_second_in_the_header() {
        let b = Bits::new().header((5, 1.0), (65, 2.0), 60, ZERO_ENCODING, false);
        let c = VarbitChunk::from_bytes(b.into()).unwrap();
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![(5, 1.0), (65, 2.0)]);
    }

    #[test]
    fn short_buffers_must_end_at_the_payload() {
        let b = Bits::new().header((5, 1.0), (65, 2.0), 60, ZERO_ENCODING, false);
        let e = VarbitChunk::from_bytes(Bytes::copy_from_slice(&b[..100])).unwrap_err();
        assert!(e.to_string().contains("want 39 or 1024"), "{e}");
        assert_eq!(
            VarbitChunk::from_bytes(Bytes::copy_from_slice(&b[..39]))
                .unwrap()
                .num_samples(),
            2
        );
    }

    #[test]
    fn payload_offset_past_the_buffer_is_an_error() {
        let mut b = Bits::new();
        b.put(0b111, 3);
        let mut buf = b.header((0, 0.0), (0, 0.0), 1, DIRECT_ENCODING, false);
        buf[36..38].copy_from_slice(&9000u16.to_be_bytes());
        // Every sample reads 23 + 64 bits of zeros until the buffer ends.
        let e = VarbitChunk::from_bytes(buf.into()).unwrap_err();
        assert!(e.to_string().contains("past the end"), "{e}");
    }
}
