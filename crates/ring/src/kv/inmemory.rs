//! Process-local KV store (`-ring.store=inmemory`): the single binary and tests.
//!
//! Every write bumps one store-wide version counter (like Consul's raft index), which is also the
//! CAS version of the written key. Watchers are `tokio::sync::watch` channels, one per watched
//! key, so a slow watcher only ever holds the newest value.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::{cas_loop, watch_receiver_stream, CasFn, KvClient, KvError, Versioned, VersionedStore, WatchStream};

#[derive(Default)]
struct State {
    /// Store-wide write counter; the version of a key is the counter value of its last write.
    last_version: u64,
    entries: BTreeMap<String, (Bytes, u64)>,
    watchers: HashMap<String, watch::Sender<Option<Bytes>>>,
}

impl State {
    fn notify(&mut self, key: &str, value: Option<Bytes>) {
        if let Some(tx) = self.watchers.get(key) {
            if tx.receiver_count() == 0 {
                self.watchers.remove(key);
            } else {
                tx.send_replace(value);
            }
        }
    }
}

/// An in-process KV store. Clone-free: share it as `Arc<InMemoryKv>`.
#[derive(Default)]
pub struct InMemoryKv {
    state: Mutex<State>,
}

impl InMemoryKv {
    /// An independent store (tests, or several isolated clusters in one process).
    pub fn new() -> Arc<Self> {
        Arc::new(InMemoryKv::default())
    }

    /// The process-wide store called `name`: every caller with the same name gets the same store,
    /// so several roles in one process share one ring.
    pub fn shared(name: &str) -> Arc<Self> {
        static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<InMemoryKv>>>> = OnceLock::new();
        REGISTRY
            .get_or_init(Default::default)
            .lock()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// The store-wide write counter (number of writes so far).
    pub fn version(&self) -> u64 {
        self.state.lock().last_version
    }
}

#[async_trait]
impl VersionedStore for InMemoryKv {
    async fn get_versioned(&self, key: &str) -> Result<Versioned, KvError> {
        let state = self.state.lock();
        Ok(match state.entries.get(key) {
            Some((v, version)) => Versioned {
                value: Some(v.clone()),
                version: *version,
            },
            None => Versioned {
                value: None,
                version: 0,
            },
        })
    }

    async fn put_if_version(&self, key: &str, value: Vec<u8>, version: u64) -> Result<bool, KvError> {
        let mut state = self.state.lock();
        let current = state.entries.get(key).map_or(0, |(_, v)| *v);
        if current != version {
            return Ok(false);
        }
        state.last_version += 1;
        let new_version = state.last_version;
        let value = Bytes::from(value);
        state.entries.insert(key.to_string(), (value.clone(), new_version));
        state.notify(key, Some(value));
        Ok(true)
    }
}

#[async_trait]
impl KvClient for InMemoryKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        Ok(self.state.lock().entries.get(key).map(|(v, _)| v.clone()))
    }

    async fn cas(&self, key: &str, f: &mut CasFn<'_>) -> Result<(), KvError> {
        cas_loop(self, key, super::DEFAULT_CAS_RETRIES, f).await
    }

    fn watch_key(&self, key: &str) -> WatchStream {
        let mut state = self.state.lock();
        let current = state.entries.get(key).map(|(v, _)| v.clone());
        let tx = state
            .watchers
            .entry(key.to_string())
            .or_insert_with(|| watch::channel(None).0);
        // Refresh under the lock so the new receiver starts from the current value and cannot
        // miss a write that lands right after it subscribes.
        tx.send_if_modified(|v| {
            let changed = *v != current;
            *v = current;
            changed
        });
        let mut rx = tx.subscribe();
        rx.mark_changed();
        drop(state);
        watch_receiver_stream(rx)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        let state = self.state.lock();
        Ok(state
            .entries
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        let mut state = self.state.lock();
        if state.entries.remove(key).is_some() {
            state.last_version += 1;
            state.notify(key, None);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::time::Duration;

    fn set(v: &'static [u8]) -> impl FnMut(Option<Bytes>) -> super::super::CasResult + Send {
        move |_| Ok(Some(v.to_vec()))
    }

    #[tokio::test]
    async fn get_cas_list_delete() {
        let kv = InMemoryKv::new();
        assert_eq!(kv.get("a").await.unwrap(), None);
        kv.cas("a/1", &mut set(b"one")).await.unwrap();
        kv.cas("a/2", &mut set(b"two")).await.unwrap();
        kv.cas("b", &mut set(b"bee")).await.unwrap();
        assert_eq!(kv.get("a/1").await.unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(kv.list("a/").await.unwrap(), vec!["a/1", "a/2"]);
        assert_eq!(kv.version(), 3);
        // A callback returning None leaves the value and the version alone.
        kv.cas("a/1", &mut |old: Option<Bytes>| {
            assert_eq!(old.as_deref(), Some(&b"one"[..]));
            Ok(None)
        })
        .await
        .unwrap();
        assert_eq!(kv.version(), 3);
        kv.delete("a/1").await.unwrap();
        kv.delete("missing").await.unwrap();
        assert_eq!(kv.list("a/").await.unwrap(), vec!["a/2"]);
        // An aborting callback surfaces its error unchanged.
        let err = kv
            .cas("b", &mut |_| Err(KvError::Aborted("no thanks".into())))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "no thanks");
    }

    #[tokio::test]
    async fn shared_instances_are_shared_by_name() {
        let a = InMemoryKv::shared("inmemory-test-shared");
        let b = InMemoryKv::shared("inmemory-test-shared");
        let other = InMemoryKv::shared("inmemory-test-other");
        a.cas("k", &mut set(b"v")).await.unwrap();
        assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(other.get("k").await.unwrap(), None);
    }

    async fn next(w: &mut WatchStream) -> Option<Bytes> {
        tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("watch delivered nothing within 5s")
            .expect("watch stream ended")
    }

    #[tokio::test]
    async fn watch_yields_current_then_updates_then_delete() {
        let kv = InMemoryKv::new();
        kv.cas("k", &mut set(b"v1")).await.unwrap();
        let mut w = kv.watch_key("k");
        assert_eq!(next(&mut w).await.as_deref(), Some(&b"v1"[..]));
        kv.cas("k", &mut set(b"v2")).await.unwrap();
        assert_eq!(next(&mut w).await.as_deref(), Some(&b"v2"[..]));
        kv.delete("k").await.unwrap();
        assert_eq!(next(&mut w).await, None);
        // Bursts coalesce to the newest value rather than queueing.
        for v in [&b"x"[..], b"y", b"z"] {
            kv.cas("k", &mut move |_| Ok(Some(v.to_vec()))).await.unwrap();
        }
        assert_eq!(next(&mut w).await.as_deref(), Some(&b"z"[..]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_cas_loses_no_update() {
        let kv = InMemoryKv::new();
        let mut tasks = vec![];
        for _ in 0..4 {
            let kv = kv.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..50 {
                    kv.cas("counter", &mut increment).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let v = kv.get("counter").await.unwrap().unwrap();
        assert_eq!(std::str::from_utf8(&v).unwrap(), "200");
    }

    pub(crate) fn increment(old: Option<Bytes>) -> super::super::CasResult {
        let n: u64 = old.map_or(0, |b| std::str::from_utf8(&b).unwrap().parse().unwrap());
        Ok(Some((n + 1).to_string().into_bytes()))
    }
}
