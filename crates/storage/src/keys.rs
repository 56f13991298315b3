//! Byte-exact encodings shared by the index schemas (spec §4.3) and the cache keys.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use model::{Labels, METRIC_NAME};
use sha2::{Digest, Sha256};

/// Range-key type bytes (4th component).
pub const CHUNK_TIME_RANGE_KEY_V1A: u8 = 1;
pub const CHUNK_TIME_RANGE_KEY_V1: u8 = b'1';
pub const CHUNK_TIME_RANGE_KEY_V2: u8 = b'2';
pub const CHUNK_TIME_RANGE_KEY_V3: u8 = b'3';
pub const CHUNK_TIME_RANGE_KEY_V4: u8 = b'4';
pub const CHUNK_TIME_RANGE_KEY_V5: u8 = b'5';
pub const METRIC_NAME_RANGE_KEY_V1: u8 = b'6';
pub const SERIES_RANGE_KEY_V1: u8 = b'7';
pub const LABEL_SERIES_RANGE_KEY_V1: u8 = b'8';
pub const LABEL_NAMES_RANGE_KEY_V1: u8 = b'9';

/// The value written where Cortex stores "no value" (`-`).
pub const EMPTY_VALUE: &[u8] = b"-";

/// `a 0 b 0 …` — a range-key prefix (no version trailer).
pub fn range_value_prefix(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for p in parts {
        out.extend_from_slice(p);
        out.push(0);
    }
    out
}

/// `a 0 b 0 c 0 <key_type> 0`.
pub fn encode_range_key(key_type: u8, a: &[u8], b: &[u8], c: &[u8]) -> Vec<u8> {
    let mut out = range_value_prefix(&[a, b, c]);
    out.push(key_type);
    out.push(0);
    out
}

/// Splits a range key at its NUL terminators (a trailing part without NUL is dropped, as Cortex does).
pub fn decode_range_key(value: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(5);
    let mut start = 0;
    for (j, b) in value.iter().enumerate() {
        if *b == 0 {
            out.push(&value[start..j]);
            start = j + 1;
        }
    }
    out
}

/// 8 lowercase hex chars of the big-endian u32 millisecond offset: sortable and NUL-free.
pub fn encode_time(ms_offset: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in ms_offset.to_be_bytes().iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 0xf) as usize];
    }
    out
}

/// base64 (std alphabet, no padding) of SHA-256 — 43 ASCII bytes.
pub fn sha256_b64(data: &[u8]) -> String {
    STANDARD_NO_PAD.encode(Sha256::digest(data))
}

/// The series string Cortex hashes into a series ID (`model.Metric.String()` compatible):
/// `metric{a="1", b="2"}`, or just `metric` when it is the only label.
pub fn labels_string(labels: &Labels) -> String {
    let metric = labels.get(METRIC_NAME);
    if !metric.is_empty() && labels.len() == 1 {
        return metric.to_string();
    }
    let mut s = String::with_capacity(64);
    s.push_str(metric);
    s.push('{');
    let mut first = true;
    for l in labels.iter().filter(|l| l.name != METRIC_NAME) {
        if !first {
            s.push_str(", ");
        }
        first = false;
        s.push_str(&l.name);
        s.push('=');
        go_quote(&mut s, &l.value);
    }
    s.push('}');
    s
}

/// The series ID: sha256/base64 of [`labels_string`].
pub fn series_id(labels: &Labels) -> String {
    sha256_b64(labels_string(labels).as_bytes())
}

/// Go's `strconv.Quote`: printable characters as is, the rest escaped. Rust has no `unicode.IsPrint`;
/// control characters are what realistic label values contain, so those are escaped Go's way.
pub fn go_quote(out: &mut String, v: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = if (c as u32) < 0x10000 {
                    write!(out, "\\u{:04x}", c as u32)
                } else {
                    write!(out, "\\U{:08x}", c as u32)
                };
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The write-dedupe cache key of one series in one bucket: `hex("<table>-<hashKey>-<seriesID>")`.
pub fn dedupe_key(table: &str, hash_key: &str, series_id: &str) -> String {
    let raw = format!("{table}-{hash_key}-{series_id}");
    hex(raw.as_bytes())
}

pub fn hex(data: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Cortex `cache.HashKey`: hex of FNV-1a-64.
pub fn fnv64a_hex(data: &[u8]) -> String {
    format!("{:016x}", model::hash::fnv1a_64(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_keys() {
        assert_eq!(
            encode_range_key(b'7', b"sid", b"", b""),
            [&b"sid\0\0\0"[..], b"7\0"].concat()
        );
        assert_eq!(range_value_prefix(&[b"abc"]), b"abc\0".to_vec());
        assert_eq!(
            decode_range_key(b"a\0b\0\0\x33\0"),
            vec![&b"a"[..], &b"b"[..], &b""[..], &b"3"[..]]
        );
        assert_eq!(&encode_time(0x0102_abcd), b"0102abcd");
        assert_eq!(&encode_time(86_400_000), b"05265c00");
    }

    #[test]
    fn series_strings_and_ids() {
        let only = Labels::from_pairs([("__name__", "up")]);
        assert_eq!(labels_string(&only), "up");
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a\"b"), ("instance", "x\n")]);
        assert_eq!(labels_string(&l), "up{instance=\"x\\n\", job=\"a\\\"b\"}");
        let id = series_id(&only);
        assert_eq!(id.len(), 43);
        // sha256("up") = base64 of the digest, computed independently.
        assert_eq!(id, STANDARD_NO_PAD.encode(Sha256::digest(b"up")));
        assert_eq!(sha256_b64(b""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU");
        let nameless = Labels::from_pairs([("a", "b")]);
        assert_eq!(labels_string(&nameless), "{a=\"b\"}");
    }

    #[test]
    fn dedupe_and_cache_keys() {
        assert_eq!(dedupe_key("t", "u:d1", "s"), hex(b"t-u:d1-s"));
        assert_eq!(hex(b"t-"), "742d");
        // FNV-1a-64 of "" is the offset basis.
        assert_eq!(fnv64a_hex(b""), "cbf29ce484222325");
    }
}
