//! The ruler in the all-in-one, against a real Alertmanager: push data, POST rule
//! groups for two tenants, see the recording series and `ALERTS` through the query
//! API, the alert in Prometheus's `/api/v1/rules` and in Alertmanager's `/api/v2/alerts`
//! with its tenant's labels and annotations.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cortex::{start, Config};
use e2e::{free_port, http, http_client, push, require_binary, synthetic_write, HttpClient, Proc};
use ring::kv::InMemoryKv;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn get_json(c: &HttpClient, url: &str, tenant: &str) -> serde_json::Value {
    let (s, _, b) = http(c, "GET", url, &[("X-Scope-OrgID", tenant)], vec![]).await.unwrap();
    assert_eq!(s, 200, "{url}: {}", String::from_utf8_lossy(&b));
    serde_json::from_slice(&b).unwrap()
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

const GROUP: &str = r#"name: latency
interval: 1s
rules:
- record: job:ruler_test_metric:max
  expr: max by (job) (ruler_test_metric)
- alert: RulerTestHigh
  expr: job:ruler_test_metric:max > 5
  labels:
    severity: page
  annotations:
    summary: "{{ $labels.job }} is at {{ $value | humanize }}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_record_alert_and_reach_alertmanager() {
    let am_bin = require_binary("prometheus-alertmanager");
    let dir = tempfile::tempdir().unwrap();
    let am_port = free_port();
    std::fs::write(
        dir.path().join("am.yml"),
        "route:\n  receiver: blackhole\nreceivers:\n- name: blackhole\n",
    )
    .unwrap();
    let _am = Proc::start(
        "alertmanager",
        &am_bin,
        &[
            format!("--config.file={}", dir.path().join("am.yml").display()),
            format!("--storage.path={}", dir.path().join("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".into(),
        ],
        dir.path(),
    );

    let mut c = Config::embedded();
    c.auth_enabled = true;
    c.server.http_listen_address = "127.0.0.1".into();
    c.server.http_listen_port = 0;
    c.server.grpc_listen_address = "127.0.0.1".into();
    c.server.grpc_listen_port = 0;
    c.ingester.walconfig.wal_enabled = false;
    c.storage.boltdb_directory = dir.path().join("index").display().to_string();
    c.storage.filesystem_directory = dir.path().join("chunks").display().to_string();
    c.ruler.storage.filesystem_dir = dir.path().join("rules").display().to_string();
    c.ruler.alertmanager_url = format!("http://127.0.0.1:{am_port}");
    c.ruler.external_url = "http://cortex.example".into();
    c.ruler.poll_interval = model::GoDuration::secs(1);
    c.ruler.max_rules_per_rule_group = 5;
    let kv = InMemoryKv::new();
    let cortex = start(c, Some(kv)).await.unwrap();
    let base = format!("http://{}", cortex.http_addr);
    let client = http_client();

    // The ruler sends an alert when it fires and then every resend delay (1m), as
    // Prometheus does: Alertmanager must be up before the first send.
    let am_ready = format!("http://127.0.0.1:{am_port}/-/ready");
    wait_for("Alertmanager ready", async || {
        matches!(http(&client, "GET", &am_ready, &[], vec![]).await, Ok((200, _, _)))
    })
    .await;

    // Data for two tenants: t1 above the threshold, t2 below.
    let from = now_ms() - 30_000;
    let (s, b) = push(
        &client,
        &base,
        "t1",
        synthetic_write("ruler_test_metric", 1, from, 31, &[("job", "api")]),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let low = e2e::synthetic_write("ruler_test_metric_low", 1, from, 31, &[("job", "db")]);
    let (s, b) = push(&client, &base, "t2", low).await;
    assert_eq!(s, 200, "{b}");

    // Bad groups: 400 naming the rule; nothing stored.
    let bad = "name: g\nrules:\n- record: r\n  expr: up\n  for: 1m\n";
    let (s, _, b) = http(
        &client,
        "POST",
        &format!("{base}/api/v1/rules/ns"),
        &[("X-Scope-OrgID", "t1")],
        bad.into(),
    )
    .await
    .unwrap();
    assert_eq!(s, 400);
    assert!(
        String::from_utf8_lossy(&b).contains("\"r\": invalid field 'for' in recording rule"),
        "{}",
        String::from_utf8_lossy(&b)
    );
    let (s, _, _) = http(
        &client,
        "GET",
        &format!("{base}/api/v1/rules"),
        &[("X-Scope-OrgID", "t1")],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(s, 404, "no groups yet");
    let (s, _, _) = http(
        &client,
        "POST",
        &format!("{base}/api/v1/rules/a%2Fb"),
        &[("X-Scope-OrgID", "t1")],
        GROUP.into(),
    )
    .await
    .unwrap();
    assert_eq!(s, 400, "namespace with a slash");

    let (s, _, b) = http(
        &client,
        "POST",
        &format!("{base}/api/v1/rules/team"),
        &[("X-Scope-OrgID", "t1")],
        GROUP.into(),
    )
    .await
    .unwrap();
    assert_eq!(s, 202, "{}", String::from_utf8_lossy(&b));
    // The same samples as t1's (0..30), scaled below the threshold of 5.
    let t2_group = GROUP.replace(
        "max by (job) (ruler_test_metric)",
        "max by (job) (ruler_test_metric_low) / 100",
    );
    let (s, _, _) = http(
        &client,
        "POST",
        &format!("{base}/api/prom/rules/team"),
        &[("X-Scope-OrgID", "t2")],
        t2_group.into(),
    )
    .await
    .unwrap();
    assert_eq!(s, 202);

    // GET returns the group as YAML.
    let (s, _, b) = http(
        &client,
        "GET",
        &format!("{base}/api/v1/rules/team/latency"),
        &[("X-Scope-OrgID", "t1")],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(s, 200);
    let text = String::from_utf8_lossy(&b).to_string();
    assert!(
        text.contains("RulerTestHigh") && text.contains("interval: 1s"),
        "{text}"
    );
    let (s, _, _) = http(
        &client,
        "GET",
        &format!("{base}/api/v1/rules/team/nope"),
        &[("X-Scope-OrgID", "t1")],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(s, 404);

    // The recording series, written back through the distributor, is queryable.
    wait_for("recording series", async || {
        let v = get_json(
            &client,
            &format!("{base}/api/prom/api/v1/query?query=job:ruler_test_metric:max"),
            "t1",
        )
        .await;
        v["data"]["result"]
            .as_array()
            .is_some_and(|r| r.len() == 1 && r[0]["metric"]["job"] == "api")
    })
    .await;
    // ALERTS{alertstate="firing"} for t1 only.
    wait_for("ALERTS series", async || {
        let v = get_json(&client, &format!("{base}/api/prom/api/v1/query?query=ALERTS"), "t1").await;
        v["data"]["result"]
            .as_array()
            .is_some_and(|r| r.len() == 1 && r[0]["metric"]["alertstate"] == "firing")
    })
    .await;
    // Once t2's group has evaluated (its recording series exists), it has no alert.
    wait_for("t2's recording series", async || {
        let v = get_json(
            &client,
            &format!("{base}/api/prom/api/v1/query?query=job:ruler_test_metric:max"),
            "t2",
        )
        .await;
        v["data"]["result"]
            .as_array()
            .is_some_and(|r| r.len() == 1 && r[0]["metric"]["job"] == "db")
    })
    .await;
    let v = get_json(&client, &format!("{base}/api/prom/api/v1/query?query=ALERTS"), "t2").await;
    assert_eq!(
        v["data"]["result"].as_array().unwrap().len(),
        0,
        "t2 is below its threshold: {v}"
    );

    // Prometheus's rules and alerts JSON.
    let v = get_json(&client, &format!("{base}/prometheus/api/v1/rules"), "t1").await;
    let g = &v["data"]["groups"][0];
    assert_eq!(g["name"], "latency");
    assert_eq!(g["file"], "team");
    assert_eq!(g["interval"], 1.0);
    assert_eq!(g["rules"][0]["type"], "recording");
    assert_eq!(g["rules"][0]["health"], "ok");
    let alert_rule = &g["rules"][1];
    assert_eq!(alert_rule["type"], "alerting");
    assert_eq!(alert_rule["state"], "firing");
    assert_eq!(alert_rule["alerts"][0]["labels"]["alertname"], "RulerTestHigh");
    assert_eq!(alert_rule["alerts"][0]["annotations"]["summary"], "api is at 30");
    assert_eq!(alert_rule["alerts"][0]["value"], "3e+01");
    let v = get_json(&client, &format!("{base}/api/prom/api/v1/alerts"), "t1").await;
    assert_eq!(v["data"]["alerts"].as_array().unwrap().len(), 1);

    // The alert reached Alertmanager with the tenant's labels and annotations.
    let am = format!("http://127.0.0.1:{am_port}/api/v2/alerts");
    wait_for("alert in Alertmanager", async || {
        let Ok((200, _, b)) = http(&client, "GET", &am, &[], vec![]).await else {
            return false;
        };
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
        v.as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x["labels"]["alertname"] == "RulerTestHigh"
                    && x["labels"]["job"] == "api"
                    && x["labels"]["severity"] == "page"
                    && x["annotations"]["summary"] == "api is at 30"
                    && x["generatorURL"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("http://cortex.example/graph?g0.expr=")
            })
        })
    })
    .await;

    // Deleting the group stops it; a second delete is 404.
    let (s, _, _) = http(
        &client,
        "DELETE",
        &format!("{base}/api/v1/rules/team/latency"),
        &[("X-Scope-OrgID", "t1")],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(s, 202);
    let (s, _, _) = http(
        &client,
        "DELETE",
        &format!("{base}/api/v1/rules/team/latency"),
        &[("X-Scope-OrgID", "t1")],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(s, 404);
    wait_for("group gone from /api/v1/rules", async || {
        let v = get_json(&client, &format!("{base}/prometheus/api/v1/rules"), "t1").await;
        v["data"]["groups"].as_array().is_some_and(|g| g.is_empty())
    })
    .await;
    // t2's group is untouched.
    let v = get_json(&client, &format!("{base}/prometheus/api/v1/rules"), "t2").await;
    assert_eq!(v["data"]["groups"].as_array().unwrap().len(), 1);
    cortex.stop().await;
}
