//! In-process cluster: 3 ingesters at replication factor 3, a distributor and
//! a querier, all on loopback, sharing one in-memory ring. Writes and reads
//! must keep working after an ingester stops, and tenants must stay apart.

use std::time::Duration;

use cortex::{start, Config, Running};
use e2e::{http, http_client, push, synthetic_write, HttpClient};
use ring::kv::InMemoryKv;

fn base() -> Config {
    let mut c = Config::embedded();
    c.auth_enabled = true;
    c.server.http_listen_address = "127.0.0.1".into();
    c.server.http_listen_port = 0;
    c.server.grpc_listen_address = "127.0.0.1".into();
    c.server.grpc_listen_port = 0;
    c.server.graceful_shutdown_timeout = model::GoDuration::secs(5);
    // In-memory only: the instances of one test process would share ./data/wal.
    c.ingester.walconfig.wal_enabled = false;
    // Ingesters flush to the chunk store when they stop: keep it out of the source tree and
    // away from other runs.
    let store = std::env::temp_dir().join(format!("cortex-cluster-test-{}", std::process::id()));
    c.storage.boltdb_directory = store.join("index").display().to_string();
    c.storage.filesystem_directory = store.join("chunks").display().to_string();
    let lc = &mut c.ingester.lifecycler;
    lc.ring.replication_factor = 3;
    lc.heartbeat_period = model::GoDuration::millis(200);
    lc.num_tokens = 64;
    c
}

/// Returns (series count, total points) of a range query.
async fn range(
    c: &HttpClient,
    q: &Running,
    tenant: &str,
    start_ms: i64,
    end_ms: i64,
) -> (usize, usize, serde_json::Value) {
    let url = format!(
        "http://{}/api/prom/api/v1/query_range?query=cluster_test_metric&start={}&end={}&step=1",
        q.http_addr,
        start_ms as f64 / 1000.0,
        end_ms as f64 / 1000.0
    );
    let (s, _, b) = http(c, "GET", &url, &[("X-Scope-OrgID", tenant)], vec![])
        .await
        .unwrap();
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let result = v["data"]["result"].as_array().unwrap().clone();
    let points = result.iter().map(|r| r["values"].as_array().unwrap().len()).sum();
    (result.len(), points, serde_json::Value::Array(result))
}

async fn active_ingesters(c: &HttpClient, d: &Running) -> usize {
    let (_, _, b) = http(
        c,
        "GET",
        &format!("http://{}/ring", d.http_addr),
        &[("Accept", "application/json")],
        vec![],
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
    v["shards"]
        .as_array()
        .map_or(0, |s| s.iter().filter(|i| i["state"] == "ACTIVE").count())
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rf3_survives_an_ingester_stopping_and_keeps_tenants_apart() {
    let kv = InMemoryKv::new();
    let mut ingesters = Vec::new();
    for i in 0..3 {
        let mut c = base();
        c.target = "ingester".into();
        c.ingester.lifecycler.id = format!("ingester-{i}");
        ingesters.push(start(c, Some(kv.clone())).await.expect("start ingester"));
    }
    let mut c = base();
    c.target = "distributor,querier".into();
    let front = start(c, Some(kv.clone())).await.expect("start distributor+querier");
    let client = http_client();
    let base_url = format!("http://{}", front.http_addr);
    wait_for("3 ACTIVE ingesters", async || {
        active_ingesters(&client, &front).await == 3
    })
    .await;

    let t0 = model::now_ms() - 600_000;
    // 20 series × 30 samples for tenant a, 5 × 30 for tenant b.
    assert_eq!(
        push(
            &client,
            &base_url,
            "tenant-a",
            synthetic_write("cluster_test_metric", 20, t0, 30, &[("tag", "a")])
        )
        .await,
        (200, String::new())
    );
    assert_eq!(
        push(
            &client,
            &base_url,
            "tenant-b",
            synthetic_write("cluster_test_metric", 5, t0, 30, &[("tag", "b")])
        )
        .await,
        (200, String::new())
    );
    // Missing tenant: 401, nothing stored.
    let (s, _, _) = http(
        &client,
        "POST",
        &format!("http://{}/api/prom/push", front.http_addr),
        &[],
        synthetic_write("cluster_test_metric", 1, t0, 1, &[("tag", "x")]),
    )
    .await
    .unwrap();
    assert_eq!(s, 401);

    // Steps land exactly on the samples (1s apart), ending at the last one, so
    // each step returns one raw point and the lookback adds none.
    let end = t0 + 29_000;
    let (n, points, _) = range(&client, &front, "tenant-a", t0, end).await;
    assert_eq!(
        (n, points),
        (20, 20 * 30),
        "tenant a sees its series, replicas deduplicated"
    );
    let (n, _, result) = range(&client, &front, "tenant-b", t0, end).await;
    assert_eq!(n, 5);
    assert!(
        result.as_array().unwrap().iter().all(|r| r["metric"]["tag"] == "b"),
        "tenant b sees only its own"
    );

    // Stop one ingester; the survivors hold every series (RF 3).
    let stopped = ingesters.remove(0);
    stopped.stop().await;
    wait_for("2 ACTIVE ingesters", async || {
        active_ingesters(&client, &front).await == 2
    })
    .await;

    assert_eq!(
        push(
            &client,
            &base_url,
            "tenant-a",
            synthetic_write("cluster_test_metric", 20, t0 + 30_000, 30, &[("tag", "a")])
        )
        .await,
        (200, String::new())
    );
    let (n, points, _) = range(&client, &front, "tenant-a", t0, t0 + 59_000).await;
    assert_eq!(
        (n, points),
        (20, 20 * 60),
        "all old and new points after losing one replica"
    );

    // Out-of-order samples reach the client as the ingesters' 400.
    let (s, body) = push(
        &client,
        &base_url,
        "tenant-a",
        synthetic_write("cluster_test_metric", 1, t0, 1, &[("tag", "a")]),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("out of order"), "{body}");

    front.stop().await;
    for i in ingesters {
        i.stop().await;
    }
}
