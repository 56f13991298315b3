//! `make bench-longrange`: long-term storage against a real Prometheus 2.42 on the same data.
//!
//! N days (`--days`, default 3) of node-exporter-like data — 2 hosts × 84 series from the load
//! generator plus 3 latency histograms of 12 buckets: 204 series at a 15s interval — are
//!
//! - pushed into our all-in-one (embedded defaults, data in a temporary directory), flushed
//!   (`/ingester/flush` then `/ingester/shutdown`, which returns once every chunk is stored),
//!   stopped, its WAL removed, and restarted, so every answer comes from the chunk store;
//! - written as OpenMetrics text, one file per UTC day, and turned into TSDB blocks with
//!   `promtool tsdb create-blocks-from openmetrics --max-block-duration=24h` (one file per day
//!   because promtool re-reads its whole input once per block), which a Prometheus then serves.
//!
//! The same range queries at a 10m step over the whole range run on both; answers are compared
//! (relative tolerance 1e-6: the engines sum in different orders), each query is timed warm
//! (`--reps` runs each, median), and the driver prints the per-query ratio ours/Prometheus, the
//! median ratio and both sides' bytes on disk (`du`, allocated). Queries start an hour and ten
//! minutes after the first sample, so no rate window reaches back past a series' first sample
//! (Prometheus 2.42 predates the rate extrapolation change of 2.51 our engine follows).
//!
//! Usage: `bench-longrange --cortex <path> [--days N] [--reps N] [--keep DIR]`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{free_port, http, http_client, require_binary, snappy, wait_ready, HttpClient, Proc};
use loadgen::series::{Kind, Rng};
use promql_bench::{compare_within, median, parse_result};
use prost::Message;
use proto::cortex as pb;

const INTERVAL_MS: i64 = 15_000;
const DAY_MS: i64 = 86_400_000;
const STEP_S: i64 = 600;
const HOSTS: usize = 2;
const HANDLERS: &[&str] = &["/api/v1/query", "/api/v1/push", "/metrics"];
const BUCKETS: &[f64] = &[
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    f64::INFINITY,
];

const QUERIES: &[(&str, &str)] = &[
    ("rate", "rate(node_cpu_seconds_total[5m])"),
    ("sum by rate", "sum by (mode) (rate(node_cpu_seconds_total[5m]))"),
    (
        "histogram_quantile",
        "histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
    ),
    (
        "histogram_quantile by",
        "histogram_quantile(0.99, sum by (handler, le) (rate(http_request_duration_seconds_bucket[10m])))",
    ),
    ("topk", "topk(3, rate(node_network_receive_bytes_total[5m]))"),
    ("avg_over_time", "avg_over_time(node_load1[1h])"),
    ("max_over_time", "max_over_time(node_filesystem_avail_bytes[30m])"),
    ("increase", "increase(node_disk_written_bytes_total[1h])"),
    (
        "ratio",
        "node_memory_MemAvailable_bytes / on (instance) node_memory_MemTotal_bytes",
    ),
    ("count by", "count by (instance) (node_cpu_seconds_total)"),
    ("quantile_over_time", "quantile_over_time(0.9, node_load5[1h])"),
    (
        "sum irate",
        "sum by (instance) (irate(node_network_transmit_packets_total[5m]))",
    ),
];

/// One generated series: labels and its values at `first + i * INTERVAL_MS`.
struct Series {
    labels: Vec<(String, String)>,
    values: Vec<f64>,
}

/// Values that look scraped: byte counts and gauges in whole bytes/pages, seconds and loads
/// with two decimals (full-precision random floats would be unlike any exporter).
fn round(v: f64) -> f64 {
    if v.abs() >= 1e6 {
        v.round()
    } else {
        (v * 100.0).round() / 100.0
    }
}

fn generate(samples: usize) -> Vec<Series> {
    let mut out = Vec::new();
    let mut rng = Rng::new(0x10_96_4a_9e);
    for spec in loadgen::generate_series(HOSTS * loadgen::series::SERIES_PER_HOST, 42) {
        let labels = spec
            .labels
            .iter()
            .map(|l| {
                (
                    String::from_utf8_lossy(&l.name).into_owned(),
                    String::from_utf8_lossy(&l.value).into_owned(),
                )
            })
            .collect();
        let mut v = round(spec.start);
        let mut values = Vec::with_capacity(samples);
        for i in 0..samples {
            if i > 0 {
                v = round(match spec.kind {
                    Kind::Counter => v + spec.step * (0.5 + rng.unit()),
                    Kind::Gauge => (v + spec.step * (rng.unit() * 2.0 - 1.0)).max(0.0),
                });
            }
            values.push(v);
        }
        out.push(Series { labels, values });
    }
    for h in 0..HOSTS {
        for handler in HANDLERS {
            let mut counts = vec![0.0f64; BUCKETS.len()];
            let mut per_bucket: Vec<Vec<f64>> = vec![Vec::with_capacity(samples); BUCKETS.len()];
            for _ in 0..samples {
                let n = 5 + (rng.next_u64() % 20) as usize;
                for _ in 0..n {
                    // Exponential latencies around 150ms.
                    let lat = -(1.0 - rng.unit()).ln() * 0.15;
                    for (b, le) in BUCKETS.iter().enumerate() {
                        if lat <= *le {
                            counts[b] += 1.0;
                        }
                    }
                }
                for (b, c) in counts.iter().enumerate() {
                    per_bucket[b].push(*c);
                }
            }
            for (b, values) in per_bucket.into_iter().enumerate() {
                let le = if BUCKETS[b].is_infinite() {
                    "+Inf".to_string()
                } else {
                    BUCKETS[b].to_string()
                };
                let labels = vec![
                    (
                        "__name__".to_string(),
                        "http_request_duration_seconds_bucket".to_string(),
                    ),
                    ("handler".to_string(), handler.to_string()),
                    ("instance".to_string(), format!("10.0.0.{h}:9100")),
                    ("job".to_string(), "api".to_string()),
                    ("le".to_string(), le),
                ];
                out.push(Series { labels, values });
            }
        }
    }
    out
}

async fn push(client: &HttpClient, url: &str, series: &[Series], first: i64, from_i: usize, to_i: usize) {
    let timeseries = series
        .iter()
        .map(|s| pb::TimeSeries {
            labels: s
                .labels
                .iter()
                .map(|(n, v)| pb::LabelPair {
                    name: n.clone().into_bytes().into(),
                    value: v.clone().into_bytes().into(),
                })
                .collect(),
            samples: (from_i..to_i)
                .map(|i| pb::Sample {
                    value: s.values[i],
                    timestamp_ms: first + i as i64 * INTERVAL_MS,
                })
                .collect(),
        })
        .collect();
    let body = snappy(
        &pb::WriteRequest {
            timeseries,
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

/// Writes samples `[from_i, to_i)` of every series as OpenMetrics text (timestamps in seconds).
fn write_openmetrics(path: &Path, series: &[Series], first: i64, from_i: usize, to_i: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("openmetrics file"));
    for s in series {
        let name = &s.labels.iter().find(|(n, _)| n == "__name__").expect("__name__").1;
        let rest: Vec<String> = s
            .labels
            .iter()
            .filter(|(n, _)| n != "__name__")
            .map(|(n, v)| format!("{n}=\"{v}\""))
            .collect();
        let prefix = format!("{name}{{{}}}", rest.join(","));
        for i in from_i..to_i {
            let t = first + i as i64 * INTERVAL_MS;
            writeln!(f, "{prefix} {} {}.{:03}", s.values[i], t / 1000, t % 1000).expect("write");
        }
    }
    writeln!(f, "# EOF").expect("write");
    f.flush().expect("flush");
}

/// Allocated bytes under `path` (`du -sk`, so sparse and block-rounded as a user sees them).
fn du(path: &Path) -> u64 {
    let o = Command::new("du").arg("-sk").arg(path).output().expect("du");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn files(path: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                n += files(&p);
            } else {
                n += 1;
            }
        }
    }
    n
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn start_cortex(bin: &Path, dir: &Path, http_port: u16, grpc_port: u16, extra: &[String]) -> Proc {
    let mut args = vec![
        format!("-server.http-listen-port={http_port}"),
        format!("-server.grpc-listen-port={grpc_port}"),
        "-distributor.ingestion-rate-limit=1000000000".into(),
        "-distributor.ingestion-burst-size=1000000000".into(),
    ];
    args.extend(extra.iter().cloned());
    let log = dir.join("cortex.log");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log file");
    let child = Command::new(bin)
        .args(&args)
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

async fn query_range(client: &HttpClient, api: &str, expr: &str, start: i64, end: i64) -> (f64, Vec<u8>) {
    let q: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    let url = format!(
        "{api}/api/v1/query_range?query={q}&start={}&end={}&step={STEP_S}",
        start / 1000,
        end / 1000
    );
    let began = Instant::now();
    let (status, _, body) = http(client, "GET", &url, &[], vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let took = began.elapsed().as_secs_f64() * 1e3;
    assert_eq!(status, 200, "{api} {expr}: {}", String::from_utf8_lossy(&body));
    (took, body.to_vec())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut cortex_bin = PathBuf::from("target/release/cortex");
    let (mut days, mut reps) = (3i64, 5usize);
    let mut keep: Option<PathBuf> = None;
    let mut cortex_args: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--cortex" => cortex_bin = PathBuf::from(args.next().expect("--cortex <path>")),
            "--days" => days = args.next().and_then(|s| s.parse().ok()).expect("--days <n>"),
            "--reps" => reps = args.next().and_then(|s| s.parse().ok()).expect("--reps <n>"),
            "--keep" => keep = Some(PathBuf::from(args.next().expect("--keep <dir>"))),
            "--cortex-arg" => cortex_args.push(args.next().expect("--cortex-arg <flag>")),
            other => panic!(
                "unknown argument {other:?} (usage: bench-longrange --cortex <path> [--days N] [--reps N] [--keep DIR] [--cortex-arg -flag=v]…)"
            ),
        }
    }
    assert!((1..=31).contains(&days), "--days must be 1..31");
    let cortex_bin = std::fs::canonicalize(&cortex_bin)
        .unwrap_or_else(|e| panic!("{}: {e} (cargo build --release --bin cortex)", cortex_bin.display()));
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("work dir");
    let ours_dir = dir.join("ours");
    let prom_dir = dir.join("prom");
    std::fs::create_dir_all(&ours_dir).expect("ours dir");
    std::fs::create_dir_all(&prom_dir).expect("prom dir");
    let client = http_client();

    // Whole UTC days ending at today's midnight, so each day is one Prometheus block.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let end = now / DAY_MS * DAY_MS;
    let first = end - days * DAY_MS;
    let per_day = (DAY_MS / INTERVAL_MS) as usize;
    let samples = per_day * days as usize;
    let began = Instant::now();
    let series = generate(samples);
    println!(
        "bench-longrange: {} series × {samples} samples ({days} days at {}s), generated in {:.1}s",
        series.len(),
        INTERVAL_MS / 1000,
        began.elapsed().as_secs_f64()
    );

    // Prometheus: blocks from OpenMetrics, one file (and one block) per day.
    let began = Instant::now();
    let promtool = require_binary("promtool");
    let blocks = prom_dir.join("data");
    for d in 0..days as usize {
        let om = dir.join(format!("day{d}.om"));
        write_openmetrics(&om, &series, first, d * per_day, (d + 1) * per_day);
        let o = Command::new(&promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=24h"])
            .arg(&om)
            .arg(&blocks)
            .output()
            .expect("promtool");
        assert!(
            o.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::remove_file(&om).expect("remove openmetrics file");
    }
    println!(
        "bench-longrange: promtool made {} block(s) in {:.1}s",
        std::fs::read_dir(&blocks).map(|r| r.count()).unwrap_or(0),
        began.elapsed().as_secs_f64()
    );
    let prom_port = free_port();
    std::fs::write(prom_dir.join("prom.yml"), "global:\n  scrape_interval: 15s\n").expect("prom.yml");
    let prom = Proc::start(
        "prometheus",
        &require_binary("prometheus"),
        &[
            format!("--config.file={}", prom_dir.join("prom.yml").display()),
            format!("--storage.tsdb.path={}", blocks.display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
            "--storage.tsdb.retention.time=60d".into(),
        ],
        &prom_dir,
    );
    let prom_api = format!("http://127.0.0.1:{prom_port}");

    // Ours: push, flush everything, stop, drop the WAL, restart.
    let (http_port, grpc_port) = (free_port(), free_port());
    let ours_base = format!("http://127.0.0.1:{http_port}");
    let mut cortex = start_cortex(&cortex_bin, &ours_dir, http_port, grpc_port, &cortex_args);
    wait_ready(&client, &format!("{ours_base}/ready"), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cortex.log_tail()));
    let began = Instant::now();
    let slice = (3_600_000 / INTERVAL_MS) as usize;
    let mut i = 0;
    while i < samples {
        let j = (i + slice).min(samples);
        push(&client, &format!("{ours_base}/api/v1/push"), &series, first, i, j).await;
        i = j;
    }
    let pushed = began.elapsed().as_secs_f64();
    let (s, _, _) = http(&client, "POST", &format!("{ours_base}/ingester/flush"), &[], vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s, 204, "flush");
    let (s, _, b) = http(&client, "POST", &format!("{ours_base}/ingester/shutdown"), &[], vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cortex.log_tail()));
    assert_eq!(s, 204, "shutdown: {}", String::from_utf8_lossy(&b));
    println!(
        "bench-longrange: pushed in {pushed:.1}s, flushed in {:.1}s",
        began.elapsed().as_secs_f64() - pushed
    );
    cortex.terminate(Duration::from_secs(30));
    let wal = ours_dir.join("data").join("wal");
    if wal.exists() {
        std::fs::remove_dir_all(&wal).expect("remove WAL");
    }
    let cortex = start_cortex(&cortex_bin, &ours_dir, http_port, grpc_port, &cortex_args);
    wait_ready(&client, &format!("{ours_base}/ready"), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cortex.log_tail()));
    wait_ready(&client, &format!("{prom_api}/-/ready"), Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", prom.log_tail()));

    let ours_api = format!("{ours_base}/prometheus");
    let q_start = (first + 70 * 60_000 + STEP_S * 1000 - 1) / (STEP_S * 1000) * (STEP_S * 1000);
    let q_end = end - INTERVAL_MS;
    println!(
        "{:<24} {:>11} {:>11} {:>7}  answers",
        format!("query ({} steps)", (q_end - q_start) / (STEP_S * 1000) + 1),
        "prometheus",
        "ours",
        "ratio"
    );
    let mut ratios = Vec::new();
    let mut differ = 0;
    for (name, expr) in QUERIES {
        let (_, a) = query_range(&client, &prom_api, expr, q_start, q_end).await;
        let (_, b) = query_range(&client, &ours_api, expr, q_start, q_end).await;
        let agree = match (parse_result(&a), parse_result(&b)) {
            (Ok(a), Ok(b)) if a.is_empty() => {
                differ += usize::from(!b.is_empty());
                format!("Prometheus answered nothing; ours {} series", b.len())
            }
            (Ok(a), Ok(b)) => match compare_within(&a, &b, 1e-6) {
                Ok(()) => format!("agree ({} series)", a.len()),
                Err(e) => {
                    differ += 1;
                    format!("DIFFER: {e}")
                }
            },
            (Err(e), _) | (_, Err(e)) => {
                differ += 1;
                format!("ERROR: {e}")
            }
        };
        let (mut tp, mut to) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
        for _ in 0..reps {
            tp.push(query_range(&client, &prom_api, expr, q_start, q_end).await.0);
            to.push(query_range(&client, &ours_api, expr, q_start, q_end).await.0);
        }
        let (mp, mo) = (median(tp), median(to));
        ratios.push(mo / mp);
        println!("{name:<24} {mp:>9.2}ms {mo:>9.2}ms {:>7.3}  {agree}", mo / mp);
    }
    if differ > 0 {
        println!("bench-longrange: {differ} quer(ies) where the answers differ");
    }
    println!("bench-longrange: median ratio {:.3} (ours/Prometheus)", median(ratios));
    let ours_data = ours_dir.join("data");
    let mut parts = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(&ours_data) {
        for e in rd.flatten() {
            parts.insert(
                e.file_name().to_string_lossy().into_owned(),
                (du(&e.path()), files(&e.path())),
            );
        }
    }
    let parts: Vec<String> = parts
        .iter()
        .map(|(n, (b, f))| format!("{n} {:.1} MiB in {f} files", mib(*b)))
        .collect();
    println!(
        "bench-longrange: disk (du, allocated): ours {:.1} MiB ({}), prometheus {:.1} MiB ({} files)",
        mib(du(&ours_data)),
        parts.join(", "),
        mib(du(&blocks)),
        files(&blocks)
    );
    drop(cortex);
    drop(prom);
    if let Some(k) = keep {
        println!("bench-longrange: data kept in {}", k.display());
    }
}
