//! In-process FIFO cache (`.cache.enable-fifocache`): bounded by items and bytes, entries expire
//! after `validity`; the oldest insertion is evicted first.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use model::GoDuration;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{Cache, Fetched};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FifoConfig {
    pub max_size_bytes: u64,
    pub max_size_items: usize,
    pub validity: GoDuration,
}

impl Default for FifoConfig {
    fn default() -> Self {
        // Cortex's defaults are 0 (unbounded); an unbounded buffer is not acceptable here, so the
        // item bound defaults to a modest size.
        FifoConfig {
            max_size_bytes: 0,
            max_size_items: 65_536,
            validity: GoDuration(Duration::ZERO),
        }
    }
}

struct Entry {
    value: Bytes,
    inserted: Instant,
    generation: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    order: VecDeque<(String, u64)>,
    bytes: u64,
    generation: u64,
}

pub struct FifoCache {
    cfg: FifoConfig,
    inner: Mutex<Inner>,
}

impl FifoCache {
    pub fn new(cfg: FifoConfig) -> Self {
        FifoCache {
            cfg,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn over_limit(&self, i: &Inner) -> bool {
        let items = self.cfg.max_size_items.max(1);
        i.map.len() > items || (self.cfg.max_size_bytes > 0 && i.bytes > self.cfg.max_size_bytes)
    }
}

fn entry_size(k: &str, v: &Bytes) -> u64 {
    (k.len() + v.len() + 48) as u64
}

#[async_trait::async_trait]
impl Cache for FifoCache {
    async fn store(&self, items: Vec<(String, Bytes)>) {
        let mut i = self.inner.lock();
        let now = Instant::now();
        for (k, v) in items {
            i.generation += 1;
            let generation = i.generation;
            i.bytes += entry_size(&k, &v);
            if let Some(old) = i.map.insert(
                k.clone(),
                Entry {
                    value: v,
                    inserted: now,
                    generation,
                },
            ) {
                i.bytes -= entry_size(&k, &old.value);
            }
            i.order.push_back((k, generation));
            while self.over_limit(&i) {
                let Some((old_key, g)) = i.order.pop_front() else { break };
                // Re-inserted keys leave stale queue slots behind; only the live generation evicts.
                if i.map.get(&old_key).is_some_and(|e| e.generation == g) {
                    if let Some(e) = i.map.remove(&old_key) {
                        i.bytes -= entry_size(&old_key, &e.value);
                    }
                }
            }
            // Bound the queue of stale slots too.
            if i.order.len() > 2 * i.map.len() + 1024 {
                let live: Vec<(String, u64)> = i
                    .order
                    .iter()
                    .filter(|(k, g)| i.map.get(k).is_some_and(|e| e.generation == *g))
                    .cloned()
                    .collect();
                i.order = live.into();
            }
        }
    }

    async fn fetch(&self, keys: Vec<String>) -> Fetched {
        let mut out = Fetched::default();
        let i = self.inner.lock();
        let validity = self.cfg.validity.0;
        for k in keys {
            match i.map.get(&k) {
                Some(e) if validity.is_zero() || e.inserted.elapsed() < validity => {
                    let v = e.value.clone();
                    out.found.push((k, v));
                }
                _ => out.missing.push(k),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn evicts_oldest_and_expires() {
        let c = FifoCache::new(FifoConfig {
            max_size_items: 2,
            ..Default::default()
        });
        for k in ["a", "b", "c"] {
            c.store(vec![(k.into(), Bytes::from_static(b"v"))]).await;
        }
        let r = c.fetch(vec!["a".into(), "b".into(), "c".into()]).await;
        assert_eq!(r.missing, vec!["a".to_string()]);
        assert_eq!(c.len(), 2);

        let t = FifoCache::new(FifoConfig {
            validity: GoDuration(Duration::from_millis(20)),
            ..Default::default()
        });
        t.store(vec![("k".into(), Bytes::from_static(b"v"))]).await;
        assert_eq!(t.fetch(vec!["k".into()]).await.found.len(), 1);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(t.fetch(vec!["k".into()]).await.missing.len(), 1);
    }

    #[tokio::test]
    async fn byte_bound() {
        let c = FifoCache::new(FifoConfig {
            max_size_bytes: 200,
            max_size_items: 100,
            ..Default::default()
        });
        for k in 0..10 {
            c.store(vec![(format!("k{k}"), Bytes::from(vec![0u8; 60]))]).await;
        }
        assert!(c.len() <= 2, "{}", c.len());
        assert_eq!(c.fetch(vec!["k9".into()]).await.found.len(), 1);
    }
}
