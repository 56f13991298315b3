//! In-process: an ingester+distributor+querier, a query-frontend (split by day, FIFO results
//! cache) and two queriers pulling from it over gRPC, on one in-memory ring. Range queries over
//! three days through the frontend — cold, then from the cache — must equal the querier's own
//! answers; other reads pass through unchanged; bad input gets the querier's 400.

use std::time::Duration;

use cortex::{start, Config, Running};
use e2e::{http, http_client, snappy, HttpClient};
use prost::Message;
use ring::kv::InMemoryKv;

fn base() -> Config {
    let mut c = Config::embedded();
    c.auth_enabled = true;
    c.server.http_listen_address = "127.0.0.1".into();
    c.server.http_listen_port = 0;
    c.server.grpc_listen_address = "127.0.0.1".into();
    c.server.grpc_listen_port = 0;
    c.server.graceful_shutdown_timeout = model::GoDuration::secs(5);
    c.ingester.walconfig.wal_enabled = false;
    let store = std::env::temp_dir().join(format!("cortex-frontend-test-{}", std::process::id()));
    c.storage.boltdb_directory = store.join("index").display().to_string();
    c.storage.filesystem_directory = store.join("chunks").display().to_string();
    c.ingester.lifecycler.heartbeat_period = model::GoDuration::millis(200);
    c.ingester.lifecycler.num_tokens = 64;
    c
}

/// 4 series of `fe_test_metric`, one sample every 5 minutes over the last 3 days.
fn three_days(now: i64) -> Vec<u8> {
    use proto::cortex as pb;
    let pair = |n: &str, v: &str| pb::LabelPair {
        name: n.to_string().into_bytes().into(),
        value: v.to_string().into_bytes().into(),
    };
    let from = now - 3 * 86_400_000;
    let ts = (0..4)
        .map(|i| pb::TimeSeries {
            labels: vec![
                pair("__name__", "fe_test_metric"),
                pair("job", if i % 2 == 0 { "even" } else { "odd" }),
                pair("series", &i.to_string()),
            ],
            samples: (0..3 * 288)
                .map(|j| pb::Sample {
                    value: (i * 100_000 + j) as f64,
                    timestamp_ms: from + j as i64 * 300_000,
                })
                .collect(),
        })
        .collect();
    snappy(
        &pb::WriteRequest {
            timeseries: ts,
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

async fn get(c: &HttpClient, node: &Running, path: &str, tenant: &str) -> (u16, serde_json::Value) {
    let (s, _, b) = http(
        c,
        "GET",
        &format!("http://{}{path}", node.http_addr),
        &[("X-Scope-OrgID", tenant)],
        vec![],
    )
    .await
    .unwrap();
    (
        s,
        serde_json::from_slice(&b).unwrap_or(serde_json::Value::String(String::from_utf8_lossy(&b).into())),
    )
}

fn metric(m: &cortex::Running, name: &str) -> f64 {
    let text = m.metrics.encode();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_answers_equal_the_querier_cold_and_cached() {
    let kv = InMemoryKv::new();
    let mut c = base();
    c.target = "ingester,distributor,querier".into();
    c.ingester.lifecycler.id = "ingester-0".into();
    let direct = start(c, Some(kv.clone()))
        .await
        .expect("start ingester+distributor+querier");

    let mut c = base();
    c.target = "query-frontend".into();
    let frontend = start(c, Some(kv.clone())).await.expect("start frontend");
    let mut queriers = Vec::new();
    for i in 0..2 {
        let mut c = base();
        c.target = "querier".into();
        c.frontend_worker.frontend_address = frontend.grpc_addr.to_string();
        c.frontend_worker.id = format!("querier-{i}");
        c.frontend_worker.parallelism = 4;
        queriers.push(start(c, Some(kv.clone())).await.expect("start querier"));
    }
    let client = http_client();
    // Ready once a querier is connected; and the ingester must be ACTIVE for queriers to read.
    for _ in 0..200 {
        let (s, _) = get(&client, &frontend, "/ready", "").await;
        let (d, _) = get(&client, &direct, "/ready", "").await;
        if s == 200 && d == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&client, &frontend, "/ready", "").await.0, 200);

    let now = model::now_ms();
    let (s, _, b) = http(
        &client,
        "POST",
        &format!("http://{}/api/prom/push", direct.http_addr),
        &[
            ("X-Scope-OrgID", "t1"),
            ("Content-Encoding", "snappy"),
            ("Content-Type", "application/x-protobuf"),
        ],
        three_days(now),
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));

    let enc = |q: &str| form_urlencoded_encode(q);
    let start_s = (now - 3 * 86_400_000) as f64 / 1000.0;
    let end_s = now as f64 / 1000.0;
    let queries = [
        format!("/api/prom/api/v1/query_range?query=fe_test_metric&start={start_s}&end={end_s}&step=300"),
        // A step that does not divide a day, an unaligned start.
        format!(
            "/prometheus/api/v1/query_range?query={}&start={}&end={end_s}&step=420",
            enc("sum by (job) (rate(fe_test_metric[15m]))"),
            start_s + 17.0
        ),
        format!(
            "/api/prom/api/v1/query_range?query={}&start={start_s}&end={end_s}&step=3600",
            enc("max_over_time(fe_test_metric[1h])")
        ),
    ];
    for round in ["cold", "cached"] {
        for q in &queries {
            let (s1, want) = get(&client, &direct, q, "t1").await;
            let (s2, got) = get(&client, &frontend, q, "t1").await;
            assert_eq!((s1, s2), (200, 200), "{q}: {want} / {got}");
            assert!(
                !want["data"]["result"].as_array().unwrap().is_empty(),
                "{q}: data expected"
            );
            assert_eq!(got, want, "{round} {q}");
        }
    }
    assert!(
        metric(&frontend, "cortex_frontend_split_queries_total") >= 12.0,
        "queries were split"
    );
    assert!(
        metric(&frontend, "cortex_cache_hits_total") >= 3.0,
        "second round came from the cache"
    );
    // Another tenant sees nothing of t1's.
    let (s, other) = get(&client, &frontend, &queries[0], "t2").await;
    assert_eq!(s, 200);
    assert_eq!(other["data"]["result"], serde_json::json!([]));

    // Everything else passes through unchanged.
    for q in [
        format!("/api/prom/api/v1/query?query=fe_test_metric&time={end_s}"),
        "/api/prom/api/v1/labels".to_string(),
        "/prometheus/api/v1/label/job/values".to_string(),
        format!("/api/prom/api/v1/series?match[]={}", enc("fe_test_metric{job=\"odd\"}")),
    ] {
        let want = get(&client, &direct, &q, "t1").await;
        assert_eq!(get(&client, &frontend, &q, "t1").await, want, "{q}");
    }

    // Bad input: the querier's 400s, from the frontend itself.
    let (s, body) = get(
        &client,
        &frontend,
        "/api/prom/api/v1/query_range?query=up&start=10&end=1&step=1",
        "t1",
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(body["errorType"], "bad_data");
    assert_eq!(body["error"], "end timestamp must not be before start time");
    let (s, _) = get(
        &client,
        &frontend,
        "/api/prom/api/v1/query_range?query=up&start=1&end=2&step=1",
        "",
    )
    .await;
    assert_eq!(s, 401);

    frontend.stop().await;
    for q in queriers {
        q.stop().await;
    }
    direct.stop().await;
}

fn form_urlencoded_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
