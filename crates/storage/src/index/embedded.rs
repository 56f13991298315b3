//! The single-process index on fjall (an LSM tree: index writes are append-heavy and LSMs take
//! them without B-tree page rewrites). One fjall keyspace per index table, so the table-manager's
//! create/delete map onto keyspaces; row key = `hash 0x00 range`, value = the entry value.
//! Hash keys never contain NUL (tenant IDs, metric and label names, series IDs), so the separator is
//! unambiguous and a hash row is one contiguous key prefix.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use fjall::{Database, KeyspaceCreateOptions, PersistMode};

use super::{IndexClient, IndexRow};
use crate::schema::{IndexEntry, IndexQuery};
use crate::StoreError;

/// The directory is opened lazily: reads of a store nobody wrote yet find nothing without
/// creating files, and several in-process instances (tests) share one database per directory,
/// since fjall allows one owner per directory.
#[derive(Clone)]
pub struct EmbeddedIndex {
    dir: PathBuf,
    db: Arc<OnceLock<Arc<Database>>>,
}

fn registry() -> &'static parking_lot::Mutex<HashMap<PathBuf, Weak<Database>>> {
    static OPEN: OnceLock<parking_lot::Mutex<HashMap<PathBuf, Weak<Database>>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

/// The fjall database in `dir` (created if missing), shared by every user in this process: fjall
/// allows one owner per directory, and the packed chunk store opens its own database the same way.
pub(crate) fn open_shared(dir: &Path) -> Result<Arc<Database>, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let key = dir.canonicalize().map_err(|e| e.to_string())?;
    let mut open = registry().lock();
    if let Some(db) = open.get(&key).and_then(Weak::upgrade) {
        return Ok(db);
    }
    let db = Arc::new(Database::builder(&key).open().map_err(|e| e.to_string())?);
    open.insert(key, Arc::downgrade(&db));
    Ok(db)
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::internal(format!("embedded index: {e}"))
}

/// Marks the tables the table-manager created, so list/delete see only ours.
const TABLE_MARKER: &str = "__tables";

impl EmbeddedIndex {
    /// An index in `dir`; nothing is created until the first write.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let idx = EmbeddedIndex {
            dir: dir.to_path_buf(),
            db: Arc::new(OnceLock::new()),
        };
        // An existing index is opened now, so a locked or corrupt one fails at start-up.
        if dir.exists() {
            idx.db(true)?;
        }
        Ok(idx)
    }

    /// The database; `None` if it does not exist and `create` is false.
    fn db(&self, create: bool) -> Result<Option<Arc<Database>>, StoreError> {
        if let Some(db) = self.db.get() {
            return Ok(Some(db.clone()));
        }
        if !create && !self.dir.exists() {
            return Ok(None);
        }
        let db = open_shared(&self.dir).map_err(err)?;
        Ok(Some(self.db.get_or_init(|| db).clone()))
    }

    fn db_for_write(&self) -> Result<Arc<Database>, StoreError> {
        self.db(true)?.ok_or_else(|| err("index directory unavailable"))
    }

    fn row_key(hash: &str, range: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(hash.len() + 1 + range.len());
        k.extend_from_slice(hash.as_bytes());
        k.push(0);
        k.extend_from_slice(range);
        k
    }

    fn write_sync(&self, entries: Vec<IndexEntry>) -> Result<(), StoreError> {
        let db = self.db_for_write()?;
        let mut batch = db.batch();
        let mut handles: Vec<(String, fjall::Keyspace)> = Vec::new();
        for e in entries {
            let pos = match handles.iter().position(|(t, _)| *t == e.table) {
                Some(p) => p,
                None => {
                    let ks = db.keyspace(&e.table, KeyspaceCreateOptions::default).map_err(err)?;
                    handles.push((e.table.clone(), ks));
                    handles.len() - 1
                }
            };
            batch.insert(&handles[pos].1, Self::row_key(&e.hash, &e.range), e.value.to_vec());
        }
        batch.commit().map_err(err)?;
        // The ingester acknowledges a flush (and may drop its chunks) after this returns.
        db.persist(PersistMode::SyncData).map_err(err)
    }

    fn query_sync(&self, q: &IndexQuery) -> Result<Vec<IndexRow>, StoreError> {
        let Some(db) = self.db(false)? else {
            return Ok(Vec::new());
        };
        if q.table.is_empty() || q.table.len() > 255 || !db.keyspace_exists(&q.table) {
            return Ok(Vec::new());
        }
        let ks = db.keyspace(&q.table, KeyspaceCreateOptions::default).map_err(err)?;
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
        let Some(db) = self.db(false)? else {
            return Ok(Vec::new());
        };
        let marker = db.keyspace(TABLE_MARKER, KeyspaceCreateOptions::default).map_err(err)?;
        let mut out = Vec::new();
        for kv in marker.iter() {
            let k = kv.key().map_err(err)?;
            out.push(String::from_utf8_lossy(&k).into_owned());
        }
        Ok(out)
    }

    pub fn create_table(&self, name: &str) -> Result<(), StoreError> {
        let db = self.db_for_write()?;
        db.keyspace(name, KeyspaceCreateOptions::default).map_err(err)?;
        let marker = db.keyspace(TABLE_MARKER, KeyspaceCreateOptions::default).map_err(err)?;
        marker.insert(name, b"").map_err(err)?;
        Ok(())
    }

    pub fn delete_table(&self, name: &str) -> Result<(), StoreError> {
        let Some(db) = self.db(false)? else { return Ok(()) };
        if db.keyspace_exists(name) {
            let ks = db.keyspace(name, KeyspaceCreateOptions::default).map_err(err)?;
            db.delete_keyspace(ks).map_err(err)?;
        }
        let marker = db.keyspace(TABLE_MARKER, KeyspaceCreateOptions::default).map_err(err)?;
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
    async fn lazy_and_shared_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idx");
        let a = EmbeddedIndex::open(&path).unwrap();
        let q = IndexQuery {
            table: "t".into(),
            hash: "h".into(),
            ..Default::default()
        };
        assert!(a.query(std::slice::from_ref(&q)).await.unwrap()[0].is_empty());
        assert!(!path.exists(), "reads do not create the index");
        let b = EmbeddedIndex::open(&path).unwrap();
        a.batch_write(vec![entry("t", "h", b"a\0", b"1")]).await.unwrap();
        // A second instance in the same process shares the database instead of hitting its lock.
        assert_eq!(b.query(&[q]).await.unwrap()[0].len(), 1);
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
