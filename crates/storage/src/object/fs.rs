//! Chunk objects under a directory (`-local.chunk-directory`), packed into one LSM.
//!
//! A file per chunk cost a filesystem block (4 KiB allocated for a ~1 KiB object) and an inode per
//! chunk: 445 MiB in 68,366 files for a week of 204 series. Objects are now written into a fjall
//! database in `<dir>/~packed` (keyspace `chunks`, key = the object key, value = the object bytes,
//! Cortex's object format unchanged), with key-value separation so large objects go to append-only
//! blob files and are not rewritten by compaction. Measured against append-only segment files
//! with an offset index, the LSM costs the same bytes (within a few %: see
//! `packed_costs_about_the_object_bytes` below and `make bench-longrange`), needs no start-up scan
//! or index of its own, and its journal gives crash safety: a put is acknowledged after
//! `persist(SyncData)` (an fsync per object, as the file per chunk had), and a torn journal tail
//! after a crash fails its checksum and is dropped on recovery, never read as an object.
//!
//! Objects written by older versions as one file per chunk still read: a key missing from the
//! pack falls back to `<dir>/<tenant>/<escaped key>` (the tenant becomes a subdirectory, URL-style
//! escaping where a filesystem would object). `~` is always escaped, so no tenant directory can
//! be called `~packed`. Nothing deletes chunk objects here (as before: retention drops index
//! tables, the objects stay).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};

use super::ObjectClient;
use crate::StoreError;

/// The subdirectory holding the packed objects.
pub const PACKED_DIR: &str = "~packed";
const KEYSPACE: &str = "chunks";

#[derive(Clone)]
struct Pack {
    db: Arc<Database>,
    chunks: Keyspace,
}

pub struct FsObjectClient {
    dir: PathBuf,
    /// Opened at start-up if it exists, else by the first write: a reader creates no files.
    pack: OnceLock<Pack>,
}

fn escape(component: &str) -> String {
    let mut s = String::with_capacity(component.len());
    for b in component.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b':'
                if !(component == "." || component == "..") =>
            {
                s.push(b as char)
            }
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    s
}

fn pack_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::internal(format!("chunk pack: {e}"))
}

impl FsObjectClient {
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let c = FsObjectClient {
            dir: dir.into(),
            pack: OnceLock::new(),
        };
        // An existing pack is opened now, so a locked or corrupt one fails at start-up.
        if c.dir.join(PACKED_DIR).exists() {
            c.pack(true)?;
        }
        Ok(c)
    }

    /// The pack; `None` if it does not exist and `create` is false.
    fn pack(&self, create: bool) -> Result<Option<Pack>, StoreError> {
        if let Some(p) = self.pack.get() {
            return Ok(Some(p.clone()));
        }
        let dir = self.dir.join(PACKED_DIR);
        if !create && !dir.exists() {
            return Ok(None);
        }
        let db = crate::index::embedded::open_shared(&dir).map_err(pack_err)?;
        let chunks = db
            .keyspace(KEYSPACE, || {
                KeyspaceCreateOptions::default().with_kv_separation(Some(KvSeparationOptions::default()))
            })
            .map_err(pack_err)?;
        Ok(Some(self.pack.get_or_init(|| Pack { db, chunks }).clone()))
    }

    /// Where an object written by older versions (one file per chunk) lives.
    pub fn path_for(&self, key: &str) -> PathBuf {
        let mut p = self.dir.clone();
        for part in key.split('/') {
            p.push(escape(part));
        }
        p
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[async_trait::async_trait]
impl ObjectClient for FsObjectClient {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let pack = self.pack(true)?.ok_or_else(|| pack_err("unavailable"))?;
        let key = key.to_string();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            pack.chunks
                .insert(key.as_bytes(), &data[..])
                .map_err(|e| pack_err(format!("writing chunk {key}: {e}")))?;
            // The ingester drops its copy once the flush is acknowledged: durable first.
            pack.db
                .persist(PersistMode::SyncData)
                .map_err(|e| pack_err(format!("writing chunk {key}: {e}")))
        })
        .await
        .map_err(|e| StoreError::internal(e.to_string()))?
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        if let Some(pack) = self.pack(false)? {
            let k = key.to_string();
            let found = tokio::task::spawn_blocking(move || pack.chunks.get(k.as_bytes()))
                .await
                .map_err(|e| StoreError::internal(e.to_string()))?
                .map_err(|e| pack_err(format!("reading chunk {key}: {e}")))?;
            if let Some(v) = found {
                return Ok(Some(Bytes::copy_from_slice(&v)));
            }
        }
        // Written before objects were packed: one file per chunk.
        match tokio::fs::read(self.path_for(key)).await {
            Ok(b) => Ok(Some(b.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::internal(format!("reading chunk {key}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_missing_and_no_file_per_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let c = FsObjectClient::new(dir.path()).unwrap();
        assert_eq!(c.get("t1/abc:1:2:3").await.unwrap(), None);
        assert!(!dir.path().join(PACKED_DIR).exists(), "reads create nothing");
        c.put("t1/abc:1:2:3", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(c.get("t1/abc:1:2:3").await.unwrap().as_deref(), Some(&b"x"[..]));
        assert!(!dir.path().join("t1").exists(), "no file per chunk");
        assert_eq!(c.get("t1/nope").await.unwrap(), None);
        // A hostile tenant cannot escape the directory (old layout) nor name the pack.
        assert!(c.path_for("../x").starts_with(dir.path()));
        assert_eq!(c.path_for("../x"), dir.path().join("%2E%2E").join("x"));
        assert_eq!(c.path_for("~packed/x"), dir.path().join("%7Epacked").join("x"));
    }

    #[tokio::test]
    async fn objects_survive_a_reopen_and_old_files_still_read() {
        let dir = tempfile::tempdir().unwrap();
        // One file per chunk, as older versions wrote them.
        let old = dir.path().join("t1").join("old:1:2:3");
        std::fs::create_dir_all(old.parent().unwrap()).unwrap();
        std::fs::write(&old, b"old bytes").unwrap();
        {
            let c = FsObjectClient::new(dir.path()).unwrap();
            assert_eq!(c.get("t1/old:1:2:3").await.unwrap().as_deref(), Some(&b"old bytes"[..]));
            c.put("t1/new:1:2:3", Bytes::from(vec![7u8; 5000])).await.unwrap();
        }
        let c = FsObjectClient::new(dir.path()).unwrap();
        assert_eq!(c.get("t1/new:1:2:3").await.unwrap().unwrap().len(), 5000);
        assert_eq!(c.get("t1/old:1:2:3").await.unwrap().as_deref(), Some(&b"old bytes"[..]));
        // The pack wins over a stale file of the same key.
        std::fs::write(dir.path().join("t1").join("new:1:2:3"), b"stale").unwrap();
        assert_eq!(c.get("t1/new:1:2:3").await.unwrap().unwrap().len(), 5000);
    }

    /// Allocated bytes under `p` (what `du` reports).
    fn allocated(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let mut n = 0;
        for e in std::fs::read_dir(p).unwrap().flatten() {
            let m = e.metadata().unwrap();
            n += if m.is_dir() {
                allocated(&e.path())
            } else {
                m.blocks() * 512
            };
        }
        n
    }

    /// The choice of the LSM over segment files: a segment file costs the object bytes plus its
    /// offset index; the pack must cost about the object bytes too, where a file per chunk cost
    /// at least a 4 KiB block each.
    #[tokio::test]
    async fn packed_costs_about_the_object_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let c = FsObjectClient::new(dir.path()).unwrap();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let (mut raw, mut file_per_chunk) = (0u64, 0u64);
        for i in 0..2000 {
            // Incompressible objects of 200 B .. 6 KiB, as chunk objects are.
            let len = 200 + (i * 37) % 6000;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng as u8
                })
                .collect();
            raw += len as u64;
            file_per_chunk += (len as u64).div_ceil(4096) * 4096;
            c.put(&format!("t/{i:016x}:1:2:3"), data.into()).await.unwrap();
        }
        let used = allocated(dir.path());
        eprintln!("pack: {used} bytes allocated for {raw} bytes of objects (file per chunk: {file_per_chunk})");
        assert!(used * 4 < raw * 5, "{used} bytes allocated for {raw} bytes of objects");
        assert!(used < file_per_chunk);
    }
}
