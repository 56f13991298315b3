//! The index read cache (`-store.index-cache-read.*`, spec §4.8): caches whole hash rows as a
//! Cortex `ReadBatch` protobuf under `hex(FNV-1a-64(table 0xff hash))`, valid for
//! `-store.index-cache-validity`; queries are answered by filtering the cached row locally.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{IndexClient, IndexRow};
use crate::cache::Cache;
use crate::keys::fnv64a_hex;
use crate::schema::{IndexEntry, IndexQuery};
use crate::StoreError;

/// Cortex `ReadBatch` (pkg/chunk/storage/caching_index_client.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadBatch {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<CacheEntry>,
    /// `table 0xff hash`; a proto `string` in Cortex, declared bytes here (same wire encoding) because
    /// the 0xff separator is not valid UTF-8.
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
    /// Unix nanoseconds after which the row must be re-read.
    #[prost(int64, tag = "3")]
    pub expiry: i64,
    #[prost(int32, tag = "4")]
    pub cardinality: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CacheEntry {
    #[prost(bytes = "bytes", tag = "1")]
    pub column: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

pub struct CachingIndexClient {
    inner: Arc<dyn IndexClient>,
    cache: Arc<dyn Cache>,
    validity: Duration,
}

fn raw_row_key(q: &IndexQuery) -> Vec<u8> {
    let mut raw = Vec::with_capacity(q.table.len() + 1 + q.hash.len());
    raw.extend_from_slice(q.table.as_bytes());
    raw.push(0xff);
    raw.extend_from_slice(q.hash.as_bytes());
    raw
}

fn row_key(q: &IndexQuery) -> String {
    fnv64a_hex(&raw_row_key(q))
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl CachingIndexClient {
    pub fn new(inner: Arc<dyn IndexClient>, cache: Arc<dyn Cache>, validity: Duration) -> Self {
        CachingIndexClient { inner, cache, validity }
    }
}

#[async_trait::async_trait]
impl IndexClient for CachingIndexClient {
    async fn batch_write(&self, entries: Vec<IndexEntry>) -> Result<(), StoreError> {
        self.inner.batch_write(entries).await
    }

    async fn query(&self, queries: &[IndexQuery]) -> Result<Vec<Vec<IndexRow>>, StoreError> {
        let keys: Vec<String> = queries.iter().map(row_key).collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        let fetched = self.cache.fetch(unique).await;
        let now = now_ns();
        let mut rows: std::collections::HashMap<String, Vec<IndexRow>> = std::collections::HashMap::new();
        for (k, buf) in fetched.found {
            let Ok(rb) = <ReadBatch as prost::Message>::decode(buf) else {
                continue;
            };
            // The key check guards against FNV collisions between rows.
            let want = queries
                .iter()
                .zip(&keys)
                .find(|(_, key)| **key == k)
                .map(|(q, _)| raw_row_key(q));
            if Some(&rb.key) != want.as_ref() || (rb.expiry != 0 && rb.expiry < now) {
                continue;
            }
            rows.insert(
                k,
                rb.entries
                    .into_iter()
                    .map(|e| IndexRow {
                        range: e.column,
                        value: e.value,
                    })
                    .collect(),
            );
        }
        // Read the missing rows whole, so one cached row serves every query shape on it.
        let mut missing: Vec<(String, IndexQuery)> = Vec::new();
        for (q, k) in queries.iter().zip(&keys) {
            if !rows.contains_key(k) && !missing.iter().any(|(mk, _)| mk == k) {
                missing.push((
                    k.clone(),
                    IndexQuery {
                        table: q.table.clone(),
                        hash: q.hash.clone(),
                        ..Default::default()
                    },
                ));
            }
        }
        if !missing.is_empty() {
            let whole: Vec<IndexQuery> = missing.iter().map(|(_, q)| q.clone()).collect();
            let results = self.inner.query(&whole).await?;
            let expiry = now + self.validity.as_nanos() as i64;
            let mut to_store = Vec::with_capacity(missing.len());
            for ((k, q), r) in missing.into_iter().zip(results) {
                let rb = ReadBatch {
                    entries: r
                        .iter()
                        .map(|row| CacheEntry {
                            column: row.range.clone(),
                            value: row.value.clone(),
                        })
                        .collect(),
                    key: raw_row_key(&q),
                    expiry,
                    cardinality: r.len() as i32,
                };
                to_store.push((k.clone(), Bytes::from(prost::Message::encode_to_vec(&rb))));
                rows.insert(k, r);
            }
            self.cache.store(to_store).await;
        }
        Ok(queries
            .iter()
            .zip(&keys)
            .map(|(q, k)| {
                rows.get(k)
                    .map(|r| {
                        r.iter()
                            .filter(|row| q.matches(&row.range, &row.value))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect())
    }
}
