//! The schema config file (`-schema-config-file`, spec §4.1): a list of periods, each naming the
//! index/object backends, the index schema version and the periodic table layout.

use std::collections::BTreeMap;
use std::time::Duration;

use model::GoDuration;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const SECONDS_PER_DAY: i64 = 24 * 3600;
pub const MILLIS_PER_DAY: i64 = SECONDS_PER_DAY * 1000;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SchemaConfigError {
    #[error("reading schema config {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("parsing schema config: {0}")]
    Parse(String),
    #[error("schema config has no periods")]
    Empty,
    #[error("schema config entries must be in strictly increasing order of 'from' ({0} is not after {1})")]
    NotIncreasing(String, String),
    #[error("unsupported schema version {0:?} (supported: v9, v10, v11)")]
    UnsupportedSchema(String),
    #[error("{table} table period {period:?} is not a multiple of 24h")]
    BadPeriod { table: &'static str, period: Duration },
    #[error("row_shards must be > 0 for schema {0}")]
    ZeroRowShards(String),
    #[error("unsupported index store {0:?} (supported: aws-dynamo, aws, embedded, boltdb, inmemory)")]
    UnsupportedStore(String),
    #[error("unsupported object store {0:?} (supported: s3, aws, filesystem, local)")]
    UnsupportedObjectStore(String),
}

/// A UTC day, written `YYYY-MM-DD`; stored as Unix milliseconds of its midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DayTime(pub i64);

impl DayTime {
    pub fn parse(s: &str) -> Result<Self, String> {
        let d = chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .map_err(|e| format!("invalid date {s:?} (want YYYY-MM-DD): {e}"))?;
        let secs = d
            .and_hms_opt(0, 0, 0)
            .map(|dt| dt.and_utc().timestamp())
            .ok_or_else(|| format!("invalid date {s:?}"))?;
        Ok(DayTime(secs * 1000))
    }
}

impl std::fmt::Display for DayTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match chrono::DateTime::from_timestamp_millis(self.0) {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%d")),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for DayTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DayTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DayTime::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `index:` / `chunks:` of a period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeriodicTableConfig {
    pub prefix: String,
    pub period: GoDuration,
    pub tags: BTreeMap<String, String>,
}

impl PeriodicTableConfig {
    pub fn period_secs(&self) -> i64 {
        self.period.0.as_secs() as i64
    }

    /// `prefix + floor(t / period)`; a zero period means one static table named `prefix`.
    pub fn table_for(&self, t_ms: i64) -> String {
        let p = self.period_secs();
        if p == 0 {
            return self.prefix.clone();
        }
        format!("{}{}", self.prefix, t_ms.div_euclid(1000).div_euclid(p))
    }
}

/// The index schema version of a period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaVersion {
    V9,
    V10,
    V11,
}

impl SchemaVersion {
    pub fn parse(s: &str) -> Result<Self, SchemaConfigError> {
        match s {
            "v9" => Ok(SchemaVersion::V9),
            "v10" => Ok(SchemaVersion::V10),
            "v11" => Ok(SchemaVersion::V11),
            other => Err(SchemaConfigError::UnsupportedSchema(other.to_string())),
        }
    }
}

/// The index backend of a period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexStoreKind {
    Dynamo,
    /// Our single-process embedded index (what `boltdb` was to Cortex).
    Embedded,
}

/// The chunk object backend of a period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectStoreKind {
    S3,
    Filesystem,
}

/// One `configs:` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodConfig {
    pub from: DayTime,
    pub store: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object_store: String,
    pub schema: String,
    #[serde(default)]
    pub index: PeriodicTableConfig,
    #[serde(default)]
    pub chunks: PeriodicTableConfig,
    #[serde(default)]
    pub row_shards: u32,
}

impl PeriodConfig {
    pub fn version(&self) -> SchemaVersion {
        SchemaVersion::parse(&self.schema).unwrap_or(SchemaVersion::V9)
    }

    pub fn index_store(&self) -> Result<IndexStoreKind, SchemaConfigError> {
        match self.store.as_str() {
            "aws-dynamo" | "aws" => Ok(IndexStoreKind::Dynamo),
            "embedded" | "boltdb" | "inmemory" => Ok(IndexStoreKind::Embedded),
            other => Err(SchemaConfigError::UnsupportedStore(other.to_string())),
        }
    }

    /// `object_store` defaults to `store` (Cortex: a table store also holds chunks).
    pub fn object_store(&self) -> Result<ObjectStoreKind, SchemaConfigError> {
        let name = if self.object_store.is_empty() {
            &self.store
        } else {
            &self.object_store
        };
        match name.as_str() {
            "s3" | "aws" | "aws-dynamo" => Ok(ObjectStoreKind::S3),
            "filesystem" | "local" | "embedded" | "boltdb" | "inmemory" => Ok(ObjectStoreKind::Filesystem),
            other => Err(SchemaConfigError::UnsupportedObjectStore(other.to_string())),
        }
    }
}

/// The whole file: `configs: [...]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    pub configs: Vec<PeriodConfig>,
}

impl SchemaConfig {
    pub fn load_file(path: &str) -> Result<Self, SchemaConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| SchemaConfigError::Read {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text)
    }

    /// Strict parse + validation; fills Cortex's defaults (row_shards 16 for v10+).
    pub fn parse(text: &str) -> Result<Self, SchemaConfigError> {
        let mut cfg: SchemaConfig =
            serde_saphyr::from_str(text).map_err(|e| SchemaConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&mut self) -> Result<(), SchemaConfigError> {
        if self.configs.is_empty() {
            return Err(SchemaConfigError::Empty);
        }
        for w in self.configs.windows(2) {
            if w[1].from <= w[0].from {
                return Err(SchemaConfigError::NotIncreasing(
                    w[1].from.to_string(),
                    w[0].from.to_string(),
                ));
            }
        }
        for p in &mut self.configs {
            let v = SchemaVersion::parse(&p.schema)?;
            p.index_store()?;
            p.object_store()?;
            if v != SchemaVersion::V9 && p.row_shards == 0 {
                p.row_shards = 16;
            }
            for (table, t) in [("index", &p.index), ("chunks", &p.chunks)] {
                if t.period_secs() % SECONDS_PER_DAY != 0 || t.period.0.subsec_nanos() != 0 {
                    return Err(SchemaConfigError::BadPeriod {
                        table,
                        period: t.period.0,
                    });
                }
            }
        }
        Ok(())
    }

    /// The single-process default: v11 on the embedded index and filesystem chunks, one static table.
    pub fn embedded_default() -> Self {
        SchemaConfig {
            configs: vec![PeriodConfig {
                from: DayTime(0),
                store: "embedded".into(),
                object_store: "filesystem".into(),
                schema: "v11".into(),
                index: PeriodicTableConfig {
                    prefix: "index_".into(),
                    period: GoDuration(Duration::from_secs(7 * SECONDS_PER_DAY as u64)),
                    tags: BTreeMap::new(),
                },
                chunks: PeriodicTableConfig::default(),
                row_shards: 16,
            }],
        }
    }

    /// Index of the period active at `t_ms` (the last whose `from` ≤ t), if any.
    pub fn period_index_for(&self, t_ms: i64) -> Option<usize> {
        self.configs.iter().rposition(|p| p.from.0 <= t_ms)
    }

    /// Splits [from, through] over the periods: `(period index, from, through)` pieces in time order.
    pub fn split(&self, from: i64, through: i64) -> Vec<(usize, i64, i64)> {
        let mut out = Vec::new();
        for (i, p) in self.configs.iter().enumerate() {
            let start = p.from.0;
            let end = self.configs.get(i + 1).map(|n| n.from.0 - 1).unwrap_or(i64::MAX);
            let (f, t) = (from.max(start), through.min(end));
            if f <= t {
                out.push((i, f, t));
            }
        }
        // Data before the first period still belongs to the first one (Cortex clamps the same way).
        if out.is_empty() && !self.configs.is_empty() && through < self.configs[0].from.0 {
            out.push((0, from, through));
        } else if let Some(first) = out.first_mut() {
            if first.0 == 0 {
                first.1 = from.min(first.1);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEEKLY: &str = "configs:
  - from: 2020-01-01
    store: aws-dynamo
    object_store: s3
    schema: v9
    index: {prefix: cortex_index_, period: 168h, tags: {team: a}}
  - from: 2021-01-04
    store: aws-dynamo
    schema: v11
    index: {prefix: idx_, period: 168h}
    chunks: {prefix: chunks_, period: 168h}
";

    #[test]
    fn parses_periods_and_defaults_row_shards() {
        let c = SchemaConfig::parse(WEEKLY).unwrap();
        assert_eq!(c.configs.len(), 2);
        assert_eq!(c.configs[0].from, DayTime::parse("2020-01-01").unwrap());
        assert_eq!(c.configs[0].from.0, 1_577_836_800_000);
        assert_eq!(c.configs[0].row_shards, 0);
        assert_eq!(c.configs[1].row_shards, 16);
        assert_eq!(c.configs[1].object_store().unwrap(), ObjectStoreKind::S3);
        assert_eq!(c.configs[0].index.tags.get("team").map(String::as_str), Some("a"));
        assert_eq!(c.configs[1].version(), SchemaVersion::V11);
    }

    #[test]
    fn strict_decoding_and_validation() {
        let unknown = "configs:\n  - from: 2020-01-01\n    store: aws-dynamo\n    schema: v9\n    bogus: 1\n";
        assert!(matches!(SchemaConfig::parse(unknown), Err(SchemaConfigError::Parse(_))));
        let v6 = "configs:\n  - from: 2020-01-01\n    store: aws-dynamo\n    schema: v6\n";
        assert_eq!(
            SchemaConfig::parse(v6),
            Err(SchemaConfigError::UnsupportedSchema("v6".into()))
        );
        let order = "configs:\n  - {from: 2020-01-02, store: aws, schema: v9}\n  - {from: 2020-01-01, store: aws, schema: v9}\n";
        assert!(matches!(
            SchemaConfig::parse(order),
            Err(SchemaConfigError::NotIncreasing(..))
        ));
        let period = "configs:\n  - {from: 2020-01-01, store: aws, schema: v9, index: {prefix: i_, period: 36h}}\n";
        assert!(matches!(
            SchemaConfig::parse(period),
            Err(SchemaConfigError::BadPeriod { .. })
        ));
        assert_eq!(SchemaConfig::parse("configs: []\n"), Err(SchemaConfigError::Empty));
    }

    #[test]
    fn table_names() {
        let t = PeriodicTableConfig {
            prefix: "cortex_index_".into(),
            period: GoDuration(Duration::from_secs(168 * 3600)),
            tags: Default::default(),
        };
        // 2021-05-20T00:00:00Z = 1621468800 s; / 604800 = 2681.
        assert_eq!(t.table_for(1_621_468_800_000), "cortex_index_2681");
        let static_table = PeriodicTableConfig {
            prefix: "index".into(),
            ..Default::default()
        };
        assert_eq!(static_table.table_for(1_621_468_800_000), "index");
    }

    #[test]
    fn split_over_periods() {
        let c = SchemaConfig::parse(WEEKLY).unwrap();
        let b = c.configs[1].from.0;
        assert_eq!(c.split(b - 10, b + 10), vec![(0, b - 10, b - 1), (1, b, b + 10)]);
        assert_eq!(c.split(b + 1, b + 10), vec![(1, b + 1, b + 10)]);
        assert_eq!(c.period_index_for(b - 1), Some(0));
        assert_eq!(c.period_index_for(b), Some(1));
        assert_eq!(c.split(0, 10), vec![(0, 0, 10)]);
    }
}
