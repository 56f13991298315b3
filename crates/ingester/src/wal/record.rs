//! WAL record bodies (spec §3.6, Cortex's v1.3+ format): one type byte, the
//! tenant ID as a uvarint-length-prefixed string, then a Prometheus TSDB
//! record body:
//!
//! - type 1, series: TSDB series record (`1`, then per series: ref u64 BE,
//!   uvarint label count, uvarint-prefixed name/value strings), logged when
//!   a series is created; `ref` is the series fingerprint.
//! - type 2, samples: TSDB samples record (`2`, base ref u64 BE, base time
//!   i64 BE, then per sample: varint ref delta, varint time delta, value
//!   bits u64 BE), logged once per push with every appended sample.
//! - type 3, checkpoint series: the protobuf `Series{user_id = 1,
//!   fingerprint = 2, labels = 3, chunks = 4}` with all in-memory chunks.

use bytes::Bytes;
use model::{Label, Labels};
use proto::cortex::{Chunk, LabelPair};

pub(crate) const RECORD_SERIES: u8 = 1;
pub(crate) const RECORD_SAMPLES: u8 = 2;
pub(crate) const RECORD_CHECKPOINT_SERIES: u8 = 3;

const TSDB_SERIES: u8 = 1;
const TSDB_SAMPLES: u8 = 2;

/// Checkpoint record body (Cortex `pkg/ingester/wal.proto` `Series`).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CheckpointSeries {
    #[prost(string, tag = "1")]
    pub(crate) user_id: String,
    #[prost(uint64, tag = "2")]
    pub(crate) fingerprint: u64,
    #[prost(message, repeated, tag = "3")]
    pub(crate) labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "4")]
    pub(crate) chunks: Vec<Chunk>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RecordError {
    #[error("empty record")]
    Empty,
    #[error("unknown record type {0}")]
    UnknownType(u8),
    #[error("record truncated")]
    Truncated,
    #[error("label or tenant is not valid UTF-8")]
    NotUtf8,
    #[error("series has label name {0:?} more than once")]
    DuplicateLabelName(String),
    #[error("checkpoint series: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Go `binary.PutVarint`: zig-zag then uvarint.
fn put_varint(buf: &mut Vec<u8>, v: i64) {
    put_uvarint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    put_uvarint(buf, s.len() as u64);
    buf.extend_from_slice(s);
}

/// Records of one push for one tenant, encoded as samples are appended (no
/// per-sample allocation: two growing buffers per request).
#[derive(Debug)]
pub(crate) struct WalBatch {
    series: Vec<u8>,
    series_header: usize,
    samples: Vec<u8>,
    samples_header: usize,
    base: (u64, i64),
}

impl WalBatch {
    pub(crate) fn new(tenant: &str) -> Self {
        let header = |typ: u8, tsdb: u8| {
            let mut b = Vec::with_capacity(64 + tenant.len());
            b.push(typ);
            put_str(&mut b, tenant.as_bytes());
            b.push(tsdb);
            b
        };
        let series = header(RECORD_SERIES, TSDB_SERIES);
        let samples = header(RECORD_SAMPLES, TSDB_SAMPLES);
        WalBatch {
            series_header: series.len(),
            samples_header: samples.len(),
            series,
            samples,
            base: (0, 0),
        }
    }

    /// Logs a new series from its label pairs (sorted by name, unique).
    pub(crate) fn add_series(&mut self, fp: u64, pairs: &[(&[u8], &[u8])]) {
        let b = &mut self.series;
        b.extend_from_slice(&fp.to_be_bytes());
        put_uvarint(b, pairs.len() as u64);
        for (name, value) in pairs {
            put_str(b, name);
            put_str(b, value);
        }
    }

    pub(crate) fn add_sample(&mut self, fp: u64, t: i64, v: f64) {
        let b = &mut self.samples;
        if b.len() == self.samples_header {
            self.base = (fp, t);
            b.extend_from_slice(&fp.to_be_bytes());
            b.extend_from_slice(&t.to_be_bytes());
        }
        put_varint(b, fp.wrapping_sub(self.base.0) as i64);
        put_varint(b, t.wrapping_sub(self.base.1));
        b.extend_from_slice(&v.to_bits().to_be_bytes());
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.series.len() == self.series_header && self.samples.len() == self.samples_header
    }

    /// The records to log: series first, so replay knows every ref before
    /// its samples.
    pub(crate) fn records(&self) -> Vec<&[u8]> {
        let mut out = Vec::with_capacity(2);
        if self.series.len() > self.series_header {
            out.push(&self.series[..]);
        }
        if self.samples.len() > self.samples_header {
            out.push(&self.samples[..]);
        }
        out
    }
}

/// Encodes a checkpoint record.
pub(crate) fn encode_checkpoint_series(s: &CheckpointSeries, buf: &mut Vec<u8>) {
    use prost::Message;
    buf.clear();
    buf.push(RECORD_CHECKPOINT_SERIES);
    s.encode(buf).expect("Vec grows");
}

pub(crate) fn labels_to_pairs(labels: &Labels) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|l| LabelPair {
            name: Bytes::copy_from_slice(l.name.as_bytes()),
            value: Bytes::copy_from_slice(l.value.as_bytes()),
        })
        .collect()
}

pub(crate) fn labels_from_pairs(pairs: &[LabelPair]) -> Result<Labels, RecordError> {
    let mut out = Vec::with_capacity(pairs.len());
    for p in pairs {
        let name = std::str::from_utf8(&p.name).map_err(|_| RecordError::NotUtf8)?;
        let value = std::str::from_utf8(&p.value).map_err(|_| RecordError::NotUtf8)?;
        out.push(Label {
            name: name.to_string(),
            value: value.to_string(),
        });
    }
    sorted_labels(out)
}

/// Labels as stored in memory (sorted by name, names unique), from a record
/// written by anyone: a corrupt or foreign record may have them in any order.
fn sorted_labels(mut labels: Vec<Label>) -> Result<Labels, RecordError> {
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = labels.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(RecordError::DuplicateLabelName(w[0].name.clone()));
    }
    Ok(Labels::from_sorted(labels))
}

/// One sample of a samples record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RefSample {
    pub(crate) fp: u64,
    pub(crate) t: i64,
    pub(crate) v: f64,
}

/// A decoded record.
#[derive(Debug, PartialEq)]
pub(crate) enum Record<'a> {
    Series {
        tenant: &'a str,
        series: Vec<(u64, Labels)>,
    },
    /// The samples went into the caller's buffer.
    Samples {
        tenant: &'a str,
    },
    Checkpoint(CheckpointSeries),
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, RecordError> {
        let (&b, rest) = self.buf.split_first().ok_or(RecordError::Truncated)?;
        self.buf = rest;
        Ok(b)
    }

    fn uvarint(&mut self) -> Result<u64, RecordError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(RecordError::Truncated)
    }

    fn varint(&mut self) -> Result<i64, RecordError> {
        let u = self.uvarint()?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    fn be64(&mut self) -> Result<u64, RecordError> {
        if self.buf.len() < 8 {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.buf.split_at(8);
        self.buf = rest;
        Ok(u64::from_be_bytes(head.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self) -> Result<&'a [u8], RecordError> {
        let n = self.uvarint()? as usize;
        if self.buf.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn str(&mut self) -> Result<&'a str, RecordError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| RecordError::NotUtf8)
    }
}

/// Decodes one record; samples of a samples record are appended to `samples`.
pub(crate) fn decode<'a>(rec: &'a [u8], samples: &mut Vec<RefSample>) -> Result<Record<'a>, RecordError> {
    let mut r = Reader { buf: rec };
    let typ = r.byte().map_err(|_| RecordError::Empty)?;
    match typ {
        RECORD_SERIES => {
            let tenant = r.str()?;
            if r.byte()? != TSDB_SERIES {
                return Err(RecordError::UnknownType(typ));
            }
            let mut series = Vec::new();
            while !r.buf.is_empty() {
                let fp = r.be64()?;
                let n = r.uvarint()? as usize;
                let mut labels = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    let name = r.str()?.to_string();
                    let value = r.str()?.to_string();
                    labels.push(Label { name, value });
                }
                series.push((fp, sorted_labels(labels)?));
            }
            Ok(Record::Series { tenant, series })
        }
        RECORD_SAMPLES => {
            let tenant = r.str()?;
            if r.byte()? != TSDB_SAMPLES {
                return Err(RecordError::UnknownType(typ));
            }
            if !r.buf.is_empty() {
                let base_fp = r.be64()?;
                let base_t = r.be64()? as i64;
                while !r.buf.is_empty() {
                    let fp = base_fp.wrapping_add(r.varint()? as u64);
                    let t = base_t.wrapping_add(r.varint()?);
                    let v = f64::from_bits(r.be64()?);
                    samples.push(RefSample { fp, t, v });
                }
            }
            Ok(Record::Samples { tenant })
        }
        RECORD_CHECKPOINT_SERIES => {
            use prost::Message;
            Ok(Record::Checkpoint(CheckpointSeries::decode(r.buf)?))
        }
        other => Err(RecordError::UnknownType(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(l: &Labels) -> Vec<(&[u8], &[u8])> {
        l.iter().map(|l| (l.name.as_bytes(), l.value.as_bytes())).collect()
    }

    #[test]
    fn series_and_samples_round_trip() {
        let a = Labels::from_pairs([("__name__", "up"), ("job", "api")]);
        let b = Labels::from_pairs([("__name__", "x"), ("ü", "∞")]);
        let mut batch = WalBatch::new("tenant-1");
        assert!(batch.is_empty());
        batch.add_series(u64::MAX - 3, &pairs(&a));
        batch.add_series(7, &pairs(&b));
        let want = [
            RefSample {
                fp: u64::MAX - 3,
                t: 1_000,
                v: 1.5,
            },
            RefSample {
                fp: 7,
                t: -5,
                v: f64::NEG_INFINITY,
            },
            RefSample {
                fp: u64::MAX - 3,
                t: i64::MAX,
                v: model::stale_nan(),
            },
        ];
        for s in &want {
            batch.add_sample(s.fp, s.t, s.v);
        }
        let recs = batch.records();
        assert_eq!(recs.len(), 2);
        let mut samples = Vec::new();
        assert_eq!(
            decode(recs[0], &mut samples).unwrap(),
            Record::Series {
                tenant: "tenant-1",
                series: vec![(u64::MAX - 3, a), (7, b)]
            }
        );
        assert_eq!(
            decode(recs[1], &mut samples).unwrap(),
            Record::Samples { tenant: "tenant-1" }
        );
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[..2], want[..2]);
        assert_eq!(samples[2].t, i64::MAX);
        assert_eq!(samples[2].v.to_bits(), model::stale_nan().to_bits());
    }

    #[test]
    fn samples_only_batch_and_truncation() {
        let mut batch = WalBatch::new("t");
        batch.add_sample(1, 10, 2.0);
        let recs = batch.records();
        assert_eq!(recs.len(), 1);
        let rec = recs[0];
        let mut samples = Vec::new();
        // A cut record never yields the sample (cuts at field boundaries
        // decode as an empty record; the segment CRC catches those).
        for cut in 1..rec.len() {
            samples.clear();
            let r = decode(&rec[..cut], &mut samples);
            assert!(r.is_err() || samples.is_empty(), "cut at {cut}: {r:?}");
        }
        samples.clear();
        decode(rec, &mut samples).unwrap();
        assert_eq!(samples, vec![RefSample { fp: 1, t: 10, v: 2.0 }]);
        assert_eq!(decode(&[9], &mut samples), Err(RecordError::UnknownType(9)));
    }

    /// Found by fuzzing (fuzz/fuzz_targets/wal_replay.rs): a series record
    /// with labels out of order tripped `Labels::from_sorted`'s assertion.
    #[test]
    fn series_record_labels_are_sorted_and_unique() {
        let mut batch = WalBatch::new("t");
        batch.add_series(1, &[(&b"job"[..], &b"a"[..]), (&b"__name__"[..], &b"up"[..])]);
        let mut samples = Vec::new();
        match decode(batch.records()[0], &mut samples).unwrap() {
            Record::Series { series, .. } => {
                assert_eq!(series[0].1, Labels::from_pairs([("__name__", "up"), ("job", "a")]));
            }
            other => panic!("{other:?}"),
        }
        let mut batch = WalBatch::new("t");
        batch.add_series(1, &[(&b"a"[..], &b"1"[..]), (&b"a"[..], &b"2"[..])]);
        assert_eq!(
            decode(batch.records()[0], &mut samples),
            Err(RecordError::DuplicateLabelName("a".into()))
        );
        let dup = [
            LabelPair {
                name: Bytes::from_static(b"a"),
                value: Bytes::from_static(b"1"),
            },
            LabelPair {
                name: Bytes::from_static(b"a"),
                value: Bytes::from_static(b"2"),
            },
        ];
        assert_eq!(
            labels_from_pairs(&dup),
            Err(RecordError::DuplicateLabelName("a".into()))
        );
    }

    #[test]
    fn checkpoint_series_round_trip() {
        let labels = Labels::from_pairs([("__name__", "up")]);
        let s = CheckpointSeries {
            user_id: "u".into(),
            fingerprint: 42,
            labels: labels_to_pairs(&labels),
            chunks: vec![Chunk {
                start_timestamp_ms: 1,
                end_timestamp_ms: 2,
                encoding: 4,
                data: Bytes::from_static(&[0, 1, 2]),
            }],
        };
        let mut buf = Vec::new();
        encode_checkpoint_series(&s, &mut buf);
        let mut samples = Vec::new();
        match decode(&buf, &mut samples).unwrap() {
            Record::Checkpoint(got) => {
                assert_eq!(got, s);
                assert_eq!(labels_from_pairs(&got.labels).unwrap(), labels);
            }
            other => panic!("{other:?}"),
        }
    }
}
