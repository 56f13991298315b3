//! The `storage:` config section and the builder that turns it into a [`ChunkStore`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use model::GoDuration;
use serde::{Deserialize, Serialize};
use server::config::Flag;

use crate::cache::{self, CacheConfig};
use crate::index::caching::CachingIndexClient;
use crate::index::embedded::EmbeddedIndex;
use crate::index::IndexClient;
use crate::object::fs::FsObjectClient;
use crate::object::ObjectClient;
use crate::schema::Schema;
use crate::schema_config::{IndexStoreKind, ObjectStoreKind, SchemaConfig};
use crate::store::{PeriodStore, SeriesStore, StoreLimits};
use crate::StoreError;

/// DynamoDB client options (`-dynamodb.*`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DynamoConfig {
    /// `dynamodb://key:secret@region` (real AWS), or an `http(s)://key:secret@host:port` endpoint.
    pub dynamodb_url: server::secret::SecretUrl,
    pub min_backoff: GoDuration,
    pub max_backoff: GoDuration,
    pub max_retries: u32,
}

impl Default for DynamoConfig {
    fn default() -> Self {
        DynamoConfig {
            dynamodb_url: Default::default(),
            min_backoff: GoDuration(Duration::from_millis(100)),
            max_backoff: GoDuration(Duration::from_secs(50)),
            max_retries: 20,
        }
    }
}

/// S3 client options (`-s3.*`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct S3Config {
    /// `s3://key:secret@region/bucket` or `http://key:secret@host:port/bucket`.
    pub s3: server::secret::SecretUrl,
    pub s3forcepathstyle: bool,
    /// Comma-separated bucket list overriding the URL's bucket (chosen by FNV-1a-32 of the key).
    pub bucketnames: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AwsConfig {
    pub dynamodb: DynamoConfig,
    #[serde(flatten)]
    pub s3: S3Config,
}

/// `storage:` — the chunk store used by ingesters (flush), queriers and the table-manager.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct StorageConfig {
    /// `-schema-config-file`; empty = the embedded single-process default (v11, one period).
    pub schema_config_file: String,
    /// The schema inline (Cortex's top-level `schema:`); when it has periods it wins over
    /// `-schema-config-file`, as in Cortex.
    pub schema: SchemaConfig,
    pub aws: AwsConfig,
    /// Embedded index directory (`-boltdb.dir`, the name Cortex's single-process index used).
    pub boltdb_directory: String,
    /// Chunk directory of the filesystem object store (`-local.chunk-directory`).
    pub filesystem_directory: String,
    pub index_cache_validity: GoDuration,
    pub index_queries_cache_config: CacheConfig,
    pub chunk_cache_config: CacheConfig,
    pub write_dedupe_cache_config: CacheConfig,
    pub max_query_length: GoDuration,
    pub max_chunks_per_query: usize,
    pub cardinality_limit: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            schema_config_file: String::new(),
            schema: SchemaConfig::default(),
            aws: AwsConfig::default(),
            boltdb_directory: "./data/index".into(),
            filesystem_directory: "./data/chunks".into(),
            index_cache_validity: GoDuration(Duration::from_secs(300)),
            index_queries_cache_config: CacheConfig::default(),
            chunk_cache_config: CacheConfig::default(),
            write_dedupe_cache_config: CacheConfig::default(),
            max_query_length: GoDuration(Duration::ZERO),
            max_chunks_per_query: 2_000_000,
            cardinality_limit: 100_000,
        }
    }
}

const BASE_FLAGS: &[Flag] = &[
    Flag::new("schema-config-file", "schema_config_file", "The path to the schema config file."),
    Flag::new(
        "dynamodb.url",
        "aws.dynamodb.dynamodb_url",
        "DynamoDB endpoint URL with escaped Key and Secret encoded: dynamodb://key:secret@region, or an http(s) URL for a local DynamoDB.",
    ),
    Flag::new("dynamodb.min-backoff", "aws.dynamodb.min_backoff", "Minimum backoff time."),
    Flag::new("dynamodb.max-backoff", "aws.dynamodb.max_backoff", "Maximum backoff time."),
    Flag::new("dynamodb.max-retries", "aws.dynamodb.max_retries", "Maximum number of times to retry an operation."),
    Flag::new(
        "s3.url",
        "aws.s3",
        "S3 endpoint URL with escaped Key and Secret encoded: s3://key:secret@region/bucket, or http://key:secret@host:port/bucket.",
    ),
    Flag::new("s3.force-path-style", "aws.s3forcepathstyle", "Set this to true to force the request to use path-style addressing."),
    Flag::new("s3.buckets", "aws.bucketnames", "Comma separated list of bucket names to evenly distribute chunks over."),
    Flag::new("boltdb.dir", "boltdb_directory", "Location of the embedded index files."),
    Flag::new("local.chunk-directory", "filesystem_directory", "Directory to store chunks in."),
    Flag::new(
        "store.index-cache-validity",
        "index_cache_validity",
        "Cache validity for active index entries. Should be no higher than -ingester.max-chunk-idle.",
    ),
    Flag::new(
        "store.max-query-length",
        "max_query_length",
        "Limit the query time range (end - start time). 0 to disable.",
    ),
    Flag::new(
        "store.query-chunk-limit",
        "max_chunks_per_query",
        "Maximum number of chunks that can be fetched in a single query. 0 to disable.",
    ),
    Flag::new(
        "store.cardinality-limit",
        "cardinality_limit",
        "Cardinality limit for index queries. 0 to disable.",
    ),
];

const INDEX_READ_FLAGS: [Flag; 10] = crate::cache_flags!("store.index-cache-read", "index_queries_cache_config");
const CHUNK_CACHE_FLAGS: [Flag; 10] = crate::cache_flags!("store.chunks-cache", "chunk_cache_config");
const WRITE_DEDUPE_FLAGS: [Flag; 10] = crate::cache_flags!("store.index-cache-write", "write_dedupe_cache_config");

const ALL_FLAGS: [Flag; 44] =
    server::config::concat_flags(&[BASE_FLAGS, &INDEX_READ_FLAGS, &CHUNK_CACHE_FLAGS, &WRITE_DEDUPE_FLAGS]);

impl StorageConfig {
    pub const FLAGS: &'static [Flag] = &ALL_FLAGS;

    /// The inline schema if it has periods (Cortex's `SchemaConfig.Load`), else the file, else
    /// the embedded single-process default.
    pub fn schema(&self) -> Result<SchemaConfig, StoreError> {
        if !self.schema.configs.is_empty() {
            let mut s = self.schema.clone();
            s.validate()
                .map_err(|e| StoreError::bad_request(format!("inline schema: {e}")))?;
            return Ok(s);
        }
        if self.schema_config_file.is_empty() {
            return Ok(SchemaConfig::embedded_default());
        }
        SchemaConfig::load_file(&self.schema_config_file).map_err(|e| StoreError::bad_request(e.to_string()))
    }

    pub fn limits(&self) -> StoreLimits {
        StoreLimits {
            max_query_length_ms: self.max_query_length.as_millis(),
            query_chunk_limit: self.max_chunks_per_query,
            cardinality_limit: self.cardinality_limit,
        }
    }
}

/// `storage:` flags, paths relative to the section.
pub const FLAGS: &[Flag] = StorageConfig::FLAGS;

/// Backends built once per process and shared by the store and the table-manager.
#[derive(Clone, Default)]
pub struct Backends {
    pub embedded: Option<EmbeddedIndex>,
    #[cfg(feature = "aws")]
    pub dynamo: Option<Arc<crate::index::dynamo::DynamoIndex>>,
    #[cfg(feature = "aws")]
    pub s3: Option<Arc<crate::object::s3::S3ObjectClient>>,
    pub fs: Option<Arc<FsObjectClient>>,
}

impl Backends {
    /// Opens the backends the schema's periods name.
    pub async fn open(
        cfg: &StorageConfig,
        schema: &SchemaConfig,
        metrics: &server::Metrics,
    ) -> Result<Self, StoreError> {
        let _ = metrics;
        let mut b = Backends::default();
        for p in &schema.configs {
            match p.index_store().map_err(|e| StoreError::bad_request(e.to_string()))? {
                IndexStoreKind::Embedded if b.embedded.is_none() => {
                    b.embedded = Some(EmbeddedIndex::open(&PathBuf::from(&cfg.boltdb_directory))?);
                }
                IndexStoreKind::Dynamo => {
                    #[cfg(feature = "aws")]
                    if b.dynamo.is_none() {
                        b.dynamo = Some(Arc::new(
                            crate::index::dynamo::DynamoIndex::new(&cfg.aws.dynamodb, metrics).await?,
                        ));
                    }
                    #[cfg(not(feature = "aws"))]
                    return Err(StoreError::bad_request(
                        "this build has no DynamoDB support (storage feature `aws`)",
                    ));
                }
                IndexStoreKind::Embedded => {}
            }
            match p.object_store().map_err(|e| StoreError::bad_request(e.to_string()))? {
                ObjectStoreKind::Filesystem if b.fs.is_none() => {
                    b.fs = Some(Arc::new(FsObjectClient::new(&cfg.filesystem_directory)?));
                }
                ObjectStoreKind::S3 => {
                    #[cfg(feature = "aws")]
                    if b.s3.is_none() {
                        b.s3 = Some(Arc::new(
                            crate::object::s3::S3ObjectClient::new(&cfg.aws.s3, metrics).await?,
                        ));
                    }
                    #[cfg(not(feature = "aws"))]
                    return Err(StoreError::bad_request(
                        "this build has no S3 support (storage feature `aws`)",
                    ));
                }
                ObjectStoreKind::Filesystem => {}
            }
        }
        Ok(b)
    }

    fn index_for(&self, kind: IndexStoreKind) -> Result<Arc<dyn IndexClient>, StoreError> {
        let missing = || StoreError::internal(format!("index backend {kind:?} not opened"));
        match kind {
            IndexStoreKind::Embedded => Ok(Arc::new(self.embedded.clone().ok_or_else(missing)?)),
            #[cfg(feature = "aws")]
            IndexStoreKind::Dynamo => Ok(self.dynamo.clone().ok_or_else(missing)?),
            #[cfg(not(feature = "aws"))]
            IndexStoreKind::Dynamo => Err(missing()),
        }
    }

    fn objects_for(&self, kind: ObjectStoreKind) -> Result<Arc<dyn ObjectClient>, StoreError> {
        let missing = || StoreError::internal(format!("object backend {kind:?} not opened"));
        match kind {
            ObjectStoreKind::Filesystem => Ok(self.fs.clone().ok_or_else(missing)?),
            #[cfg(feature = "aws")]
            ObjectStoreKind::S3 => Ok(self.s3.clone().ok_or_else(missing)?),
            #[cfg(not(feature = "aws"))]
            ObjectStoreKind::S3 => Err(missing()),
        }
    }
}

/// Builds the store of `cfg` (schema file, backends, caches, limits).
pub async fn build_store(
    cfg: &StorageConfig,
    metrics: &server::Metrics,
) -> Result<(Arc<SeriesStore>, Backends), StoreError> {
    let schema = cfg.schema()?;
    let backends = Backends::open(cfg, &schema, metrics).await?;
    let read_cache = cache::build("index-read", &cfg.index_queries_cache_config, metrics);
    let mut periods = Vec::with_capacity(schema.configs.len());
    for p in &schema.configs {
        let kind = p.index_store().map_err(|e| StoreError::bad_request(e.to_string()))?;
        let mut index = backends.index_for(kind)?;
        if let Some(c) = &read_cache {
            index = Arc::new(CachingIndexClient::new(index, c.clone(), cfg.index_cache_validity.0));
        }
        let objects = backends.objects_for(p.object_store().map_err(|e| StoreError::bad_request(e.to_string()))?)?;
        periods.push(PeriodStore {
            schema: Schema::new(p),
            index,
            objects,
        });
    }
    let store = SeriesStore::new(
        schema,
        periods,
        cache::build("chunks", &cfg.chunk_cache_config, metrics),
        cache::build("index-write", &cfg.write_dedupe_cache_config, metrics),
        cfg.limits(),
        metrics,
    );
    Ok((Arc::new(store), backends))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_complete_and_unique() {
        let mut names: Vec<&str> = FLAGS.iter().map(|f| f.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
        for f in [
            "store.chunks-cache.memcached.addresses",
            "store.index-cache-read.memcached.addresses",
            "store.index-cache-write.memcached.addresses",
            "dynamodb.url",
            "s3.url",
            "s3.force-path-style",
            "local.chunk-directory",
            "store.query-chunk-limit",
            "store.max-query-length",
            "store.cardinality-limit",
            "schema-config-file",
        ] {
            assert!(names.contains(&f), "{f}");
        }
    }

    #[test]
    fn flags_set_the_tree() {
        let args: Vec<String> = [
            "-store.chunks-cache.memcached.addresses=127.0.0.1:11211",
            "-s3.force-path-style=true",
            "-store.query-chunk-limit=5",
            "-store.max-query-length=24h",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c: StorageConfig = server::config::load(&args, FLAGS).unwrap();
        assert_eq!(c.chunk_cache_config.memcached.addresses, "127.0.0.1:11211");
        assert!(c.aws.s3.s3forcepathstyle);
        assert_eq!(c.limits().query_chunk_limit, 5);
        assert_eq!(c.limits().max_query_length_ms, 86_400_000);
    }
}
