//! A Consul KV test double: the subset of Consul's HTTP API the client uses, with Consul's
//! semantics, served by axum on 127.0.0.1:0.
//!
//! - One raft-like index for the whole store, incremented by every write (PUT or DELETE).
//! - Each key has a CreateIndex and ModifyIndex (the index of its last write).
//! - `GET /v1/kv/<key>` answers `X-Consul-Index` = the key's ModifyIndex (or, for an absent key,
//!   the index of its deletion, else the store index); `?index=N&wait=D` blocks until that index
//!   passes N or D expires (then answers the unchanged result).
//! - `PUT ?cas=N` writes only if the ModifyIndex is N (`0` = only if absent) and answers
//!   `true`/`false`; `DELETE`; `?recurse` lists a prefix; `?keys` lists key names.
//! - An optional ACL token is required in `X-Consul-Token`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::watch;

#[derive(Clone)]
struct Entry {
    value: Vec<u8>,
    create_index: u64,
    modify_index: u64,
}

#[derive(Default)]
struct Store {
    index: u64,
    entries: BTreeMap<String, Entry>,
    /// Index of the deletion of each deleted key (Consul keeps tombstones for blocking queries).
    tombstones: HashMap<String, u64>,
    requests: u64,
}

impl Store {
    fn key_index(&self, key: &str) -> u64 {
        match self.entries.get(key) {
            Some(e) => e.modify_index,
            None => self.tombstones.get(key).copied().unwrap_or(self.index),
        }
    }

    fn prefix_index(&self, prefix: &str) -> u64 {
        let live = self
            .entries
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.modify_index)
            .max()
            .unwrap_or(0);
        let dead = self
            .tombstones
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max()
            .unwrap_or(0);
        live.max(dead)
    }
}

struct Shared {
    store: Mutex<Store>,
    /// Carries the store index; blocking queries wait on it.
    changed: watch::Sender<u64>,
    acl_token: Option<String>,
}

/// A running double; the server stops when this is dropped.
pub struct ConsulDouble {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl ConsulDouble {
    pub async fn start() -> ConsulDouble {
        Self::start_with_token(None).await
    }

    pub async fn start_with_token(acl_token: Option<&str>) -> ConsulDouble {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                index: 1,
                ..Store::default()
            }),
            changed: watch::channel(1).0,
            acl_token: acl_token.map(str::to_string),
        });
        let app = Router::new()
            .route("/v1/kv/", get(kv_get))
            .route("/v1/kv/{*key}", get(kv_get).put(kv_put).delete(kv_delete))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        ConsulDouble {
            addr,
            shared,
            _shutdown: tx,
        }
    }

    /// The store-wide index.
    pub fn index(&self) -> u64 {
        self.shared.store.lock().index
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.shared.store.lock().requests
    }

    /// Forgets everything, as a Consul restart without persistence does; the index restarts too.
    pub fn wipe(&self) {
        let mut store = self.shared.store.lock();
        let requests = store.requests;
        *store = Store {
            index: 1,
            requests,
            ..Store::default()
        };
        self.shared.changed.send_replace(1);
    }
}

type Params = Query<HashMap<String, String>>;

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    match &shared.acl_token {
        None => true,
        Some(t) => headers.get("X-Consul-Token").and_then(|v| v.to_str().ok()) == Some(t.as_str()),
    }
}

fn with_index(status: StatusCode, index: u64, body: String) -> Response {
    (status, [("X-Consul-Index", index.to_string())], body).into_response()
}

async fn kv_get(
    State(shared): State<Arc<Shared>>,
    key: Option<Path<String>>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    let key = key.map(|Path(k)| k).unwrap_or_default();
    shared.store.lock().requests += 1;
    if !authorized(&shared, &headers) {
        return (StatusCode::FORBIDDEN, "ACL not found").into_response();
    }
    let recurse = q.contains_key("recurse") || q.contains_key("keys");
    let result_index = |store: &Store| {
        if recurse {
            store.prefix_index(&key)
        } else {
            store.key_index(&key)
        }
    };
    if let Some(min) = q.get("index").and_then(|i| i.parse::<u64>().ok()) {
        let wait = q
            .get("wait")
            .and_then(|w| model::duration::parse_duration(w).ok())
            .unwrap_or(Duration::from_secs(300));
        let mut rx = shared.changed.subscribe();
        let _ = tokio::time::timeout(wait, async {
            loop {
                if result_index(&shared.store.lock()) > min {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }
    let store = shared.store.lock();
    let index = result_index(&store);
    let pair = |k: &String, e: &Entry| {
        json!({
            "LockIndex": 0,
            "Key": k,
            "Flags": 0,
            "Value": if e.value.is_empty() { serde_json::Value::Null } else {
                base64::engine::general_purpose::STANDARD.encode(&e.value).into()
            },
            "CreateIndex": e.create_index,
            "ModifyIndex": e.modify_index,
        })
    };
    if recurse {
        let matching: Vec<_> = store
            .entries
            .range(key.clone()..)
            .take_while(|(k, _)| k.starts_with(&key))
            .collect();
        if matching.is_empty() {
            return with_index(StatusCode::NOT_FOUND, index, String::new());
        }
        let body = if q.contains_key("keys") {
            json!(matching.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
        } else {
            json!(matching.iter().map(|(k, e)| pair(k, e)).collect::<Vec<_>>())
        };
        return with_index(StatusCode::OK, index, body.to_string());
    }
    match store.entries.get(&key) {
        Some(e) => with_index(StatusCode::OK, index, json!([pair(&key, e)]).to_string()),
        None => with_index(StatusCode::NOT_FOUND, index, String::new()),
    }
}

async fn kv_put(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut store = shared.store.lock();
    store.requests += 1;
    if !authorized(&shared, &headers) {
        return (StatusCode::FORBIDDEN, "ACL not found").into_response();
    }
    if let Some(cas) = q.get("cas") {
        let Ok(cas) = cas.parse::<u64>() else {
            return (StatusCode::BAD_REQUEST, "Invalid cas index").into_response();
        };
        let current = store.entries.get(&key).map_or(0, |e| e.modify_index);
        if current != cas {
            return (StatusCode::OK, "false").into_response();
        }
    }
    store.index += 1;
    let index = store.index;
    let create_index = store.entries.get(&key).map_or(index, |e| e.create_index);
    store.entries.insert(
        key.clone(),
        Entry {
            value: body.to_vec(),
            create_index,
            modify_index: index,
        },
    );
    store.tombstones.remove(&key);
    drop(store);
    shared.changed.send_replace(index);
    (StatusCode::OK, "true").into_response()
}

async fn kv_delete(State(shared): State<Arc<Shared>>, Path(key): Path<String>, headers: HeaderMap) -> Response {
    let mut store = shared.store.lock();
    store.requests += 1;
    if !authorized(&shared, &headers) {
        return (StatusCode::FORBIDDEN, "ACL not found").into_response();
    }
    store.index += 1;
    let index = store.index;
    if store.entries.remove(&key).is_some() {
        store.tombstones.insert(key, index);
    }
    drop(store);
    shared.changed.send_replace(index);
    (StatusCode::OK, "true").into_response()
}
