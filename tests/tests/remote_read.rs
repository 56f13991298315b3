//! Remote read against a real Prometheus 2.42: the all-in-one on embedded defaults holds part of
//! its data only in the store (pushed, `/ingester/flush`ed, restarted with the WAL removed) and
//! part only in the ingester (pushed after the restart). Two Prometheus servers, each with one
//! `remote_read` (`read_recent: true`) to one of our endpoints, answer `query_range` and raw
//! range selectors through their own API; every answer must equal ours and the samples pushed.
//! Both response types are also read directly: `SAMPLES` (Prometheus 2.42's client never asks
//! for anything else) and `STREAMED_XOR_CHUNKS` (CRC-checked frames, every chunk decoded).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chunk::XorChunk;
use e2e::*;
use prost::Message;
use proto::prometheus as prompb;

/// Series of the synthetic pushes: `series="000"`… of each metric.
const SERIES: usize = 4;
/// Samples per push and series, one per second.
const SAMPLES: usize = 600;

type Samples = Vec<(i64, f64)>;

/// What [`e2e::synthetic_write`] pushed: series label → samples.
fn pushed(from_ms: i64) -> BTreeMap<String, Samples> {
    (0..SERIES)
        .map(|i| {
            let s = (0..SAMPLES)
                .map(|j| (from_ms + j as i64 * 1000, (i * 10_000 + j) as f64))
                .collect();
            (format!("{i:03}"), s)
        })
        .collect()
}

fn start_cortex(dir: &std::path::Path, args: &[String], n: usize) -> Proc {
    let log = dir.join(format!("cortex-{n}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = std::process::Command::new(our_binary("cortex"))
        .args(args)
        .current_dir(dir)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    Proc {
        name: "cortex".into(),
        child: Some(child),
        log,
    }
}

/// Sum of a counter's series in a `/metrics` text.
fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn get_json(client: &HttpClient, url: &str) -> serde_json::Value {
    let (s, _, b) = http(client, "GET", url, &[], vec![]).await.unwrap();
    assert_eq!(s, 200, "{url}: {}", String::from_utf8_lossy(&b));
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["status"], "success", "{url}: {v}");
    // Prometheus turns a failed remote read into a warning and a partial answer.
    assert!(v.get("warnings").is_none(), "{url}: {v}");
    v["data"].clone()
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `data.result` sorted by metric, for comparing answers of two servers.
fn sorted_result(data: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut r = data["result"].as_array().unwrap().clone();
    r.sort_by_key(|s| s["metric"].to_string());
    r
}

/// Raw samples of a matrix answer, by `series` label.
fn matrix_samples(data: &serde_json::Value) -> BTreeMap<String, Samples> {
    assert_eq!(data["resultType"], "matrix", "{data}");
    data["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let pts = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                    (t, p[1].as_str().unwrap().parse::<f64>().unwrap())
                })
                .collect();
            (s["metric"]["series"].as_str().unwrap().to_string(), pts)
        })
        .collect()
}

fn read_request(queries: Vec<prompb::Query>, accepted: &[prompb::read_request::ResponseType]) -> Vec<u8> {
    snappy(
        &prompb::ReadRequest {
            queries,
            accepted_response_types: accepted.iter().map(|&t| t as i32).collect(),
        }
        .encode_to_vec(),
    )
}

fn name_query(metric: &str, start: i64, end: i64) -> prompb::Query {
    prompb::Query {
        start_timestamp_ms: start,
        end_timestamp_ms: end,
        matchers: vec![prompb::LabelMatcher {
            r#type: 0,
            name: "__name__".into(),
            value: metric.into(),
        }],
        hints: None,
    }
}

fn series_label(labels: &[prompb::Label]) -> String {
    labels.iter().find(|l| l.name == "series").unwrap().value.clone()
}

/// Frames of uvarint length + CRC-32C (big-endian) + `ChunkedReadResponse`, checksums verified.
fn frames(mut body: &[u8]) -> Vec<prompb::ChunkedReadResponse> {
    let mut out = vec![];
    while !body.is_empty() {
        let len = prost::encoding::decode_varint(&mut body).expect("frame length") as usize;
        let crc = u32::from_be_bytes(body[..4].try_into().unwrap());
        let msg = &body[4..4 + len];
        assert_eq!(crc32c::crc32c(msg), crc, "frame checksum");
        out.push(prompb::ChunkedReadResponse::decode(msg).expect("ChunkedReadResponse"));
        body = &body[4 + len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_reads_ingesters_and_store() {
    let prometheus = require_binary("prometheus");
    let dir = tempfile::tempdir().unwrap();
    let (http_port, grpc_port) = (free_port(), free_port());
    let args = vec![
        format!("-server.http-listen-port={http_port}"),
        format!("-server.grpc-listen-port={grpc_port}"),
    ];
    let client = http_client();
    let base = format!("http://127.0.0.1:{http_port}");
    let proc = start_cortex(dir.path(), &args, 1);
    wait_ready(&client, &format!("{base}/ready"), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_tail()));

    // Whole seconds + 500 ms: no sample sits on a range selector's boundary.
    let now_s = model::now_ms() / 1000;
    let old_from = (now_s - 50 * 60) * 1000 + 500;
    let new_from = (now_s - 20 * 60) * 1000 + 500;
    for metric in ["rr_metric", "rr_old_only"] {
        let (s, m) = push(
            &client,
            &base,
            "",
            synthetic_write(metric, SERIES, old_from, SAMPLES, &[]),
        )
        .await;
        assert_eq!(s, 200, "{m}");
    }
    let (s, _, _) = http(&client, "POST", &format!("{base}/ingester/flush"), &[], vec![])
        .await
        .unwrap();
    assert_eq!(s, 204);
    // Flushes are asynchronous: wait until every series' run is stored. With the default
    // -ingester.chunk-encoding=Bigchunk a run (here 5 chunks of 120) is one object.
    let want_chunks = (2 * SERIES) as f64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, m) = http(&client, "GET", &format!("{base}/metrics"), &[], vec![])
            .await
            .unwrap();
        let stored = counter_sum(&String::from_utf8_lossy(&m), "cortex_chunk_store_stored_chunks");
        if stored >= want_chunks {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{stored} of {want_chunks} chunks stored\n{}",
            proc.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Restart with the WAL gone: the first push now lives only in the store.
    let mut proc = proc;
    proc.terminate(Duration::from_secs(20));
    std::fs::remove_dir_all(dir.path().join("data/wal")).unwrap();
    let proc = start_cortex(dir.path(), &args, 2);
    wait_ready(&client, &format!("{base}/ready"), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_tail()));
    // The second push of the same series lives only in the ingester.
    let (s, m) = push(
        &client,
        &base,
        "",
        synthetic_write("rr_metric", SERIES, new_from, SAMPLES, &[]),
    )
    .await;
    assert_eq!(s, 200, "{m}");

    let mut want: BTreeMap<String, Samples> = pushed(old_from);
    for (k, v) in pushed(new_from) {
        want.get_mut(&k).unwrap().extend(v);
    }
    let want_old_only = pushed(old_from);
    let (start_s, end_s) = (old_from / 1000 - 60, new_from / 1000 + SAMPLES as i64 + 60);

    // Through a real Prometheus: one per endpoint, each with a single remote_read.
    let exprs = [
        "rr_metric",
        "rr_old_only",
        "sum by (series) (rr_metric)",
        "max_over_time(rr_metric[2m])",
        "count_over_time(rr_metric[1m])",
        "rr_metric - on(series) rr_old_only",
    ];
    for endpoint in ["/api/prom/read", "/prometheus/api/v1/read"] {
        let pdir = dir.path().join(format!("prom{}", endpoint.replace('/', "_")));
        std::fs::create_dir_all(&pdir).unwrap();
        let port = free_port();
        std::fs::write(
            pdir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 15s\nscrape_configs: []\nremote_read:\n  - url: {base}{endpoint}\n    read_recent: true\n"
            ),
        )
        .unwrap();
        let prom = Proc::start(
            "prometheus",
            &prometheus,
            &[
                format!("--config.file={}", pdir.join("prometheus.yml").display()),
                format!("--storage.tsdb.path={}", pdir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ],
            &pdir,
        );
        let pbase = format!("http://127.0.0.1:{port}");
        wait_ready(&client, &format!("{pbase}/-/ready"), Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", prom.log_tail()));

        // Raw samples: a 1h range selector at the end reaches both pushes.
        for (metric, want) in [("rr_metric", &want), ("rr_old_only", &want_old_only)] {
            let url =
                |b: &str, api: &str| format!("{b}{api}/query?query={}&time={end_s}", enc(&format!("{metric}[1h]")));
            let theirs = get_json(&client, &url(&pbase, "/api/v1")).await;
            assert_eq!(
                &matrix_samples(&theirs),
                want,
                "{endpoint}: {metric}[1h] via Prometheus"
            );
            let ours = get_json(&client, &url(&base, "/api/prom/api/v1")).await;
            assert_eq!(sorted_result(&theirs), sorted_result(&ours), "{endpoint}: {metric}[1h]");
        }
        let mut points = 0;
        for expr in exprs {
            let url = |b: &str, api: &str| {
                format!(
                    "{b}{api}/query_range?query={}&start={start_s}&end={end_s}&step=15",
                    enc(expr)
                )
            };
            let theirs = get_json(&client, &url(&pbase, "/api/v1")).await;
            let ours = get_json(&client, &url(&base, "/api/prom/api/v1")).await;
            let (t, o) = (sorted_result(&theirs), sorted_result(&ours));
            assert_eq!(t.len(), SERIES, "{endpoint}: {expr}: {theirs}");
            assert_eq!(t, o, "{endpoint}: {expr}: Prometheus over remote read differs from us");
            points += t.iter().map(|s| s["values"].as_array().unwrap().len()).sum::<usize>();
        }
        println!(
            "remote read {endpoint}: {} expressions, {points} points equal to ours via Prometheus 2.42",
            exprs.len()
        );
        drop(prom);
    }

    // SAMPLES, read directly: one result per query, samples clipped to the range.
    let (rs, re) = (old_from - 60_000, new_from + SAMPLES as i64 * 1000 + 60_000);
    let body = read_request(
        vec![
            name_query("rr_metric", rs, re),
            name_query("rr_old_only", old_from + 100_000, old_from + 199_000),
        ],
        &[],
    );
    let (s, headers, b) = http(
        &client,
        "POST",
        &format!("{base}/api/prom/read"),
        &[
            ("Content-Encoding", "snappy"),
            ("Content-Type", "application/x-protobuf"),
        ],
        body,
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(headers["content-type"], "application/x-protobuf");
    let resp = prompb::ReadResponse::decode(&unsnappy(&b)[..]).unwrap();
    assert_eq!(resp.results.len(), 2);
    let got: BTreeMap<String, Samples> = resp.results[0]
        .timeseries
        .iter()
        .map(|ts| {
            (
                series_label(&ts.labels),
                ts.samples.iter().map(|s| (s.timestamp, s.value)).collect(),
            )
        })
        .collect();
    assert_eq!(got, want, "SAMPLES: store + ingester");
    for ts in &resp.results[1].timeseries {
        let i: usize = series_label(&ts.labels).parse().unwrap();
        let got: Samples = ts.samples.iter().map(|s| (s.timestamp, s.value)).collect();
        let want: Samples = (100..200)
            .map(|j| (old_from + j as i64 * 1000, (i * 10_000 + j) as f64))
            .collect();
        assert_eq!(got, want, "SAMPLES: clipped store-only series {i}");
    }

    // STREAMED_XOR_CHUNKS, on every remote-read path.
    use prompb::read_request::ResponseType::{Samples as S, StreamedXorChunks as X};
    for path in ["/api/prom/read", "/api/prom/api/v1/read", "/prometheus/api/v1/read"] {
        let body = read_request(
            vec![name_query("rr_old_only", rs, re), name_query("rr_metric", rs, re)],
            &[X, S],
        );
        let (s, headers, b) = http(
            &client,
            "POST",
            &format!("{base}{path}"),
            &[
                ("Content-Encoding", "snappy"),
                ("Content-Type", "application/x-protobuf"),
            ],
            body,
        )
        .await
        .unwrap();
        assert_eq!(s, 200, "{path}: {}", String::from_utf8_lossy(&b));
        assert_eq!(
            headers["content-type"],
            "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
        );
        let mut got: [BTreeMap<String, Samples>; 2] = Default::default();
        let mut order: Vec<(i64, String)> = Vec::new();
        let mut chunks = 0;
        for f in frames(&b) {
            assert_eq!(f.chunked_series.len(), 1, "one series per frame");
            for cs in f.chunked_series {
                let key = series_label(&cs.labels);
                order.push((f.query_index, key.clone()));
                let samples = got[f.query_index as usize].entry(key).or_default();
                for c in &cs.chunks {
                    assert_eq!(c.r#type, prompb::chunk::Encoding::Xor as i32);
                    let x = XorChunk::from_bytes(c.data.clone()).expect("an XOR chunk");
                    assert!(x.num_samples() <= 120);
                    assert_eq!(
                        (x.first_time(), x.last_time()),
                        (Some(c.min_time_ms), Some(c.max_time_ms))
                    );
                    samples.extend(x.iter().filter(|(t, _)| (rs..=re).contains(t)));
                    chunks += 1;
                }
            }
        }
        let mut sorted = order.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(order, sorted, "{path}: frames in query order, series sorted");
        assert_eq!(got[0], want_old_only, "{path}: streamed store-only series");
        assert_eq!(got[1], want, "{path}: streamed store + ingester series");
        // 5 chunks of 120 per push and series, from the store and the ingester as they are.
        assert_eq!(chunks, 3 * SERIES * 5, "{path}");
        println!("remote read {path}: streamed {chunks} XOR chunks, samples equal to the pushes");
    }
    drop(proc);
}
