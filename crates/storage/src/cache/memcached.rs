//! An async memcached client (text protocol) with Cortex's server selection: xxhash64 of the key,
//! jump consistent hash over the sorted server list. Async I/O keeps tokio workers free (the
//! `memcache` crate is blocking); each server has a bounded pool of idle connections. Every error
//! or timeout turns into misses / dropped writes: a memcached outage slows queries, never fails them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use model::GoDuration;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{Cache, Fetched};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MemcachedConfig {
    /// Comma-separated `host:port` list.
    pub addresses: String,
    pub timeout: GoDuration,
    pub max_idle_conns: usize,
    pub batch_size: usize,
    /// Item TTL; 0 = never expire.
    pub expiration: GoDuration,
    /// Items larger than this are not stored (0 = 1 MiB, memcached's default limit).
    pub max_item_size: usize,
}

impl Default for MemcachedConfig {
    fn default() -> Self {
        MemcachedConfig {
            addresses: String::new(),
            timeout: GoDuration(Duration::from_millis(100)),
            max_idle_conns: 16,
            batch_size: 1024,
            expiration: GoDuration(Duration::ZERO),
            max_item_size: 0,
        }
    }
}

/// Lamping & Veach jump consistent hash (the same as Cortex's `jumpHash`).
pub fn jump_hash(mut key: u64, buckets: usize) -> usize {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1i64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as usize
}

/// Memcached's key rules: ≤ 250 bytes, no whitespace or control characters.
fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 250 && k.bytes().all(|b| b > 0x20 && b != 0x7f)
}

type Conn = BufReader<TcpStream>;

struct Server {
    addr: String,
    idle: Mutex<Vec<Conn>>,
}

pub struct MemcachedClient {
    cfg: MemcachedConfig,
    servers: Vec<Arc<Server>>,
}

#[derive(Debug, thiserror::Error)]
enum McError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timeout")]
    Timeout,
    #[error("protocol: {0}")]
    Protocol(String),
}

impl MemcachedClient {
    pub fn new(cfg: MemcachedConfig) -> Self {
        let mut addrs: Vec<String> = cfg
            .addresses
            .split(',')
            .map(|s| s.trim().trim_start_matches("dns+").to_string())
            .filter(|s| !s.is_empty())
            .collect();
        addrs.sort();
        addrs.dedup();
        MemcachedClient {
            servers: addrs
                .into_iter()
                .map(|addr| {
                    Arc::new(Server {
                        addr,
                        idle: Mutex::new(Vec::new()),
                    })
                })
                .collect(),
            cfg,
        }
    }

    /// Index of the server that owns `key`.
    pub fn pick_server(&self, key: &str) -> usize {
        if self.servers.len() <= 1 {
            return 0;
        }
        jump_hash(xxhash_rust::xxh64::xxh64(key.as_bytes(), 0), self.servers.len())
    }

    fn timeout(&self) -> Duration {
        if self.cfg.timeout.0.is_zero() {
            Duration::from_millis(100)
        } else {
            self.cfg.timeout.0
        }
    }

    async fn with_conn<T, F>(&self, server: &Arc<Server>, op: F) -> Result<T, McError>
    where
        F: for<'c> FnOnce(&'c mut Conn) -> futures::future::BoxFuture<'c, Result<T, McError>>,
    {
        let pooled = server.idle.lock().pop();
        let timeout = self.timeout();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let s = tokio::time::timeout(timeout, TcpStream::connect(&server.addr))
                    .await
                    .map_err(|_| McError::Timeout)??;
                s.set_nodelay(true)?;
                BufReader::new(s)
            }
        };
        let r = tokio::time::timeout(timeout, op(&mut conn))
            .await
            .map_err(|_| McError::Timeout)
            .and_then(|r| r);
        // Only a connection that completed its exchange is in a known protocol state.
        if r.is_ok() {
            let mut idle = server.idle.lock();
            if idle.len() < self.cfg.max_idle_conns.max(1) {
                idle.push(conn);
            }
        }
        r
    }

    async fn get_multi(&self, server: &Arc<Server>, keys: Vec<String>) -> Result<HashMap<String, Bytes>, McError> {
        self.with_conn(server, move |c| {
            Box::pin(async move {
                let mut cmd = Vec::with_capacity(4 + keys.iter().map(|k| k.len() + 1).sum::<usize>() + 2);
                cmd.extend_from_slice(b"get");
                for k in &keys {
                    cmd.push(b' ');
                    cmd.extend_from_slice(k.as_bytes());
                }
                cmd.extend_from_slice(b"\r\n");
                c.get_mut().write_all(&cmd).await?;
                let mut out = HashMap::new();
                let mut line = String::new();
                loop {
                    line.clear();
                    if c.read_line(&mut line).await? == 0 {
                        return Err(McError::Protocol("connection closed".into()));
                    }
                    let l = line.trim_end();
                    if l == "END" {
                        return Ok(out);
                    }
                    let parts: Vec<&str> = l.split(' ').collect();
                    if parts.len() < 4 || parts[0] != "VALUE" {
                        return Err(McError::Protocol(l.to_string()));
                    }
                    let len: usize = parts[3].parse().map_err(|_| McError::Protocol(l.to_string()))?;
                    let key = parts[1].to_string();
                    let mut buf = vec![0u8; len + 2];
                    c.read_exact(&mut buf).await?;
                    buf.truncate(len);
                    out.insert(key, Bytes::from(buf));
                }
            })
        })
        .await
    }

    async fn set(&self, server: &Arc<Server>, key: String, value: Bytes) -> Result<(), McError> {
        let exp = self.cfg.expiration.0.as_secs();
        self.with_conn(server, move |c| {
            Box::pin(async move {
                let mut cmd = Vec::with_capacity(key.len() + value.len() + 48);
                cmd.extend_from_slice(format!("set {key} 0 {exp} {}\r\n", value.len()).as_bytes());
                cmd.extend_from_slice(&value);
                cmd.extend_from_slice(b"\r\n");
                c.get_mut().write_all(&cmd).await?;
                let mut line = String::new();
                c.read_line(&mut line).await?;
                match line.trim_end() {
                    "STORED" => Ok(()),
                    other => Err(McError::Protocol(other.to_string())),
                }
            })
        })
        .await
    }
}

#[async_trait::async_trait]
impl Cache for MemcachedClient {
    async fn store(&self, items: Vec<(String, Bytes)>) {
        if self.servers.is_empty() {
            return;
        }
        let max = if self.cfg.max_item_size == 0 {
            1 << 20
        } else {
            self.cfg.max_item_size
        };
        let mut per_server: Vec<Vec<(String, Bytes)>> = vec![Vec::new(); self.servers.len()];
        for (k, v) in items {
            if valid_key(&k) && v.len() <= max {
                per_server[self.pick_server(&k)].push((k, v));
            }
        }
        let futs = per_server
            .into_iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .map(|(i, items)| {
                let server = self.servers[i].clone();
                async move {
                    for (k, v) in items {
                        if let Err(e) = self.set(&server, k, v).await {
                            tracing::debug!(server = %server.addr, error = %e, "memcached set failed");
                            // The server is likely down: skip the rest of its items rather than
                            // paying a timeout for each.
                            break;
                        }
                    }
                }
            });
        join_all(futs).await;
    }

    async fn fetch(&self, keys: Vec<String>) -> Fetched {
        if self.servers.is_empty() {
            return Fetched {
                found: Vec::new(),
                missing: keys,
            };
        }
        let mut per_server: Vec<Vec<String>> = vec![Vec::new(); self.servers.len()];
        for k in keys.iter().filter(|k| valid_key(k)) {
            per_server[self.pick_server(k)].push(k.clone());
        }
        let batch = self.cfg.batch_size.max(1);
        let mut futs = Vec::new();
        for (i, ks) in per_server.into_iter().enumerate() {
            for chunk in ks.chunks(batch) {
                let server = self.servers[i].clone();
                let chunk = chunk.to_vec();
                futs.push(async move {
                    match self.get_multi(&server, chunk).await {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::debug!(server = %server.addr, error = %e, "memcached get failed");
                            HashMap::new()
                        }
                    }
                });
            }
        }
        let mut found_map: HashMap<String, Bytes> = HashMap::new();
        for m in join_all(futs).await {
            found_map.extend(m);
        }
        let mut out = Fetched::default();
        for k in keys {
            match found_map.remove(&k) {
                Some(v) => out.found.push((k, v)),
                None => out.missing.push(k),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_hash_matches_reference() {
        // Reference values of the published algorithm (Lamping & Veach; same as Go's implementations).
        assert_eq!(jump_hash(0, 1), 0);
        assert_eq!(jump_hash(1, 1), 0);
        for k in 0..1000u64 {
            assert!(jump_hash(k, 7) < 7);
        }
        // Consistency: growing from n to n+1 buckets moves keys only to the new bucket.
        for k in 0..2000u64 {
            let a = jump_hash(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), 10);
            let b = jump_hash(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), 11);
            assert!(a == b || b == 10);
        }
        assert_eq!(jump_hash(0xdead_beef, 1024), jump_hash(0xdead_beef, 1024));
    }

    #[test]
    fn server_selection_uses_sorted_list() {
        let a = MemcachedClient::new(MemcachedConfig {
            addresses: "h2:1,h1:1,h3:1".into(),
            ..Default::default()
        });
        let b = MemcachedClient::new(MemcachedConfig {
            addresses: "h3:1,h1:1,h2:1".into(),
            ..Default::default()
        });
        for k in ["a", "b", "tenant/abc:1:2:3"] {
            assert_eq!(a.servers[a.pick_server(k)].addr, b.servers[b.pick_server(k)].addr);
        }
        let expected = jump_hash(xxhash_rust::xxh64::xxh64(b"a", 0), 3);
        assert_eq!(a.pick_server("a"), expected);
    }

    #[tokio::test]
    async fn closed_port_is_a_miss_not_an_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let c = MemcachedClient::new(MemcachedConfig {
            addresses: addr.to_string(),
            ..Default::default()
        });
        c.store(vec![("k".into(), Bytes::from_static(b"v"))]).await;
        let r = c.fetch(vec!["k".into()]).await;
        assert_eq!(r.missing, vec!["k".to_string()]);
    }

    #[test]
    fn key_rules() {
        assert!(valid_key("tenant/abc:1:2:3"));
        assert!(!valid_key("a b"));
        assert!(!valid_key(&"x".repeat(251)));
    }
}
