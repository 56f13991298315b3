//! The Cortex chunk store (spec §4, §5).
//!
//! - [`schema_config`]: the `-schema-config-file` periods and table naming.
//! - [`keys`], [`schema`]: byte-exact range-key helpers and the v9/v10/v11 index layouts.
//! - [`chunk_object`]: chunk objects (header + snappy-framed JSON metadata + payload) and external keys.
//! - [`index`], [`object`]: index clients (embedded fjall, DynamoDB) and object clients (filesystem, S3).
//! - [`cache`]: memcached / FIFO caches; [`store`]: the series store (write dedupe, query lookup).
//! - [`table_manager`]: creates, tags and expires the periodic tables.
//! - [`config`]: flags and the builder the binaries use.
//!
//! The AWS backends are behind the `aws` cargo feature so crates that only use the contract
//! ([`ChunkStore`]) do not compile the AWS SDK.

#[cfg(feature = "aws")]
pub mod aws;
pub mod cache;
pub mod chunk_object;
pub mod config;
#[cfg(test)]
mod cortex_fixture_tests;
pub mod index;
pub mod keys;
pub mod object;
pub mod schema;
pub mod schema_config;
pub mod store;
pub mod table_manager;

use model::{Labels, Matcher};

pub use config::{build_store, StorageConfig};
pub use schema_config::SchemaConfig;
pub use store::{SeriesStore, StoreLimits};

/// One flushed chunk of one series.
#[derive(Clone, Debug)]
pub struct ChunkEntry {
    pub tenant: String,
    pub fingerprint: u64,
    pub labels: Labels,
    pub from_ms: i64,
    pub through_ms: i64,
    pub encoding: i32,
    pub data: bytes::Bytes,
}

/// A store failure; `code` carries the HTTP meaning: 4xx user/limit errors (→ 422 on reads), 5xx ours.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    pub code: u16,
    pub message: String,
}

impl StoreError {
    pub fn internal(message: impl Into<String>) -> Self {
        StoreError {
            code: 500,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        StoreError {
            code: 400,
            message: message.into(),
        }
    }

    /// A per-tenant limit was hit (too many chunks, cardinality, query length).
    pub fn limit(message: impl Into<String>) -> Self {
        StoreError {
            code: 422,
            message: message.into(),
        }
    }
}

#[async_trait::async_trait]
pub trait ChunkStore: Send + Sync {
    /// Writes chunk objects then their index entries (spec §4.6, §4.7). Idempotent.
    async fn put(&self, chunks: Vec<ChunkEntry>) -> Result<(), StoreError>;
    /// Chunks of series matching all matchers that overlap [from, through] (spec §4.5).
    async fn get(
        &self,
        tenant: &str,
        from_ms: i64,
        through_ms: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<ChunkEntry>, StoreError>;
}
