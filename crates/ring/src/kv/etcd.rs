//! etcd v3 backend (`-ring.store=etcd`) over etcd's v3 JSON gateway (`/v3/kv/*`, `/v3/watch`),
//! which every etcd ≥ 3.4 serves on its client port next to gRPC.
//!
//! Why not the `etcd-client` crate: its build script compiles etcd's protos with a system
//! `protoc`, which would make every build of the workspace depend on an apt package; the
//! gateway speaks the same v3 API (same revisions, transactions and watches) over plain HTTP.
//!
//! CAS is a transaction comparing the key's `mod_revision` with the one read (or its
//! `create_revision` with 0 when the key was absent). Watches start from the revision of a fresh
//! read, so no write between the read and the watch is missed; on any error they start over.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use model::GoDuration;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use tokio::sync::watch;

use super::{cas_loop, watch_receiver_stream, CasFn, KvClient, KvError, Versioned, VersionedStore, WatchStream};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_WATCH_BACKOFF: Duration = Duration::from_secs(10);
/// Upper bound of one watch message; a ring descriptor of thousands of instances stays far below.
const MAX_WATCH_MESSAGE: usize = 64 << 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct EtcdConfig {
    /// `host:port` or `http://host:port` of each member.
    pub endpoints: Vec<String>,
    pub dial_timeout: GoDuration,
    /// Attempts of a CAS loop.
    pub max_retries: usize,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec![],
            dial_timeout: GoDuration::secs(10),
            max_retries: 10,
        }
    }
}

struct Inner {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// Endpoint that answered last; requests start there and fail over to the others.
    current: AtomicUsize,
    max_retries: usize,
}

/// etcd KV client; cheap to clone.
#[derive(Clone)]
pub struct EtcdClient {
    inner: Arc<Inner>,
}

fn backend(e: impl std::fmt::Display) -> KvError {
    KvError::backend("etcd", e)
}

/// int64 fields arrive as JSON strings (proto3 JSON mapping); accept numbers too.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        N(i64),
    }
    match Raw::deserialize(d)? {
        Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        Raw::N(n) => Ok(n),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Header {
    #[serde(deserialize_with = "int64")]
    revision: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct KeyValue {
    key: String,
    value: String,
    #[serde(deserialize_with = "int64")]
    mod_revision: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RangeResponse {
    header: Header,
    kvs: Vec<KeyValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TxnResponse {
    succeeded: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Event {
    /// `PUT` is the zero value and therefore omitted.
    #[serde(rename = "type")]
    kind: Option<String>,
    kv: Option<KeyValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WatchResult {
    canceled: bool,
    cancel_reason: String,
    #[serde(deserialize_with = "int64")]
    compact_revision: i64,
    events: Vec<Event>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WatchMessage {
    result: Option<WatchResult>,
    error: Option<serde_json::Value>,
}

fn b64(data: &[u8]) -> String {
    B64.encode(data)
}

fn unb64(s: &str) -> Result<Vec<u8>, KvError> {
    B64.decode(s)
        .map_err(|e| backend(format!("invalid base64 from etcd: {e}")))
}

/// The end of the key range holding every key that starts with `prefix` (etcd's `GetPrefix`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from `prefix` on.
    vec![0]
}

impl EtcdClient {
    /// Connects to the first endpoint that answers a status request within `dial_timeout`.
    pub async fn connect(cfg: EtcdConfig) -> Result<Self, KvError> {
        let endpoints: Vec<String> = cfg
            .endpoints
            .iter()
            .map(|e| e.trim().trim_end_matches('/'))
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.contains("://") {
                    e.to_string()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        if endpoints.is_empty() {
            return Err(KvError::Config("-etcd.endpoints is empty".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.dial_timeout.0)
            .build()
            .map_err(|e| KvError::Config(format!("building the etcd HTTP client: {e}")))?;
        let client = EtcdClient {
            inner: Arc::new(Inner {
                http,
                endpoints,
                current: AtomicUsize::new(0),
                max_retries: cfg.max_retries,
            }),
        };
        client
            .call::<serde_json::Value>("/v3/maintenance/status", json!({}))
            .await
            .map_err(|e| backend(format!("connecting to {:?}: {e}", cfg.endpoints)))?;
        Ok(client)
    }

    /// Sends one request, failing over across endpoints on connection errors.
    async fn send(
        &self,
        path: &str,
        body: &serde_json::Value,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, KvError> {
        let n = self.inner.endpoints.len();
        let first = self.inner.current.load(Ordering::Relaxed);
        let mut last_error = String::new();
        for i in 0..n {
            let idx = (first + i) % n;
            let url = format!("{}{}", self.inner.endpoints[idx], path);
            let mut rb = self.inner.http.post(&url).header("Content-Type", "application/json");
            if let Some(t) = timeout {
                rb = rb.timeout(t);
            }
            match rb.body(body.to_string()).send().await {
                Ok(resp) => {
                    self.inner.current.store(idx, Ordering::Relaxed);
                    return Ok(resp);
                }
                Err(e) => last_error = format!("{url}: {e}"),
            }
        }
        Err(backend(last_error))
    }

    async fn call<T: DeserializeOwned>(&self, path: &str, body: serde_json::Value) -> Result<T, KvError> {
        let resp = self.send(path, &body, Some(REQUEST_TIMEOUT)).await?;
        let status = resp.status();
        let text = resp
            .bytes()
            .await
            .map_err(|e| backend(format!("{path}: reading body: {e}")))?;
        if !status.is_success() {
            return Err(backend(format!(
                "{path}: status {status}: {}",
                String::from_utf8_lossy(&text).trim()
            )));
        }
        serde_json::from_slice(&text).map_err(|e| backend(format!("{path}: decoding response: {e}")))
    }

    /// Value (with its mod_revision) and the store revision it was read at.
    async fn range_one(&self, key: &str) -> Result<(Option<(Bytes, i64)>, i64), KvError> {
        let resp: RangeResponse = self.call("/v3/kv/range", json!({ "key": b64(key.as_bytes()) })).await?;
        let value = match resp.kvs.into_iter().next() {
            Some(kv) => Some((Bytes::from(unb64(&kv.value)?), kv.mod_revision)),
            None => None,
        };
        Ok((value, resp.header.revision))
    }
}

#[async_trait]
impl VersionedStore for EtcdClient {
    async fn get_versioned(&self, key: &str) -> Result<Versioned, KvError> {
        let (value, _) = self.range_one(key).await?;
        Ok(match value {
            Some((v, rev)) => Versioned {
                value: Some(v),
                version: rev as u64,
            },
            None => Versioned {
                value: None,
                version: 0,
            },
        })
    }

    async fn put_if_version(&self, key: &str, value: Vec<u8>, version: u64) -> Result<bool, KvError> {
        let k = b64(key.as_bytes());
        let compare = if version == 0 {
            json!({ "target": "CREATE", "key": k, "result": "EQUAL", "create_revision": "0" })
        } else {
            json!({ "target": "MOD", "key": k, "result": "EQUAL", "mod_revision": version.to_string() })
        };
        let txn = json!({
            "compare": [compare],
            "success": [{ "request_put": { "key": k, "value": b64(&value) } }],
        });
        let resp: TxnResponse = self.call("/v3/kv/txn", txn).await?;
        Ok(resp.succeeded)
    }
}

#[async_trait]
impl KvClient for EtcdClient {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        Ok(self.range_one(key).await?.0.map(|(v, _)| v))
    }

    async fn cas(&self, key: &str, f: &mut CasFn<'_>) -> Result<(), KvError> {
        cas_loop(self, key, self.inner.max_retries, f).await
    }

    fn watch_key(&self, key: &str) -> WatchStream {
        let (tx, rx) = watch::channel(None);
        let this = self.clone();
        let key = key.to_string();
        tokio::spawn(async move {
            tokio::select! {
                _ = tx.closed() => {}
                _ = this.watch_loop(&key, &tx) => {}
            }
        });
        watch_receiver_stream(rx)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        let resp: RangeResponse = self
            .call(
                "/v3/kv/range",
                json!({
                    "key": b64(prefix.as_bytes()),
                    "range_end": b64(&prefix_end(prefix.as_bytes())),
                    "keys_only": true,
                }),
            )
            .await?;
        let mut keys = resp
            .kvs
            .iter()
            .map(|kv| unb64(&kv.key).map(|k| String::from_utf8_lossy(&k).into_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        let _: serde_json::Value = self
            .call("/v3/kv/deleterange", json!({ "key": b64(key.as_bytes()) }))
            .await?;
        Ok(())
    }
}

impl EtcdClient {
    async fn watch_loop(&self, key: &str, tx: &watch::Sender<Option<Bytes>>) {
        let mut backoff = Duration::from_millis(100);
        let mut delivered_any = false;
        loop {
            match self.watch_once(key, tx, &mut delivered_any, &mut backoff).await {
                Ok(()) => tracing::debug!(key, "etcd watch stream ended, restarting"),
                Err(e) => {
                    tracing::warn!(key, error = %e, ?backoff, "etcd watch failed, restarting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_WATCH_BACKOFF);
                }
            }
        }
    }

    /// Read the key, publish it, then follow its events from the next revision.
    async fn watch_once(
        &self,
        key: &str,
        tx: &watch::Sender<Option<Bytes>>,
        delivered_any: &mut bool,
        backoff: &mut Duration,
    ) -> Result<(), KvError> {
        let (value, revision) = self.range_one(key).await?;
        let value = value.map(|(v, _)| v);
        if *delivered_any {
            // After a restart only a real change is news.
            tx.send_if_modified(|current| {
                let changed = *current != value;
                *current = value;
                changed
            });
        } else {
            // The first read is always delivered, even an absent key.
            tx.send_replace(value);
            *delivered_any = true;
        }
        let create = json!({
            "create_request": { "key": b64(key.as_bytes()), "start_revision": (revision + 1).to_string() }
        });
        let mut resp = self.send("/v3/watch", &create, None).await?;
        if !resp.status().is_success() {
            return Err(backend(format!("/v3/watch: status {}", resp.status())));
        }
        *backoff = Duration::from_millis(100);
        let mut buf = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| backend(format!("/v3/watch: {e}")))? {
            buf.extend_from_slice(&chunk);
            if buf.len() > MAX_WATCH_MESSAGE {
                return Err(backend("/v3/watch: message too large"));
            }
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line = buf.split_to(pos + 1);
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                let msg: WatchMessage =
                    serde_json::from_slice(line).map_err(|e| backend(format!("/v3/watch: bad message: {e}")))?;
                if let Some(err) = msg.error {
                    return Err(backend(format!("/v3/watch: {err}")));
                }
                let Some(result) = msg.result else { continue };
                if result.canceled || result.compact_revision != 0 {
                    return Err(backend(format!(
                        "/v3/watch: canceled (compact revision {}): {}",
                        result.compact_revision, result.cancel_reason
                    )));
                }
                if let Some(event) = result.events.last() {
                    let value = match (event.kind.as_deref(), &event.kv) {
                        (Some("DELETE"), _) | (_, None) => None,
                        (_, Some(kv)) => Some(Bytes::from(unb64(&kv.value)?)),
                    };
                    tx.send_replace(value);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_end() {
        assert_eq!(prefix_end(b"collectors/"), b"collectors0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn watch_messages_decode() {
        let created: WatchMessage =
            serde_json::from_str(r#"{"result":{"header":{"revision":"5"},"created":true}}"#).unwrap();
        assert!(created.result.unwrap().events.is_empty());
        let put: WatchMessage = serde_json::from_str(
            r#"{"result":{"header":{"revision":"6"},"events":[{"kv":{"key":"aw==","mod_revision":"6","value":"dg=="}}]}}"#,
        )
        .unwrap();
        let ev = &put.result.unwrap().events[0];
        assert!(ev.kind.is_none());
        assert_eq!(ev.kv.as_ref().unwrap().mod_revision, 6);
        let del: WatchMessage =
            serde_json::from_str(r#"{"result":{"events":[{"type":"DELETE","kv":{"key":"aw=="}}]}}"#).unwrap();
        assert_eq!(del.result.unwrap().events[0].kind.as_deref(), Some("DELETE"));
    }
}
