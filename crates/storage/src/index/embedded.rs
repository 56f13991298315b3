//! The single-process index on fjall (an LSM tree: index writes are append-heavy and LSMs take
//! them without B-tree page rewrites). One fjall keyspace per index table, so the table-manager's
//! create/delete map onto keyspaces; row key = `hash 0x00 range`, value = the entry value.
//! Hash keys never contain NUL (tenant IDs, metric and label names, series IDs), so the separator is
//! unambiguous and a hash row is one contiguous key prefix.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use fjall::{Database, KeyspaceCreateOptions, PersistMode};

use super::{IndexClient, IndexRow};
use crate::schema::{IndexEntry, IndexQuery};
use crate::StoreError;

#[derive(Clone)]
pub struct EmbeddedIndex {
    db: Arc<Database>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::internal(format!("embedded index: {e}"))
}

/// Marks the tables the table-manager created, so list/delete see only ours.
const TABLE_MARKER: &str = "__tables";

impl EmbeddedIndex {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(err)?;
        let db = Database::builder(dir).open().map_err(err)?;
        Ok(EmbeddedIndex { db: Arc::new(db) })
    }

    fn row_key(hash: &str, range: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(hash.len() + 1 + range.len());
        k.extend_from_slice(hash.as_bytes());
        k.push(0);
        k.extend_from_slice(range);
        k
    }

    fn write_sync(&self, entries: Vec<IndexEntry>) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        let mut tables: Vec<String> = Vec::new();
        for e in &entries {
            if !tables.contains(&e.table) {
                tables.push(e.table.clone());
            }
        }
        let handles = tables
            .iter()
            .map(|t| {
                self.db
                    .keyspace(t, KeyspaceCreateOptions::default)
                    .map(|h| (t.clone(), h))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        for e in entries {
            let (_, ks) = handles.iter().find(|(t, _)| *t == e.table).expect("opened above");
            batch.insert(ks, Self::row_key(&e.hash, &e.range), e.value.to_vec());
        }
        batch.commit().map_err(err)?;
        // The ingester acknowledges a flush (and may drop its chunks) after this returns.
        self.db.persist(PersistMode::SyncData).map_err(err)
    }

    fn query_sync(&self, q: &IndexQuery) -> Result<Vec<IndexRow>, StoreError> {
        if q.table.is_empty() || q.table.len() > 255 || !self.db.keyspace_exists(&q.table) {
            return Ok(Vec::new());
        }
        let ks = self
            .db
            .keyspace(&q.table, KeyspaceCreateOptions::default)
            .map_err(err)?;
        let prefix = Self::row_key(&q.hash, b"");
        let mut out = Vec::new();
        for kv in ks.prefix(&prefix) {
            let (k, v) = kv.into_inner().map_err(err)?;
            let range = &k[prefix.len()..];
            if q.matches(range, &v) {
                out.push(IndexRow {
                    range: Bytes::copy_from_slice(range),
                    value: Bytes::copy_from_slice(&v),
                });
            }
        }
        Ok(out)
    }

    // --- table operations for the table-manager ---

    pub fn list_tables(&self) -> Result<Vec<String>, StoreError> {
        let marker = self
            .db
            .keyspace(TABLE_MARKER, KeyspaceCreateOptions::default)
            .map_err(err)?;
        let mut out = Vec::new();
        for kv in marker.iter() {
            let k = kv.key().map_err(err)?;
            out.push(String::from_utf8_lossy(&k).into_owned());
        }
        Ok(out)
    }

    pub fn create_table(&self, name: &str) -> Result<(), StoreError> {
        self.db.keyspace(name, KeyspaceCreateOptions::default).map_err(err)?;
        let marker = self
            .db
            .keyspace(TABLE_MARKER, KeyspaceCreateOptions::default)
            .map_err(err)?;
        marker.insert(name, b"").map_err(err)?;
        Ok(())
    }

    pub fn delete_table(&self, name: &str) -> Result<(), StoreError> {
        if self.db.keyspace_exists(name) {
            let ks = self.db.keyspace(name, KeyspaceCreateOptions::default).map_err(err)?;
            self.db.delete_keyspace(ks).map_err(err)?;
        }
        let marker = self
            .db
            .keyspace(TABLE_MARKER, KeyspaceCreateOptions::default)
            .map_err(err)?;
        marker.remove(name).map_err(err)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl IndexClient for EmbeddedIndex {
    async fn batch_write(&self, entries: Vec<IndexEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.write_sync(entries))
            .await
            .map_err(err)?
    }

    async fn query(&self, queries: &[IndexQuery]) -> Result<Vec<Vec<IndexRow>>, StoreError> {
        let this = self.clone();
        let queries = queries.to_vec();
        tokio::task::spawn_blocking(move || queries.iter().map(|q| this.query_sync(q)).collect())
            .await
            .map_err(err)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(table: &str, hash: &str, range: &[u8], value: &[u8]) -> IndexEntry {
        IndexEntry {
            table: table.into(),
            hash: hash.into(),
            range: Bytes::copy_from_slice(range),
            value: Bytes::copy_from_slice(value),
        }
    }

    #[tokio::test]
    async fn write_query_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        {
            let idx = EmbeddedIndex::open(dir.path()).unwrap();
            idx.batch_write(vec![
                entry("t1", "h", b"a\0", b"1"),
                entry("t1", "h", b"b\0", b"2"),
                entry("t1", "hx", b"a\0", b"3"),
                entry("t2", "h", b"a\0", b"4"),
            ])
            .await
            .unwrap();
            let rows = idx
                .query(&[
                    IndexQuery {
                        table: "t1".into(),
                        hash: "h".into(),
                        ..Default::default()
                    },
                    IndexQuery {
                        table: "t1".into(),
                        hash: "h".into(),
                        range_start: Some(Bytes::from_static(b"b")),
                        ..Default::default()
                    },
                    IndexQuery {
                        table: "missing".into(),
                        hash: "h".into(),
                        ..Default::default()
                    },
                ])
                .await
                .unwrap();
            // "hx" is another row: the NUL separator keeps prefix scans inside one hash key.
            assert_eq!(rows[0].len(), 2);
            assert_eq!(&rows[1][0].value[..], b"2");
            assert!(rows[2].is_empty());
        }
        let idx = EmbeddedIndex::open(dir.path()).unwrap();
        let rows = idx
            .query(&[IndexQuery {
                table: "t2".into(),
                hash: "h".into(),
                ..Default::default()
            }])
            .await
            .unwrap();
        assert_eq!(&rows[0][0].value[..], b"4", "rows survive a reopen");
    }

    #[tokio::test]
    async fn tables() {
        let dir = tempfile::tempdir().unwrap();
        let idx = EmbeddedIndex::open(dir.path()).unwrap();
        idx.create_table("index_1").unwrap();
        idx.create_table("index_2").unwrap();
        assert_eq!(idx.list_tables().unwrap(), vec!["index_1", "index_2"]);
        idx.batch_write(vec![entry("index_1", "h", b"a\0", b"1")])
            .await
            .unwrap();
        idx.delete_table("index_1").unwrap();
        assert_eq!(idx.list_tables().unwrap(), vec!["index_2"]);
        let q = IndexQuery {
            table: "index_1".into(),
            hash: "h".into(),
            ..Default::default()
        };
        assert!(idx.query(&[q]).await.unwrap()[0].is_empty());
    }
}
