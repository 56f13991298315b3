//! Where rule groups live (`-ruler-storage.backend`).
//!
//! - `filesystem` (the default, under `./data/rules`): one file per group at Cortex's
//!   object key `<tenant>/<base64url(namespace)>/<base64url(group)>`, holding the group's
//!   YAML; writes go to a temporary file renamed into place, so a crash never leaves a
//!   half-written group.
//! - `local`: Prometheus rule files at `<dir>/<tenant>/<namespace>.yaml`, read-only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::rulefmt::{self, RuleGroup};
use crate::RulerError;

/// A tenant's rules: namespace → groups, in name order.
pub type TenantRules = BTreeMap<String, Vec<RuleGroup>>;

#[async_trait]
pub trait RuleStore: Send + Sync {
    /// Tenants with at least one rule group.
    async fn list_tenants(&self) -> Result<Vec<String>, RulerError>;
    async fn tenant_rules(&self, tenant: &str) -> Result<TenantRules, RulerError>;
    async fn put_group(&self, tenant: &str, namespace: &str, group: &RuleGroup) -> Result<(), RulerError>;
    /// False if there was no such group.
    async fn delete_group(&self, tenant: &str, namespace: &str, group: &str) -> Result<bool, RulerError>;
    /// False if the namespace had no groups.
    async fn delete_namespace(&self, tenant: &str, namespace: &str) -> Result<bool, RulerError>;
}

fn io(what: &str, path: &Path, e: std::io::Error) -> RulerError {
    RulerError::Storage(format!("{what} {}: {e}", path.display()))
}

async fn read_dir_names(dir: &Path) -> Result<Vec<String>, RulerError> {
    let mut out = vec![];
    let mut rd = match tokio::fs::read_dir(dir).await {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io("listing", dir, e)),
    };
    while let Some(ent) = rd.next_entry().await.map_err(|e| io("listing", dir, e))? {
        if let Some(n) = ent.file_name().to_str() {
            if !n.starts_with('.') {
                out.push(n.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The embedded default: groups as files at Cortex's object keys.
pub struct FilesystemStore {
    root: PathBuf,
}

impl FilesystemStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FilesystemStore { root: root.into() }
    }

    fn namespace_dir(&self, tenant: &str, namespace: &str) -> PathBuf {
        self.root.join(tenant).join(URL_SAFE_NO_PAD.encode(namespace))
    }
}

fn decode_name(s: &str) -> Option<String> {
    String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()
}

#[async_trait]
impl RuleStore for FilesystemStore {
    async fn list_tenants(&self) -> Result<Vec<String>, RulerError> {
        let mut out = vec![];
        for t in read_dir_names(&self.root).await? {
            if !read_dir_names(&self.root.join(&t)).await?.is_empty() {
                out.push(t);
            }
        }
        Ok(out)
    }

    async fn tenant_rules(&self, tenant: &str) -> Result<TenantRules, RulerError> {
        let mut out = TenantRules::new();
        let tdir = self.root.join(tenant);
        for ns_key in read_dir_names(&tdir).await? {
            let Some(ns) = decode_name(&ns_key) else { continue };
            let mut groups = vec![];
            for g_key in read_dir_names(&tdir.join(&ns_key)).await? {
                if decode_name(&g_key).is_none() {
                    continue;
                }
                let p = tdir.join(&ns_key).join(&g_key);
                let text = tokio::fs::read_to_string(&p).await.map_err(|e| io("reading", &p, e))?;
                let g = rulefmt::parse_group(&text)
                    .map_err(|e| RulerError::Storage(format!("stored group {}: {e}", p.display())))?;
                groups.push(g);
            }
            if !groups.is_empty() {
                groups.sort_by(|a, b| a.name.cmp(&b.name));
                out.insert(ns, groups);
            }
        }
        Ok(out)
    }

    async fn put_group(&self, tenant: &str, namespace: &str, group: &RuleGroup) -> Result<(), RulerError> {
        let dir = self.namespace_dir(tenant, namespace);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io("creating", &dir, e))?;
        let text = serde_saphyr::to_string(group).map_err(|e| RulerError::Storage(e.to_string()))?;
        let key = URL_SAFE_NO_PAD.encode(&group.name);
        let tmp = dir.join(format!(".{key}.tmp"));
        tokio::fs::write(&tmp, text).await.map_err(|e| io("writing", &tmp, e))?;
        let dst = dir.join(key);
        tokio::fs::rename(&tmp, &dst).await.map_err(|e| io("renaming", &dst, e))
    }

    async fn delete_group(&self, tenant: &str, namespace: &str, group: &str) -> Result<bool, RulerError> {
        let dir = self.namespace_dir(tenant, namespace);
        let p = dir.join(URL_SAFE_NO_PAD.encode(group));
        match tokio::fs::remove_file(&p).await {
            Ok(()) => {
                // An empty namespace directory is not a namespace.
                let _ = tokio::fs::remove_dir(&dir).await;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io("deleting", &p, e)),
        }
    }

    async fn delete_namespace(&self, tenant: &str, namespace: &str) -> Result<bool, RulerError> {
        let dir = self.namespace_dir(tenant, namespace);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io("deleting", &dir, e)),
        }
    }
}

/// Prometheus rule files per tenant, maintained outside Cortex; read-only.
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalStore { dir: dir.into() }
    }
}

#[async_trait]
impl RuleStore for LocalStore {
    async fn list_tenants(&self) -> Result<Vec<String>, RulerError> {
        let mut out = vec![];
        for t in read_dir_names(&self.dir).await? {
            if tokio::fs::metadata(self.dir.join(&t)).await.is_ok_and(|m| m.is_dir()) {
                out.push(t);
            }
        }
        Ok(out)
    }

    async fn tenant_rules(&self, tenant: &str) -> Result<TenantRules, RulerError> {
        let mut out = TenantRules::new();
        let tdir = self.dir.join(tenant);
        for file in read_dir_names(&tdir).await? {
            let ns = file
                .strip_suffix(".yaml")
                .or_else(|| file.strip_suffix(".yml"))
                .unwrap_or(&file)
                .to_string();
            let p = tdir.join(&file);
            let text = tokio::fs::read_to_string(&p).await.map_err(|e| io("reading", &p, e))?;
            let f = rulefmt::parse_file(&text)
                .map_err(|e| RulerError::Storage(format!("rule file {}: {e}", p.display())))?;
            out.insert(ns, f.groups);
        }
        Ok(out)
    }

    async fn put_group(&self, _: &str, _: &str, _: &RuleGroup) -> Result<(), RulerError> {
        Err(RulerError::ReadOnlyStore)
    }

    async fn delete_group(&self, _: &str, _: &str, _: &str) -> Result<bool, RulerError> {
        Err(RulerError::ReadOnlyStore)
    }

    async fn delete_namespace(&self, _: &str, _: &str) -> Result<bool, RulerError> {
        Err(RulerError::ReadOnlyStore)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str) -> RuleGroup {
        rulefmt::parse_group(&format!("name: {name}\nrules:\n- record: r\n  expr: up\n")).unwrap()
    }

    #[tokio::test]
    async fn filesystem_store_uses_cortex_keys_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let s = FilesystemStore::new(dir.path());
        assert!(s.list_tenants().await.unwrap().is_empty());
        s.put_group("t1", "my/ns", &group("g1")).await.unwrap();
        s.put_group("t1", "my/ns", &group("g0")).await.unwrap();
        s.put_group("t2", "other", &group("g")).await.unwrap();
        // rules/<tenant>/<base64url(namespace)>/<base64url(group)>
        assert!(dir.path().join("t1").join("bXkvbnM").join("ZzE").is_file());
        assert_eq!(s.list_tenants().await.unwrap(), vec!["t1", "t2"]);
        let r = s.tenant_rules("t1").await.unwrap();
        let names: Vec<_> = r["my/ns"].iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, vec!["g0", "g1"]);
        assert!(s.delete_group("t1", "my/ns", "g1").await.unwrap());
        assert!(!s.delete_group("t1", "my/ns", "g1").await.unwrap());
        assert!(s.delete_namespace("t1", "my/ns").await.unwrap());
        assert!(s.tenant_rules("t1").await.unwrap().is_empty());
        assert_eq!(s.list_tenants().await.unwrap(), vec!["t2"]);
    }

    #[tokio::test]
    async fn local_store_reads_rule_files_and_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("t1")).unwrap();
        std::fs::write(
            dir.path().join("t1/alerts.yaml"),
            "groups:\n- name: a\n  rules:\n  - alert: X\n    expr: up == 0\n",
        )
        .unwrap();
        let s = LocalStore::new(dir.path());
        assert_eq!(s.list_tenants().await.unwrap(), vec!["t1"]);
        assert_eq!(s.tenant_rules("t1").await.unwrap()["alerts"][0].name, "a");
        assert!(matches!(
            s.put_group("t1", "x", &group("g")).await,
            Err(RulerError::ReadOnlyStore)
        ));
    }
}
