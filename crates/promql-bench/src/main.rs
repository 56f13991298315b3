//! `make bench-promql`: loads the same recent data into a real Prometheus (remote-write
//! receiver) and into our all-in-one, runs range queries shaped like Prometheus's
//! `promql/bench_test.go` (1/10/100 series × 1/100/1000 steps) against both HTTP APIs,
//! checks the answers agree, and prints each case's median latencies and their ratio,
//! then `promql-bench: median ratio R` (ours / Prometheus; below 1 means we are faster).
//!
//! Usage: `promql-bench --cortex <path to cortex binary> [--reps N]`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{free_port, http, http_client, require_binary, snappy, wait_ready, HttpClient, Proc};
use promql_bench::{compare, median, parse_result};
use prost::Message;
use proto::cortex as pb;

/// Sample interval of the generated data, as a 15s scrape.
const INTERVAL_MS: i64 = 15_000;
/// How much history is loaded (ending now): enough for 1000 steps of 10s plus a 5m window.
const HISTORY_MS: i64 = 3 * 3600 * 1000;
const STEP_S: i64 = 10;
/// Histogram bucket bounds of `request_duration_seconds_bucket`.
const BUCKETS: &[&str] = &["0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"];
const SIZES: &[usize] = &[1, 10, 100];
const STEPS: &[i64] = &[1, 100, 1000];

/// The query shapes of Prometheus's engine benchmark; `{n}` selects the series set.
const CASES: &[(&str, &str)] = &[
    ("rate", r#"rate(http_requests_total{n="{n}"}[1m])"#),
    ("sum by", r#"sum by (n) (rate(http_requests_total{n="{n}"}[5m]))"#),
    (
        "histogram_quantile",
        r#"histogram_quantile(0.9, rate(request_duration_seconds_bucket{n="{n}"}[5m]))"#,
    ),
    (
        "binary",
        r#"http_requests_total{n="{n}"} * 2 - memory_usage_bytes{n="{n}"}"#,
    ),
    ("max_over_time", r#"max_over_time(memory_usage_bytes{n="{n}"}[5m])"#),
    ("avg_over_time", r#"avg_over_time(memory_usage_bytes{n="{n}"}[5m])"#),
    ("topk", r#"topk(3, memory_usage_bytes{n="{n}"})"#),
];

/// A deterministic pseudo-random number for (series, sample) (splitmix64).
fn noise(a: u64, b: u64) -> u64 {
    let mut z = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_add(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn labels(pairs: &[(&str, &str)]) -> Vec<pb::LabelPair> {
    pairs
        .iter()
        .map(|(n, v)| pb::LabelPair {
            name: n.to_string().into_bytes().into(),
            value: v.to_string().into_bytes().into(),
        })
        .collect()
}

/// Every series of the data set with its samples in [from, to): counters, gauges and
/// classic histogram buckets for 1, 10 and 100 instances.
fn generate(first_ms: i64, from: i64, to: i64) -> Vec<pb::TimeSeries> {
    let mut out = Vec::new();
    for &n in SIZES {
        let n_s = n.to_string();
        for inst in 0..n {
            let inst_s = format!("{inst}");
            let seed = (n * 1000 + inst) as u64;
            let mut counter = pb::TimeSeries {
                labels: labels(&[("__name__", "http_requests_total"), ("instance", &inst_s), ("n", &n_s)]),
                samples: Vec::new(),
            };
            let mut gauge = pb::TimeSeries {
                labels: labels(&[("__name__", "memory_usage_bytes"), ("instance", &inst_s), ("n", &n_s)]),
                samples: Vec::new(),
            };
            let mut buckets: Vec<pb::TimeSeries> = BUCKETS
                .iter()
                .map(|le| pb::TimeSeries {
                    labels: labels(&[
                        ("__name__", "request_duration_seconds_bucket"),
                        ("instance", &inst_s),
                        ("le", le),
                        ("n", &n_s),
                    ]),
                    samples: Vec::new(),
                })
                .collect();
            // Cumulative state is recomputed from the first sample so that windows agree.
            let (mut total, mut counts) = (0.0f64, vec![0.0f64; BUCKETS.len()]);
            let mut t = first_ms;
            let mut i = 0u64;
            while t < to {
                total += (1 + noise(seed, i) % 10) as f64;
                for k in 0..(1 + noise(seed ^ 7, i) % 4) {
                    let v = (noise(seed ^ 13, i * 8 + k) % 6000) as f64 / 1000.0;
                    for (b, le) in BUCKETS.iter().enumerate() {
                        if *le == "+Inf" || v <= le.parse::<f64>().unwrap_or(f64::INFINITY) {
                            counts[b] += 1.0;
                        }
                    }
                }
                if t >= from {
                    let g = 1e6 + 5e5 * ((i as f64) / 20.0 + inst as f64).sin() + (noise(seed ^ 3, i) % 1000) as f64;
                    counter.samples.push(pb::Sample {
                        value: total,
                        timestamp_ms: t,
                    });
                    gauge.samples.push(pb::Sample {
                        value: g,
                        timestamp_ms: t,
                    });
                    for (b, s) in buckets.iter_mut().enumerate() {
                        s.samples.push(pb::Sample {
                            value: counts[b],
                            timestamp_ms: t,
                        });
                    }
                }
                t += INTERVAL_MS;
                i += 1;
            }
            out.push(counter);
            out.push(gauge);
            out.extend(buckets);
        }
    }
    out
}

async fn push(client: &HttpClient, url: &str, series: Vec<pb::TimeSeries>) {
    let body = snappy(
        &pb::WriteRequest {
            timeseries: series,
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let headers = [
        ("Content-Encoding", "snappy"),
        ("Content-Type", "application/x-protobuf"),
        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
    ];
    let (status, _, b) = http(client, "POST", url, &headers, body)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        (200..300).contains(&status),
        "push to {url}: {status} {}",
        String::from_utf8_lossy(&b)
    );
}

/// A query API under test.
struct Target {
    name: &'static str,
    /// URL prefix before `/api/v1/...`.
    api: String,
}

async fn query_range(client: &HttpClient, t: &Target, expr: &str, start: i64, end: i64) -> (Duration, Vec<u8>) {
    let q: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    let url = format!(
        "{}/api/v1/query_range?query={q}&start={}&end={}&step={STEP_S}",
        t.api,
        start / 1000,
        end / 1000
    );
    let began = Instant::now();
    let (status, _, body) = http(client, "GET", &url, &[], vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let took = began.elapsed();
    assert_eq!(status, 200, "{} {expr}: {}", t.name, String::from_utf8_lossy(&body));
    (took, body.to_vec())
}

fn start_cortex(bin: &PathBuf, dir: &std::path::Path, http_port: u16, grpc_port: u16) -> Proc {
    let log = dir.join("cortex.log");
    let out = std::fs::File::create(&log).expect("log file");
    let child = Command::new(bin)
        .args([
            format!("-server.http-listen-port={http_port}"),
            format!("-server.grpc-listen-port={grpc_port}"),
            "-distributor.ingestion-rate-limit=1000000000".into(),
            "-distributor.ingestion-burst-size=1000000000".into(),
        ])
        .current_dir(dir)
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    Proc {
        name: "cortex".into(),
        child: Some(child),
        log,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut cortex_bin = PathBuf::from("target/release/cortex");
    let mut reps = 7usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--cortex" => cortex_bin = PathBuf::from(args.next().expect("--cortex <path>")),
            "--reps" => reps = args.next().and_then(|s| s.parse().ok()).expect("--reps <n>"),
            other => panic!("unknown argument {other:?} (usage: promql-bench --cortex <path> [--reps N])"),
        }
    }
    // The all-in-one runs in a temporary working directory: resolve its path first.
    let cortex_bin = std::fs::canonicalize(&cortex_bin).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (build it: cargo build --release --bin cortex)",
            cortex_bin.display()
        )
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let client = http_client();

    let prom_port = free_port();
    std::fs::write(dir.path().join("prom.yml"), "global:\n  scrape_interval: 15s\n").expect("prom.yml");
    let prom = Proc::start(
        "prometheus",
        &require_binary("prometheus"),
        &[
            format!("--config.file={}", dir.path().join("prom.yml").display()),
            format!("--storage.tsdb.path={}", dir.path().join("prom").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
            "--web.enable-remote-write-receiver".into(),
        ],
        dir.path(),
    );
    let (http_port, grpc_port) = (free_port(), free_port());
    let cortex = start_cortex(&cortex_bin, dir.path(), http_port, grpc_port);
    let prom_base = format!("http://127.0.0.1:{prom_port}");
    let ours_base = format!("http://127.0.0.1:{http_port}");
    wait_ready(&client, &format!("{prom_base}/-/ready"), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", prom.log_tail()));
    wait_ready(&client, &format!("{ours_base}/ready"), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cortex.log_tail()));

    // Load: time slices across all series, oldest first, so that Prometheus's head
    // accepts every sample (it refuses samples far behind its newest one).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let end = now / INTERVAL_MS * INTERVAL_MS;
    let first = end - HISTORY_MS;
    let began = Instant::now();
    let mut total = 0usize;
    let slice = 20 * 60 * 1000;
    let mut from = first;
    while from <= end {
        let series = generate(first, from, (from + slice).min(end + 1));
        total += series.iter().map(|s| s.samples.len()).sum::<usize>();
        push(&client, &format!("{prom_base}/api/v1/write"), series.clone()).await;
        push(&client, &format!("{ours_base}/api/v1/push"), series).await;
        from += slice;
    }
    let n_series = SIZES.iter().sum::<usize>() * (2 + BUCKETS.len());
    println!(
        "promql-bench: loaded {n_series} series, {total} samples ({}h at {}s) into both in {:.1}s",
        HISTORY_MS / 3_600_000,
        INTERVAL_MS / 1000,
        began.elapsed().as_secs_f64()
    );

    let targets = [
        Target {
            name: "prometheus",
            api: prom_base.clone(),
        },
        Target {
            name: "ours",
            api: format!("{ours_base}/prometheus"),
        },
    ];
    println!(
        "{:<64} {:>11} {:>11} {:>7}  answers",
        "case (series × steps)", "prometheus", "ours", "ratio"
    );
    let mut ratios = Vec::new();
    let mut disagreements = 0;
    // Queries end a minute ago, aligned to the step, inside the loaded data.
    let q_end = (end - 60_000) / (STEP_S * 1000) * (STEP_S * 1000);
    for (name, template) in CASES {
        for &n in SIZES {
            for &steps in STEPS {
                let expr = template.replace("{n}", &n.to_string());
                let q_start = q_end - (steps - 1) * STEP_S * 1000;
                // One unmeasured run each warms caches and gives the answers to compare.
                let (_, a) = query_range(&client, &targets[0], &expr, q_start, q_end).await;
                let (_, b) = query_range(&client, &targets[1], &expr, q_start, q_end).await;
                let agree = match (parse_result(&a), parse_result(&b)) {
                    (Ok(a), Ok(b)) => match compare(&a, &b) {
                        Ok(()) => format!("agree ({} series)", a.len()),
                        Err(e) => {
                            disagreements += 1;
                            format!("DIFFER: {e}")
                        }
                    },
                    (Err(e), _) | (_, Err(e)) => {
                        disagreements += 1;
                        format!("ERROR: {e}")
                    }
                };
                let (mut tp, mut to) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
                for _ in 0..reps {
                    tp.push(
                        query_range(&client, &targets[0], &expr, q_start, q_end)
                            .await
                            .0
                            .as_secs_f64()
                            * 1e3,
                    );
                    to.push(
                        query_range(&client, &targets[1], &expr, q_start, q_end)
                            .await
                            .0
                            .as_secs_f64()
                            * 1e3,
                    );
                }
                let (mp, mo) = (median(tp), median(to));
                let ratio = mo / mp;
                ratios.push(ratio);
                println!(
                    "{:<64} {:>9.2}ms {:>9.2}ms {:>7.3}  {agree}",
                    format!("{name} {n}×{steps}"),
                    mp,
                    mo,
                    ratio
                );
            }
        }
    }
    if disagreements > 0 {
        println!("promql-bench: {disagreements} case(s) where the answers differ");
    }
    println!("promql-bench: median ratio {:.3}", median(ratios));
    drop(cortex);
    drop(prom);
}
