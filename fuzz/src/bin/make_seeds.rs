//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`
//! from the real encoders (remote write, remote read, XOR chunks, a real
//! ingester's WAL and checkpoint, chunk objects). Run by hand after a format
//! change: `cargo run --manifest-path fuzz/Cargo.toml --bin make_seeds`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use chunk::XorChunk;
use model::Labels;
use prost::Message;
use proto::cortex::{
    metric_metadata, LabelMatcher, LabelPair, MatchType, MetricMetadata, QueryRequest, ReadRequest, Sample, TimeSeries,
    WriteRequest,
};
use storage::chunk_object::ChunkRef;
use storage::ChunkEntry;

fn write(dir: &Path, name: &str, data: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

fn pair(n: &str, v: &str) -> LabelPair {
    LabelPair {
        name: Bytes::copy_from_slice(n.as_bytes()),
        value: Bytes::copy_from_slice(v.as_bytes()),
    }
}

fn series(name: &str, id: usize, samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: vec![pair("__name__", name), pair("job", "api"), pair("id", &id.to_string())],
        samples: samples
            .iter()
            .map(|&(t, v)| Sample {
                value: v,
                timestamp_ms: t,
            })
            .collect(),
    }
}

fn write_requests() -> Vec<(&'static str, WriteRequest)> {
    let now = 1_700_000_000_000;
    vec![
        (
            "three_series",
            WriteRequest {
                timeseries: (0..3)
                    .map(|i| series("http_requests_total", i, &[(now, i as f64), (now + 15_000, 1.5)]))
                    .collect(),
                ..Default::default()
            },
        ),
        (
            "metadata",
            WriteRequest {
                timeseries: vec![series("up", 0, &[(now, 1.0)])],
                metadata: vec![MetricMetadata {
                    r#type: metric_metadata::MetricType::Counter as i32,
                    metric_family_name: "http_requests_total".into(),
                    help: "Requests.".into(),
                    unit: "".into(),
                }],
                ..Default::default()
            },
        ),
        (
            "specials",
            WriteRequest {
                timeseries: vec![
                    series("m", 1, &[(now, f64::NAN), (now + 1, f64::INFINITY), (now + 2, -0.0)]),
                    TimeSeries {
                        labels: vec![pair("__name__", "bad name"), pair("", "x"), pair("a", "")],
                        samples: vec![Sample {
                            value: 1.0,
                            timestamp_ms: i64::MIN,
                        }],
                    },
                ],
                ..Default::default()
            },
        ),
    ]
}

fn read_requests() -> Vec<(&'static str, ReadRequest)> {
    let m = |t: MatchType, n: &str, v: &str| LabelMatcher {
        r#type: t as i32,
        name: n.into(),
        value: v.into(),
    };
    use MatchType::*;
    vec![
        (
            "one_query",
            ReadRequest {
                queries: vec![QueryRequest {
                    start_timestamp_ms: 0,
                    end_timestamp_ms: 3_600_000,
                    matchers: vec![m(Equal, "__name__", "m")],
                }],
            },
        ),
        (
            "every_matcher",
            ReadRequest {
                queries: vec![
                    QueryRequest {
                        start_timestamp_ms: -1,
                        end_timestamp_ms: i64::MAX,
                        matchers: vec![
                            m(Equal, "__name__", "m"),
                            m(NotEqual, "job", "b"),
                            m(RegexMatch, "instance", "i.*"),
                            m(RegexNoMatch, "code", "5.."),
                        ],
                    },
                    QueryRequest {
                        start_timestamp_ms: 10,
                        end_timestamp_ms: 5,
                        matchers: vec![m(RegexMatch, "job", "(a|b)+")],
                    },
                ],
            },
        ),
    ]
}

const QUERIES: &[&str] = &[
    "m",
    "m\n1800",
    "m{job=\"a\"}[5m]\n3600\n1",
    "rate(http_requests_total[5m])\n0\n3600\n60",
    "sum by (code) (rate(http_requests_total[1m]))\n0\n3600\n15s",
    "histogram_quantile(0.9, rate(lat_bucket[5m]))\n0\n3600\n1m",
    "count_over_time(vector(1)[1h:1m])\n3600",
    "max_over_time(rate(m[1m])[10m:30s])\n600\n3600\n30",
    "topk(2, m) or bottomk(1, m)\n100\n2000\n100",
    "label_replace(m, \"x\", \"$1\", \"job\", \"(.*)\")\n1000",
    "m offset 5m @ 1000\n2000",
    "-m ^ 2 % 3 > bool 1\n0\n600\n60\n1s",
    "absent(nope{job=~\"a|b\"})\n60",
    "sort_desc(quantile(0.5, odd))\n1200",
    "predict_linear(m[10m], 600) + deriv(m[5m]) * holt_winters(m[10m], 0.5, 0.5)\n1800",
    "timestamp(m) - time() / scalar(sum(m))\n0\n3600\n120",
    "count_values(\"v\", m) unless on(job) group_left m\n1000",
    "clamp(m, -1, 1) != ignoring(job) m\n3000",
    "{__name__=~\"m|odd\", job!=\"c\"}\n2e3\n3e3\n1.5",
    "changes(odd[10m]) + resets(http_requests_total[1h])\n3600",
    "1 + 2 * 3 - (4 / 5)\n1e9",
    "\"a string\"\n0",
    "quantile_over_time(0.9, m[30m:1m])\n2021-01-01T00:00:00Z",
    "stddev(m) and m\n0\n3600\n15\n100ms",
    "sum(m)\n0\n3600\n0",
    "m[1y:1ms]\n3600",
];

fn chunks() -> Vec<(&'static str, XorChunk)> {
    let mut out = Vec::new();
    let mut c = XorChunk::new();
    c.append(1_000, 1.0);
    out.push(("one_sample", c));
    let mut c = XorChunk::new();
    for i in 0..120 {
        c.append(i * 15_000, i as f64);
    }
    out.push(("regular_120", c));
    let mut c = XorChunk::new();
    let mut t = -1_000_000_000i64;
    for i in 0..60i64 {
        t += 1 + (i * i * 7919) % 100_000;
        c.append(t, (i as f64).sin() * 1e6);
    }
    out.push(("irregular", c));
    let mut c = XorChunk::new();
    for (i, v) in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        model::stale_nan(),
        -0.0,
        f64::MIN_POSITIVE,
    ]
    .into_iter()
    .enumerate()
    {
        c.append(i as i64 * 60_000, v);
    }
    out.push(("specials", c));
    let mut c = XorChunk::new();
    c.append(i64::MIN / 2, 0.0);
    c.append(0, 1.0);
    c.append(i64::MAX / 2, 2.0);
    out.push(("huge_deltas", c));
    out
}

fn chunk_entries() -> Vec<(&'static str, ChunkEntry)> {
    chunks()
        .into_iter()
        .map(|(name, c)| {
            let (from, through) = (c.first_time().unwrap(), c.last_time().unwrap());
            (
                name,
                ChunkEntry {
                    tenant: cortex_fuzz::TENANT.into(),
                    fingerprint: 0x1234_5678_9abc_def0,
                    labels: Labels::from_pairs([("__name__", "m"), ("job", "a<&>\"\\")]),
                    from_ms: from,
                    through_ms: through,
                    encoding: chunk::ENCODING_PROMETHEUS_XOR,
                    data: c.to_bytes(),
                },
            )
        })
        .collect()
}

/// A real ingester's WAL segment and checkpoint after a few pushes.
fn wal_files() -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut cfg = ingester::Config::default();
        cfg.walconfig.wal_enabled = true;
        cfg.walconfig.wal_dir = dir.path().to_string_lossy().into_owned();
        let metrics = server::Metrics::new();
        let ing = ingester::Ingester::new(cfg, &metrics);
        ing.wait_started().await.unwrap();
        for round in 0..3i64 {
            let req = WriteRequest {
                timeseries: (0..4)
                    .map(|i| {
                        series(
                            "m",
                            i,
                            &[(round * 15_000, round as f64), (round * 15_000 + 1, f64::NAN)],
                        )
                    })
                    .collect(),
                ..Default::default()
            };
            ing.push("t1", req).await.unwrap();
        }
        ing.push(
            "t2",
            WriteRequest {
                timeseries: vec![series("other", 9, &[(5, 5.0)])],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let segment = std::fs::read(dir.path().join("00000000")).unwrap();
        let covered = ing.checkpoint().unwrap();
        let ckpt = dir.path().join(format!("checkpoint.{covered:06}")).join("00000000");
        let checkpoint = std::fs::read(&ckpt).unwrap_or_else(|e| panic!("{}: {e}", ckpt.display()));
        (segment, checkpoint)
    })
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");

    let dir = root.join("remote_write");
    for (name, req) in write_requests() {
        write(
            &dir,
            &format!("{name}.snappy"),
            &[&[0u8][..], &distributor::encode_write_request(&req)].concat(),
        );
        write(
            &dir,
            &format!("{name}.proto"),
            &[&[1u8][..], &req.encode_to_vec()].concat(),
        );
    }

    let dir = root.join("remote_read");
    for (name, req) in read_requests() {
        let raw = req.encode_to_vec();
        let compressed = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        write(&dir, &format!("{name}.snappy"), &[&[0u8][..], &compressed].concat());
        write(&dir, &format!("{name}.proto"), &[&[1u8][..], &raw].concat());
        write(&dir, &format!("{name}.legacy_path"), &[&[3u8][..], &raw].concat());
        // accepted_response_types = [STREAMED_XOR_CHUNKS] (prompb field 2), which Cortex's
        // ReadRequest lacks: the chunked-frame path.
        write(
            &dir,
            &format!("{name}.streamed"),
            &[&[1u8][..], &raw, &[0x10, 0x01]].concat(),
        );
    }

    let dir = root.join("promql_api");
    for (i, q) in QUERIES.iter().enumerate() {
        write(&dir, &format!("q{i:02}"), q.as_bytes());
    }

    let dir = root.join("xor_chunk");
    for (name, c) in chunks() {
        write(&dir, name, c.bytes());
    }

    let dir = root.join("chunk_object");
    for (name, e) in chunk_entries() {
        let (bytes, r) = storage::chunk_object::encode_with_ref(&e);
        write(&dir, name, &[r.external_key().as_bytes(), b"\n", &bytes].concat());
        let legacy = ChunkRef { checksum: None, ..r };
        write(
            &dir,
            &format!("{name}.legacy_key"),
            &[legacy.external_key().as_bytes(), b"\n", &bytes].concat(),
        );
    }

    let dir = root.join("wal_replay");
    let (segment, checkpoint) = wal_files();
    write(&dir, "segment", &[&[0u8][..], &segment].concat());
    write(&dir, "checkpoint", &[&[1u8][..], &checkpoint].concat());
    let join = |recs: Vec<Vec<u8>>| recs.join(cortex_fuzz::RECORD_SEPARATOR);
    write(
        &dir,
        "segment.records",
        &[&[2u8][..], &join(cortex_fuzz::unframe_segment(&segment))].concat(),
    );
    write(
        &dir,
        "checkpoint.records",
        &[&[3u8][..], &join(cortex_fuzz::unframe_segment(&checkpoint))].concat(),
    );
    println!("seeds written under {}", root.display());
}
