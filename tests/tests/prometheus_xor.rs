//! Byte compatibility of our XOR chunks with a real Prometheus 2.42: write
//! samples into it, read them back as STREAMED_XOR_CHUNKS, decode every chunk
//! with our decoder, and re-encode the samples to identical bytes.

use std::time::Duration;

use chunk::XorChunk;
use e2e::*;
use prost::Message;
use proto::prometheus as prompb;

fn series(name: &str, samples: Vec<(i64, f64)>) -> prompb::TimeSeries {
    prompb::TimeSeries {
        labels: vec![
            prompb::Label {
                name: "__name__".into(),
                value: name.into(),
            },
            prompb::Label {
                name: "job".into(),
                value: "xor".into(),
            },
        ],
        samples: samples
            .into_iter()
            .map(|(t, v)| prompb::Sample { value: v, timestamp: t })
            .collect(),
    }
}

/// Reads uvarint-length + CRC32C(big-endian) + message frames.
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
async fn prometheus_chunks_decode_and_reencode_identically() {
    let prometheus = require_binary("prometheus");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        "global:\n  scrape_interval: 15s\nscrape_configs: []\n",
    )
    .unwrap();
    let _prom = Proc::start(
        "prometheus",
        &prometheus,
        &[
            format!("--config.file={}", dir.path().join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-remote-write-receiver".into(),
        ],
        dir.path(),
    );
    let client = http_client();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&client, &format!("{base}/-/ready"), Duration::from_secs(30))
        .await
        .unwrap();

    // 300 samples per series (three chunks of ≤120), shapes that exercise every
    // branch of the encoding: steady counters, jittered timestamps, random
    // floats, repeated values, specials (NaN, ±Inf, the staleness NaN).
    let t0 = model::now_ms() - 3 * 3_600_000;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let counter: Vec<_> = (0..300).map(|i| (t0 + i * 15_000, (i * 7) as f64)).collect();
    let jitter: Vec<_> = (0..300)
        .scan(t0, |t, _| {
            *t += 14_000 + (next() % 2_000) as i64;
            Some((*t, (next() % 1_000_000) as f64 / 7.0))
        })
        .collect();
    let specials: Vec<_> = (0..300)
        .map(|i| {
            let v = match i % 7 {
                0 => f64::NAN,
                1 => f64::INFINITY,
                2 => f64::NEG_INFINITY,
                3 => model::stale_nan(),
                // Not -0.0: proto3 omits a double that compares equal to 0, so it
                // arrives as +0 whoever encodes it (Go and prost alike).
                4 => 1e-300,
                _ => 42.0,
            };
            (t0 + i * 10_000, v)
        })
        .collect();
    let written = vec![
        series("xor_counter", counter),
        series("xor_jitter", jitter),
        series("xor_specials", specials),
    ];
    let wr = prompb::WriteRequest {
        timeseries: written.clone(),
        metadata: vec![],
    };
    let (status, _, body) = http(
        &client,
        "POST",
        &format!("{base}/api/v1/write"),
        &[
            ("Content-Encoding", "snappy"),
            ("Content-Type", "application/x-protobuf"),
        ],
        snappy(&wr.encode_to_vec()),
    )
    .await
    .unwrap();
    assert!(
        (200..300).contains(&status),
        "remote write: {status} {}",
        String::from_utf8_lossy(&body)
    );

    let rr = prompb::ReadRequest {
        queries: vec![prompb::Query {
            start_timestamp_ms: t0 - 1,
            end_timestamp_ms: model::now_ms(),
            matchers: vec![prompb::LabelMatcher {
                r#type: 2,
                name: "__name__".into(),
                value: "xor_.*".into(),
            }],
            hints: None,
        }],
        accepted_response_types: vec![prompb::read_request::ResponseType::StreamedXorChunks as i32],
    };
    let (status, headers, body) = http(
        &client,
        "POST",
        &format!("{base}/api/v1/read"),
        &[
            ("Content-Encoding", "snappy"),
            ("Content-Type", "application/x-protobuf"),
        ],
        snappy(&rr.encode_to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "remote read: {}", String::from_utf8_lossy(&body));
    let ct = headers.get("content-type").unwrap().to_str().unwrap();
    assert!(ct.contains("prometheus.ChunkedReadResponse"), "content type {ct}");

    let mut chunks_checked = 0;
    let mut series_seen = 0;
    for frame in frames(&body) {
        for cs in frame.chunked_series {
            series_seen += 1;
            let name = cs.labels.iter().find(|l| l.name == "__name__").unwrap().value.clone();
            let want = &written.iter().find(|s| s.labels[0].value == name).unwrap().samples;
            let mut got = vec![];
            for c in &cs.chunks {
                assert_eq!(c.r#type, prompb::chunk::Encoding::Xor as i32);
                let decoded = XorChunk::from_bytes(c.data.clone()).expect("our decoder accepts Prometheus's chunk");
                let samples: Vec<(i64, f64)> = decoded.iter().collect();
                assert_eq!(decoded.num_samples(), samples.len());
                let mut re = XorChunk::new();
                for &(t, v) in &samples {
                    re.append(t, v);
                }
                assert_eq!(
                    re.bytes(),
                    &c.data[..],
                    "{name}: re-encoded chunk differs from Prometheus's bytes"
                );
                got.extend(samples);
                chunks_checked += 1;
            }
            assert_eq!(got.len(), want.len(), "{name}: sample count");
            for (g, w) in got.iter().zip(want) {
                assert_eq!(g.0, w.timestamp, "{name}: timestamp");
                assert_eq!(g.1.to_bits(), w.value.to_bits(), "{name}: value bits at {}", g.0);
            }
        }
    }
    assert_eq!(series_seen, 3);
    // Prometheus cuts head chunks by an estimated end time (up to 240 samples),
    // so 300 samples make at least two chunks per series.
    assert!(
        chunks_checked >= 2 * series_seen,
        "expected ≥2 chunks per series, checked {chunks_checked}"
    );
    println!(
        "xor compat: {series_seen} series, {chunks_checked} Prometheus chunks decoded and re-encoded byte-identically"
    );
}
