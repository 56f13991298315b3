//! The etcd backend against a real `etcd` binary (Debian: `apt-get install etcd-server`).
//!
//! Each test starts its own etcd on loopback with free ports and a temporary data directory and
//! kills it when done. Without the binary these tests fail (they must not pass silently); run
//! them with `cargo test -p ring --test etcd`, skip them with `cargo test -p ring --lib`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use model::GoDuration;
use ring::kv::{EtcdClient, EtcdConfig, KvClient, KvConfig};
use ring::{InstanceState, Lifecycler, LifecyclerConfig, Operation, Ring, RingConfig, INGESTER_RING_KEY};

struct EtcdServer {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn etcd_binary() -> String {
    let candidates = [
        std::env::var("ETCD_BIN").unwrap_or_default(),
        "etcd".into(),
        "/usr/bin/etcd".into(),
    ];
    for c in candidates.iter().filter(|c| !c.is_empty()) {
        if Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return c.clone();
        }
    }
    panic!(
        "the etcd binary was not found (tried $ETCD_BIN, etcd, /usr/bin/etcd): install it with \
         `apt-get install -y etcd-server` or set ETCD_BIN; these tests need a real etcd"
    );
}

impl EtcdServer {
    async fn start() -> EtcdServer {
        let bin = etcd_binary();
        let dir = tempfile::tempdir().unwrap();
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let child = Command::new(bin)
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting etcd");
        let server = EtcdServer {
            child,
            endpoint: client,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if EtcdClient::connect(server.config()).await.is_ok() {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "etcd at {} did not come up in 30s",
                server.endpoint
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn config(&self) -> EtcdConfig {
        EtcdConfig {
            endpoints: vec![self.endpoint.clone()],
            dial_timeout: GoDuration::secs(2),
            max_retries: 10,
        }
    }

    async fn client(&self) -> EtcdClient {
        EtcdClient::connect(self.config()).await.unwrap()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn set(v: &'static [u8]) -> impl FnMut(Option<Bytes>) -> ring::kv::CasResult + Send {
    move |_| Ok(Some(v.to_vec()))
}

fn increment(old: Option<Bytes>) -> ring::kv::CasResult {
    let n: u64 = old.map_or(0, |b| std::str::from_utf8(&b).unwrap().parse().unwrap());
    Ok(Some((n + 1).to_string().into_bytes()))
}

async fn next(w: &mut ring::kv::WatchStream) -> Option<Bytes> {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch delivered nothing within 10s")
        .expect("watch stream ended")
}

#[tokio::test]
async fn get_cas_list_delete() {
    let etcd = EtcdServer::start().await;
    let kv = etcd.client().await;
    assert_eq!(kv.get("collectors/ring").await.unwrap(), None);
    kv.cas("collectors/ring", &mut set(b"\x00\xffbinary")).await.unwrap();
    kv.cas("collectors/distributor", &mut set(b"d")).await.unwrap();
    kv.cas("other", &mut set(b"o")).await.unwrap();
    assert_eq!(
        kv.get("collectors/ring").await.unwrap().as_deref(),
        Some(&b"\x00\xffbinary"[..])
    );
    assert_eq!(
        kv.list("collectors/").await.unwrap(),
        vec!["collectors/distributor", "collectors/ring"]
    );
    // "No change" writes nothing.
    kv.cas("other", &mut |old: Option<Bytes>| {
        assert_eq!(old.as_deref(), Some(&b"o"[..]));
        Ok(None)
    })
    .await
    .unwrap();
    kv.delete("collectors/distributor").await.unwrap();
    kv.delete("never-existed").await.unwrap();
    assert_eq!(kv.list("collectors/").await.unwrap(), vec!["collectors/ring"]);
    assert_eq!(kv.get("collectors/distributor").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cas_from_several_clients_loses_no_update() {
    let etcd = EtcdServer::start().await;
    let mut tasks = vec![];
    for _ in 0..4 {
        let kv = etcd.client().await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                kv.cas("counter", &mut increment).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let v = etcd.client().await.get("counter").await.unwrap().unwrap();
    assert_eq!(std::str::from_utf8(&v).unwrap(), "100");
}

#[tokio::test]
async fn watch_sees_current_value_updates_and_delete() {
    let etcd = EtcdServer::start().await;
    let kv = etcd.client().await;
    let mut absent = kv.watch_key("k");
    assert_eq!(next(&mut absent).await, None, "an absent key is reported as None first");
    kv.cas("k", &mut set(b"v1")).await.unwrap();
    assert_eq!(next(&mut absent).await.as_deref(), Some(&b"v1"[..]));

    let mut w = kv.watch_key("k");
    assert_eq!(next(&mut w).await.as_deref(), Some(&b"v1"[..]));
    let writer = etcd.client().await;
    writer.cas("k", &mut set(b"v2")).await.unwrap();
    assert_eq!(next(&mut w).await.as_deref(), Some(&b"v2"[..]));
    writer.delete("k").await.unwrap();
    assert_eq!(next(&mut w).await, None);
}

#[tokio::test]
async fn lifecycler_and_ring_over_etcd() {
    let etcd = EtcdServer::start().await;
    let metrics = server::Metrics::new();
    let kvcfg = KvConfig {
        store: "etcd".into(),
        etcd: etcd.config(),
        ..KvConfig::default()
    };
    let kv: Arc<dyn KvClient> = ring::kv::new_client(&kvcfg, &metrics).await.unwrap();
    let ring_cfg = RingConfig {
        kvstore: kvcfg.clone(),
        replication_factor: 1,
        ..RingConfig::default()
    };
    let cfg = LifecyclerConfig {
        ring: ring_cfg.clone(),
        num_tokens: 16,
        heartbeat_period: GoDuration::millis(100),
        min_ready_duration: GoDuration::secs(0),
        final_sleep: GoDuration::secs(0),
        id: "ingester-etcd".into(),
        ..LifecyclerConfig::default()
    };
    let lc = Lifecycler::start(cfg, kv.clone(), INGESTER_RING_KEY, "127.0.0.1:9095".into(), &metrics)
        .await
        .unwrap();
    let ring = Ring::start(ring_cfg, kv.clone(), INGESTER_RING_KEY, "ingester", &metrics)
        .await
        .unwrap();
    assert!(
        ring.wait_until(Duration::from_secs(10), |d| {
            d.ingesters
                .get("ingester-etcd")
                .is_some_and(|i| i.state == InstanceState::Active as i32 && i.tokens.len() == 16)
        })
        .await
    );
    // Stored under the default prefix, as Cortex does.
    let raw = etcd.client().await.get("collectors/ring").await.unwrap().unwrap();
    assert!(ring::decode_desc(&raw).unwrap().ingesters.contains_key("ingester-etcd"));
    let set = ring.get(12345, Operation::Write).unwrap();
    assert_eq!(&*set.instances[0].addr, "127.0.0.1:9095");
    lc.shutdown().await;
    assert!(
        ring.wait_until(Duration::from_secs(10), |d| d.ingesters.is_empty())
            .await
    );
}
