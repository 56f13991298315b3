//! Caches (spec §4.8): a generic best-effort key/value interface over memcached and an in-process
//! FIFO, optionally tiered. A cache never fails its caller: errors count as misses and are logged.

pub mod fifo;
pub mod memcached;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use serde::{Deserialize, Serialize};

pub use fifo::{FifoCache, FifoConfig};
pub use memcached::{MemcachedClient, MemcachedConfig};

/// Result of a multi-key fetch: found keys with their values, and the keys that were not found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Fetched {
    pub found: Vec<(String, Bytes)>,
    pub missing: Vec<String>,
}

#[async_trait::async_trait]
pub trait Cache: Send + Sync {
    async fn store(&self, items: Vec<(String, Bytes)>);
    async fn fetch(&self, keys: Vec<String>) -> Fetched;
}

/// One cache section (`-store.chunks-cache.*`, `-store.index-cache-read.*`, `-store.index-cache-write.*`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CacheConfig {
    pub enable_fifocache: bool,
    pub fifocache: FifoConfig,
    pub memcached: MemcachedConfig,
}

impl CacheConfig {
    pub fn is_enabled(&self) -> bool {
        self.enable_fifocache || !self.memcached.addresses.is_empty()
    }
}

/// Flags of one cache section, with the section's flag prefix and YAML path prefix baked in.
#[macro_export]
macro_rules! cache_flags {
    ($flag:literal, $path:literal) => {
        [
            server::config::Flag::new(
                concat!($flag, ".cache.enable-fifocache"),
                concat!($path, ".enable_fifocache"),
                "Enable in-memory cache.",
            ),
            server::config::Flag::new(
                concat!($flag, ".fifocache.max-size-items"),
                concat!($path, ".fifocache.max_size_items"),
                "Maximum number of entries in the cache.",
            ),
            server::config::Flag::new(
                concat!($flag, ".fifocache.max-size-bytes"),
                concat!($path, ".fifocache.max_size_bytes"),
                "Maximum memory size of the cache in bytes.",
            ),
            server::config::Flag::new(
                concat!($flag, ".fifocache.duration"),
                concat!($path, ".fifocache.validity"),
                "The expiry duration for the cache.",
            ),
            server::config::Flag::new(
                concat!($flag, ".memcached.addresses"),
                concat!($path, ".memcached.addresses"),
                "Comma separated list of memcached addresses (host:port).",
            ),
            server::config::Flag::new(
                concat!($flag, ".memcached.timeout"),
                concat!($path, ".memcached.timeout"),
                "Maximum time to wait before giving up on memcached requests.",
            ),
            server::config::Flag::new(
                concat!($flag, ".memcached.max-idle-conns"),
                concat!($path, ".memcached.max_idle_conns"),
                "Maximum number of idle connections in pool.",
            ),
            server::config::Flag::new(
                concat!($flag, ".memcached.batchsize"),
                concat!($path, ".memcached.batch_size"),
                "How many keys to fetch in each batch.",
            ),
            server::config::Flag::new(
                concat!($flag, ".memcached.expiration"),
                concat!($path, ".memcached.expiration"),
                "How long keys stay in the memcache.",
            ),
            server::config::Flag::new(
                concat!($flag, ".memcached.max-item-size"),
                concat!($path, ".memcached.max_item_size"),
                "Maximum item size in bytes (0 = memcached's 1 MiB default).",
            ),
        ]
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheNameLabels {
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheRequestLabels {
    pub name: String,
    pub method: String,
    pub status_code: String,
}

/// Cortex's cache instrumentation families, shared by every cache of the process.
#[derive(Clone)]
pub struct CacheMetrics {
    pub fetched_keys: Family<CacheNameLabels, Counter>,
    pub hits: Family<CacheNameLabels, Counter>,
    pub duration: Family<CacheRequestLabels, Histogram>,
}

impl CacheMetrics {
    pub fn new(m: &server::Metrics) -> Self {
        CacheMetrics {
            fetched_keys: m.shared(
                "cortex_cache_fetched_keys",
                "Total count of keys requested from cache.",
                Family::default,
            ),
            hits: m.shared(
                "cortex_cache_hits",
                "Total count of keys found in cache.",
                Family::default,
            ),
            duration: m.shared(
                "cortex_cache_request_duration_seconds",
                "Total time spent in seconds doing cache requests.",
                || Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            ),
        }
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 4.0, 8))
}

/// Wraps a backend with Cortex's metrics.
pub struct Instrumented<C> {
    name: String,
    inner: C,
    metrics: CacheMetrics,
}

impl<C: Cache> Instrumented<C> {
    pub fn new(name: &str, inner: C, metrics: CacheMetrics) -> Self {
        Instrumented {
            name: name.to_string(),
            inner,
            metrics,
        }
    }
}

#[async_trait::async_trait]
impl<C: Cache> Cache for Instrumented<C> {
    async fn store(&self, items: Vec<(String, Bytes)>) {
        let start = Instant::now();
        self.inner.store(items).await;
        self.metrics
            .duration
            .get_or_create(&CacheRequestLabels {
                name: self.name.clone(),
                method: "store".into(),
                status_code: "200".into(),
            })
            .observe(start.elapsed().as_secs_f64());
    }

    async fn fetch(&self, keys: Vec<String>) -> Fetched {
        let start = Instant::now();
        let n = keys.len() as u64;
        let r = self.inner.fetch(keys).await;
        let name = CacheNameLabels {
            name: self.name.clone(),
        };
        self.metrics.fetched_keys.get_or_create(&name).inc_by(n);
        self.metrics.hits.get_or_create(&name).inc_by(r.found.len() as u64);
        self.metrics
            .duration
            .get_or_create(&CacheRequestLabels {
                name: self.name.clone(),
                method: "fetch".into(),
                status_code: "200".into(),
            })
            .observe(start.elapsed().as_secs_f64());
        r
    }
}

/// FIFO → memcached tier: reads try each tier in turn for the keys still missing (filling the
/// faster tiers on a hit); writes go to every tier.
pub struct Tiered(pub Vec<Arc<dyn Cache>>);

#[async_trait::async_trait]
impl Cache for Tiered {
    async fn store(&self, items: Vec<(String, Bytes)>) {
        for c in &self.0 {
            c.store(items.clone()).await;
        }
    }

    async fn fetch(&self, keys: Vec<String>) -> Fetched {
        let mut out = Fetched {
            found: Vec::new(),
            missing: keys,
        };
        for (i, c) in self.0.iter().enumerate() {
            if out.missing.is_empty() {
                break;
            }
            let r = c.fetch(std::mem::take(&mut out.missing)).await;
            if i > 0 && !r.found.is_empty() {
                for faster in &self.0[..i] {
                    faster.store(r.found.clone()).await;
                }
            }
            out.found.extend(r.found);
            out.missing = r.missing;
        }
        out
    }
}

/// A cache that holds nothing (a disabled section).
pub struct NoCache;

#[async_trait::async_trait]
impl Cache for NoCache {
    async fn store(&self, _items: Vec<(String, Bytes)>) {}
    async fn fetch(&self, keys: Vec<String>) -> Fetched {
        Fetched {
            found: Vec::new(),
            missing: keys,
        }
    }
}

/// Builds the cache of one section (`None` when neither FIFO nor memcached is configured).
pub fn build(name: &str, cfg: &CacheConfig, metrics: &server::Metrics) -> Option<Arc<dyn Cache>> {
    let m = CacheMetrics::new(metrics);
    let mut tiers: Vec<Arc<dyn Cache>> = Vec::new();
    if cfg.enable_fifocache {
        tiers.push(Arc::new(Instrumented::new(
            &format!("fifocache-{name}"),
            FifoCache::new(cfg.fifocache.clone()),
            m.clone(),
        )));
    }
    if !cfg.memcached.addresses.is_empty() {
        tiers.push(Arc::new(Instrumented::new(
            &format!("memcache-{name}"),
            MemcachedClient::new(cfg.memcached.clone()),
            m,
        )));
    }
    match tiers.len() {
        0 => None,
        1 => tiers.pop(),
        _ => Some(Arc::new(Tiered(tiers))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tiered_fills_faster_tier() {
        let fast = Arc::new(FifoCache::new(FifoConfig::default()));
        let slow = Arc::new(FifoCache::new(FifoConfig::default()));
        slow.store(vec![("k".into(), Bytes::from_static(b"v"))]).await;
        let t = Tiered(vec![fast.clone(), slow.clone()]);
        let r = t.fetch(vec!["k".into(), "x".into()]).await;
        assert_eq!(r.found, vec![("k".to_string(), Bytes::from_static(b"v"))]);
        assert_eq!(r.missing, vec!["x".to_string()]);
        assert_eq!(
            fast.fetch(vec!["k".into()]).await.found.len(),
            1,
            "hit written back to the FIFO"
        );
    }

    #[tokio::test]
    async fn instrumented_counts_hits() {
        let m = server::Metrics::new();
        let c = build(
            "chunks",
            &CacheConfig {
                enable_fifocache: true,
                ..Default::default()
            },
            &m,
        )
        .unwrap();
        c.store(vec![("a".into(), Bytes::from_static(b"1"))]).await;
        c.fetch(vec!["a".into(), "b".into()]).await;
        let text = m.encode();
        assert!(
            text.contains("cortex_cache_fetched_keys_total{name=\"fifocache-chunks\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("cortex_cache_hits_total{name=\"fifocache-chunks\"} 1"),
            "{text}"
        );
    }
}
