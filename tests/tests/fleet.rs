//! The fleet for real: etcd + 3 `ingester`s + `distributor` + `querier` at
//! replication factor 3, a `query-frontend` (split by day, results in a real
//! memcached) that the querier pulls from, behind nginx (reads → frontend,
//! pushes → distributor), fed by a real Prometheus's remote_write and read back
//! with promtool. Then `kill -9` of one ingester: pushes must still succeed and
//! range queries return every series and point, through the frontend too.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::*;

struct Ports {
    http: u16,
    grpc: u16,
}

fn role_args(etcd: &str, p: &Ports) -> Vec<String> {
    vec![
        "-ring.store=etcd".into(),
        format!("-etcd.endpoints={etcd}"),
        "-distributor.replication-factor=3".into(),
        "-server.http-listen-address=127.0.0.1".into(),
        format!("-server.http-listen-port={}", p.http),
        "-server.grpc-listen-address=127.0.0.1".into(),
        format!("-server.grpc-listen-port={}", p.grpc),
        "-log.level=info".into(),
    ]
}

fn ports() -> Ports {
    Ports {
        http: free_port(),
        grpc: free_port(),
    }
}

async fn query_json(c: &HttpClient, url: &str, tenant: &str) -> serde_json::Value {
    let (s, _, b) = http(c, "GET", url, &[("X-Scope-OrgID", tenant)], vec![]).await.unwrap();
    assert_eq!(s, 200, "{url}: {}", String::from_utf8_lossy(&b));
    serde_json::from_slice(&b).unwrap()
}

fn start_nginx(dir: &Path, listen: &str, distributor: &str, query: &str) -> Proc {
    let nginx = require_binary("nginx");
    let template = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../nginx/nginx.conf")).unwrap();
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(&prefix).unwrap();
    let conf = template
        .replace("${NGINX_PREFIX_DIR}", prefix.to_str().unwrap())
        .replace("${DISTRIBUTOR_ADDR}", distributor)
        .replace("${QUERY_ADDR}", query)
        .replace("${LISTEN_ADDR}", listen);
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let args = vec![
        "-c".to_string(),
        path.display().to_string(),
        "-p".into(),
        prefix.display().to_string(),
        "-e".into(),
        prefix.join("error.log").display().to_string(),
    ];
    let t = Command::new(&nginx).args(["-t", "-q"]).args(&args).output().unwrap();
    assert!(t.status.success(), "nginx -t: {}", String::from_utf8_lossy(&t.stderr));
    Proc::start("nginx", &nginx, &args, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_on_etcd_survives_kill_9_of_an_ingester() {
    let dir = tempfile::tempdir().unwrap();
    let client = http_client();

    // etcd
    let etcd_bin = require_binary("etcd");
    let (etcd_client, etcd_peer) = (free_port(), free_port());
    let etcd_addr = format!("127.0.0.1:{etcd_client}");
    let _etcd = Proc::start(
        "etcd",
        &etcd_bin,
        &[
            "--name=e2e".into(),
            format!("--data-dir={}", dir.path().join("etcd").display()),
            format!("--listen-client-urls=http://{etcd_addr}"),
            format!("--advertise-client-urls=http://{etcd_addr}"),
            format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-cluster=e2e=http://127.0.0.1:{etcd_peer}"),
        ],
        dir.path(),
    );
    wait_ready(&client, &format!("http://{etcd_addr}/health"), Duration::from_secs(30))
        .await
        .unwrap();

    // 3 ingesters
    let mut ingesters = Vec::new();
    for i in 0..3 {
        let p = ports();
        let mut args = role_args(&etcd_addr, &p);
        args.extend([
            format!("-ingester.lifecycler.ID=ingester-{i}"),
            "-ingester.join-after=0s".into(),
            "-ingester.min-ready-duration=0s".into(),
            "-ingester.final-sleep=0s".into(),
            "-ingester.heartbeat-period=1s".into(),
        ]);
        let proc = Proc::start(&format!("ingester-{i}"), &our_binary("ingester"), &args, dir.path());
        ingesters.push((proc, p));
    }
    for (proc, p) in &ingesters {
        wait_ready(
            &client,
            &format!("http://127.0.0.1:{}/ready", p.http),
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", proc.name, proc.log_tail()));
    }
    let dp = ports();
    let distributor = Proc::start(
        "distributor",
        &our_binary("distributor"),
        &role_args(&etcd_addr, &dp),
        dir.path(),
    );
    // The results cache: a real memcached.
    let mc_port = free_port();
    let _memcached = Proc::start(
        "memcached",
        &require_binary("memcached"),
        &[
            "-l".into(),
            "127.0.0.1".into(),
            "-p".into(),
            mc_port.to_string(),
            "-U".into(),
            "0".into(),
            "-u".into(),
            "root".into(),
        ],
        dir.path(),
    );
    let fp = ports();
    let mut fe_args = role_args(&etcd_addr, &fp);
    fe_args.extend([
        "-querier.split-queries-by-interval=24h".into(),
        "-querier.cache-results=true".into(),
        format!("-frontend.memcached.addresses=127.0.0.1:{mc_port}"),
    ]);
    let frontend = Proc::start("query-frontend", &our_binary("query-frontend"), &fe_args, dir.path());
    let qp = ports();
    let mut q_args = role_args(&etcd_addr, &qp);
    q_args.extend([
        format!("-querier.frontend-address=127.0.0.1:{}", fp.grpc),
        "-querier.id=querier-0".into(),
    ]);
    let querier = Proc::start("querier", &our_binary("querier"), &q_args, dir.path());
    let d_url = format!("http://127.0.0.1:{}", dp.http);
    let q_url = format!("http://127.0.0.1:{}", qp.http);
    let f_url = format!("http://127.0.0.1:{}", fp.http);
    // The frontend is ready once the querier has connected to it.
    for (name, url, proc) in [
        ("distributor", &d_url, &distributor),
        ("querier", &q_url, &querier),
        ("query-frontend", &f_url, &frontend),
    ] {
        wait_ready(&client, &format!("{url}/ready"), Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", proc.log_tail()));
    }
    // The distributor sees all three ingesters ACTIVE.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, b) = http(
            &client,
            "GET",
            &format!("{d_url}/ring"),
            &[("Accept", "application/json")],
            vec![],
        )
        .await
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
        let active = v["shards"]
            .as_array()
            .map_or(0, |s| s.iter().filter(|i| i["state"] == "ACTIVE").count());
        if active == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "ring never showed 3 ACTIVE ingesters: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // nginx in front, as deployed: push → distributor, reads → query-frontend, tenant "0" by default.
    let nginx_port = free_port();
    let _nginx = start_nginx(
        dir.path(),
        &format!("127.0.0.1:{nginx_port}"),
        &format!("127.0.0.1:{}", dp.http),
        &format!("127.0.0.1:{}", fp.http),
    );
    let nginx_url = format!("http://127.0.0.1:{nginx_port}");

    // A real Prometheus scraping itself every second and remote-writing through nginx;
    // promtool reads `up` back through nginx.
    let (mut prom, prom_port) = prometheus_sender(dir.path(), &format!("{nginx_url}/api/prom/push"));
    let out = promtool_sees_up(
        &format!("{nginx_url}/api/prom"),
        prom_port,
        Duration::from_secs(60),
        || {
            format!(
                "prometheus log:\n{}\ndistributor log:\n{}",
                prom.log_tail(),
                distributor.log_tail()
            )
        },
    )
    .await;
    println!("promtool query instant {nginx_url}/api/prom up:\n{}", out.trim());
    prom.terminate(Duration::from_secs(10));

    // Our own tenant, known data: 50 series × 60 points, half before the crash, half after.
    let t0 = model::now_ms() - 10 * 60_000;
    let (s, b) = push(
        &client,
        &d_url,
        "fleet",
        synthetic_write("fleet_test_metric", 50, t0, 30, &[]),
    )
    .await;
    assert_eq!(s, 200, "{b}");

    // Tenants see only their own data: tenant "0" (Prometheus via nginx) has no fleet_test_metric,
    // tenant "fleet" has no `up`.
    let q = |tenant: &'static str, expr: &'static str| {
        let client = client.clone();
        let url = format!(
            "{q_url}/api/prom/api/v1/query?query={expr}&time={}",
            model::now_ms() as f64 / 1000.0
        );
        async move {
            query_json(&client, &url, tenant).await["data"]["result"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(q("0", "fleet_test_metric").await, 0);
    assert_eq!(q("fleet", "up").await, 0);
    assert!(q("0", "up").await >= 1);

    // kill -9 one ingester: it stays in the ring (heartbeat not yet stale), unreachable.
    let (mut victim, _) = ingesters.remove(1);
    victim.kill9();
    for k in 0..10 {
        let (s, b) = push(
            &client,
            &d_url,
            "fleet",
            synthetic_write("fleet_test_metric", 50, t0 + 30_000 + k * 3_000, 3, &[]),
        )
        .await;
        assert_eq!(s, 200, "push {k} after kill -9: {b}");
    }
    let url = format!(
        "{q_url}/api/prom/api/v1/query_range?query=fleet_test_metric&start={}&end={}&step=1",
        t0 as f64 / 1000.0,
        (t0 + 59_000) as f64 / 1000.0
    );
    let v = query_json(&client, &url, "fleet").await;
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 50, "every series after kill -9");
    for r in result {
        let values = r["values"].as_array().unwrap();
        assert_eq!(values.len(), 60, "every point of {}", r["metric"]);
        let series: usize = r["metric"]["series"].as_str().unwrap().parse().unwrap();
        for (j, p) in values.iter().enumerate() {
            // Before the crash: value j at t0+j s; after: 10 pushes of 3 samples, values 0..3.
            let want = series * 10_000 + if j < 30 { j } else { (j - 30) % 3 };
            assert_eq!(p[1].as_str().unwrap(), want.to_string(), "point {j} of series {series}");
        }
    }
    println!("fleet: 50 series × 60 points intact after kill -9 of ingester-1");

    // Through nginx and the frontend, cold and then from memcached: the querier's answer.
    for round in ["cold", "cached"] {
        let via = query_json(&client, &url.replacen(&q_url, &nginx_url, 1), "fleet").await;
        assert_eq!(via, v, "{round} answer through nginx + query-frontend");
    }
    let (_, _, m) = http(&client, "GET", &format!("{f_url}/metrics"), &[], vec![])
        .await
        .unwrap();
    let m = String::from_utf8_lossy(&m);
    let hits: f64 = m
        .lines()
        .filter(|l| l.starts_with("cortex_cache_hits_total{name=\"memcache-frontend\"}"))
        .filter_map(|l| l.rsplit(" ").next()?.parse::<f64>().ok())
        .sum();
    assert!(hits >= 1.0, "second answer came from memcached:\n{m}");

    // promtool query range through nginx (tenant "0", Prometheus's own `up`).
    let mut last = String::new();
    let mut seen = None;
    for _ in 0..20 {
        let now_s = model::now_ms() / 1000;
        let o = Command::new(require_binary("promtool"))
            .args([
                "query",
                "range",
                &format!("--start={}", now_s - 120),
                &format!("--end={now_s}"),
                "--step=5s",
                &format!("{nginx_url}/api/prom"),
                "up",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        if o.status.success() && text.contains("up{instance=\"127.0.0.1:") {
            seen = Some(text);
            break;
        }
        last = format!("{text} {}", String::from_utf8_lossy(&o.stderr));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = seen.unwrap_or_else(|| panic!("promtool query range: {last}\n{}", frontend.log_tail()));
    println!(
        "promtool query range {nginx_url}/api/prom up:\n{}",
        text.lines().take(3).collect::<Vec<_>>().join("\n")
    );
}
