//! Remote read through the querier's real router over a fixed data set (both response types,
//! limits, hostile bodies), and the chunk and frame handling on its own.

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use http_body_util::BodyExt;
use promql::promqltest::MemStorage;
use tower::ServiceExt;

use super::*;
use crate::Config;

/// `m{job="a"}` and `m{job="b"}`, a sample every 15 s over the first hour (values i and −i).
fn data() -> MemStorage {
    let mut st = MemStorage::new();
    for (job, sign) in [("b", -1.0), ("a", 1.0)] {
        st.append(
            Labels::from_pairs([("__name__", "m"), ("job", job)]),
            (0..240).map(|i| Sample {
                t: i * 15_000,
                v: sign * i as f64,
            }),
        );
    }
    st
}

fn router(max_samples: usize) -> Router {
    let cfg = Config {
        max_samples,
        ..Config::default()
    };
    Querier::with_queryable(cfg, Arc::new(data())).http_routes()
}

fn matcher(kind: i32, name: &str, value: &str) -> prompb::LabelMatcher {
    prompb::LabelMatcher {
        r#type: kind,
        name: name.into(),
        value: value.into(),
    }
}

fn query(start: i64, end: i64, matchers: Vec<prompb::LabelMatcher>) -> prompb::Query {
    prompb::Query {
        start_timestamp_ms: start,
        end_timestamp_ms: end,
        matchers,
        hints: None,
    }
}

fn request(queries: Vec<prompb::Query>, accepted: &[i32]) -> Vec<u8> {
    let req = prompb::ReadRequest {
        queries,
        accepted_response_types: accepted.to_vec(),
    };
    snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap()
}

async fn post(r: &Router, path: &str, body: Vec<u8>) -> (StatusCode, String, Bytes) {
    let req = Request::post(path)
        .header("X-Scope-OrgID", "t1")
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .header(header::CONTENT_ENCODING, "snappy")
        .body(Body::from(body))
        .unwrap();
    let resp = r.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, resp.into_body().collect().await.unwrap().to_bytes())
}

/// Parses frames as Prometheus's `ChunkedReader` does, checking every CRC.
fn frames(mut body: &[u8]) -> Vec<prompb::ChunkedReadResponse> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let len = prost::encoding::decode_varint(&mut body).unwrap() as usize;
        let crc = u32::from_be_bytes(body[..4].try_into().unwrap());
        let msg = &body[4..4 + len];
        assert_eq!(crc32c::crc32c(msg), crc, "frame checksum");
        out.push(prompb::ChunkedReadResponse::decode(msg).unwrap());
        body = &body[4 + len..];
    }
    out
}

fn decode_chunks(chunks: &[prompb::Chunk]) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    for c in chunks {
        assert_eq!(c.r#type, prompb::chunk::Encoding::Xor as i32);
        let x = XorChunk::from_bytes(c.data.clone()).unwrap();
        let s: Vec<(i64, f64)> = x.iter().collect();
        assert_eq!((c.min_time_ms, c.max_time_ms), (s[0].0, s[s.len() - 1].0));
        out.extend(s);
    }
    out
}

fn xor_of(samples: impl IntoIterator<Item = (i64, f64)>) -> XorChunk {
    let mut x = XorChunk::new();
    for (t, v) in samples {
        x.append(t, v);
    }
    x
}

fn raw(x: &XorChunk) -> RawChunk {
    RawChunk {
        encoding: ENCODING_PROMETHEUS_XOR,
        data: x.to_bytes(),
        source: "a test",
    }
}

#[tokio::test]
async fn samples_answer_every_query_clipped_to_its_range() {
    let r = router(1_000_000);
    let body = request(
        vec![
            query(60_000, 120_000, vec![matcher(0, "__name__", "m")]),
            query(0, 30_000, vec![matcher(0, "__name__", "m"), matcher(0, "job", "b")]),
            query(0, 3_600_000, vec![matcher(0, "__name__", "nothing")]),
        ],
        &[],
    );
    for path in ["/api/prom/read", "/api/prom/api/v1/read", "/prometheus/api/v1/read"] {
        let (status, ct, body) = post(&r, path, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(ct, "application/x-protobuf");
        let resp = prompb::ReadResponse::decode(&snap::raw::Decoder::new().decompress_vec(&body).unwrap()[..]).unwrap();
        assert_eq!(resp.results.len(), 3, "one result per query, empty ones included");
        let first = &resp.results[0].timeseries;
        assert_eq!(first.len(), 2);
        let jobs: Vec<&str> = first
            .iter()
            .map(|ts| ts.labels.iter().find(|l| l.name == "job").unwrap().value.as_str())
            .collect();
        assert_eq!(jobs, ["a", "b"], "series sorted by labels");
        let ts: Vec<i64> = first[0].samples.iter().map(|s| s.timestamp).collect();
        assert_eq!(ts, [60_000, 75_000, 90_000, 105_000, 120_000]);
        assert_eq!(first[1].samples[1].value, -5.0);
        let second = &resp.results[1].timeseries;
        assert_eq!(second.len(), 1);
        let got: Vec<(i64, f64)> = second[0].samples.iter().map(|s| (s.timestamp, s.value)).collect();
        assert_eq!(got, [(0, 0.0), (15_000, -1.0), (30_000, -2.0)]);
        assert!(resp.results[2].timeseries.is_empty());
    }
}

#[tokio::test]
async fn streamed_chunks_are_crc_framed_sorted_and_indexed_by_query() {
    let r = router(1_000_000);
    let streamed = prompb::read_request::ResponseType::StreamedXorChunks as i32;
    let body = request(
        vec![
            query(0, 3_600_000, vec![matcher(2, "__name__", "m|x")]),
            query(0, 3_600_000, vec![matcher(0, "__name__", "m"), matcher(1, "job", "b")]),
        ],
        &[streamed, 0],
    );
    let (status, ct, body) = post(&r, "/api/prom/read", body).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ct, STREAMED_CONTENT_TYPE);
    let frames = frames(&body);
    let seen: Vec<(i64, String)> = frames
        .iter()
        .flat_map(|f| {
            f.chunked_series.iter().map(move |s| {
                (
                    f.query_index,
                    s.labels.iter().find(|l| l.name == "job").unwrap().value.clone(),
                )
            })
        })
        .collect();
    assert_eq!(seen, [(0, "a".into()), (0, "b".into()), (1, "a".into())]);
    for f in &frames {
        assert_eq!(f.chunked_series.len(), 1, "one series per frame");
        let s = &f.chunked_series[0];
        let sign = if s.labels.iter().any(|l| l.value == "b") {
            -1.0
        } else {
            1.0
        };
        let got = decode_chunks(&s.chunks);
        let want: Vec<(i64, f64)> = (0..240).map(|i| (i * 15_000, sign * i as f64)).collect();
        assert_eq!(got, want);
        assert_eq!(s.chunks.len(), 2, "240 samples: two chunks of 120");
    }
}

#[test]
fn response_types_are_negotiated_as_prometheus_does() {
    assert_eq!(negotiate(&[]).unwrap(), ResponseType::Samples);
    assert_eq!(negotiate(&[1, 0]).unwrap(), ResponseType::StreamedXorChunks);
    assert_eq!(negotiate(&[0, 1]).unwrap(), ResponseType::Samples);
    assert_eq!(negotiate(&[7, 1]).unwrap(), ResponseType::StreamedXorChunks);
    let e = negotiate(&[7, -1]).unwrap_err();
    assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    assert!(e.to_string().contains("[7, -1]"), "{e}");
}

#[test]
fn a_frame_is_uvarint_length_crc32c_big_endian_then_the_message() {
    let mut out = Vec::new();
    write_frame(&mut out, b"123456789");
    // 0xE3069283 is CRC-32C's check value for "123456789" (RFC 3720 B.4's polynomial).
    assert_eq!(out[..5], [9, 0xE3, 0x06, 0x92, 0x83]);
    assert_eq!(&out[5..], b"123456789");
    let mut long = Vec::new();
    write_frame(&mut long, &[7u8; 300]);
    assert_eq!(long[..2], [0xAC, 0x02], "300 as a uvarint");
    assert_eq!(long.len(), 2 + 4 + 300);
}

#[test]
fn a_series_is_split_over_frames_at_the_frame_size() {
    // 50 chunks of 120 random-ish values (~1 KiB each) against 8 KiB frames.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let samples: Vec<Sample> = (0..6000)
        .map(|i| Sample {
            t: i * 15_000,
            v: f64::from_bits(next() >> 2),
        })
        .collect();
    let s = ChunkSeries {
        labels: Labels::from_pairs([("__name__", "big"), ("job", "x")]),
        chunks: encode_xor(&samples),
    };
    assert_eq!(s.chunks.len(), 50);
    let max = 8 << 10;
    let mut out = Vec::new();
    write_series_frames(&mut out, 3, std::slice::from_ref(&s), max);
    let frames = frames(&out);
    assert!(frames.len() > 5, "{} frames", frames.len());
    let biggest_chunk = s.chunks.iter().map(|c| c.encoded_len()).max().unwrap();
    let mut all = Vec::new();
    for f in &frames {
        assert_eq!(f.query_index, 3);
        let cs = &f.chunked_series[0];
        assert_eq!(labels_from_prompb(&cs.labels), s.labels, "every frame names its series");
        // Prometheus's bound: the frame size, overshot by at most one chunk.
        assert!(f.encoded_len() <= max + biggest_chunk + 64, "{} bytes", f.encoded_len());
        all.extend(cs.chunks.iter().cloned());
    }
    assert_eq!(all, s.chunks, "chunks in order, none lost or repeated");
}

fn labels_from_prompb(l: &[prompb::Label]) -> Labels {
    Labels::from_pairs(l.iter().map(|l| (l.name.clone(), l.value.clone())))
}

#[test]
fn identical_copies_are_sent_once_and_as_received() {
    let a = xor_of((0..120).map(|i| (i * 1000, i as f64)));
    let b = xor_of((120..130).map(|i| (i * 1000, i as f64)));
    let (ra, rb) = (raw(&a), raw(&b));
    // Three replicas of `a`, the store's copy of `b` and an ingester's.
    let input = vec![rb.clone(), ra.clone(), ra.clone(), rb.clone(), ra.clone()];
    let out = series_chunks(input, 0, 1_000_000, &SampleLimit::new(1000)).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].data, ra.data);
    assert_eq!(out[1].data, rb.data);
    // Not re-encoded: the very bytes that arrived.
    assert_eq!(out[0].data.as_ptr(), ra.data.as_ptr());
    assert_eq!((out[0].min_time_ms, out[0].max_time_ms), (0, 119_000));
    assert_eq!((out[1].min_time_ms, out[1].max_time_ms), (120_000, 129_000));
    // Passed through whole: chunks overlapping the range are not clipped, as in Prometheus.
    let out = series_chunks(vec![ra.clone()], 50_000, 60_000, &SampleLimit::new(1000)).unwrap();
    assert_eq!(out[0].data, ra.data);
}

#[test]
fn a_stored_bigchunk_goes_out_as_its_xor_sub_chunks() {
    let a = xor_of((0..120).map(|i| (i * 1000, i as f64)));
    let b = xor_of((120..200).map(|i| (i * 1000, -(i as f64))));
    let mut big = 2u16.to_le_bytes().to_vec();
    for s in [&a, &b] {
        big.extend_from_slice(&(s.size_bytes() as u16).to_le_bytes());
        big.extend_from_slice(s.bytes());
    }
    let input = vec![RawChunk {
        encoding: chunk::Encoding::Bigchunk.id(),
        data: big.into(),
        source: "a test",
    }];
    let out = series_chunks(input, 0, 1_000_000, &SampleLimit::new(1000)).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(&out[0].data[..], a.bytes());
    assert_eq!(&out[1].data[..], b.bytes());
}

#[test]
fn overlapping_chunks_are_merged_clipped_and_reencoded() {
    // Two replicas that cut differently: samples 0..150 as 0..100 + 100..150 and as 0..150 in
    // two chunks 0..120, 120..150.
    let s = |r: std::ops::Range<i64>| xor_of(r.map(|i| (i * 1000, i as f64 * 0.5)));
    let input = vec![raw(&s(0..100)), raw(&s(100..150)), raw(&s(0..120)), raw(&s(120..150))];
    let out = series_chunks(input, 10_000, 140_000, &SampleLimit::new(10_000)).unwrap();
    let got = decode_chunks(&out);
    let want: Vec<(i64, f64)> = (10..=140).map(|i| (i * 1000, i as f64 * 0.5)).collect();
    assert_eq!(got, want);
    assert!(out
        .iter()
        .all(|c| XorChunk::from_bytes(c.data.clone()).unwrap().num_samples() <= 120));
}

#[test]
fn chunk_samples_are_charged_before_decoding_and_a_bad_chunk_is_named() {
    let a = xor_of((0..120).map(|i| (i * 1000, i as f64)));
    let limit = SampleLimit::new(100);
    let e = series_chunks(vec![raw(&a), raw(&a)], 0, 1_000_000, &limit).unwrap_err();
    assert!(matches!(e, ReadError::TooManySamples(100)), "{e}");
    assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(e.to_string().contains("-querier.max-samples=100"), "{e}");
    assert_eq!(limit.used(), 0, "nothing charged by a failed charge");
    // Replicas are charged once: 120 fits a budget of 120.
    series_chunks(vec![raw(&a), raw(&a)], 0, 1_000_000, &SampleLimit::new(120)).unwrap();
    let broken = RawChunk {
        encoding: ENCODING_PROMETHEUS_XOR,
        data: bytes::Bytes::from_static(&[0, 9, 1]),
        source: "the store",
    };
    let e = series_chunks(vec![broken], 0, 1, &SampleLimit::new(100)).unwrap_err();
    assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(e.to_string().contains("chunk from the store"), "{e}");
}

#[tokio::test]
async fn all_queries_of_a_request_share_one_sample_budget() {
    // 480 samples per query of both series; a budget of 600.
    let r = router(600);
    let q = || query(0, 3_600_000, vec![matcher(0, "__name__", "m")]);
    for accepted in [&[][..], &[1][..]] {
        let (status, _, body) = post(&r, "/api/prom/read", request(vec![q()], accepted)).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let (status, ct, body) = post(&r, "/api/prom/read", request(vec![q(), q()], accepted)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{accepted:?}");
        assert!(ct.starts_with("text/plain"));
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("too many samples") && text.contains("-querier.max-samples=600"),
            "{text}"
        );
    }
}

#[test]
fn storage_errors_map_to_the_query_apis_codes() {
    let s = |code| ReadError::Storage(HttpError::new(code, "x")).status();
    assert_eq!(s(400), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(s(413), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(s(503), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(s(500), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(s(200), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        ReadError::Timeout(Duration::from_secs(1)).status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// A snappy block whose length header claims `claimed` bytes.
fn snappy_claiming(claimed: u64, rest: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    prost::encoding::encode_varint(claimed, &mut b);
    b.extend_from_slice(rest);
    b
}

#[tokio::test]
async fn hostile_bodies_get_their_4xx_and_a_normal_read_still_answers() {
    let r = router(1_000_000);
    let ok_query = || query(0, 3_600_000, vec![matcher(0, "__name__", "m")]);
    let snappy = |raw: &[u8]| snap::raw::Encoder::new().compress_vec(raw).unwrap();
    let good = request(vec![ok_query()], &[]);
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        ("empty body", vec![], StatusCode::BAD_REQUEST, "empty request body"),
        (
            "not snappy",
            b"not snappy at all".to_vec(),
            StatusCode::BAD_REQUEST,
            "decompressing",
        ),
        (
            "truncated snappy",
            good[..good.len() / 2].to_vec(),
            StatusCode::BAD_REQUEST,
            "decompressing",
        ),
        (
            "claims 4 GiB",
            snappy_claiming(0xffff_ffff, &[0; 32]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "decompresses to 4294967295 bytes",
        ),
        (
            "claims 5 MiB",
            snappy_claiming(5 << 20, &[0; 32]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than the limit of 4194304 bytes",
        ),
        (
            "compressed over 1 MiB",
            vec![0; (1 << 20) + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
            "1048577 bytes",
        ),
        (
            "protobuf with a lying length",
            snappy(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x07, 0x08, 0x01]),
            StatusCode::BAD_REQUEST,
            "unmarshalling",
        ),
        (
            "matcher type 99",
            request(vec![query(0, 1, vec![matcher(99, "__name__", "x")])], &[]),
            StatusCode::BAD_REQUEST,
            "remote read query 0",
        ),
        (
            "invalid regex in the second query",
            request(vec![ok_query(), query(0, 1, vec![matcher(2, "job", "(")])], &[]),
            StatusCode::BAD_REQUEST,
            "remote read query 1",
        ),
        (
            "regex of exploding size",
            request(
                vec![query(0, 1, vec![matcher(2, "job", "((a{1000}){1000}){1000}")])],
                &[],
            ),
            StatusCode::BAD_REQUEST,
            "remote read query 0",
        ),
        (
            "no matchers",
            request(vec![query(0, 1, vec![])], &[]),
            StatusCode::BAD_REQUEST,
            "at least one matcher",
        ),
        (
            "only matchers of the empty string",
            request(
                vec![query(0, 1, vec![matcher(2, "__name__", ".*"), matcher(1, "job", "x")])],
                &[],
            ),
            StatusCode::BAD_REQUEST,
            "at least one matcher",
        ),
        (
            "end before start",
            request(vec![query(10, 5, vec![matcher(0, "__name__", "m")])], &[]),
            StatusCode::BAD_REQUEST,
            "must not be before start",
        ),
        (
            "extreme times",
            request(
                vec![query(i64::MIN, i64::MAX, vec![matcher(0, "__name__", "nothing")])],
                &[1],
            ),
            StatusCode::OK,
            "",
        ),
        (
            "10,000 queries",
            request((0..10_000).map(|_| ok_query()).collect(), &[]),
            StatusCode::BAD_REQUEST,
            "10000 queries, more than the limit of 128",
        ),
        (
            "unknown response types only",
            request(vec![ok_query()], &[5, 6]),
            StatusCode::BAD_REQUEST,
            "does not support any of the requested response types",
        ),
    ];
    for (name, body, want, text) in cases {
        let (status, _, body) = post(&r, "/api/prom/read", body).await;
        let msg = String::from_utf8_lossy(&body);
        assert_eq!(status, want, "{name}: {msg}");
        assert!(msg.contains(text), "{name}: {msg}");
    }
    let (status, _, body) = post(&r, "/api/prom/read", good).await;
    assert_eq!(status, StatusCode::OK);
    let resp = prompb::ReadResponse::decode(&snap::raw::Decoder::new().decompress_vec(&body).unwrap()[..]).unwrap();
    assert_eq!(resp.results[0].timeseries.len(), 2);
}
