//! Durability of the all-in-one (issue 4): what was acknowledged survives
//! `kill -9`, and a torn WAL tail costs only the torn record.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::*;
use prost::Message;
use proto::cortex as pb;

const STEP_MS: i64 = 15_000;

/// Starts `cortex` with its embedded defaults (WAL in ./data/wal) in `dir`.
async fn start_cortex(dir: &Path, http_port: u16, grpc_port: u16, run: usize) -> (Proc, String) {
    let log = dir.join(format!("cortex-{run}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(our_binary("cortex"))
        .args([
            format!("-server.http-listen-port={http_port}"),
            format!("-server.grpc-listen-port={grpc_port}"),
            // The hour of data goes in as fast as it can be sent.
            "-distributor.ingestion-rate-limit=100000000".to_string(),
            "-distributor.ingestion-burst-size=100000000".to_string(),
        ])
        .current_dir(dir)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let proc = Proc {
        name: format!("cortex-{run}"),
        child: Some(child),
        log,
    };
    let base = format!("http://127.0.0.1:{http_port}");
    wait_ready(&http_client(), &format!("{base}/ready"), Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_tail()));
    (proc, base)
}

fn value(series: usize, j: usize) -> f64 {
    // Counter-like with a fractional part, so values are not all integers.
    (series * 100_000 + j * 7) as f64 + 0.25
}

/// One remote-write request: `series` series named `metric`, samples `js` of each.
fn request(metric: &str, series: usize, t0: i64, js: std::ops::Range<usize>) -> Vec<u8> {
    let pair = |n: &str, v: &str| pb::LabelPair {
        name: n.to_string().into_bytes().into(),
        value: v.to_string().into_bytes().into(),
    };
    let ts = (0..series)
        .map(|i| pb::TimeSeries {
            labels: vec![
                pair("__name__", metric),
                pair("instance", &format!("host-{:04}:9100", i)),
                pair("job", "node"),
            ],
            samples: js
                .clone()
                .map(|j| pb::Sample {
                    value: value(i, j),
                    timestamp_ms: t0 + j as i64 * STEP_MS,
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

/// (instance, [(t_ms, v)]) of every series of a range query, sorted.
async fn query_range(base: &str, metric: &str, start_ms: i64, end_ms: i64) -> Vec<(String, Vec<(i64, f64)>)> {
    let url = format!(
        "{base}/api/prom/api/v1/query_range?query={metric}&start={}&end={}&step={}",
        start_ms as f64 / 1000.0,
        end_ms as f64 / 1000.0,
        STEP_MS as f64 / 1000.0
    );
    let (s, _, body) = http(&http_client(), "GET", &url, &[], vec![]).await.unwrap();
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut out: Vec<(String, Vec<(i64, f64)>)> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let instance = s["metric"]["instance"].as_str().unwrap().to_string();
            let points = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                    (t, p[1].as_str().unwrap().parse::<f64>().unwrap())
                })
                .collect();
            (instance, points)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn expected(series: usize, t0: i64, js: std::ops::Range<usize>) -> Vec<(String, Vec<(i64, f64)>)> {
    (0..series)
        .map(|i| {
            (
                format!("host-{:04}:9100", i),
                js.clone().map(|j| (t0 + j as i64 * STEP_MS, value(i, j))).collect(),
            )
        })
        .collect()
}

async fn metric_value(base: &str, name: &str) -> Option<f64> {
    let (_, _, body) = http(&http_client(), "GET", &format!("{base}/metrics"), &[], vec![])
        .await
        .unwrap();
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Start of a run of `samples` 15s-spaced timestamps ending a minute ago.
fn first_timestamp(samples: usize) -> i64 {
    let now = model::now_ms();
    let t = now - 60_000 - samples as i64 * STEP_MS;
    t - t.rem_euclid(STEP_MS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_sample_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, grpc_port) = (free_port(), free_port());
    let (mut proc, base) = start_cortex(dir.path(), http_port, grpc_port, 1).await;
    let client = http_client();

    // 1000 series × 240 samples at 15s: an hour of node-exporter-like data,
    // sent as Prometheus does (every series, a few samples each, in time order).
    let (series, samples, per_request) = (1000, 240, 20);
    let t0 = first_timestamp(samples);
    for start in (0..samples).step_by(per_request) {
        let (s, m) = push(
            &client,
            &base,
            "",
            request("wal_e2e", series, t0, start..start + per_request),
        )
        .await;
        assert_eq!(s, 200, "push {start}: {m}");
    }
    let want = expected(series, t0, 0..samples);
    let t_end = t0 + (samples as i64 - 1) * STEP_MS;
    assert_eq!(query_range(&base, "wal_e2e", t0, t_end).await, want, "before the crash");
    let logged = metric_value(&base, "cortex_ingester_wal_logged_bytes_total")
        .await
        .unwrap();
    println!(
        "WAL: {logged} bytes for {} samples = {:.2} bytes/sample",
        series * samples,
        logged / (series * samples) as f64
    );

    proc.kill9();
    let started = std::time::Instant::now();
    let (proc2, base) = start_cortex(dir.path(), http_port, grpc_port, 2).await;
    println!("restart + replay until ready: {:?}", started.elapsed());
    let got = query_range(&base, "wal_e2e", t0, t_end).await;
    assert_eq!(got.len(), series, "{}", proc2.log_tail());
    assert_eq!(got, want, "after kill -9 and restart");
    assert!(
        metric_value(&base, "cortex_ingester_wal_replay_duration_seconds")
            .await
            .unwrap()
            > 0.0
    );
    assert_eq!(
        metric_value(&base, "cortex_ingester_wal_corruptions_total").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbled_wal_tail_loses_only_the_last_push() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, grpc_port) = (free_port(), free_port());
    let (mut proc, base) = start_cortex(dir.path(), http_port, grpc_port, 1).await;
    let client = http_client();
    let (series, pushes, per_request) = (50, 12, 5);
    let t0 = first_timestamp(pushes * per_request);
    for p in 0..pushes {
        let js = p * per_request..(p + 1) * per_request;
        let (s, m) = push(&client, &base, "", request("wal_torn", series, t0, js)).await;
        assert_eq!(s, 200, "{m}");
    }
    proc.kill9();

    // Garble the end of the newest segment: the last push's samples record.
    let wal = dir.path().join("data/wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .collect();
    segments.sort();
    let newest = segments.last().unwrap();
    let mut data = std::fs::read(newest).unwrap();
    assert!(data.len() > 100, "{} is {} bytes", newest.display(), data.len());
    let n = data.len();
    for b in &mut data[n - 16..] {
        *b ^= 0x5a;
    }
    std::fs::write(newest, data).unwrap();

    let (_proc2, base) = start_cortex(dir.path(), http_port, grpc_port, 2).await;
    assert_eq!(
        metric_value(&base, "cortex_ingester_wal_corruptions_total").await,
        Some(1.0)
    );
    let kept = (pushes - 1) * per_request;
    assert_eq!(
        query_range(&base, "wal_torn", t0, t0 + (kept as i64 - 1) * STEP_MS).await,
        expected(series, t0, 0..kept),
        "every push before the torn one"
    );
    // And nothing of the torn push (a range query would repeat the last
    // value through the lookback window, so count raw samples instead).
    let at = (t0 + (pushes * per_request) as i64 * STEP_MS) as f64 / 1000.0;
    let url = format!("{base}/api/prom/api/v1/query?query=sum(count_over_time(wal_torn[2h]))&time={at}");
    let (s, _, body) = http(&client, "GET", &url, &[], vec![]).await.unwrap();
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let count: f64 = v["data"]["result"][0]["value"][1].as_str().unwrap().parse().unwrap();
    assert_eq!(count, (series * kept) as f64);
}
