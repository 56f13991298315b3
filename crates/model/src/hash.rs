//! Hashes with the exact constants Cortex and Prometheus use (spec §14).

use crate::Labels;

/// A series fingerprint: Prometheus's "fast fingerprint".
pub type Fingerprint = u64;

const FNV32_OFFSET: u32 = 2_166_136_261;
const FNV32_PRIME: u32 = 16_777_619;
const FNV64_OFFSET: u64 = 14_695_981_039_346_656_037;
const FNV64_PRIME: u64 = 1_099_511_628_211;

/// Incremental FNV-1 32 (multiply, then xor) — Cortex's `client.HashNew32`/`HashAdd32`.
#[derive(Clone, Copy)]
pub struct Fnv1_32(u32);

impl Default for Fnv1_32 {
    fn default() -> Self {
        Fnv1_32(FNV32_OFFSET)
    }
}

impl Fnv1_32 {
    pub fn write(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            self.0 = self.0.wrapping_mul(FNV32_PRIME);
            self.0 ^= b as u32;
        }
        self
    }
    pub fn finish(self) -> u32 {
        self.0
    }
}

/// FNV-1a 32 (xor, then multiply): S3 bucket choice and rule-group tokens.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut h = FNV32_OFFSET;
    for &b in bytes {
        h ^= b as u32;
        h = h.wrapping_mul(FNV32_PRIME);
    }
    h
}

/// FNV-1a 64, incremental.
#[inline]
pub fn fnv1a_64_add(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(FNV64_PRIME);
    }
    h
}

/// FNV-1a 64 of `bytes`.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    fnv1a_64_add(FNV64_OFFSET, bytes)
}

/// Prometheus fast fingerprint: XOR over labels of FNV-1a-64(name, 0xff, value).
/// Order-independent, so it can be computed over unsorted request labels.
pub fn fingerprint<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Fingerprint {
    let mut result = 0u64;
    for (n, v) in pairs {
        let mut h = fnv1a_64_add(FNV64_OFFSET, n);
        h = fnv1a_64_add(h, &[0xff]);
        h = fnv1a_64_add(h, v);
        result ^= h;
    }
    result
}

/// Fingerprint of a [`Labels`].
pub fn labels_fingerprint(labels: &Labels) -> Fingerprint {
    fingerprint(labels.iter().map(|l| (l.name.as_bytes(), l.value.as_bytes())))
}

/// Default shard token: FNV-1 32 over tenant then metric name, no separator.
pub fn shard_token_by_metric(tenant: &str, metric_name: &[u8]) -> u32 {
    Fnv1_32::default().write(tenant.as_bytes()).write(metric_name).finish()
}

/// `-distributor.shard-by-all-labels`: tenant, then every (name, value) in sorted order.
pub fn shard_token_by_all_labels<'a>(tenant: &str, sorted: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> u32 {
    let mut h = Fnv1_32::default().write(tenant.as_bytes());
    for (n, v) in sorted {
        h = h.write(n).write(v);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1_32_reference_vectors() {
        // FNV-1 32 reference values (http://www.isthe.com/chongo/src/fnv/test_fnv.c).
        assert_eq!(Fnv1_32::default().finish(), 0x811c9dc5);
        assert_eq!(Fnv1_32::default().write(b"a").finish(), 0x050c5d7e);
        assert_eq!(Fnv1_32::default().write(b"foobar").finish(), 0x31f0b262);
        // Incremental feeding equals one-shot feeding: token(tenant, metric) = FNV1(tenant ++ metric).
        assert_eq!(
            shard_token_by_metric("foo", b"bar"),
            Fnv1_32::default().write(b"foobar").finish()
        );
    }

    #[test]
    fn fnv1a_reference_vectors() {
        assert_eq!(fnv1a_32(b"a"), 0xe40c292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9cf968);
        assert_eq!(fnv1a_64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn fingerprint_is_order_independent_and_label_sensitive() {
        let a = fingerprint([(&b"a"[..], &b"1"[..]), (b"b", b"2")]);
        let b = fingerprint([(&b"b"[..], &b"2"[..]), (b"a", b"1")]);
        assert_eq!(a, b);
        assert_ne!(a, fingerprint([(&b"a"[..], &b"1"[..]), (b"b", b"3")]));
        // The separator matters: {ab=""} vs {a="b"}.
        assert_ne!(
            fingerprint([(&b"ab"[..], &b""[..])]),
            fingerprint([(&b"a"[..], &b"b"[..])])
        );
    }
}
