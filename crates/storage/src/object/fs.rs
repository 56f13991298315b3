//! Chunk objects as files under a directory (`-local.chunk-directory`). Keys contain `/` (tenant
//! prefix) and `:`; the tenant becomes a subdirectory and the rest is the file name, URL-style
//! escaped where a filesystem would object.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::ObjectClient;
use crate::StoreError;

pub struct FsObjectClient {
    dir: PathBuf,
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

impl FsObjectClient {
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        // Directories are created by the first write, so a reader creates no files.
        Ok(FsObjectClient { dir: dir.into() })
    }

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
        let path = self.path_for(key);
        let ioerr = |e: std::io::Error| StoreError::internal(format!("writing chunk {key}: {e}"));
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(ioerr)?;
        }
        // Write-then-rename: a crash never leaves a torn object under the final name.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let tmp2 = tmp.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp2)?;
            f.write_all(&data)?;
            f.sync_data()
        })
        .await
        .map_err(|e| StoreError::internal(e.to_string()))?
        .map_err(ioerr)?;
        tokio::fs::rename(&tmp, &path).await.map_err(ioerr)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
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
    async fn put_get_missing() {
        let dir = tempfile::tempdir().unwrap();
        let c = FsObjectClient::new(dir.path()).unwrap();
        c.put("t1/abc:1:2:3", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(c.get("t1/abc:1:2:3").await.unwrap().as_deref(), Some(&b"x"[..]));
        assert!(dir.path().join("t1").join("abc:1:2:3").exists());
        assert_eq!(c.get("t1/nope").await.unwrap(), None);
        // A hostile tenant cannot escape the directory.
        assert!(c.path_for("../x").starts_with(dir.path()));
        assert_eq!(c.path_for("../x"), dir.path().join("%2E%2E").join("x"));
    }
}
