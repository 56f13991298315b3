//! Bit-level writer and reader with the exact byte layout of Prometheus 2.x
//! `tsdb/chunkenc/bstream.go`: bits are packed most significant first, and the
//! writer keeps a count of the free low bits of the last byte.
//!
//! One Prometheus 2.x quirk is reproduced on purpose: writing a whole byte
//! while the stream is byte-aligned appends the byte *and* an empty byte after
//! it (8 free bits). Later writes fill that byte, so the bit sequence is
//! unaffected, but a stream that ends right after such a write carries one
//! trailing zero byte. Prometheus fixed this only in 2024 (PR #14854); chunks
//! written by the Prometheus versions Cortex vendors have the extra byte, and
//! we want our bytes to equal theirs.

/// Appends bits to a byte vector (header bytes may precede the bit stream).
#[derive(Clone, Debug)]
pub(crate) struct BitWriter {
    pub(crate) buf: Vec<u8>,
    /// Free (not yet written) low bits of the last byte of `buf`; 0 means the
    /// next write must start a new byte. Can be 8 after a byte-aligned whole-byte write.
    pub(crate) free: u8,
}

impl BitWriter {
    pub(crate) fn with_header(header_len: usize, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(header_len));
        buf.resize(header_len, 0);
        BitWriter { buf, free: 0 }
    }

    /// Number of meaningful bits in `buf` (header included).
    #[cfg(test)]
    pub(crate) fn bit_len(&self) -> usize {
        self.buf.len() * 8 - self.free as usize
    }

    #[inline]
    pub(crate) fn write_bit(&mut self, bit: bool) {
        if self.free == 0 {
            self.buf.push(0);
            self.free = 8;
        }
        if bit {
            let last = self.buf.len() - 1;
            self.buf[last] |= 1 << (self.free - 1);
        }
        self.free -= 1;
    }

    #[inline]
    pub(crate) fn write_byte(&mut self, byte: u8) {
        if self.free == 0 {
            self.buf.push(0);
            self.free = 8;
        }
        let last = self.buf.len() - 1;
        // The high `free` bits of `byte` complete the current byte...
        self.buf[last] |= byte >> (8 - self.free);
        // ...and the rest starts a new one. When `free` is 8 the new byte is
        // empty: that is the Prometheus 2.x trailing-byte quirk (see module docs).
        let rest = if self.free == 8 { 0 } else { byte << self.free };
        self.buf.push(rest);
    }

    /// Writes the `nbits` low bits of `value`, most significant first.
    #[inline]
    pub(crate) fn write_bits(&mut self, value: u64, nbits: u32) {
        debug_assert!((1..=64).contains(&nbits));
        let mut u = value << (64 - nbits);
        let mut n = nbits;
        while n >= 8 {
            self.write_byte((u >> 56) as u8);
            u <<= 8;
            n -= 8;
        }
        while n > 0 {
            self.write_bit(u >> 63 == 1);
            u <<= 1;
            n -= 1;
        }
    }
}

/// Reads bits from a byte slice, most significant first.
#[derive(Clone, Debug)]
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    /// Next bit to read, counted from the start of `data`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    /// Bits consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    #[inline]
    pub(crate) fn read_bit(&mut self) -> Option<bool> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = byte >> (7 - (self.pos % 8)) & 1;
        self.pos += 1;
        Some(bit == 1)
    }

    /// Reads `nbits` (1..=64) bits into the low bits of the result; `None` if
    /// the stream ends first.
    #[inline]
    pub(crate) fn read_bits(&mut self, nbits: u32) -> Option<u64> {
        debug_assert!((1..=64).contains(&nbits));
        if self.pos + nbits as usize > self.data.len() * 8 {
            return None;
        }
        let mut v = 0u64;
        let mut remaining = nbits;
        while remaining > 0 {
            let byte = self.data[self.pos / 8];
            let offset = (self.pos % 8) as u32;
            let avail = 8 - offset;
            let take = avail.min(remaining);
            let bits = (byte as u64 >> (avail - take)) & ((1u64 << take) - 1);
            v = (v << take) | bits;
            self.pos += take as usize;
            remaining -= take;
        }
        Some(v)
    }

    #[inline]
    pub(crate) fn read_byte(&mut self) -> Option<u8> {
        self.read_bits(8).map(|b| b as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_msb_first() {
        let mut w = BitWriter::with_header(0, 8);
        w.write_bit(true);
        w.write_bits(0b0110, 4);
        w.write_bits(0xdead_beef_0123_4567, 64);
        w.write_byte(0xa5);
        assert_eq!(w.buf[0] >> 3, 0b10110);
        let mut r = BitReader::new(&w.buf);
        assert_eq!(r.read_bit(), Some(true));
        assert_eq!(r.read_bits(4), Some(0b0110));
        assert_eq!(r.read_bits(64), Some(0xdead_beef_0123_4567));
        assert_eq!(r.read_byte(), Some(0xa5));
        assert_eq!(r.position(), w.bit_len());
    }

    #[test]
    fn aligned_byte_write_leaves_an_empty_trailing_byte_like_prometheus_2() {
        let mut w = BitWriter::with_header(2, 8);
        w.write_byte(0x7f);
        assert_eq!(w.buf, vec![0, 0, 0x7f, 0]);
        assert_eq!(w.free, 8);
        // The next bit goes into the empty byte, not a new one.
        w.write_bit(true);
        assert_eq!(w.buf, vec![0, 0, 0x7f, 0x80]);
        // An unaligned byte write spans two bytes without an extra one.
        w.write_byte(0xff);
        assert_eq!(w.buf, vec![0, 0, 0x7f, 0xff, 0x80]);
        assert_eq!(w.free, 7);
    }

    #[test]
    fn reading_past_the_end_is_none() {
        let data = [0xffu8];
        let mut r = BitReader::new(&data);
        assert_eq!(r.read_bits(9), None);
        assert_eq!(r.read_bits(8), Some(0xff));
        assert_eq!(r.read_bit(), None);
    }
}
