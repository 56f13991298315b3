//! The table-manager (spec §5): keeps the periodic index/chunk tables of the schema in place —
//! creates them ahead of time (grace period), keeps throughput and tags up to date, and deletes
//! tables past the retention period when deletes are enabled.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use model::GoDuration;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use serde::{Deserialize, Serialize};
use server::config::Flag;

use crate::index::embedded::EmbeddedIndex;
use crate::schema_config::{PeriodicTableConfig, SchemaConfig};
use crate::StoreError;

/// What a table should look like.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableDesc {
    pub name: String,
    pub provisioned_read: i64,
    pub provisioned_write: i64,
    pub use_on_demand: bool,
    pub tags: BTreeMap<String, String>,
}

impl TableDesc {
    /// Whether `self` (expected) differs from `current` in a way an update fixes.
    pub fn needs_update(&self, current: &TableDesc) -> bool {
        self.use_on_demand != current.use_on_demand
            || (!self.use_on_demand
                && (self.provisioned_read != current.provisioned_read
                    || self.provisioned_write != current.provisioned_write))
            || self.tags.iter().any(|(k, v)| current.tags.get(k) != Some(v))
    }
}

#[async_trait::async_trait]
pub trait TableClient: Send + Sync {
    async fn list_tables(&self) -> Result<Vec<String>, StoreError>;
    async fn create_table(&self, desc: &TableDesc) -> Result<(), StoreError>;
    async fn delete_table(&self, name: &str) -> Result<(), StoreError>;
    /// Current throughput and tags; `None` while the table is not ready for updates (e.g. CREATING).
    async fn describe_table(&self, name: &str) -> Result<Option<TableDesc>, StoreError>;
    async fn update_table(&self, current: &TableDesc, expected: &TableDesc) -> Result<(), StoreError>;
}

/// The embedded index: tables are fjall keyspaces; throughput and tags do not apply.
#[async_trait::async_trait]
impl TableClient for EmbeddedIndex {
    async fn list_tables(&self) -> Result<Vec<String>, StoreError> {
        EmbeddedIndex::list_tables(self)
    }
    async fn create_table(&self, desc: &TableDesc) -> Result<(), StoreError> {
        EmbeddedIndex::create_table(self, &desc.name)
    }
    async fn delete_table(&self, name: &str) -> Result<(), StoreError> {
        EmbeddedIndex::delete_table(self, name)
    }
    async fn describe_table(&self, name: &str) -> Result<Option<TableDesc>, StoreError> {
        Ok(Some(TableDesc {
            name: name.to_string(),
            ..Default::default()
        }))
    }
    async fn update_table(&self, _current: &TableDesc, _expected: &TableDesc) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Throughput of one kind of table (`-table-manager.index-table.*` / `.chunk-table.*`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ProvisionConfig {
    pub enable_ondemand_throughput_mode: bool,
    pub provisioned_write_throughput: i64,
    pub provisioned_read_throughput: i64,
    pub enable_inactive_throughput_on_demand_mode: bool,
    pub inactive_write_throughput: i64,
    pub inactive_read_throughput: i64,
}

impl Default for ProvisionConfig {
    fn default() -> Self {
        ProvisionConfig {
            enable_ondemand_throughput_mode: false,
            provisioned_write_throughput: 1000,
            provisioned_read_throughput: 300,
            enable_inactive_throughput_on_demand_mode: false,
            inactive_write_throughput: 1,
            inactive_read_throughput: 300,
        }
    }
}

impl ProvisionConfig {
    fn desc(&self, name: String, tags: &BTreeMap<String, String>, active: bool) -> TableDesc {
        if active {
            TableDesc {
                name,
                provisioned_read: self.provisioned_read_throughput,
                provisioned_write: self.provisioned_write_throughput,
                use_on_demand: self.enable_ondemand_throughput_mode,
                tags: tags.clone(),
            }
        } else {
            TableDesc {
                name,
                provisioned_read: self.inactive_read_throughput,
                provisioned_write: self.inactive_write_throughput,
                use_on_demand: self.enable_inactive_throughput_on_demand_mode,
                tags: tags.clone(),
            }
        }
    }
}

/// `table_manager:` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TableManagerConfig {
    pub throughput_updates_disabled: bool,
    pub retention_deletes_enabled: bool,
    pub retention_period: GoDuration,
    pub poll_interval: GoDuration,
    pub creation_grace_period: GoDuration,
    /// How long ingesters keep writing into a table after its period (their max chunk age).
    pub max_chunk_age: GoDuration,
    pub index_tables_provisioning: ProvisionConfig,
    pub chunk_tables_provisioning: ProvisionConfig,
}

impl Default for TableManagerConfig {
    fn default() -> Self {
        TableManagerConfig {
            throughput_updates_disabled: false,
            retention_deletes_enabled: false,
            retention_period: GoDuration(Duration::ZERO),
            poll_interval: GoDuration(Duration::from_secs(120)),
            creation_grace_period: GoDuration(Duration::from_secs(600)),
            max_chunk_age: GoDuration(Duration::from_secs(12 * 3600)),
            index_tables_provisioning: ProvisionConfig::default(),
            chunk_tables_provisioning: ProvisionConfig::default(),
        }
    }
}

macro_rules! provision_flags {
    ($flag:literal, $path:literal) => {
        [
            Flag::new(
                concat!($flag, ".enable-ondemand-throughput-mode"),
                concat!($path, ".enable_ondemand_throughput_mode"),
                "Enables on demand throughput provisioning for the storage provider (if supported).",
            ),
            Flag::new(
                concat!($flag, ".write-throughput"),
                concat!($path, ".provisioned_write_throughput"),
                "Table default write throughput.",
            ),
            Flag::new(
                concat!($flag, ".read-throughput"),
                concat!($path, ".provisioned_read_throughput"),
                "Table default read throughput.",
            ),
            Flag::new(
                concat!($flag, ".inactive-enable-ondemand-throughput-mode"),
                concat!($path, ".enable_inactive_throughput_on_demand_mode"),
                "Enables on demand throughput provisioning for inactive tables.",
            ),
            Flag::new(
                concat!($flag, ".inactive-write-throughput"),
                concat!($path, ".inactive_write_throughput"),
                "Table write throughput for inactive tables.",
            ),
            Flag::new(
                concat!($flag, ".inactive-read-throughput"),
                concat!($path, ".inactive_read_throughput"),
                "Table read throughput for inactive tables.",
            ),
        ]
    };
}

const INDEX_PROVISION_FLAGS: [Flag; 6] = provision_flags!("table-manager.index-table", "index_tables_provisioning");
const CHUNK_PROVISION_FLAGS: [Flag; 6] = provision_flags!("table-manager.chunk-table", "chunk_tables_provisioning");
const BASE_FLAGS: [Flag; 6] = [
    Flag::new(
        "table-manager.throughput-updates-disabled",
        "throughput_updates_disabled",
        "If true, disable all changes to DB capacity.",
    ),
    Flag::new(
        "table-manager.retention-deletes-enabled",
        "retention_deletes_enabled",
        "If true, enables retention deletes of DB tables.",
    ),
    Flag::new(
        "table-manager.retention-period",
        "retention_period",
        "Tables older than this retention period are deleted. Must be either 0 (disabled) or a multiple of 24h.",
    ),
    Flag::new(
        "table-manager.poll-interval",
        "poll_interval",
        "How frequently to poll backend to learn our capacity.",
    ),
    Flag::new(
        "table-manager.periodic-table.grace-period",
        "creation_grace_period",
        "Periodic tables grace period (duration which table will be created/deleted before/after it's needed).",
    ),
    Flag::new(
        "table-manager.max-chunk-age",
        "max_chunk_age",
        "Maximum chunk age of the ingesters writing into the tables (keeps the previous table active that long).",
    ),
];

const ALL_FLAGS: [Flag; 18] =
    server::config::concat_flags(&[&BASE_FLAGS, &INDEX_PROVISION_FLAGS, &CHUNK_PROVISION_FLAGS]);

/// `table_manager:` flags, paths relative to the section.
pub const FLAGS: &[Flag] = &ALL_FLAGS;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TableManagerConfigError {
    #[error("retention period should now be a multiple of periodic table duration")]
    RetentionNotMultipleOfPeriod,
    #[error("retention period must be a multiple of 24h")]
    RetentionNotDays,
}

impl TableManagerConfig {
    pub fn validate(&self, schema: &SchemaConfig) -> Result<(), TableManagerConfigError> {
        let r = self.retention_period.0.as_secs() as i64;
        if r == 0 {
            return Ok(());
        }
        if r % 86_400 != 0 {
            return Err(TableManagerConfigError::RetentionNotDays);
        }
        for p in &schema.configs {
            for t in [&p.index, &p.chunks] {
                let ps = t.period_secs();
                if !t.prefix.is_empty() && ps > 0 && r % ps != 0 {
                    return Err(TableManagerConfigError::RetentionNotMultipleOfPeriod);
                }
            }
        }
        Ok(())
    }
}

/// Cortex `calculateExpectedTables`, at time `now_s` (Unix seconds).
pub fn expected_tables(cfg: &TableManagerConfig, schema: &SchemaConfig, now_s: i64) -> Vec<TableDesc> {
    let grace = cfg.creation_grace_period.0.as_secs() as i64;
    let max_chunk_age = cfg.max_chunk_age.0.as_secs() as i64;
    let retention = cfg.retention_period.0.as_secs() as i64;
    let mut out: Vec<TableDesc> = Vec::new();
    for (i, p) in schema.configs.iter().enumerate() {
        let from_s = p.from.0.div_euclid(1000);
        if from_s > now_s + grace {
            continue;
        }
        let next_from = schema.configs.get(i + 1).map(|n| n.from.0.div_euclid(1000));
        for (t, prov) in [
            (&p.index, &cfg.index_tables_provisioning),
            (&p.chunks, &cfg.chunk_tables_provisioning),
        ] {
            if t.prefix.is_empty() {
                continue;
            }
            if t.period_secs() == 0 {
                if out.iter().any(|d| d.name == t.prefix) {
                    continue;
                }
                let active = next_from.is_none_or(|end| now_s < end + grace + max_chunk_age);
                out.push(prov.desc(t.prefix.clone(), &t.tags, active));
            } else {
                let mut end = now_s + grace;
                if let Some(nf) = next_from {
                    end = end.min(nf);
                }
                out.extend(periodic_tables(
                    t,
                    prov,
                    from_s,
                    end,
                    grace,
                    max_chunk_age,
                    retention,
                    now_s,
                ));
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[allow(clippy::too_many_arguments)]
fn periodic_tables(
    t: &PeriodicTableConfig,
    prov: &ProvisionConfig,
    from_s: i64,
    through_s: i64,
    begin_grace: i64,
    end_grace: i64,
    retention: i64,
    now_s: i64,
) -> Vec<TableDesc> {
    let period = t.period_secs();
    let mut first = from_s.div_euclid(period);
    let mut last = through_s.div_euclid(period);
    // An interval ending exactly on a period boundary does not include the upcoming period.
    if through_s % period == 0 {
        last -= 1;
    }
    let keep = retention / period;
    if retention > 0 && last > keep && last - first >= keep {
        first = last - keep;
    }
    (first..=last)
        .map(|i| {
            let start = i * period;
            let active = start - begin_grace <= now_s && now_s < start + period + end_grace;
            prov.desc(format!("{}{}", t.prefix, i), &t.tags, active)
        })
        .collect()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapacityLabels {
    op: String,
    table: String,
}

#[derive(Clone)]
struct TmMetrics {
    sync_duration: Family<StatusLabels, Histogram>,
    capacity: Family<CapacityLabels, Gauge>,
    create_failures: Gauge,
    delete_failures: Gauge,
    last_success: Gauge,
    syncs: Counter,
}

fn sync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 10))
}

/// What one sync did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
}

pub struct TableManager {
    cfg: TableManagerConfig,
    schema: SchemaConfig,
    client: Arc<dyn TableClient>,
    metrics: TmMetrics,
}

impl TableManager {
    pub fn new(
        cfg: TableManagerConfig,
        schema: SchemaConfig,
        client: Arc<dyn TableClient>,
        metrics: &server::Metrics,
    ) -> Result<Arc<Self>, TableManagerConfigError> {
        cfg.validate(&schema)?;
        let tm = TmMetrics {
            sync_duration: Family::new_with_constructor(sync_histogram as fn() -> Histogram),
            capacity: Family::default(),
            create_failures: Gauge::default(),
            delete_failures: Gauge::default(),
            last_success: Gauge::default(),
            syncs: Counter::default(),
        };
        metrics.register(
            "cortex_table_manager_sync_duration_seconds",
            "Time spent synching tables.",
            tm.sync_duration.clone(),
        );
        metrics.register(
            "cortex_table_capacity_units",
            "Per-table DynamoDB capacity, provisioned read and write.",
            tm.capacity.clone(),
        );
        metrics.register(
            "cortex_table_manager_create_failures",
            "Number of table creation failures during the last table-manager reconciliation",
            tm.create_failures.clone(),
        );
        metrics.register(
            "cortex_table_manager_delete_failures",
            "Number of table deletion failures during the last table-manager reconciliation",
            tm.delete_failures.clone(),
        );
        metrics.register(
            "cortex_table_manager_sync_success_timestamp_seconds",
            "Timestamp of the last successful table manager sync.",
            tm.last_success.clone(),
        );
        metrics.register(
            "cortex_table_manager_syncs",
            "Number of table-manager reconciliations run.",
            tm.syncs.clone(),
        );
        Ok(Arc::new(TableManager {
            cfg,
            schema,
            client,
            metrics: tm,
        }))
    }

    /// One reconciliation at `now_s`.
    pub async fn sync_at(&self, now_s: i64) -> Result<SyncReport, StoreError> {
        let start = Instant::now();
        let r = self.sync_inner(now_s).await;
        let code = match &r {
            Ok(_) => "200".to_string(),
            Err(e) => e.code.to_string(),
        };
        self.metrics
            .sync_duration
            .get_or_create(&StatusLabels { status_code: code })
            .observe(start.elapsed().as_secs_f64());
        self.metrics.syncs.inc();
        if r.is_ok() {
            self.metrics.last_success.set(model::now_ms() / 1000);
        }
        r
    }

    pub async fn sync(&self) -> Result<SyncReport, StoreError> {
        self.sync_at(model::now_ms() / 1000).await
    }

    async fn sync_inner(&self, now_s: i64) -> Result<SyncReport, StoreError> {
        let expected = expected_tables(&self.cfg, &self.schema, now_s);
        let existing = self.client.list_tables().await?;
        let mut report = SyncReport::default();
        let expected_by_name: HashMap<&str, &TableDesc> = expected.iter().map(|d| (d.name.as_str(), d)).collect();

        let mut create_failures = 0;
        for d in &expected {
            if existing.contains(&d.name) {
                continue;
            }
            match self.client.create_table(d).await {
                Ok(()) => {
                    tracing::info!(table = %d.name, "created table");
                    report.created.push(d.name.clone());
                }
                Err(e) => {
                    create_failures += 1;
                    tracing::warn!(table = %d.name, error = %e, "creating table failed");
                }
            }
        }
        self.metrics.create_failures.set(create_failures);

        if !self.cfg.throughput_updates_disabled {
            for d in expected.iter().filter(|d| existing.contains(&d.name)) {
                let Some(current) = self.client.describe_table(&d.name).await? else {
                    continue;
                };
                for (op, v) in [("read", current.provisioned_read), ("write", current.provisioned_write)] {
                    self.metrics
                        .capacity
                        .get_or_create(&CapacityLabels {
                            op: op.into(),
                            table: d.name.clone(),
                        })
                        .set(v);
                }
                if d.needs_update(&current) {
                    self.client.update_table(&current, d).await?;
                    report.updated.push(d.name.clone());
                }
            }
        }

        let mut delete_failures = 0;
        if !self.cfg.retention_period.0.is_zero() {
            // Only tables with a prefix this schema manages are ever deleted.
            let prefixes: Vec<&str> = self
                .schema
                .configs
                .iter()
                .flat_map(|p| [p.index.prefix.as_str(), p.chunks.prefix.as_str()])
                .filter(|p| !p.is_empty())
                .collect();
            for name in &existing {
                if expected_by_name.contains_key(name.as_str()) || !prefixes.iter().any(|p| name.starts_with(p)) {
                    continue;
                }
                if !self.cfg.retention_deletes_enabled {
                    tracing::info!(table = %name, "table past retention; retention deletes disabled, keeping it");
                    continue;
                }
                match self.client.delete_table(name).await {
                    Ok(()) => {
                        tracing::info!(table = %name, "deleted table past retention");
                        report.deleted.push(name.clone());
                    }
                    Err(e) => {
                        delete_failures += 1;
                        tracing::warn!(table = %name, error = %e, "deleting table failed");
                    }
                }
            }
        }
        self.metrics.delete_failures.set(delete_failures);
        if create_failures > 0 || delete_failures > 0 {
            return Err(StoreError::internal(format!(
                "table sync: {create_failures} create and {delete_failures} delete failures"
            )));
        }
        Ok(report)
    }

    /// Syncs at start and every poll interval until the task is aborted.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let tm = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(tm.cfg.poll_interval.0.max(Duration::from_secs(1)));
            loop {
                tick.tick().await;
                if let Err(e) = tm.sync().await {
                    tracing::error!(error = %e, "table-manager sync failed");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    const WEEK: i64 = 7 * 86_400;

    fn schema() -> SchemaConfig {
        SchemaConfig::parse(
            "configs:
  - from: 1970-01-01
    store: aws-dynamo
    schema: v11
    index: {prefix: index_, period: 168h, tags: {env: test}}
    chunks: {prefix: chunks_, period: 168h}
",
        )
        .unwrap()
    }

    #[test]
    fn expected_tables_grace_and_activity() {
        let cfg = TableManagerConfig::default();
        let now = 10 * WEEK + 100;
        let t = expected_tables(&cfg, &schema(), now);
        // Tables 0..=10 for index and chunks; the next one is not within the 10m grace yet.
        assert_eq!(t.len(), 22);
        let idx10 = t.iter().find(|d| d.name == "index_10").unwrap();
        assert_eq!((idx10.provisioned_write, idx10.provisioned_read), (1000, 300));
        assert_eq!(idx10.tags.get("env").map(String::as_str), Some("test"));
        let idx5 = t.iter().find(|d| d.name == "index_5").unwrap();
        assert_eq!(idx5.provisioned_write, 1, "old tables get inactive throughput");
        // Previous table stays active for max chunk age.
        let idx9 = t.iter().find(|d| d.name == "index_9").unwrap();
        assert_eq!(idx9.provisioned_write, 1000);

        // Within the grace period of the next week, its table is expected too.
        let t = expected_tables(&cfg, &schema(), 11 * WEEK - 300);
        assert!(t.iter().any(|d| d.name == "index_11"));
    }

    #[test]
    fn retention_limits_expected_tables() {
        let cfg = TableManagerConfig {
            retention_period: GoDuration(Duration::from_secs(2 * WEEK as u64)),
            ..Default::default()
        };
        let t = expected_tables(&cfg, &schema(), 10 * WEEK + 100);
        let names: Vec<&str> = t
            .iter()
            .map(|d| d.name.as_str())
            .filter(|n| n.starts_with("index_"))
            .collect();
        assert_eq!(names, vec!["index_10", "index_8", "index_9"]);
        assert!(cfg.validate(&schema()).is_ok());
        let bad = TableManagerConfig {
            retention_period: GoDuration(Duration::from_secs(3 * 86_400)),
            ..Default::default()
        };
        assert_eq!(
            bad.validate(&schema()),
            Err(TableManagerConfigError::RetentionNotMultipleOfPeriod)
        );
    }

    #[derive(Default)]
    struct FakeTables {
        tables: Mutex<BTreeMap<String, TableDesc>>,
    }

    #[async_trait::async_trait]
    impl TableClient for FakeTables {
        async fn list_tables(&self) -> Result<Vec<String>, StoreError> {
            Ok(self.tables.lock().keys().cloned().collect())
        }
        async fn create_table(&self, d: &TableDesc) -> Result<(), StoreError> {
            self.tables.lock().insert(d.name.clone(), d.clone());
            Ok(())
        }
        async fn delete_table(&self, name: &str) -> Result<(), StoreError> {
            self.tables.lock().remove(name);
            Ok(())
        }
        async fn describe_table(&self, name: &str) -> Result<Option<TableDesc>, StoreError> {
            Ok(self.tables.lock().get(name).cloned())
        }
        async fn update_table(&self, _c: &TableDesc, e: &TableDesc) -> Result<(), StoreError> {
            self.tables.lock().insert(e.name.clone(), e.clone());
            Ok(())
        }
    }

    #[tokio::test]
    async fn sync_creates_updates_and_deletes() {
        let client = Arc::new(FakeTables::default());
        client.tables.lock().insert(
            "index_1".into(),
            TableDesc {
                name: "index_1".into(),
                ..Default::default()
            },
        );
        client.tables.lock().insert(
            "unrelated".into(),
            TableDesc {
                name: "unrelated".into(),
                ..Default::default()
            },
        );
        let cfg = TableManagerConfig {
            retention_period: GoDuration(Duration::from_secs(2 * WEEK as u64)),
            retention_deletes_enabled: true,
            ..Default::default()
        };
        let m = server::Metrics::new();
        let tm = TableManager::new(cfg, schema(), client.clone(), &m).unwrap();
        let r = tm.sync_at(10 * WEEK + 100).await.unwrap();
        assert_eq!(r.created.len(), 6);
        assert_eq!(r.deleted, vec!["index_1".to_string()]);
        assert!(client.tables.lock().contains_key("unrelated"));
        // Week 10 becomes inactive once week 11 + max chunk age have passed: throughput is updated.
        let r = tm.sync_at(11 * WEEK + 13 * 3600).await.unwrap();
        assert!(r.updated.contains(&"index_10".to_string()), "{r:?}");
        assert_eq!(client.tables.lock()["index_10"].provisioned_write, 1);
        assert!(m.encode().contains("cortex_table_manager_syncs_total 2"));
    }

    #[tokio::test]
    async fn retention_deletes_disabled_keeps_tables() {
        let client = Arc::new(FakeTables::default());
        client.tables.lock().insert(
            "index_1".into(),
            TableDesc {
                name: "index_1".into(),
                ..Default::default()
            },
        );
        let cfg = TableManagerConfig {
            retention_period: GoDuration(Duration::from_secs(2 * WEEK as u64)),
            ..Default::default()
        };
        let tm = TableManager::new(cfg, schema(), client.clone(), &server::Metrics::new()).unwrap();
        let r = tm.sync_at(10 * WEEK + 100).await.unwrap();
        assert!(r.deleted.is_empty());
        assert!(client.tables.lock().contains_key("index_1"));
    }

    #[tokio::test]
    async fn embedded_tables() {
        let dir = tempfile::tempdir().unwrap();
        let idx = EmbeddedIndex::open(dir.path()).unwrap();
        let tm = TableManager::new(
            TableManagerConfig::default(),
            schema(),
            Arc::new(idx.clone()),
            &server::Metrics::new(),
        )
        .unwrap();
        tm.sync_at(WEEK + 10).await.unwrap();
        assert_eq!(
            idx.list_tables().unwrap(),
            vec!["chunks_0", "chunks_1", "index_0", "index_1"]
        );
    }
}
