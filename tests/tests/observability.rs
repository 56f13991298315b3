//! The dashboards and alerts watch metrics that exist: every metric a
//! dashboard panel or an alert expression uses (found by parsing the
//! expressions with our PromQL parser) must be exported by our binaries after
//! an end-to-end run with traffic. The all-in-one runs every role that exists
//! on dynalite + s3rver + memcached; it takes good and bad pushes, metadata,
//! instant and range queries, a flush to the store and reads from it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::{free_port, require_binary, Proc};
use promql_parser::parser::Expr;
use serde_json::Value;

/// Metrics of roles deployed (k8s/) ahead of their code, named as Cortex names
/// them (spec §7, §8). Skipped, and printed; remove them as the roles land.
const PENDING_METRICS: &[(&str, &str)] = &[
    ("cortex_query_frontend_queue_length", "query-frontend (issue 10)"),
    (
        "cortex_query_frontend_queue_duration_seconds_bucket",
        "query-frontend (issue 10)",
    ),
    (
        "cortex_query_frontend_queue_duration_seconds_sum",
        "query-frontend (issue 10)",
    ),
    (
        "cortex_query_frontend_queue_duration_seconds_count",
        "query-frontend (issue 10)",
    ),
    ("cortex_query_frontend_retries_bucket", "query-frontend (issue 10)"),
    ("cortex_query_frontend_retries_sum", "query-frontend (issue 10)"),
    ("cortex_query_frontend_retries_count", "query-frontend (issue 10)"),
    (
        "cortex_query_frontend_discarded_requests_total",
        "query-frontend (issue 10)",
    ),
    ("cortex_frontend_split_queries_total", "query-frontend (issue 10)"),
    ("cortex_prometheus_rule_evaluations_total", "ruler (issue 11)"),
    ("cortex_prometheus_rule_evaluation_failures_total", "ruler (issue 11)"),
    (
        "cortex_prometheus_rule_group_iterations_missed_total",
        "ruler (issue 11)",
    ),
    ("cortex_prometheus_rule_group_iterations_total", "ruler (issue 11)"),
    ("cortex_prometheus_rule_group_last_duration_seconds", "ruler (issue 11)"),
    ("cortex_ruler_write_requests_failed_total", "ruler (issue 11)"),
];

/// Metrics that other programs export: the kubelet's cAdvisor, scraped by
/// the retrieval Prometheus (k8s/retrieval.yaml) for the Resources dashboard.
const EXTERNAL_METRICS: &[(&str, &str)] = &[
    ("container_cpu_usage_seconds_total", "cAdvisor"),
    ("container_memory_working_set_bytes", "cAdvisor"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// (where, expression) of every dashboard target and alert rule.
fn expressions() -> Vec<(String, String)> {
    fn walk(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(e)) = m.get("expr") {
                    let title = m.get("title").and_then(Value::as_str).unwrap_or("");
                    out.push((format!("{at} {title}"), e.clone()));
                }
                for (k, v) in m {
                    let at = match (k.as_str(), m.get("title").and_then(Value::as_str)) {
                        ("targets", Some(t)) => format!("{at} / {t}"),
                        _ => at.to_string(),
                    };
                    walk(v, &at, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, at, out)),
            _ => {}
        }
    }
    let mut out = vec![];
    let dir = repo().join("dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        if name.ends_with(".json") {
            walk(&serde_json::from_str(&text).unwrap(), &name, &mut out);
        } else if name == "alerts.yaml" {
            let v: Value = serde_saphyr::from_str(&text).unwrap();
            for g in v["groups"].as_array().unwrap() {
                for r in g["rules"].as_array().unwrap() {
                    let what = r["alert"].as_str().or(r["record"].as_str()).unwrap();
                    out.push((format!("{name} {what}"), r["expr"].as_str().unwrap().to_string()));
                }
            }
        }
    }
    out
}

/// Grafana's variables, as a query would see them filled in.
fn fill_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$cluster", ".*")
        .replace("$job", ".+")
        .replace("$namespace", ".+")
}

fn metric_names(e: &Expr, out: &mut BTreeSet<String>) {
    match e {
        Expr::VectorSelector(vs) => {
            let name = vs.name.clone().or_else(|| {
                vs.matchers
                    .matchers
                    .iter()
                    .find(|m| m.name == "__name__")
                    .map(|m| m.value.clone())
            });
            out.insert(name.expect("every selector names its metric"));
        }
        Expr::MatrixSelector(ms) => metric_names(&Expr::VectorSelector(ms.vs.clone()), out),
        Expr::Subquery(sq) => metric_names(&sq.expr, out),
        Expr::Aggregate(a) => {
            metric_names(&a.expr, out);
            if let Some(p) = &a.param {
                metric_names(p, out);
            }
        }
        Expr::Unary(u) => metric_names(&u.expr, out),
        Expr::Binary(b) => {
            metric_names(&b.lhs, out);
            metric_names(&b.rhs, out);
        }
        Expr::Paren(p) => metric_names(&p.expr, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| metric_names(a, out)),
        _ => {}
    }
}

fn node_bin(name: &str) -> PathBuf {
    let opt = std::env::var("PEERS_OPT").unwrap_or_else(|_| "/opt/peers".into());
    let p = PathBuf::from(opt).join("node/node_modules/.bin").join(name);
    assert!(
        p.exists(),
        "{name} is not installed: run scripts/install-peers.sh (make e2e does)"
    );
    p
}

async fn wait_tcp(port: u16, what: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not listen on {port}");
}

/// A write request of one series with metadata (so the metadata path counts too).
fn write_with_metadata(metric: &str, t_ms: i64) -> Vec<u8> {
    use prost::Message;
    use proto::cortex as pb;
    let pair = |n: &str, v: &str| pb::LabelPair {
        name: n.as_bytes().to_vec().into(),
        value: v.as_bytes().to_vec().into(),
    };
    let req = pb::WriteRequest {
        timeseries: vec![pb::TimeSeries {
            labels: vec![pair("__name__", metric), pair("job", "observability")],
            samples: vec![pb::Sample {
                value: 1.0,
                timestamp_ms: t_ms,
            }],
        }],
        metadata: vec![pb::MetricMetadata {
            r#type: 1,
            metric_family_name: metric.into(),
            help: "A counter of the observability test.".into(),
            unit: String::new(),
        }],
        ..Default::default()
    };
    e2e::snappy(&req.encode_to_vec())
}

/// `YYYY-MM-DD` of a day number since the Unix epoch (civil-from-days).
fn ymd(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_metric_is_exported() {
    // What the dashboards and alerts use.
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let exprs = expressions();
    for (at, expr) in &exprs {
        let ast = promql::parse(&fill_variables(expr)).unwrap_or_else(|e| panic!("{at}: {expr}\n{e}"));
        let mut names = BTreeSet::new();
        metric_names(&ast, &mut names);
        for n in names {
            used.entry(n).or_default().push(at.clone());
        }
    }
    assert!(
        exprs.len() > 100,
        "{} expressions: the dashboards are missing",
        exprs.len()
    );

    // The all-in-one on the store's real peers.
    let dir = tempfile::tempdir().unwrap();
    let (dp, sp, mp) = (free_port(), free_port(), free_port());
    let _dynalite = Proc::start(
        "dynalite",
        &node_bin("dynalite"),
        &[
            "--host",
            "127.0.0.1",
            "--port",
            &dp.to_string(),
            "--createTableMs",
            "10",
        ]
        .map(String::from),
        dir.path(),
    );
    std::fs::create_dir_all(dir.path().join("s3")).unwrap();
    let s3_dir = dir.path().join("s3").display().to_string();
    let _s3rver = Proc::start(
        "s3rver",
        &node_bin("s3rver"),
        &[
            "-d",
            &s3_dir,
            "-a",
            "127.0.0.1",
            "-p",
            &sp.to_string(),
            "--configure-bucket",
            "cortex-chunks",
            "--allow-mismatched-signatures",
        ]
        .map(String::from),
        dir.path(),
    );
    let _memcached = Proc::start(
        "memcached",
        &require_binary("memcached"),
        &["-l", "127.0.0.1", "-p", &mp.to_string(), "-U", "0", "-u", "root"].map(String::from),
        dir.path(),
    );
    wait_tcp(dp, "dynalite").await;
    wait_tcp(sp, "s3rver").await;
    wait_tcp(mp, "memcached").await;
    // The schema the k8s manifests ship.
    let schema_cm: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(repo().join("k8s/schema-config.yaml")).unwrap()).unwrap();
    // ... starting two weeks ago, so the table-manager keeps three weeks of tables, not years of them.
    let schema = schema_cm["data"]["schema.yaml"].as_str().unwrap();
    let two_weeks_ago = model::now_ms() / 1000 / 86_400 - 14;
    let schema = schema.replace("from: 2020-01-06", &format!("from: {}", ymd(two_weeks_ago)));
    assert!(
        schema.contains(&ymd(two_weeks_ago)),
        "k8s/schema-config.yaml's first period moved: {schema}"
    );
    let schema_file = dir.path().join("schema.yaml");
    std::fs::write(&schema_file, schema).unwrap();
    let (http_port, grpc_port) = (free_port(), free_port());
    let mc = format!("127.0.0.1:{mp}");
    let args = vec![
        format!("-server.http-listen-port={http_port}"),
        format!("-server.grpc-listen-port={grpc_port}"),
        format!("-schema-config-file={}", schema_file.display()),
        format!("-dynamodb.url=dynamodb://user:pass@127.0.0.1:{dp}/"),
        format!("-s3.url=http://S3RVER:S3RVER@127.0.0.1:{sp}/cortex-chunks"),
        "-s3.force-path-style=true".into(),
        format!("-store.chunks-cache.memcached.addresses={mc}"),
        format!("-store.index-cache-read.memcached.addresses={mc}"),
        format!("-store.index-cache-write.memcached.addresses={mc}"),
        "-store.index-cache-validity=1ms".into(),
        // A second table sync soon: it reports the capacity of the tables the first created.
        "-table-manager.poll-interval=1s".into(),
        // Flushed series leave memory a second after their last chunk is stored.
        "-ingester.flush-period=1s".into(),
        "-ingester.retain-period=1s".into(),
        format!("-ingester.wal-dir={}", dir.path().join("wal").display()),
        format!("-boltdb.dir={}", dir.path().join("index").display()),
        format!("-local.chunk-directory={}", dir.path().join("chunks").display()),
    ];
    let cortex = Proc::start("cortex", &e2e::our_binary("cortex"), &args, dir.path());
    let client = e2e::http_client();
    let base = format!("http://127.0.0.1:{http_port}");
    e2e::wait_ready(&client, &format!("{base}/ready"), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cortex.log_tail()));

    // The table-manager has created this week's tables before anything is flushed.
    let mut synced = false;
    for _ in 0..100 {
        let (_, _, m) = e2e::http(&client, "GET", &format!("{base}/metrics"), &[], vec![])
            .await
            .unwrap();
        if String::from_utf8_lossy(&m)
            .lines()
            .any(|l| l.starts_with("cortex_table_capacity_units{"))
        {
            synced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(synced, "the table-manager never synced twice\n{}", cortex.log_tail());

    // Traffic: good series, metadata, a refused series, queries, a flush, reads from the store.
    let from = model::now_ms() - 11 * 60_000;
    let (s, b) = e2e::push(
        &client,
        &base,
        "",
        e2e::synthetic_write("obs_metric", 20, from, 600, &[]),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = e2e::push(
        &client,
        &base,
        "",
        write_with_metadata("obs_counter_total", model::now_ms()),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = e2e::push(
        &client,
        &base,
        "",
        e2e::synthetic_write("obs_bad", 1, from, 1, &[("0bad", "x")]),
    )
    .await;
    assert_eq!(s, 400, "an invalid label name is refused");
    // Out of order for the ingester: the distributor's append to it fails.
    let (s, _) = e2e::push(
        &client,
        &base,
        "",
        e2e::synthetic_write("obs_metric", 1, from - 60_000, 1, &[]),
    )
    .await;
    assert_eq!(s, 400, "an out-of-order sample is refused");
    let range = |q: &str| {
        format!(
            "{base}/prometheus/api/v1/query_range?query={q}&start={}&end={}&step=15",
            from / 1000,
            from / 1000 + 660
        )
    };
    for url in [
        range("sum(rate(obs_metric[1m]))"),
        format!("{base}/api/prom/api/v1/query?query=obs_metric"),
    ] {
        let (s, _, b) = e2e::http(&client, "GET", &url, &[], vec![]).await.unwrap();
        assert_eq!(s, 200, "{url}: {}", String::from_utf8_lossy(&b));
    }
    let (s, _, _) = e2e::http(&client, "POST", &format!("{base}/ingester/flush"), &[], vec![])
        .await
        .unwrap();
    assert_eq!(s, 204);
    let mut exported = BTreeSet::new();
    for _ in 0..150 {
        let (_, _, b) = e2e::http(&client, "GET", &range("obs_metric"), &[], vec![])
            .await
            .unwrap();
        let (_, _, m) = e2e::http(&client, "GET", &format!("{base}/metrics"), &[], vec![])
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&m);
        exported = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
            .collect();
        // Flushes, store reads and the removal of flushed series are asynchronous: wait for all.
        let all = used
            .keys()
            .filter(|n| !PENDING_METRICS.iter().chain(EXTERNAL_METRICS).any(|(m, _)| m == *n))
            .all(|n| exported.contains(n));
        if all && !b.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut missing = vec![];
    let mut checked = 0;
    println!(
        "metrics used by dashboards/ and dashboards/alerts.yaml ({}):",
        used.len()
    );
    for (name, at) in &used {
        let pending = PENDING_METRICS.iter().chain(EXTERNAL_METRICS).find(|(m, _)| m == name);
        match (exported.contains(name), pending) {
            (true, Some((_, why))) => println!("  {name}: exported (remove it from the allow-list: {why})"),
            (true, None) => {
                checked += 1;
                println!("  {name}: exported");
            }
            (false, Some((_, why))) => println!("  {name}: SKIPPED, exported by {why}"),
            (false, None) => {
                println!("  {name}: MISSING (used by {})", at.join(", "));
                missing.push(name.clone());
            }
        }
    }
    println!("{checked} metrics exported by our binaries, {} missing", missing.len());
    assert!(
        missing.is_empty(),
        "dashboards/alerts use metrics no binary of ours exports: {missing:?}\n{}",
        cortex.log_tail()
    );
}
