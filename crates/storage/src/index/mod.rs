//! Index clients: where the index rows live (spec §4.5 "IndexQuery", §4.7 BatchWrite).

pub mod caching;
#[cfg(feature = "aws")]
pub mod dynamo;
pub mod embedded;

use bytes::Bytes;

use crate::schema::{IndexEntry, IndexQuery};
use crate::StoreError;

/// One row returned by a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexRow {
    pub range: Bytes,
    pub value: Bytes,
}

#[async_trait::async_trait]
pub trait IndexClient: Send + Sync {
    /// Writes all entries (idempotent: rewriting a row replaces it with the same bytes).
    async fn batch_write(&self, entries: Vec<IndexEntry>) -> Result<(), StoreError>;
    /// Rows of each query (same order as `queries`), range/value conditions applied.
    async fn query(&self, queries: &[IndexQuery]) -> Result<Vec<Vec<IndexRow>>, StoreError>;
}
