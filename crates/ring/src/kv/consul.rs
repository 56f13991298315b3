//! A thin client for the Consul KV HTTP API (`-ring.store=consul`).
//!
//! - `GET /v1/kv/<key>`: JSON array of `{Key, Value (base64), ModifyIndex, ...}`; 404 = absent.
//!   The `X-Consul-Index` header is the index a blocking query waits to pass.
//! - Blocking queries `?index=N&wait=10s` implement `watch_key`.
//! - `PUT /v1/kv/<key>?cas=<ModifyIndex>` answers `true`/`false`; `cas=0` = only if absent.
//! - `DELETE /v1/kv/<key>`, `GET /v1/kv/<prefix>?recurse` for listing.
//!
//! Values are binary (the ring descriptor is snappy-compressed protobuf), which is why this is
//! our own client: Consul returns them base64-encoded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use model::GoDuration;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{cas_loop, watch_receiver_stream, CasFn, KvClient, KvError, Versioned, VersionedStore, WatchStream};

/// How long one blocking query waits for a change (Cortex: 10s).
const DEFAULT_WATCH_WAIT: Duration = Duration::from_secs(10);
const MAX_WATCH_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsulConfig {
    /// `host:port` (or a full `http://host:port` URL) of the Consul agent.
    pub host: String,
    pub acl_token: server::secret::Secret,
    pub http_client_timeout: GoDuration,
    pub consistent_reads: bool,
    /// Blocking queries per second of one watch; 0 = unlimited.
    pub watch_rate_limit: f64,
    pub watch_burst_size: usize,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        ConsulConfig {
            host: "localhost:8500".into(),
            acl_token: Default::default(),
            http_client_timeout: GoDuration::secs(20),
            consistent_reads: false,
            watch_rate_limit: 1.0,
            watch_burst_size: 1,
        }
    }
}

/// One KV pair as Consul's HTTP API returns it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConsulPair {
    key: String,
    value: Option<String>,
    modify_index: u64,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    cfg: ConsulConfig,
    watch_wait: Duration,
}

/// Consul KV client; cheap to clone.
#[derive(Clone)]
pub struct ConsulClient {
    inner: Arc<Inner>,
}

impl ConsulClient {
    pub fn new(cfg: ConsulConfig) -> Result<Self, KvError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.http_client_timeout.0)
            .build()
            .map_err(|e| KvError::Config(format!("building the Consul HTTP client: {e}")))?;
        let host = cfg.host.trim_end_matches('/');
        if host.is_empty() {
            return Err(KvError::Config("-consul.hostname is empty".into()));
        }
        let base_url = if host.contains("://") {
            host.to_string()
        } else {
            format!("http://{host}")
        };
        Ok(ConsulClient {
            inner: Arc::new(Inner {
                http,
                base_url,
                cfg,
                watch_wait: DEFAULT_WATCH_WAIT,
            }),
        })
    }

    /// Changes how long each blocking query of a watch waits (tests use short waits).
    pub fn with_watch_wait(self, wait: Duration) -> Self {
        let inner = &self.inner;
        ConsulClient {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                base_url: inner.base_url.clone(),
                cfg: inner.cfg.clone(),
                watch_wait: wait,
            }),
        }
    }
}

impl Inner {
    fn url(&self, key: &str, query: &str) -> String {
        let mut url = format!("{}/v1/kv/{}", self.base_url, escape_key(key));
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, url);
        if self.cfg.acl_token.is_empty() {
            rb
        } else {
            rb.header("X-Consul-Token", self.cfg.acl_token.expose())
        }
    }

    /// GET of one key: `(value, ModifyIndex of the key or 0, X-Consul-Index)`.
    async fn get_key(
        &self,
        key: &str,
        consistent: bool,
        block: Option<(u64, Duration)>,
    ) -> Result<(Option<Bytes>, u64, u64), KvError> {
        let mut query = Vec::new();
        if consistent {
            query.push("consistent".to_string());
        }
        if let Some((index, wait)) = block {
            query.push(format!("index={index}"));
            query.push(format!("wait={}ms", wait.as_millis()));
        }
        let url = self.url(key, &query.join("&"));
        let resp = self
            .request(reqwest::Method::GET, url)
            .send()
            .await
            .map_err(|e| KvError::backend("consul", format!("GET {key}: {e}")))?;
        let status = resp.status();
        let index = consul_index(resp.headers());
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok((None, 0, index));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| KvError::backend("consul", format!("GET {key}: reading body: {e}")))?;
        if !status.is_success() {
            return Err(http_error("GET", key, status, &body));
        }
        let pairs: Vec<ConsulPair> = serde_json::from_slice(&body)
            .map_err(|e| KvError::backend("consul", format!("GET {key}: decoding response: {e}")))?;
        match pairs.into_iter().find(|p| p.key == key) {
            Some(p) => Ok((Some(decode_value(key, p.value.as_deref())?), p.modify_index, index)),
            None => Ok((None, 0, index)),
        }
    }
}

fn http_error(method: &str, key: &str, status: reqwest::StatusCode, body: &[u8]) -> KvError {
    let text = String::from_utf8_lossy(body);
    KvError::backend(
        "consul",
        format!("{method} {key}: unexpected status {status}: {}", text.trim()),
    )
}

fn consul_index(headers: &reqwest::header::HeaderMap) -> u64 {
    headers
        .get("X-Consul-Index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn decode_value(key: &str, value: Option<&str>) -> Result<Bytes, KvError> {
    match value {
        None => Ok(Bytes::new()),
        Some(v) => base64::engine::general_purpose::STANDARD
            .decode(v)
            .map(Bytes::from)
            .map_err(|e| KvError::backend("consul", format!("value of {key} is not base64: {e}"))),
    }
}

/// Percent-encodes a key for a URL path, keeping `/` as the separator Consul expects.
fn escape_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl VersionedStore for ConsulClient {
    async fn get_versioned(&self, key: &str) -> Result<Versioned, KvError> {
        // CAS reads are never stale: a stale ModifyIndex would only make the write fail.
        let (value, version, _) = self.inner.get_key(key, true, None).await?;
        Ok(Versioned { value, version })
    }

    async fn put_if_version(&self, key: &str, value: Vec<u8>, version: u64) -> Result<bool, KvError> {
        let url = self.inner.url(key, &format!("cas={version}"));
        let resp = self
            .inner
            .request(reqwest::Method::PUT, url)
            .body(value)
            .send()
            .await
            .map_err(|e| KvError::backend("consul", format!("PUT {key}: {e}")))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| KvError::backend("consul", format!("PUT {key}: reading body: {e}")))?;
        if !status.is_success() {
            return Err(http_error("PUT", key, status, &body));
        }
        match body.trim_ascii() {
            b"true" => Ok(true),
            b"false" => Ok(false),
            other => Err(KvError::backend(
                "consul",
                format!("PUT {key}: unexpected answer {:?}", String::from_utf8_lossy(other)),
            )),
        }
    }
}

#[async_trait]
impl KvClient for ConsulClient {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        let (value, _, _) = self.inner.get_key(key, self.inner.cfg.consistent_reads, None).await?;
        Ok(value)
    }

    async fn cas(&self, key: &str, f: &mut CasFn<'_>) -> Result<(), KvError> {
        cas_loop(self, key, super::DEFAULT_CAS_RETRIES, f).await
    }

    fn watch_key(&self, key: &str) -> WatchStream {
        let (tx, rx) = watch::channel(None);
        let inner = self.inner.clone();
        let key = key.to_string();
        tokio::spawn(async move {
            tokio::select! {
                _ = tx.closed() => {}
                _ = watch_loop(&inner, &key, &tx) => {}
            }
        });
        watch_receiver_stream(rx)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        let mut query = String::from("recurse");
        if self.inner.cfg.consistent_reads {
            query.push_str("&consistent");
        }
        let url = self.inner.url(prefix, &query);
        let resp = self
            .inner
            .request(reqwest::Method::GET, url)
            .send()
            .await
            .map_err(|e| KvError::backend("consul", format!("LIST {prefix}: {e}")))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(vec![]);
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| KvError::backend("consul", format!("LIST {prefix}: reading body: {e}")))?;
        if !status.is_success() {
            return Err(http_error("LIST", prefix, status, &body));
        }
        let pairs: Vec<ConsulPair> = serde_json::from_slice(&body)
            .map_err(|e| KvError::backend("consul", format!("LIST {prefix}: decoding response: {e}")))?;
        let mut keys: Vec<String> = pairs.into_iter().map(|p| p.key).collect();
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        let url = self.inner.url(key, "");
        let resp = self
            .inner
            .request(reqwest::Method::DELETE, url)
            .send()
            .await
            .map_err(|e| KvError::backend("consul", format!("DELETE {key}: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(http_error("DELETE", key, status, &body));
        }
        Ok(())
    }
}

/// Blocking-query loop of one watch, as Cortex's `WatchKey`: wait for the index to pass the last
/// one seen, reset when it goes backwards (Consul restarted or the key was recreated), back off
/// exponentially on errors, and rate limit the queries.
async fn watch_loop(inner: &Inner, key: &str, tx: &watch::Sender<Option<Bytes>>) {
    let mut limiter = RateLimiter::new(inner.cfg.watch_rate_limit, inner.cfg.watch_burst_size);
    let mut index = 0u64;
    let mut backoff = Duration::from_millis(100);
    let mut delivered_any = false;
    loop {
        limiter.wait().await;
        let block = (index > 0).then_some((index, inner.watch_wait));
        match inner.get_key(key, inner.cfg.consistent_reads, block).await {
            Err(e) => {
                tracing::warn!(key, error = %e, ?backoff, "consul watch request failed, backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_WATCH_BACKOFF);
            }
            Ok((value, _, result_index)) => {
                backoff = Duration::from_millis(100);
                if result_index < index {
                    // The index went backwards: start over with a non-blocking read.
                    index = 0;
                    continue;
                }
                if result_index == index && delivered_any {
                    continue; // the wait expired without a change
                }
                // Consul documents that an index of 0 must be treated as 1 so the next query
                // blocks instead of spinning.
                index = result_index.max(1);
                delivered_any = true;
                tx.send_replace(value);
            }
        }
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` stored. Rate 0 = unlimited.
struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    fn new(rate: f64, burst: usize) -> Self {
        let burst = burst.max(1) as f64;
        RateLimiter {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    async fn wait(&mut self) {
        if self.rate <= 0.0 {
            return;
        }
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.last = Instant::now();
        }
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::super::consul_double::ConsulDouble;
    use super::super::CasResult;
    use super::*;
    use futures::StreamExt;

    fn client_for(double: &ConsulDouble) -> ConsulClient {
        ConsulClient::new(ConsulConfig {
            host: double.addr.to_string(),
            watch_rate_limit: 0.0,
            ..ConsulConfig::default()
        })
        .unwrap()
    }

    fn set(v: &'static [u8]) -> impl FnMut(Option<Bytes>) -> CasResult + Send {
        move |_| Ok(Some(v.to_vec()))
    }

    fn increment(old: Option<Bytes>) -> CasResult {
        let n: u64 = old.map_or(0, |b| std::str::from_utf8(&b).unwrap().parse().unwrap());
        Ok(Some((n + 1).to_string().into_bytes()))
    }

    async fn next(w: &mut WatchStream) -> Option<Bytes> {
        tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("watch delivered nothing within 5s")
            .expect("watch stream ended")
    }

    #[tokio::test]
    async fn get_cas_list_delete_against_the_double() {
        let double = ConsulDouble::start().await;
        let kv = client_for(&double);
        assert_eq!(kv.get("collectors/ring").await.unwrap(), None);
        kv.cas("collectors/ring", &mut set(b"\x00\xff\x10binary"))
            .await
            .unwrap();
        kv.cas("collectors/distributor", &mut set(b"d")).await.unwrap();
        kv.cas("other/x", &mut set(b"o")).await.unwrap();
        assert_eq!(
            kv.get("collectors/ring").await.unwrap().as_deref(),
            Some(&b"\x00\xff\x10binary"[..])
        );
        assert_eq!(
            kv.list("collectors/").await.unwrap(),
            vec!["collectors/distributor", "collectors/ring"]
        );
        assert!(kv.list("nothing/").await.unwrap().is_empty());
        let before = double.index();
        kv.cas("other/x", &mut |old: Option<Bytes>| {
            assert_eq!(old.as_deref(), Some(&b"o"[..]));
            Ok(None)
        })
        .await
        .unwrap();
        assert_eq!(double.index(), before, "a no-change CAS must not write");
        kv.delete("collectors/distributor").await.unwrap();
        kv.delete("never-existed").await.unwrap();
        assert_eq!(kv.list("collectors/").await.unwrap(), vec!["collectors/ring"]);
    }

    #[tokio::test]
    async fn conditional_writes_follow_modify_index() {
        let double = ConsulDouble::start().await;
        let kv = client_for(&double);
        // cas=0 means "only if absent".
        assert!(kv.put_if_version("k", b"a".to_vec(), 0).await.unwrap());
        assert!(!kv.put_if_version("k", b"b".to_vec(), 0).await.unwrap());
        let v = kv.get_versioned("k").await.unwrap();
        assert_eq!(v.value.as_deref(), Some(&b"a"[..]));
        assert!(!kv.put_if_version("k", b"c".to_vec(), v.version + 7).await.unwrap());
        assert!(kv.put_if_version("k", b"d".to_vec(), v.version).await.unwrap());
        assert!(
            !kv.put_if_version("k", b"e".to_vec(), v.version).await.unwrap(),
            "stale index"
        );
        assert_eq!(kv.get("k").await.unwrap().as_deref(), Some(&b"d"[..]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_cas_from_several_clients_loses_no_update() {
        let double = ConsulDouble::start().await;
        let start_index = double.index();
        let mut tasks = vec![];
        for _ in 0..4 {
            let kv = client_for(&double);
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    kv.cas("counter", &mut increment).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let v = client_for(&double).get("counter").await.unwrap().unwrap();
        assert_eq!(std::str::from_utf8(&v).unwrap(), "100");
        assert_eq!(
            double.index(),
            start_index + 100,
            "exactly one write per successful CAS"
        );
    }

    #[tokio::test]
    async fn acl_token_is_sent() {
        let double = ConsulDouble::start_with_token(Some("s3cret")).await;
        let anonymous = client_for(&double);
        let err = anonymous.get("k").await.unwrap_err();
        assert!(err.to_string().contains("403"), "{err}");
        let kv = ConsulClient::new(ConsulConfig {
            host: format!("http://{}", double.addr),
            acl_token: "s3cret".into(),
            ..ConsulConfig::default()
        })
        .unwrap();
        kv.cas("k", &mut set(b"v")).await.unwrap();
        assert_eq!(kv.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[tokio::test]
    async fn watch_wakes_up_on_writes_and_deletes() {
        let double = ConsulDouble::start().await;
        let kv = client_for(&double);
        let mut w = kv.watch_key("collectors/ring");
        assert_eq!(next(&mut w).await, None, "absent key first");
        let writer = client_for(&double);
        writer.cas("collectors/ring", &mut set(b"v1")).await.unwrap();
        // The blocking query (10s wait) must wake up on the write, not time out.
        let started = Instant::now();
        assert_eq!(next(&mut w).await.as_deref(), Some(&b"v1"[..]));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        // Writes to other keys do not produce values for this one.
        writer.cas("collectors/other", &mut set(b"x")).await.unwrap();
        writer.cas("collectors/ring", &mut set(b"v2")).await.unwrap();
        assert_eq!(next(&mut w).await.as_deref(), Some(&b"v2"[..]));
        writer.delete("collectors/ring").await.unwrap();
        assert_eq!(next(&mut w).await, None);
    }

    #[tokio::test]
    async fn watch_recovers_when_the_index_goes_backwards() {
        let double = ConsulDouble::start().await;
        let kv = client_for(&double).with_watch_wait(Duration::from_millis(200));
        let writer = client_for(&double);
        for _ in 0..5 {
            writer.cas("k", &mut increment).await.unwrap();
        }
        let mut w = kv.watch_key("k");
        assert_eq!(next(&mut w).await.as_deref(), Some(&b"5"[..]));
        // Consul restarted without its data: the index is back at 1 and the key is gone.
        double.wipe();
        assert_eq!(next(&mut w).await, None);
        writer.cas("k", &mut set(b"again")).await.unwrap();
        assert_eq!(next(&mut w).await.as_deref(), Some(&b"again"[..]));
    }

    #[tokio::test]
    async fn dropping_the_watch_stops_polling() {
        let double = ConsulDouble::start().await;
        let kv = client_for(&double).with_watch_wait(Duration::from_millis(50));
        let mut w = kv.watch_key("k");
        assert_eq!(next(&mut w).await, None);
        drop(w);
        // Let the watch task notice; then no more requests arrive.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after_drop = double.requests();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(double.requests(), after_drop);
    }

    #[tokio::test]
    async fn watch_is_rate_limited() {
        let double = ConsulDouble::start().await;
        let kv = ConsulClient::new(ConsulConfig {
            host: double.addr.to_string(),
            watch_rate_limit: 5.0,
            watch_burst_size: 1,
            ..ConsulConfig::default()
        })
        .unwrap()
        .with_watch_wait(Duration::from_millis(10));
        let w = kv.watch_key("k");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        drop(w);
        // ~5 queries per second (+ the burst), not one every 10ms.
        let n = double.requests();
        assert!((3..=8).contains(&n), "{n} requests in 1s");
    }

    #[test]
    fn keys_are_escaped_but_slashes_kept() {
        assert_eq!(escape_key("collectors/ring"), "collectors/ring");
        assert_eq!(escape_key("a b/c?d"), "a%20b/c%3Fd");
    }

    #[tokio::test]
    async fn rate_limiter_spaces_requests_after_the_burst() {
        let mut l = RateLimiter::new(20.0, 2);
        let start = Instant::now();
        for _ in 0..4 {
            l.wait().await;
        }
        // Two free (burst), then two more at 20/s = at least ~100ms.
        assert!(start.elapsed() >= Duration::from_millis(90), "{:?}", start.elapsed());
        let mut unlimited = RateLimiter::new(0.0, 1);
        let start = Instant::now();
        for _ in 0..100 {
            unlimited.wait().await;
        }
        assert!(start.elapsed() < Duration::from_millis(50));
    }
}
