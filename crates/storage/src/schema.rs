//! Index schemas v9, v10 and v11 (spec §4.2–4.4): which index entries a chunk produces and which
//! index queries a lookup issues. Byte-compatible with Cortex's `v9Entries`/`v10Entries`/`v11Entries`.

use bytes::Bytes;
use model::{Labels, METRIC_NAME};

use crate::keys::{
    encode_range_key, encode_time, range_value_prefix, series_id, sha256_b64, CHUNK_TIME_RANGE_KEY_V3, EMPTY_VALUE,
    LABEL_NAMES_RANGE_KEY_V1, LABEL_SERIES_RANGE_KEY_V1, SERIES_RANGE_KEY_V1,
};
use crate::schema_config::{PeriodConfig, SchemaVersion, MILLIS_PER_DAY};

/// One row of the index: (table, hash key, range key) → value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IndexEntry {
    pub table: String,
    pub hash: String,
    pub range: Bytes,
    pub value: Bytes,
}

/// Cortex `IndexQuery`: one hash row, optionally narrowed by range prefix / start and value.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct IndexQuery {
    pub table: String,
    pub hash: String,
    pub range_prefix: Option<Bytes>,
    pub range_start: Option<Bytes>,
    pub value_equal: Option<Bytes>,
}

impl IndexQuery {
    /// Whether a row of this query's hash key is selected by its range/value conditions.
    pub fn matches(&self, range: &[u8], value: &[u8]) -> bool {
        if let Some(p) = &self.range_prefix {
            if !range.starts_with(p) {
                return false;
            }
        } else if let Some(s) = &self.range_start {
            if range < &s[..] {
                return false;
            }
        }
        match &self.value_equal {
            Some(v) => value == &v[..],
            None => true,
        }
    }
}

/// A daily bucket of a time range (spec §4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub from: u32,
    pub through: u32,
    pub table: String,
    pub hash_key: String,
}

/// The index schema of one period.
#[derive(Clone, Debug)]
pub struct Schema {
    pub version: SchemaVersion,
    pub row_shards: u32,
    pub period: PeriodConfig,
}

impl Schema {
    pub fn new(period: &PeriodConfig) -> Self {
        Schema {
            version: period.version(),
            row_shards: period.row_shards.max(1),
            period: period.clone(),
        }
    }

    /// One bucket per UTC day overlapped by [from, through] (ms).
    pub fn buckets(&self, from: i64, through: i64, tenant: &str) -> Vec<Bucket> {
        let from_day = from.div_euclid(1000).div_euclid(86_400);
        let through_day = through.div_euclid(1000).div_euclid(86_400);
        (from_day..=through_day)
            .map(|d| Bucket {
                from: (from - d * MILLIS_PER_DAY).max(0) as u32,
                through: (through - d * MILLIS_PER_DAY).min(MILLIS_PER_DAY) as u32,
                table: self.period.index.table_for(d * MILLIS_PER_DAY),
                hash_key: format!("{tenant}:d{d}"),
            })
            .collect()
    }

    fn shard_of(&self, series_id: &str) -> u32 {
        let b = series_id.as_bytes();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]) % self.row_shards
    }

    fn sharded(&self) -> bool {
        self.version != SchemaVersion::V9
    }

    /// Hash key of a metric row (per shard for v10+).
    fn metric_hash(&self, shard: Option<u32>, bucket: &Bucket, metric: &str) -> String {
        match shard {
            Some(s) => format!("{s:02}:{}:{metric}", bucket.hash_key),
            None => format!("{}:{metric}", bucket.hash_key),
        }
    }

    fn label_hash(&self, shard: Option<u32>, bucket: &Bucket, metric: &str, label: &str) -> String {
        match shard {
            Some(s) => format!("{s:02}:{}:{metric}:{label}", bucket.hash_key),
            None => format!("{}:{metric}:{label}", bucket.hash_key),
        }
    }

    /// Metric→series, (v11) series→label names and label→series entries of one series in one bucket.
    pub fn label_write_entries(&self, bucket: &Bucket, metric: &str, labels: &Labels, sid: &str) -> Vec<IndexEntry> {
        let shard = self.sharded().then(|| self.shard_of(sid));
        let mut out = Vec::with_capacity(labels.len() + 2);
        out.push(IndexEntry {
            table: bucket.table.clone(),
            hash: self.metric_hash(shard, bucket, metric),
            range: encode_range_key(SERIES_RANGE_KEY_V1, sid.as_bytes(), b"", b"").into(),
            value: Bytes::from_static(EMPTY_VALUE),
        });
        if self.version == SchemaVersion::V11 {
            let names: Vec<&str> = labels
                .iter()
                .filter(|l| l.name != METRIC_NAME)
                .map(|l| l.name.as_str())
                .collect();
            out.push(IndexEntry {
                table: bucket.table.clone(),
                hash: sid.to_string(),
                range: encode_range_key(LABEL_NAMES_RANGE_KEY_V1, b"", b"", b"").into(),
                value: serde_json::to_vec(&names).unwrap_or_default().into(),
            });
        }
        for l in labels.iter().filter(|l| l.name != METRIC_NAME) {
            let value_hash = sha256_b64(l.value.as_bytes());
            out.push(IndexEntry {
                table: bucket.table.clone(),
                hash: self.label_hash(shard, bucket, metric, &l.name),
                range: encode_range_key(LABEL_SERIES_RANGE_KEY_V1, value_hash.as_bytes(), sid.as_bytes(), b"").into(),
                value: Bytes::copy_from_slice(l.value.as_bytes()),
            });
        }
        out
    }

    /// The series→chunk entry of one chunk in one bucket.
    pub fn chunk_write_entry(&self, bucket: &Bucket, sid: &str, chunk_id: &str) -> IndexEntry {
        IndexEntry {
            table: bucket.table.clone(),
            hash: format!("{}:{sid}", bucket.hash_key),
            range: encode_range_key(
                CHUNK_TIME_RANGE_KEY_V3,
                &encode_time(bucket.through),
                b"",
                chunk_id.as_bytes(),
            )
            .into(),
            value: if self.version == SchemaVersion::V9 {
                Bytes::new()
            } else {
                Bytes::from_static(EMPTY_VALUE)
            },
        }
    }

    fn shards(&self) -> Vec<Option<u32>> {
        if self.sharded() {
            (0..self.row_shards).map(Some).collect()
        } else {
            vec![None]
        }
    }

    /// Every series of a metric in a bucket (all shards).
    pub fn metric_queries(&self, bucket: &Bucket, metric: &str) -> Vec<IndexQuery> {
        self.shards()
            .into_iter()
            .map(|s| IndexQuery {
                table: bucket.table.clone(),
                hash: self.metric_hash(s, bucket, metric),
                ..Default::default()
            })
            .collect()
    }

    /// Every (value, series) of a label of a metric in a bucket.
    pub fn label_queries(&self, bucket: &Bucket, metric: &str, label: &str) -> Vec<IndexQuery> {
        self.shards()
            .into_iter()
            .map(|s| IndexQuery {
                table: bucket.table.clone(),
                hash: self.label_hash(s, bucket, metric, label),
                ..Default::default()
            })
            .collect()
    }

    /// Series of a metric whose label has exactly `value`.
    pub fn label_value_queries(&self, bucket: &Bucket, metric: &str, label: &str, value: &str) -> Vec<IndexQuery> {
        let value_hash = sha256_b64(value.as_bytes());
        let start: Bytes = range_value_prefix(&[value_hash.as_bytes()]).into();
        self.shards()
            .into_iter()
            .map(|s| IndexQuery {
                table: bucket.table.clone(),
                hash: self.label_hash(s, bucket, metric, label),
                range_start: Some(start.clone()),
                value_equal: Some(Bytes::copy_from_slice(value.as_bytes())),
                ..Default::default()
            })
            .collect()
    }

    /// Chunks of a series in a bucket, ending at or after the bucket's start.
    pub fn chunks_for_series_query(&self, bucket: &Bucket, sid: &str) -> IndexQuery {
        IndexQuery {
            table: bucket.table.clone(),
            hash: format!("{}:{sid}", bucket.hash_key),
            range_start: Some(range_value_prefix(&[&encode_time(bucket.from)]).into()),
            ..Default::default()
        }
    }

    /// v11's label-names row of a series.
    pub fn label_names_query(&self, bucket: &Bucket, sid: &str) -> Option<IndexQuery> {
        (self.version == SchemaVersion::V11).then(|| IndexQuery {
            table: bucket.table.clone(),
            hash: sid.to_string(),
            ..Default::default()
        })
    }
}

/// What an index row of the series store points at (Cortex `parseChunkTimeRangeValue`).
#[derive(Debug, PartialEq, Eq)]
pub enum RangeValue<'a> {
    /// A series row (`'7'`) or label row (`'8'`, with its stored label value).
    Series {
        id: &'a [u8],
        label_value: Option<&'a [u8]>,
    },
    /// A series→chunk row (`'3'` or older chunk-time versions).
    Chunk { id: &'a [u8] },
    /// v11 label names.
    LabelNames,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid index range value {0:?}")]
pub struct RangeValueError(pub String);

pub fn parse_range_value<'a>(range: &'a [u8], value: &'a [u8]) -> Result<RangeValue<'a>, RangeValueError> {
    let c = crate::keys::decode_range_key(range);
    let bad = || RangeValueError(String::from_utf8_lossy(range).into_owned());
    if c.len() < 3 {
        return Err(bad());
    }
    if c.len() == 3 {
        return Ok(RangeValue::Chunk { id: c[2] });
    }
    if c[3].len() != 1 {
        return Err(bad());
    }
    match c[3][0] {
        SERIES_RANGE_KEY_V1 => Ok(RangeValue::Series {
            id: c[0],
            label_value: None,
        }),
        LABEL_SERIES_RANGE_KEY_V1 => Ok(RangeValue::Series {
            id: c[1],
            label_value: Some(value),
        }),
        LABEL_NAMES_RANGE_KEY_V1 => Ok(RangeValue::LabelNames),
        crate::keys::CHUNK_TIME_RANGE_KEY_V1A
        | crate::keys::CHUNK_TIME_RANGE_KEY_V1
        | crate::keys::CHUNK_TIME_RANGE_KEY_V2
        | CHUNK_TIME_RANGE_KEY_V3
        | crate::keys::CHUNK_TIME_RANGE_KEY_V4
        | crate::keys::CHUNK_TIME_RANGE_KEY_V5 => Ok(RangeValue::Chunk { id: c[2] }),
        _ => Err(bad()),
    }
}

/// Series ID of a label set (re-exported for callers that hold labels).
pub fn labels_series_id(labels: &Labels) -> String {
    series_id(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema_config::{DayTime, PeriodicTableConfig};
    use model::GoDuration;
    use std::time::Duration;

    fn schema(v: &str, shards: u32) -> Schema {
        Schema::new(&PeriodConfig {
            from: DayTime(0),
            store: "aws-dynamo".into(),
            object_store: String::new(),
            schema: v.into(),
            index: PeriodicTableConfig {
                prefix: "cortex_index_".into(),
                period: GoDuration(Duration::from_secs(168 * 3600)),
                tags: Default::default(),
            },
            chunks: Default::default(),
            row_shards: shards,
        })
    }

    fn labels() -> Labels {
        Labels::from_pairs([("__name__", "up"), ("job", "api")])
    }

    const DAY: i64 = 18_767; // 2021-05-20
    const T0: i64 = DAY * MILLIS_PER_DAY;

    #[test]
    fn daily_buckets() {
        let s = schema("v9", 0);
        let b = s.buckets(T0 + 1000, T0 + MILLIS_PER_DAY + 5, "u");
        assert_eq!(b.len(), 2);
        assert_eq!(
            b[0],
            Bucket {
                from: 1000,
                through: MILLIS_PER_DAY as u32,
                table: "cortex_index_2681".into(),
                hash_key: "u:d18767".into()
            }
        );
        assert_eq!((b[1].from, b[1].through, b[1].hash_key.as_str()), (0, 5, "u:d18768"));
    }

    #[test]
    fn v9_exact_keys() {
        let s = schema("v9", 0);
        let b = &s.buckets(T0 + 1000, T0 + 2000, "u")[0];
        let sid = series_id(&labels());
        assert_eq!(sid, sha256_b64(b"up{job=\"api\"}"));
        let e = s.label_write_entries(b, "up", &labels(), &sid);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].table, "cortex_index_2681");
        assert_eq!(e[0].hash, "u:d18767:up");
        assert_eq!(&e[0].range[..], [sid.as_bytes(), b"\0\0\x007\0"].concat().as_slice());
        assert_eq!(&e[0].value[..], b"-");
        assert_eq!(e[1].hash, "u:d18767:up:job");
        let vh = sha256_b64(b"api");
        assert_eq!(
            &e[1].range[..],
            [vh.as_bytes(), b"\0", sid.as_bytes(), b"\0\0", b"8\0"]
                .concat()
                .as_slice()
        );
        assert_eq!(&e[1].value[..], b"api");
        let c = s.chunk_write_entry(b, &sid, "u/1:2:3:4");
        assert_eq!(c.hash, format!("u:d18767:{sid}"));
        assert_eq!(&c.range[..], b"000007d0\0\0u/1:2:3:4\x003\0");
        assert!(c.value.is_empty());
        let q = s.chunks_for_series_query(b, &sid);
        assert_eq!(q.range_start.as_deref(), Some(&b"000003e8\0"[..]));
        let lq = s.label_value_queries(b, "up", "job", "api");
        assert_eq!(lq.len(), 1);
        assert_eq!(
            lq[0].range_start.as_deref(),
            Some([vh.as_bytes(), b"\0"].concat().as_slice())
        );
        assert_eq!(lq[0].value_equal.as_deref(), Some(&b"api"[..]));
    }

    #[test]
    fn v10_and_v11_sharding_and_label_names() {
        let s10 = schema("v10", 16);
        let b = &s10.buckets(T0, T0, "u")[0];
        let sid = series_id(&labels());
        let sb = sid.as_bytes();
        let shard = u32::from_be_bytes([sb[0], sb[1], sb[2], sb[3]]) % 16;
        let e = s10.label_write_entries(b, "up", &labels(), &sid);
        assert_eq!(e[0].hash, format!("{shard:02}:u:d18767:up"));
        assert_eq!(e[1].hash, format!("{shard:02}:u:d18767:up:job"));
        assert_eq!(&s10.chunk_write_entry(b, &sid, "x").value[..], b"-");
        let qs = s10.metric_queries(b, "up");
        assert_eq!(qs.len(), 16);
        assert_eq!(qs[3].hash, "03:u:d18767:up");

        let s11 = schema("v11", 16);
        let e = s11.label_write_entries(b, "up", &labels(), &sid);
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].hash, sid);
        assert_eq!(&e[1].range[..], b"\0\0\x009\0");
        assert_eq!(&e[1].value[..], b"[\"job\"]");
    }

    #[test]
    fn parse_rows() {
        let sid = b"abc";
        let r = encode_range_key(SERIES_RANGE_KEY_V1, sid, b"", b"");
        assert_eq!(
            parse_range_value(&r, b"-").unwrap(),
            RangeValue::Series {
                id: sid,
                label_value: None
            }
        );
        let r = encode_range_key(LABEL_SERIES_RANGE_KEY_V1, b"vh", sid, b"");
        assert_eq!(
            parse_range_value(&r, b"v").unwrap(),
            RangeValue::Series {
                id: sid,
                label_value: Some(b"v")
            }
        );
        let r = encode_range_key(CHUNK_TIME_RANGE_KEY_V3, b"00000001", b"", b"u/1:2:3:4");
        assert_eq!(
            parse_range_value(&r, b"").unwrap(),
            RangeValue::Chunk { id: b"u/1:2:3:4" }
        );
        assert!(parse_range_value(b"x\0", b"").is_err());
    }

    #[test]
    fn query_matching() {
        let q = IndexQuery {
            range_start: Some(Bytes::from_static(b"b")),
            value_equal: Some(Bytes::from_static(b"v")),
            ..Default::default()
        };
        assert!(q.matches(b"b1", b"v"));
        assert!(q.matches(b"c", b"v"));
        assert!(!q.matches(b"a", b"v"));
        assert!(!q.matches(b"c", b"w"));
        let p = IndexQuery {
            range_prefix: Some(Bytes::from_static(b"ab")),
            ..Default::default()
        };
        assert!(p.matches(b"abc", b""));
        assert!(!p.matches(b"b", b""));
    }
}
