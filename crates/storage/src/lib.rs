//! The Cortex chunk store (spec §4, §5): the contract between the ingester's flush and the store lives here.

use model::{Labels, Matcher};

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
