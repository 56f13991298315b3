//! Key-value stores that hold ring descriptors (spec §2.4).
//!
//! Values are opaque bytes at this layer; the ring codec (protobuf + snappy block) lives in
//! [`crate::codec`]. Every backend offers the same five operations through [`KvClient`]:
//! `get`, a read-modify-write `cas` loop, `watch_key`, `list` and `delete`.
//!
//! [`new_client`] builds the backend chosen by `-ring.store`, wraps it so that every key is
//! stored under `-ring.prefix` (`collectors/` by default), and records
//! `cortex_kv_request_duration_seconds` for each request.

pub mod consul;
#[cfg(test)]
pub(crate) mod consul_double;
pub mod etcd;
pub mod inmemory;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use serde::{Deserialize, Serialize};
use server::config::Flag;

pub use consul::{ConsulClient, ConsulConfig};
pub use etcd::{EtcdClient, EtcdConfig};
pub use inmemory::InMemoryKv;

/// What a CAS callback returns: `Ok(None)` = leave the value as it is, `Ok(Some(v))` = store `v`,
/// `Err(e)` = abort the CAS with `e` (no retry).
pub type CasResult = Result<Option<Vec<u8>>, KvError>;

/// The read-modify-write callback of [`KvClient::cas`]. It receives the current value (`None` when
/// the key is absent) and may be called several times when concurrent writers race.
pub type CasFn<'a> = dyn FnMut(Option<Bytes>) -> CasResult + Send + 'a;

/// A stream of a key's values: the current value first, then every later value (`None` = the key
/// does not exist). Intermediate values may be skipped when they change faster than the consumer
/// reads, so a consumer always converges on the newest value without an unbounded buffer.
pub type WatchStream = BoxStream<'static, Option<Bytes>>;

/// Default number of attempts of a CAS loop (Cortex's consul client: 10).
pub const DEFAULT_CAS_RETRIES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The CAS loop ran out of attempts (every attempt lost a race or hit an error).
    #[error("failed to CAS {key}: {last}")]
    CasFailed { key: String, last: String },
    /// The backend could not be reached or answered with an error.
    #[error("{store} request failed: {reason}")]
    Backend { store: &'static str, reason: String },
    /// A CAS callback refused to go on (for example: the stored value cannot be decoded).
    #[error("{0}")]
    Aborted(String),
    #[error("unsupported KV store {0:?} (supported: consul, etcd, inmemory; set -ring.store)")]
    UnknownStore(String),
    #[error("invalid KV store configuration: {0}")]
    Config(String),
}

impl KvError {
    pub(crate) fn backend(store: &'static str, reason: impl std::fmt::Display) -> Self {
        KvError::Backend {
            store,
            reason: reason.to_string(),
        }
    }
}

/// A key-value store holding ring descriptors and similar small shared values.
#[async_trait]
pub trait KvClient: Send + Sync {
    /// The current value of `key`, `None` when absent.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError>;

    /// Read-modify-write with optimistic concurrency: reads `key`, calls `f` with the value and
    /// writes the result only if nobody changed the key in between; otherwise re-reads and calls
    /// `f` again, up to the backend's retry limit (10 by default), then fails with
    /// [`KvError::CasFailed`].
    async fn cas(&self, key: &str, f: &mut CasFn<'_>) -> Result<(), KvError>;

    /// Follows `key`: see [`WatchStream`]. The watch ends when the stream is dropped.
    fn watch_key(&self, key: &str) -> WatchStream;

    /// Every key starting with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, KvError>;

    /// Removes `key`; removing an absent key is not an error.
    async fn delete(&self, key: &str) -> Result<(), KvError>;
}

/// A value with the backend's version of it, for CAS (consul ModifyIndex, etcd mod_revision,
/// in-memory write counter). Version 0 means "absent".
#[derive(Debug, Clone)]
pub(crate) struct Versioned {
    pub value: Option<Bytes>,
    pub version: u64,
}

/// The two primitives every backend has, from which [`cas_loop`] builds the CAS of [`KvClient`].
#[async_trait]
pub(crate) trait VersionedStore: Send + Sync {
    async fn get_versioned(&self, key: &str) -> Result<Versioned, KvError>;
    /// Writes `value` only if the key is still at `version` (0 = only if absent). `Ok(false)` when
    /// somebody else wrote first.
    async fn put_if_version(&self, key: &str, value: Vec<u8>, version: u64) -> Result<bool, KvError>;
}

/// Cortex's CAS loop: read → f → (no change: done) → conditional write → retry on conflict or
/// error. A short random pause after a lost race spreads out writers that would otherwise keep
/// colliding on the same version.
pub(crate) async fn cas_loop<S: VersionedStore + ?Sized>(
    store: &S,
    key: &str,
    max_attempts: usize,
    f: &mut CasFn<'_>,
) -> Result<(), KvError> {
    let mut last = String::from("no attempt made");
    for attempt in 0..max_attempts.max(1) {
        let current = match store.get_versioned(key).await {
            Ok(v) => v,
            Err(e) => {
                last = e.to_string();
                tracing::warn!(key, attempt, error = %e, "CAS: reading the current value failed");
                pause_after_conflict(attempt).await;
                continue;
            }
        };
        let Some(new_value) = f(current.value)? else {
            return Ok(());
        };
        match store.put_if_version(key, new_value, current.version).await {
            Ok(true) => return Ok(()),
            Ok(false) => {
                last = "the value changed concurrently".into();
                tracing::debug!(key, attempt, "CAS conflict, trying again");
            }
            Err(e) => {
                last = e.to_string();
                tracing::warn!(key, attempt, error = %e, "CAS: conditional write failed");
            }
        }
        pause_after_conflict(attempt).await;
    }
    Err(KvError::CasFailed {
        key: key.to_string(),
        last,
    })
}

async fn pause_after_conflict(attempt: usize) {
    let max_ms = 2u64 << attempt.min(6);
    let ms = rand::random_range(0..=max_ms);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Which KV store and where (`kvstore` section of a ring config).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct KvConfig {
    /// `consul`, `etcd` or `inmemory`.
    pub store: String,
    /// Prepended to every key (`collectors/` → the ingester ring lives at `collectors/ring`).
    pub prefix: String,
    pub consul: ConsulConfig,
    pub etcd: EtcdConfig,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            store: "consul".into(),
            prefix: "collectors/".into(),
            consul: ConsulConfig::default(),
            etcd: EtcdConfig::default(),
        }
    }
}

/// Expands to the KV flags with YAML paths under `$p` (which ends in `.` or is empty), followed
/// by `$extra` flags. Used by every config that embeds a [`KvConfig`] so the flag tables stay
/// `const` and in one place.
#[macro_export]
#[doc(hidden)]
macro_rules! __kv_flags {
    ($p:literal; $($extra:expr),* $(,)?) => {
        &[
            $($extra,)*
            ::server::config::Flag::new("ring.store", concat!($p, "store"),
                "Backend storage to use for the ring: consul, etcd or inmemory."),
            ::server::config::Flag::new("ring.prefix", concat!($p, "prefix"),
                "The prefix for the keys in the store. Should end with a /."),
            ::server::config::Flag::new("consul.hostname", concat!($p, "consul.host"),
                "Hostname and port of Consul."),
            ::server::config::Flag::new("consul.acl-token", concat!($p, "consul.acl_token"),
                "ACL Token used to interact with Consul."),
            ::server::config::Flag::new("consul.client-timeout", concat!($p, "consul.http_client_timeout"),
                "HTTP timeout when talking to Consul."),
            ::server::config::Flag::new("consul.consistent-reads", concat!($p, "consul.consistent_reads"),
                "Enable consistent reads to Consul."),
            ::server::config::Flag::new("consul.watch-rate-limit", concat!($p, "consul.watch_rate_limit"),
                "Rate limit when watching key or prefix in Consul, in requests per second. 0 disables the rate limit."),
            ::server::config::Flag::new("consul.watch-burst-size", concat!($p, "consul.watch_burst_size"),
                "Burst size used in rate limit. Values less than 1 are treated as 1."),
            ::server::config::Flag::new("etcd.endpoints", concat!($p, "etcd.endpoints"),
                "The etcd endpoints to connect to (comma separated)."),
            ::server::config::Flag::new("etcd.dial-timeout", concat!($p, "etcd.dial_timeout"),
                "The dial timeout for the etcd connection."),
            ::server::config::Flag::new("etcd.max-retries", concat!($p, "etcd.max_retries"),
                "The maximum number of retries to do for failed ops."),
        ]
    };
}

impl KvConfig {
    /// Flags, with YAML paths relative to the `kvstore` section.
    pub const FLAGS: &'static [Flag] = crate::__kv_flags!("";);
}

/// Builds the store named by `cfg.store`, keys prefixed with `cfg.prefix`, with request metrics
/// labelled `kv_name="ring"`. `inmemory` returns the process-wide shared store
/// ([`InMemoryKv::shared`]) so every role of a single binary sees the same ring.
pub async fn new_client(cfg: &KvConfig, metrics: &server::Metrics) -> Result<Arc<dyn KvClient>, KvError> {
    new_client_named(cfg, "ring", metrics).await
}

/// [`new_client`] with an explicit `kv_name` label for the request-duration metric.
pub async fn new_client_named(
    cfg: &KvConfig,
    kv_name: &str,
    metrics: &server::Metrics,
) -> Result<Arc<dyn KvClient>, KvError> {
    let backend: Arc<dyn KvClient> = match cfg.store.as_str() {
        "inmemory" => InMemoryKv::shared("default"),
        "consul" => Arc::new(ConsulClient::new(cfg.consul.clone())?),
        "etcd" => Arc::new(EtcdClient::connect(cfg.etcd.clone()).await?),
        other => return Err(KvError::UnknownStore(other.to_string())),
    };
    let prefixed: Arc<dyn KvClient> = if cfg.prefix.is_empty() {
        backend
    } else {
        Arc::new(PrefixedClient {
            inner: backend,
            prefix: cfg.prefix.clone(),
        })
    };
    Ok(Arc::new(InstrumentedClient::new(prefixed, kv_name, metrics)))
}

/// Stores every key under a fixed prefix; `list` strips it again.
pub struct PrefixedClient {
    inner: Arc<dyn KvClient>,
    prefix: String,
}

impl PrefixedClient {
    pub fn new(inner: Arc<dyn KvClient>, prefix: impl Into<String>) -> Self {
        PrefixedClient {
            inner,
            prefix: prefix.into(),
        }
    }
    fn full(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }
}

#[async_trait]
impl KvClient for PrefixedClient {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        self.inner.get(&self.full(key)).await
    }
    async fn cas(&self, key: &str, f: &mut CasFn<'_>) -> Result<(), KvError> {
        self.inner.cas(&self.full(key), f).await
    }
    fn watch_key(&self, key: &str) -> WatchStream {
        self.inner.watch_key(&self.full(key))
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        let keys = self.inner.list(&self.full(prefix)).await?;
        Ok(keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(self.prefix.as_str()).map(str::to_string))
            .collect())
    }
    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.inner.delete(&self.full(key)).await
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KvRequestLabels {
    kv_name: String,
    operation: &'static str,
    status_code: &'static str,
}

fn kv_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 9))
}

/// Records `cortex_kv_request_duration_seconds{kv_name,operation,status_code}` around each call.
/// Operations and codes are Cortex's: `GET`, `CAS`, `LIST`, `Delete`, `WatchKey`; `200` / `500`.
pub struct InstrumentedClient {
    inner: Arc<dyn KvClient>,
    kv_name: String,
    durations: Family<KvRequestLabels, Histogram, fn() -> Histogram>,
}

impl InstrumentedClient {
    pub fn new(inner: Arc<dyn KvClient>, kv_name: &str, metrics: &server::Metrics) -> Self {
        let durations = crate::metrics::shared_metric(
            metrics,
            "cortex_kv_request_duration_seconds",
            "Time spent on kv store requests.",
            || Family::<KvRequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(kv_duration_histogram),
        );
        InstrumentedClient {
            inner,
            kv_name: kv_name.to_string(),
            durations,
        }
    }

    fn observe<T>(&self, operation: &'static str, started: Instant, result: &Result<T, KvError>) {
        let status_code = if result.is_ok() { "200" } else { "500" };
        self.durations
            .get_or_create(&KvRequestLabels {
                kv_name: self.kv_name.clone(),
                operation,
                status_code,
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl KvClient for InstrumentedClient {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        let started = Instant::now();
        let r = self.inner.get(key).await;
        self.observe("GET", started, &r);
        r
    }
    async fn cas(&self, key: &str, f: &mut CasFn<'_>) -> Result<(), KvError> {
        let started = Instant::now();
        let r = self.inner.cas(key, f).await;
        self.observe("CAS", started, &r);
        r
    }
    fn watch_key(&self, key: &str) -> WatchStream {
        // A watch lives as long as its consumer, so its duration says nothing; not timed.
        self.inner.watch_key(key)
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        let started = Instant::now();
        let r = self.inner.list(prefix).await;
        self.observe("LIST", started, &r);
        r
    }
    async fn delete(&self, key: &str) -> Result<(), KvError> {
        let started = Instant::now();
        let r = self.inner.delete(key).await;
        self.observe("Delete", started, &r);
        r
    }
}

/// Turns a `tokio::sync::watch` receiver into a [`WatchStream`] that yields the value current at
/// each wake-up; the receiver must be marked changed to yield its current value first.
pub(crate) fn watch_receiver_stream(rx: tokio::sync::watch::Receiver<Option<Bytes>>) -> WatchStream {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let v = rx.borrow_and_update().clone();
        Some((v, rx))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A store where somebody else always wins the race.
    struct AlwaysConflicting {
        reads: AtomicUsize,
        writes: AtomicUsize,
    }

    #[async_trait]
    impl VersionedStore for AlwaysConflicting {
        async fn get_versioned(&self, _key: &str) -> Result<Versioned, KvError> {
            let n = self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(Versioned {
                value: Some(Bytes::from(n.to_string())),
                version: n as u64 + 1,
            })
        }
        async fn put_if_version(&self, _key: &str, _value: Vec<u8>, _version: u64) -> Result<bool, KvError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            Ok(false)
        }
    }

    #[tokio::test]
    async fn cas_loop_gives_up_after_the_retry_limit() {
        let store = AlwaysConflicting {
            reads: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
        };
        let mut calls = 0;
        let err = cas_loop(&store, "collectors/ring", DEFAULT_CAS_RETRIES, &mut |_| {
            calls += 1;
            Ok(Some(b"x".to_vec()))
        })
        .await
        .unwrap_err();
        assert_eq!(calls, 10);
        assert_eq!(store.writes.load(Ordering::SeqCst), 10);
        assert_eq!(
            err.to_string(),
            "failed to CAS collectors/ring: the value changed concurrently"
        );
    }

    #[tokio::test]
    async fn prefixed_and_instrumented_clients() {
        let metrics = server::Metrics::new();
        let backend = InMemoryKv::new();
        let kv = InstrumentedClient::new(
            Arc::new(PrefixedClient::new(backend.clone(), "collectors/")),
            "test",
            &metrics,
        );
        kv.cas("ring", &mut |_| Ok(Some(b"v".to_vec()))).await.unwrap();
        assert_eq!(
            backend.get("collectors/ring").await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(kv.get("ring").await.unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(kv.list("").await.unwrap(), vec!["ring"]);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"cortex_kv_request_duration_seconds_count{kv_name="test",operation="CAS",status_code="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"operation="GET",status_code="200"} 1"#), "{text}");
    }

    #[tokio::test]
    async fn new_client_picks_the_store() {
        let metrics = server::Metrics::new();
        let cfg = KvConfig {
            store: "zookeeper".into(),
            ..KvConfig::default()
        };
        let err = new_client(&cfg, &metrics).await.err().unwrap();
        assert!(err.to_string().contains("unsupported KV store \"zookeeper\""), "{err}");
        let cfg = KvConfig {
            store: "inmemory".into(),
            prefix: "new-client-test/".into(),
            ..KvConfig::default()
        };
        let a = new_client(&cfg, &metrics).await.unwrap();
        let b = new_client(&cfg, &metrics).await.unwrap();
        a.cas("k", &mut |_| Ok(Some(b"shared".to_vec()))).await.unwrap();
        assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"shared"[..]));
        assert_eq!(
            InMemoryKv::shared("default")
                .get("new-client-test/k")
                .await
                .unwrap()
                .as_deref(),
            Some(&b"shared"[..])
        );
    }

    #[test]
    fn flags_set_the_kv_config() {
        let args: Vec<String> = [
            "-ring.store=etcd",
            "-ring.prefix=rings/",
            "-consul.hostname=consul:8500",
            "-consul.client-timeout=5s",
            "-consul.watch-rate-limit=2.5",
            "-etcd.endpoints=a:2379,b:2379",
            "-etcd.max-retries=3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cfg: KvConfig = server::config::load(&args, KvConfig::FLAGS).unwrap();
        assert_eq!(cfg.store, "etcd");
        assert_eq!(cfg.prefix, "rings/");
        assert_eq!(cfg.consul.host, "consul:8500");
        assert_eq!(cfg.consul.http_client_timeout, model::GoDuration::secs(5));
        assert_eq!(cfg.consul.watch_rate_limit, 2.5);
        assert_eq!(cfg.etcd.endpoints, vec!["a:2379", "b:2379"]);
        assert_eq!(cfg.etcd.max_retries, 3);
        let defaults = KvConfig::default();
        assert_eq!(defaults.store, "consul");
        assert_eq!(defaults.prefix, "collectors/");
        assert_eq!(defaults.etcd.dial_timeout, model::GoDuration::secs(10));
    }
}
