//! The Gorilla-style XOR chunk of Prometheus 2.x (`tsdb/chunkenc/xor.go`).
//!
//! Layout: a 2-byte big-endian sample count, then a bit stream:
//! - sample 0: timestamp as a zig-zag varint, value as its 64 raw bits;
//! - sample 1: timestamp delta as an unsigned varint, value XOR-encoded;
//! - later samples: delta-of-delta of the timestamp in one of five buckets
//!   (`0` → dod = 0; `10` + 14 bits; `110` + 17 bits; `1110` + 20 bits;
//!   `1111` + 64 bits), then the value XOR-encoded.
//!
//! Value XOR encoding against the previous value: `0` if identical; otherwise
//! `1`, then either `0` + the meaningful bits inside the previous
//! leading/trailing-zero window (when the new XOR fits it), or `1` + leading
//! zeros (5 bits, capped at 31) + meaningful-bit count (6 bits, 64 written as 0)
//! + the meaningful bits.

use bytes::Bytes;

use crate::bstream::{BitReader, BitWriter};
use crate::ChunkError;

const HEADER_LEN: usize = 2;
/// Prometheus allocates 128 bytes for a new chunk; a full 120-sample chunk of
/// regular data usually fits, so appends rarely reallocate.
const INITIAL_CAPACITY: usize = 128;
/// `leading` value meaning "no leading/trailing window yet" (Prometheus uses 0xff too).
const NO_WINDOW: u8 = 0xff;
const MAX_VARINT_LEN: usize = 10;

/// A Prometheus XOR chunk: encoder state plus its exact bytes.
#[derive(Clone, Debug)]
pub struct XorChunk {
    w: BitWriter,
    num: u16,
    first_t: i64,
    // Appender state, as Prometheus's xorAppender keeps it.
    t: i64,
    v: u64,
    t_delta: u64,
    leading: u8,
    trailing: u8,
    /// Set by `from_bytes` when the given bytes carry slack past the decoded
    /// stream (extra bytes or non-zero padding bits). `bytes()` keeps them
    /// verbatim; the first append trims them so new bits follow the last sample.
    trim_before_append: Option<usize>,
}

impl Default for XorChunk {
    fn default() -> Self {
        Self::new()
    }
}

impl XorChunk {
    /// An empty chunk (2 header bytes, zero samples).
    pub fn new() -> Self {
        XorChunk {
            w: BitWriter::with_header(HEADER_LEN, INITIAL_CAPACITY),
            num: 0,
            first_t: 0,
            t: 0,
            v: 0,
            t_delta: 0,
            leading: NO_WINDOW,
            trailing: 0,
            trim_before_append: None,
        }
    }

    /// Loads a chunk from its bytes, decoding every sample to validate the
    /// stream and to restore the appender state, so appending continues it.
    pub fn from_bytes(data: Bytes) -> Result<Self, ChunkError> {
        if data.len() < HEADER_LEN {
            return Err(ChunkError::TooShort(data.len()));
        }
        let num = u16::from_be_bytes([data[0], data[1]]);
        let mut it = XorIter::over(&data, num);
        let first_t = it.next().map_or(0, |(t, _)| t);
        for _ in it.by_ref() {}
        if let Some(err) = it.error {
            return Err(err);
        }
        let end_bit = HEADER_LEN * 8 + it.reader.position();
        let (t, v, t_delta, leading, trailing) = (it.t, it.v, it.t_delta, it.leading, it.trailing);

        let buf: Vec<u8> = data.into();
        let total_bits = buf.len() * 8;
        let slack_bits = total_bits - end_bit;
        let padding_dirty = end_bit & 7 != 0 && buf[end_bit / 8] & (0xffu8 >> (end_bit % 8)) != 0;
        // Up to 8 free bits is a state Prometheus's own writer can be in (see bstream.rs).
        let trim_before_append = (slack_bits > 8 || padding_dirty).then_some(end_bit);
        let free = if trim_before_append.is_some() {
            0
        } else {
            slack_bits as u8
        };
        Ok(XorChunk {
            w: BitWriter { buf, free },
            num,
            first_t,
            t,
            v,
            t_delta,
            // A chunk with 0 or 1 samples has no XOR window yet; the next
            // value must write a fresh one, as Prometheus's Appender() does.
            leading: if num < 2 { NO_WINDOW } else { leading },
            trailing,
            trim_before_append,
        })
    }

    /// The exact Prometheus bytes: 2-byte big-endian sample count + bit stream.
    pub fn bytes(&self) -> &[u8] {
        &self.w.buf
    }

    /// A copy of the bytes as `Bytes` (for protobuf messages).
    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(&self.w.buf)
    }

    pub fn num_samples(&self) -> usize {
        self.num as usize
    }

    pub fn is_empty(&self) -> bool {
        self.num == 0
    }

    /// True once the chunk holds [`crate::MAX_SAMPLES_PER_CHUNK`] samples.
    pub fn is_full(&self) -> bool {
        self.num_samples() >= crate::MAX_SAMPLES_PER_CHUNK
    }

    /// Size of the encoded chunk in bytes.
    pub fn size_bytes(&self) -> usize {
        self.w.buf.len()
    }

    pub fn encoding(&self) -> i32 {
        crate::ENCODING_PROMETHEUS_XOR
    }

    /// Appends a sample. The caller enforces time order (t greater than the
    /// last timestamp); the encoding itself accepts any order, as Prometheus's does.
    ///
    /// Panics if the chunk already holds `u16::MAX` samples: the header could
    /// not count another one (callers cut chunks at 120 samples).
    pub fn append(&mut self, t: i64, v: f64) {
        assert!(self.num < u16::MAX, "XOR chunk sample count overflow");
        if let Some(end_bit) = self.trim_before_append.take() {
            self.trim_to(end_bit);
        }
        let vbits = v.to_bits();
        let mut t_delta = 0u64;
        match self.num {
            0 => {
                let mut buf = [0u8; MAX_VARINT_LEN];
                let n = put_varint(&mut buf, t);
                for &b in &buf[..n] {
                    self.w.write_byte(b);
                }
                self.w.write_bits(vbits, 64);
                self.first_t = t;
            }
            1 => {
                t_delta = t.wrapping_sub(self.t) as u64;
                let mut buf = [0u8; MAX_VARINT_LEN];
                let n = put_uvarint(&mut buf, t_delta);
                for &b in &buf[..n] {
                    self.w.write_byte(b);
                }
                self.write_value(vbits);
            }
            _ => {
                t_delta = t.wrapping_sub(self.t) as u64;
                let dod = t_delta.wrapping_sub(self.t_delta) as i64;
                if dod == 0 {
                    self.w.write_bit(false);
                } else if fits_bits(dod, 14) {
                    self.w.write_bits(0b10, 2);
                    self.w.write_bits(dod as u64, 14);
                } else if fits_bits(dod, 17) {
                    self.w.write_bits(0b110, 3);
                    self.w.write_bits(dod as u64, 17);
                } else if fits_bits(dod, 20) {
                    self.w.write_bits(0b1110, 4);
                    self.w.write_bits(dod as u64, 20);
                } else {
                    self.w.write_bits(0b1111, 4);
                    self.w.write_bits(dod as u64, 64);
                }
                self.write_value(vbits);
            }
        }
        self.t = t;
        self.v = vbits;
        self.t_delta = t_delta;
        self.num += 1;
        self.w.buf[..HEADER_LEN].copy_from_slice(&self.num.to_be_bytes());
    }

    fn write_value(&mut self, vbits: u64) {
        let delta = vbits ^ self.v;
        if delta == 0 {
            self.w.write_bit(false);
            return;
        }
        self.w.write_bit(true);
        // Capped at 31 so it fits the 5-bit field.
        let leading = (delta.leading_zeros() as u8).min(31);
        let trailing = delta.trailing_zeros() as u8;
        if self.leading != NO_WINDOW && leading >= self.leading && trailing >= self.trailing {
            // The meaningful bits fit the previous window: reuse it.
            self.w.write_bit(false);
            let sig = 64 - self.leading as u32 - self.trailing as u32;
            self.w.write_bits(delta >> self.trailing, sig);
        } else {
            self.leading = leading;
            self.trailing = trailing;
            self.w.write_bit(true);
            self.w.write_bits(leading as u64, 5);
            let sig = 64 - leading as u32 - trailing as u32;
            // 64 meaningful bits do not fit 6 bits; 0 never occurs otherwise
            // (delta != 0), so 0 stands for 64. `& 63` does exactly that.
            self.w.write_bits((sig & 63) as u64, 6);
            self.w.write_bits(delta >> trailing, sig);
        }
    }

    /// Drops bytes and padding bits past `end_bit` so appends continue the stream.
    fn trim_to(&mut self, end_bit: usize) {
        let len = end_bit.div_ceil(8);
        self.w.buf.truncate(len);
        let used_in_last = end_bit % 8;
        if used_in_last != 0 {
            let last = len - 1;
            self.w.buf[last] &= !(0xffu8 >> used_in_last);
            self.w.free = (8 - used_in_last) as u8;
        } else {
            self.w.free = 0;
        }
    }

    /// Iterates the samples, oldest first.
    pub fn iter(&self) -> XorIter<'_> {
        XorIter::over(&self.w.buf, self.num)
    }

    /// Timestamp of the first sample.
    pub fn first_time(&self) -> Option<i64> {
        (self.num > 0).then_some(self.first_t)
    }

    /// Timestamp of the last sample.
    pub fn last_time(&self) -> Option<i64> {
        (self.num > 0).then_some(self.t)
    }

    /// Value of the last sample (bit-exact, so staleness NaNs survive).
    pub fn last_value(&self) -> Option<f64> {
        (self.num > 0).then_some(f64::from_bits(self.v))
    }

    /// Releases spare capacity (for chunks that will not grow any more).
    pub fn shrink_to_fit(&mut self) {
        self.w.buf.shrink_to_fit();
    }
}

impl PartialEq for XorChunk {
    /// Two chunks are equal when their bytes are.
    fn eq(&self, other: &Self) -> bool {
        self.w.buf == other.w.buf
    }
}

impl<'a> IntoIterator for &'a XorChunk {
    type Item = (i64, f64);
    type IntoIter = XorIter<'a>;
    fn into_iter(self) -> XorIter<'a> {
        self.iter()
    }
}

/// Whether `x` is inside the range Prometheus assigns to an `nbits` bucket:
/// `-(2^(n-1) - 1) ..= 2^(n-1)`. The asymmetric upper bound works because
/// the reader maps the raw value `2^(n-1)` back to a positive number.
#[inline]
fn fits_bits(x: i64, nbits: u32) -> bool {
    let half = 1i64 << (nbits - 1);
    -(half - 1) <= x && x <= half
}

/// Go `binary.PutUvarint`.
fn put_uvarint(buf: &mut [u8; MAX_VARINT_LEN], mut x: u64) -> usize {
    let mut i = 0;
    while x >= 0x80 {
        buf[i] = (x as u8) | 0x80;
        x >>= 7;
        i += 1;
    }
    buf[i] = x as u8;
    i + 1
}

/// Go `binary.PutVarint` (zig-zag).
fn put_varint(buf: &mut [u8; MAX_VARINT_LEN], x: i64) -> usize {
    let mut ux = (x as u64) << 1;
    if x < 0 {
        ux = !ux;
    }
    put_uvarint(buf, ux)
}

/// Iterator over a chunk's samples, oldest first. Stops early on a corrupt
/// stream; [`XorIter::error`] then says why (never for chunks built here or
/// accepted by [`XorChunk::from_bytes`]).
#[derive(Clone, Debug)]
pub struct XorIter<'a> {
    reader: BitReader<'a>,
    total: u16,
    read: u16,
    t: i64,
    v: u64,
    t_delta: u64,
    leading: u8,
    trailing: u8,
    error: Option<ChunkError>,
}

impl<'a> XorIter<'a> {
    fn over(buf: &'a [u8], total: u16) -> Self {
        XorIter {
            reader: BitReader::new(buf.get(HEADER_LEN..).unwrap_or(&[])),
            total,
            read: 0,
            t: 0,
            v: 0,
            t_delta: 0,
            leading: 0,
            trailing: 0,
            error: None,
        }
    }

    /// Why iteration stopped before the header's sample count, if it did.
    pub fn error(&self) -> Option<&ChunkError> {
        self.error.as_ref()
    }

    fn read_uvarint(&mut self) -> Result<u64, ChunkError> {
        let mut x = 0u64;
        let mut shift = 0u32;
        for i in 0..MAX_VARINT_LEN {
            let b = self.reader.read_byte().ok_or(self.truncated())?;
            if b < 0x80 {
                if i == MAX_VARINT_LEN - 1 && b > 1 {
                    return Err(ChunkError::VarintOverflow { sample: self.read });
                }
                return Ok(x | (b as u64) << shift);
            }
            x |= ((b & 0x7f) as u64) << shift;
            shift += 7;
        }
        Err(ChunkError::VarintOverflow { sample: self.read })
    }

    fn read_varint(&mut self) -> Result<i64, ChunkError> {
        let ux = self.read_uvarint()?;
        let mut x = (ux >> 1) as i64;
        if ux & 1 != 0 {
            x = !x;
        }
        Ok(x)
    }

    fn truncated(&self) -> ChunkError {
        ChunkError::Truncated {
            sample: self.read,
            total: self.total,
        }
    }

    fn bits(&mut self, n: u32) -> Result<u64, ChunkError> {
        self.reader.read_bits(n).ok_or_else(|| self.truncated())
    }

    fn bit(&mut self) -> Result<bool, ChunkError> {
        self.reader.read_bit().ok_or_else(|| self.truncated())
    }

    fn next_sample(&mut self) -> Result<(), ChunkError> {
        match self.read {
            0 => {
                self.t = self.read_varint()?;
                self.v = self.bits(64)?;
            }
            1 => {
                self.t_delta = self.read_uvarint()?;
                self.t = self.t.wrapping_add(self.t_delta as i64);
                self.read_value()?;
            }
            _ => {
                // Up to four prefix bits choose the bucket; a 0 ends the prefix.
                let mut prefix = 0u8;
                for _ in 0..4 {
                    prefix <<= 1;
                    if !self.bit()? {
                        break;
                    }
                    prefix |= 1;
                }
                let dod: i64 = match prefix {
                    0b0 => 0,
                    0b10 => self.bucket(14)?,
                    0b110 => self.bucket(17)?,
                    0b1110 => self.bucket(20)?,
                    _ => self.bits(64)? as i64,
                };
                self.t_delta = (self.t_delta as i64).wrapping_add(dod) as u64;
                self.t = self.t.wrapping_add(self.t_delta as i64);
                self.read_value()?;
            }
        }
        Ok(())
    }

    fn bucket(&mut self, n: u32) -> Result<i64, ChunkError> {
        let raw = self.bits(n)? as i64;
        // Raw values above 2^(n-1) are negative numbers in n-bit two's complement.
        Ok(if raw > 1 << (n - 1) { raw - (1 << n) } else { raw })
    }

    fn read_value(&mut self) -> Result<(), ChunkError> {
        if !self.bit()? {
            return Ok(()); // same value as before
        }
        if self.bit()? {
            self.leading = self.bits(5)? as u8;
            let mut sig = self.bits(6)? as u8;
            if sig == 0 {
                sig = 64;
            }
            self.trailing = 64u8
                .checked_sub(self.leading + sig)
                .ok_or(ChunkError::BadValueWindow { sample: self.read })?;
        }
        let sig = 64 - self.leading as u32 - self.trailing as u32;
        let bits = self.bits(sig)?;
        self.v ^= bits << self.trailing;
        Ok(())
    }
}

impl Iterator for XorIter<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        if self.error.is_some() || self.read >= self.total {
            return None;
        }
        match self.next_sample() {
            Ok(()) => {
                self.read += 1;
                Some((self.t, f64::from_bits(self.v)))
            }
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.error.is_some() {
            return (0, Some(0));
        }
        let left = (self.total - self.read) as usize;
        (0, Some(left))
    }
}
