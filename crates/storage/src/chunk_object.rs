//! Chunk objects and external keys (spec §4.6): the bytes stored in S3/filesystem and the key that
//! names them in the index, the object store and the chunk cache.
//!
//! Object layout: `[u32 BE metaLen incl. these 4 bytes]` + snappy *framed* JSON metadata +
//! `[u32 BE dataLen]` + encoding payload. Checksum = CRC-32C of the whole object.

use std::io::{Read, Write};

use bytes::{BufMut, Bytes, BytesMut};
use model::Labels;

use crate::ChunkEntry;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChunkObjectError {
    #[error("invalid chunk external key {0:?}")]
    BadKey(String),
    #[error("invalid chunk checksum")]
    Checksum,
    #[error("wrong chunk metadata")]
    WrongMetadata,
    #[error("chunk metadata length mismatch")]
    MetadataLength,
    #[error("chunk data length mismatch")]
    DataLength,
    #[error("decoding chunk metadata: {0}")]
    Metadata(String),
    #[error("{0}")]
    Payload(#[from] chunk::ChunkError),
}

impl ChunkObjectError {
    /// The `reason` label of the decode-failure counter.
    pub fn reason(&self) -> &'static str {
        match self {
            ChunkObjectError::BadKey(_) => "key",
            ChunkObjectError::Checksum => "checksum",
            ChunkObjectError::WrongMetadata
            | ChunkObjectError::MetadataLength
            | ChunkObjectError::DataLength
            | ChunkObjectError::Metadata(_) => "metadata",
            ChunkObjectError::Payload(chunk::ChunkError::UnknownEncoding(_) | chunk::ChunkError::DeltaEncoding) => {
                "encoding"
            }
            ChunkObjectError::Payload(_) => "payload",
        }
    }
}

/// The identity of a chunk as encoded in its external key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkRef {
    pub tenant: String,
    pub fingerprint: u64,
    pub from_ms: i64,
    pub through_ms: i64,
    /// `None` for legacy (pre-checksum) IDs.
    pub checksum: Option<u32>,
}

/// Go's `%x` of a signed integer: a leading `-` then the magnitude.
fn signed_hex(v: i64) -> String {
    if v < 0 {
        format!("-{:x}", v.unsigned_abs())
    } else {
        format!("{v:x}")
    }
}

fn parse_signed_hex(s: &str) -> Option<i64> {
    match s.strip_prefix('-') {
        Some(m) => u64::from_str_radix(m, 16)
            .ok()
            .and_then(|v| 0i64.checked_sub_unsigned(v)),
        None => i64::from_str_radix(s, 16).ok(),
    }
}

impl ChunkRef {
    /// `<tenant>/<fp hex>:<from hex>:<through hex>:<crc hex>`, or legacy `<fp>:<from>:<through>` (decimal).
    pub fn external_key(&self) -> String {
        match self.checksum {
            Some(c) => format!(
                "{}/{:x}:{}:{}:{:x}",
                self.tenant,
                self.fingerprint,
                signed_hex(self.from_ms),
                signed_hex(self.through_ms),
                c
            ),
            None => format!("{}:{}:{}", self.fingerprint, self.from_ms, self.through_ms),
        }
    }

    /// Object-store key: the external key, or `<tenant>/<legacy id>`.
    pub fn object_key(&self) -> String {
        match self.checksum {
            Some(_) => self.external_key(),
            None => format!("{}/{}", self.tenant, self.external_key()),
        }
    }

    /// Cortex `ParseExternalKey`: the key must belong to `tenant`.
    pub fn parse(tenant: &str, key: &str) -> Result<ChunkRef, ChunkObjectError> {
        let bad = || ChunkObjectError::BadKey(key.to_string());
        match key.split_once('/') {
            None => {
                let mut p = key.split(':');
                let (fp, from, through) = (p.next(), p.next(), p.next());
                if p.next().is_some() {
                    return Err(bad());
                }
                Ok(ChunkRef {
                    tenant: tenant.to_string(),
                    fingerprint: fp.and_then(|s| s.parse().ok()).ok_or_else(bad)?,
                    from_ms: from.and_then(|s| s.parse().ok()).ok_or_else(bad)?,
                    through_ms: through.and_then(|s| s.parse().ok()).ok_or_else(bad)?,
                    checksum: None,
                })
            }
            Some((user, rest)) => {
                let p: Vec<&str> = rest.split(':').collect();
                if p.len() != 4 {
                    return Err(bad());
                }
                let r = ChunkRef {
                    tenant: user.to_string(),
                    fingerprint: u64::from_str_radix(p[0], 16).map_err(|_| bad())?,
                    from_ms: parse_signed_hex(p[1]).ok_or_else(bad)?,
                    through_ms: parse_signed_hex(p[2]).ok_or_else(bad)?,
                    checksum: Some(u32::from_str_radix(p[3], 16).map_err(|_| bad())?),
                };
                if r.tenant != tenant {
                    return Err(ChunkObjectError::WrongMetadata);
                }
                Ok(r)
            }
        }
    }
}

/// Prometheus `model.Time` JSON: seconds with up to 3 decimals, as a bare number.
fn write_model_time(out: &mut String, ms: i64) {
    // Sign and magnitude, as Go's FormatFloat prints -0.5 for -500ms.
    let sign = if ms < 0 { "-" } else { "" };
    let (s, f) = (ms.unsigned_abs() / 1000, ms.unsigned_abs() % 1000);
    if f == 0 {
        out.push_str(&format!("{sign}{s}"));
    } else {
        let frac = format!("{f:03}");
        out.push_str(&format!("{sign}{s}.{}", frac.trim_end_matches('0')));
    }
}

/// A JSON string the way Go's encoding/json writes it (HTML-safe escapes included).
fn write_json_string(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The metadata JSON exactly as Go's `json.Encoder` writes a Cortex `Chunk` (fields in struct order,
/// metric keys sorted as a Go map, trailing newline).
fn metadata_json(c: &ChunkEntry) -> String {
    let mut s = String::with_capacity(128 + c.labels.len() * 32);
    s.push_str("{\"fingerprint\":");
    s.push_str(&c.fingerprint.to_string());
    s.push_str(",\"userID\":");
    write_json_string(&mut s, &c.tenant);
    s.push_str(",\"from\":");
    write_model_time(&mut s, c.from_ms);
    s.push_str(",\"through\":");
    write_model_time(&mut s, c.through_ms);
    s.push_str(",\"metric\":{");
    for (i, l) in c.labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        write_json_string(&mut s, &l.name);
        s.push(':');
        write_json_string(&mut s, &l.value);
    }
    s.push_str("},\"encoding\":");
    s.push_str(&c.encoding.to_string());
    s.push_str("}\n");
    s
}

/// Encodes a chunk object; returns the bytes and their CRC-32C (the external key's checksum).
pub fn encode(c: &ChunkEntry) -> (Bytes, u32) {
    let json = metadata_json(c);
    let mut buf = BytesMut::with_capacity(8 + json.len() + c.data.len() + 32);
    buf.put_u32(0);
    {
        let mut w = snap::write::FrameEncoder::new((&mut buf).writer());
        // Writing into memory cannot fail.
        let _ = w.write_all(json.as_bytes());
        let _ = w.flush();
    }
    let meta_len = buf.len() as u32;
    buf[0..4].copy_from_slice(&meta_len.to_be_bytes());
    buf.put_u32(c.data.len() as u32);
    buf.put_slice(&c.data);
    let bytes = buf.freeze();
    let crc = crc32c::crc32c(&bytes);
    (bytes, crc)
}

/// The external key of a chunk that is about to be written (encodes it to get the checksum).
pub fn encode_with_ref(c: &ChunkEntry) -> (Bytes, ChunkRef) {
    let (bytes, crc) = encode(c);
    let r = ChunkRef {
        tenant: c.tenant.clone(),
        fingerprint: c.fingerprint,
        from_ms: c.from_ms,
        through_ms: c.through_ms,
        checksum: Some(crc),
    };
    (bytes, r)
}

#[derive(serde::Deserialize)]
struct Metadata {
    fingerprint: u64,
    #[serde(rename = "userID")]
    user_id: String,
    from: f64,
    through: f64,
    metric: std::collections::BTreeMap<String, String>,
    /// Absent in the oldest chunks, which were all DoubleDelta.
    #[serde(default)]
    encoding: i32,
}

/// Where the data length sits: right after the snappy stream, whose end `metaLen` gives — counting
/// its own 4 bytes (what Cortex writes today) or not (older Cortex versions); Cortex accepts both.
fn data_length_offset(input: &[u8], meta_len: usize) -> Result<usize, ChunkObjectError> {
    let mut candidates = [meta_len, meta_len + 4]
        .into_iter()
        .filter(|&end| end + 4 <= input.len());
    let first = candidates.next().ok_or(ChunkObjectError::MetadataLength)?;
    let fits = |end: usize| {
        let l = u32::from_be_bytes([input[end], input[end + 1], input[end + 2], input[end + 3]]) as usize;
        l == input.len() - end - 4
    };
    Ok(std::iter::once(first)
        .chain(candidates)
        .find(|&end| fits(end))
        .unwrap_or(first))
}

/// Decodes and verifies an object fetched for `r` (checksum, then tenant/fingerprint/from/through).
pub fn decode(r: &ChunkRef, input: Bytes) -> Result<ChunkEntry, ChunkObjectError> {
    if let Some(want) = r.checksum {
        if crc32c::crc32c(&input) != want {
            return Err(ChunkObjectError::Checksum);
        }
    }
    if input.len() < 4 {
        return Err(ChunkObjectError::MetadataLength);
    }
    let meta_len = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
    if meta_len < 4 {
        return Err(ChunkObjectError::MetadataLength);
    }
    let meta_end = data_length_offset(&input, meta_len)?;
    let mut json = Vec::with_capacity(256);
    snap::read::FrameDecoder::new(&input[4..meta_end])
        .read_to_end(&mut json)
        .map_err(|e| ChunkObjectError::Metadata(e.to_string()))?;
    let m: Metadata = serde_json::from_slice(&json).map_err(|e| ChunkObjectError::Metadata(e.to_string()))?;
    let from_ms = (m.from * 1000.0).round() as i64;
    let through_ms = (m.through * 1000.0).round() as i64;
    if m.user_id != r.tenant || m.fingerprint != r.fingerprint || from_ms != r.from_ms || through_ms != r.through_ms {
        return Err(ChunkObjectError::WrongMetadata);
    }
    let data_len = u32::from_be_bytes([
        input[meta_end],
        input[meta_end + 1],
        input[meta_end + 2],
        input[meta_end + 3],
    ]) as usize;
    let data = input.slice(meta_end + 4..);
    if data.len() != data_len {
        return Err(ChunkObjectError::DataLength);
    }
    // Cortex reads encoding 0 (or none) as DoubleDelta: the oldest chunks did not record it.
    let encoding = if m.encoding == chunk::encoding::DELTA {
        chunk::Encoding::DoubleDelta.id()
    } else {
        m.encoding
    };
    // Open the payload once here, where the object's key is known, so a corrupt chunk is
    // reported by key (and a corrupt cache entry is refetched) rather than failing a query later.
    chunk::StoredChunk::open(encoding, data.clone())?;
    Ok(ChunkEntry {
        tenant: m.user_id,
        fingerprint: m.fingerprint,
        labels: Labels::from_pairs(m.metric),
        from_ms,
        through_ms,
        encoding,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> ChunkEntry {
        let mut x = chunk::XorChunk::new();
        x.append(1_621_468_800_123, 1.0);
        x.append(1_621_468_860_000, 2.0);
        ChunkEntry {
            tenant: "team-1".into(),
            fingerprint: 0xdead_beef_0012_3456,
            labels: Labels::from_pairs([("__name__", "up"), ("job", "a<b>&")]),
            from_ms: 1_621_468_800_123,
            through_ms: 1_621_468_860_000,
            encoding: 4,
            data: x.to_bytes(),
        }
    }

    #[test]
    fn external_key_format() {
        let r = ChunkRef {
            tenant: "u".into(),
            fingerprint: 0xabc,
            from_ms: 0x10,
            through_ms: 0x20,
            checksum: Some(0xdead),
        };
        assert_eq!(r.external_key(), "u/abc:10:20:dead");
        assert_eq!(ChunkRef::parse("u", "u/abc:10:20:dead").unwrap(), r);
        assert_eq!(
            ChunkRef::parse("v", "u/abc:10:20:dead"),
            Err(ChunkObjectError::WrongMetadata)
        );
        assert!(ChunkRef::parse("u", "u/abc:10:20").is_err());
        let neg = ChunkRef {
            from_ms: -16,
            ..r.clone()
        };
        assert_eq!(neg.external_key(), "u/abc:-10:20:dead");
        assert_eq!(ChunkRef::parse("u", "u/abc:-10:20:dead").unwrap(), neg);
        let legacy = ChunkRef::parse("u", "2748:16:32").unwrap();
        assert_eq!(legacy.checksum, None);
        assert_eq!(legacy.fingerprint, 0xabc);
        assert_eq!(legacy.external_key(), "2748:16:32");
        assert_eq!(legacy.object_key(), "u/2748:16:32");
    }

    #[test]
    fn object_layout_and_round_trip() {
        let e = entry();
        let (bytes, r) = encode_with_ref(&e);
        assert_eq!(r.checksum, Some(crc32c::crc32c(&bytes)));
        // Header: metaLen counts its own 4 bytes; the snappy stream identifier follows.
        let meta_len = u32::from_be_bytes(bytes[0..4].try_into().unwrap()) as usize;
        assert_eq!(&bytes[4..14], b"\xff\x06\x00\x00sNaPpY");
        let data_len = u32::from_be_bytes(bytes[meta_len..meta_len + 4].try_into().unwrap()) as usize;
        assert_eq!(data_len, e.data.len());
        assert_eq!(&bytes[meta_len + 4..], &e.data[..]);
        let mut json = String::new();
        snap::read::FrameDecoder::new(&bytes[4..meta_len])
            .read_to_string(&mut json)
            .unwrap();
        assert_eq!(
            json,
            "{\"fingerprint\":16045690981098599510,\"userID\":\"team-1\",\"from\":1621468800.123,\
             \"through\":1621468860,\"metric\":{\"__name__\":\"up\",\"job\":\"a\\u003cb\\u003e\\u0026\"},\
             \"encoding\":4}\n"
        );

        let d = decode(&r, bytes.clone()).unwrap();
        assert_eq!(d.labels, e.labels);
        assert_eq!(
            (d.from_ms, d.through_ms, d.fingerprint),
            (e.from_ms, e.through_ms, e.fingerprint)
        );
        assert_eq!(d.data, e.data);
        assert_eq!(d.encoding, 4);

        let mut corrupt = bytes.to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert_eq!(decode(&r, corrupt.into()).unwrap_err(), ChunkObjectError::Checksum);
        let other = ChunkRef {
            fingerprint: 1,
            ..r.clone()
        };
        assert_eq!(decode(&other, bytes).unwrap_err(), ChunkObjectError::WrongMetadata);
    }

    #[test]
    fn older_layout_without_the_length_word_and_missing_encoding_read_as_cortex_does() {
        // metaLen not counting its own 4 bytes (older Cortex), no "encoding" (→ DoubleDelta).
        let mut dd = vec![0u8; 1024];
        dd[0..2].copy_from_slice(&21u16.to_le_bytes());
        dd[2] = 1;
        dd[5..13].copy_from_slice(&1000i64.to_le_bytes());
        let json = "{\"fingerprint\":7,\"userID\":\"u\",\"from\":1,\"through\":1,\"metric\":{\"__name__\":\"m\"}}";
        let mut snappy = Vec::new();
        {
            let mut w = snap::write::FrameEncoder::new(&mut snappy);
            w.write_all(json.as_bytes()).unwrap();
        }
        let mut obj = (snappy.len() as u32).to_be_bytes().to_vec();
        obj.extend_from_slice(&snappy);
        obj.extend_from_slice(&(dd.len() as u32).to_be_bytes());
        obj.extend_from_slice(&dd);
        let r = ChunkRef {
            tenant: "u".into(),
            fingerprint: 7,
            from_ms: 1000,
            through_ms: 1000,
            checksum: Some(crc32c::crc32c(&obj)),
        };
        let c = decode(&r, obj.into()).unwrap();
        assert_eq!(c.encoding, chunk::Encoding::DoubleDelta.id());
        let s: Vec<_> = chunk::StoredChunk::open(c.encoding, c.data).unwrap().iter().collect();
        assert_eq!(s, vec![(1000, 0.0)]);
    }

    #[test]
    fn corrupt_payloads_fail_with_the_chunk_error() {
        let mut e = entry();
        e.encoding = 77;
        let (bytes, r) = encode_with_ref(&e);
        let err = decode(&r, bytes).unwrap_err();
        assert_eq!(err.to_string(), "unknown chunk encoding 77");
        assert_eq!(err.reason(), "encoding");
        e.encoding = chunk::Encoding::Bigchunk.id();
        e.data = Bytes::from_static(&[2, 0, 9, 0, 1]);
        let (bytes, r) = encode_with_ref(&e);
        let err = decode(&r, bytes).unwrap_err();
        assert_eq!(err.to_string(), "bigchunk truncated at byte 4 of 5");
        assert_eq!(err.reason(), "payload");
    }
}
