//! Pipeline tests: the distributor over fake replica pickers and ingesters,
//! its HTTP endpoints, and quorum writes to real gRPC ingester stubs.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use proto::cortex::{write_request::SourceEnum, LabelPair, MetricMetadata, Sample, TimeSeries, WriteRequest};
use server::HttpError;
use tower::ServiceExt;

use crate::{encode_write_request, Config, Distributor, IngesterPusher, Limits, Replica, ReplicaPicker, ReplicaSet};

// ---------------------------------------------------------------- fakes ----

/// Replica sets chosen by a function of the token; records every token asked.
struct FakeRing {
    rf: usize,
    pick: Box<dyn Fn(u32) -> ReplicaSet + Send + Sync>,
    tokens: Mutex<Vec<u32>>,
}

impl FakeRing {
    /// Every token goes to the same `n` ingesters `ing-0..n` at `addr-i`, RF = n.
    fn uniform(n: usize) -> Arc<FakeRing> {
        Self::with_addrs((0..n).map(|i| format!("addr-{i}")).collect())
    }

    fn with_addrs(addrs: Vec<String>) -> Arc<FakeRing> {
        let n = addrs.len();
        let set = ReplicaSet {
            instances: addrs
                .iter()
                .enumerate()
                .map(|(i, a)| Replica {
                    id: Arc::from(format!("ing-{i}")),
                    addr: Arc::from(a.as_str()),
                })
                .collect(),
            // The ring's rule: minSuccess = n/2 + 1, maxErrors = n − minSuccess.
            max_errors: n - (n / 2 + 1),
        };
        Arc::new(FakeRing {
            rf: n,
            pick: Box::new(move |_| set.clone()),
            tokens: Mutex::new(vec![]),
        })
    }
}

impl ReplicaPicker for FakeRing {
    fn get(&self, token: u32, _extend_writes: bool) -> Result<ReplicaSet, HttpError> {
        self.tokens.lock().push(token);
        Ok((self.pick)(token))
    }
    fn replication_factor(&self) -> usize {
        self.rf
    }
}

type PushRecord = (String, String, WriteRequest);

/// Records pushes; answers each address with a chosen result (default Ok),
/// or never answers for addresses listed in `hang`.
#[derive(Default)]
struct FakeIngesters {
    pushes: Mutex<Vec<PushRecord>>,
    errors: Mutex<Vec<(String, HttpError)>>,
    hang: Mutex<Vec<String>>,
}

impl FakeIngesters {
    fn fail(&self, addr: &str, e: HttpError) {
        self.errors.lock().push((addr.to_string(), e));
    }
    fn pushes(&self) -> Vec<PushRecord> {
        let mut p = self.pushes.lock().clone();
        p.sort_by(|a, b| a.0.cmp(&b.0));
        p
    }
}

impl IngesterPusher for Arc<FakeIngesters> {
    fn push(
        &self,
        addr: &str,
        tenant: &str,
        req: WriteRequest,
        _t: Duration,
    ) -> BoxFuture<'static, Result<(), HttpError>> {
        self.pushes.lock().push((addr.to_string(), tenant.to_string(), req));
        let err = self
            .errors
            .lock()
            .iter()
            .find(|(a, _)| a == addr)
            .map(|(_, e)| e.clone());
        let hang = self.hang.lock().iter().any(|a| a == addr);
        Box::pin(async move {
            if hang {
                futures::future::pending::<()>().await;
            }
            err.map_or(Ok(()), Err)
        })
    }
}

// -------------------------------------------------------------- helpers ----

fn lp(n: &str, v: &str) -> LabelPair {
    LabelPair {
        name: Bytes::copy_from_slice(n.as_bytes()),
        value: Bytes::copy_from_slice(v.as_bytes()),
    }
}

fn series(labels: &[(&str, &str)], samples: usize) -> TimeSeries {
    let now = model::now_ms();
    TimeSeries {
        labels: labels.iter().map(|(n, v)| lp(n, v)).collect(),
        samples: (0..samples)
            .map(|i| Sample {
                value: i as f64,
                timestamp_ms: now - 1000 + i as i64,
            })
            .collect(),
    }
}

fn request(ts: Vec<TimeSeries>) -> WriteRequest {
    WriteRequest {
        timeseries: ts,
        ..Default::default()
    }
}

fn metadata(name: &str) -> MetricMetadata {
    MetricMetadata {
        r#type: 1,
        metric_family_name: name.into(),
        help: "help".into(),
        unit: String::new(),
    }
}

struct Setup {
    d: Arc<Distributor>,
    ring: Arc<FakeRing>,
    ingesters: Arc<FakeIngesters>,
    metrics: server::Metrics,
}

fn setup_with(cfg: Config, limits: Limits, ring: Arc<FakeRing>) -> Setup {
    let ingesters = Arc::new(FakeIngesters::default());
    let metrics = server::Metrics::new();
    let d = Distributor::with_replica_picker(cfg, limits, ring.clone(), Arc::new(ingesters.clone()), &metrics);
    Setup {
        d,
        ring,
        ingesters,
        metrics,
    }
}

fn setup() -> Setup {
    setup_with(Config::default(), Limits::default(), FakeRing::uniform(3))
}

/// The value of one exposition line, e.g. `cortex_x_total{user="a"}`.
fn metric(metrics: &server::Metrics, series: &str) -> Option<f64> {
    metrics.encode().lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

fn label_names(ts: &TimeSeries) -> Vec<String> {
    ts.labels
        .iter()
        .map(|l| String::from_utf8_lossy(&l.name).into_owned())
        .collect()
}

// --------------------------------------------------------- pipeline -------

#[tokio::test]
async fn valid_request_reaches_every_replica_with_tenant_and_metrics() {
    let s = setup();
    let mut req = request(vec![
        series(&[("__name__", "up"), ("job", "a")], 2),
        series(&[("__name__", "up"), ("job", "b")], 3),
    ]);
    req.metadata.push(metadata("up"));
    req.source = SourceEnum::Rule as i32;
    s.d.push("t1", req).await.unwrap();

    let pushes = s.ingesters.pushes();
    assert_eq!(pushes.len(), 3, "one Push per ingester");
    for (i, (addr, tenant, req)) in pushes.iter().enumerate() {
        assert_eq!(addr, &format!("addr-{i}"));
        assert_eq!(tenant, "t1");
        assert_eq!(req.timeseries.len(), 2);
        assert_eq!(req.metadata.len(), 1);
        assert_eq!(req.source, SourceEnum::Rule as i32, "the caller's source is kept");
    }
    let m = &s.metrics;
    assert_eq!(
        metric(m, r#"cortex_distributor_samples_in_total{user="t1"}"#),
        Some(5.0)
    );
    assert_eq!(
        metric(m, r#"cortex_distributor_received_samples_total{user="t1"}"#),
        Some(5.0)
    );
    assert_eq!(
        metric(m, r#"cortex_distributor_received_metadata_total{user="t1"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(
            m,
            r#"cortex_distributor_ingester_appends_total{ingester="addr-1",type="samples"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            m,
            r#"cortex_distributor_ingester_appends_total{ingester="addr-1",type="metadata"}"#
        ),
        Some(1.0)
    );
    assert_eq!(metric(m, "cortex_distributor_replication_factor"), Some(3.0));
    let latest = metric(
        m,
        r#"cortex_distributor_latest_seen_sample_timestamp_seconds{user="t1"}"#,
    )
    .unwrap();
    assert!((latest - model::now_ms() as f64 / 1000.0).abs() < 60.0, "{latest}");
}

#[tokio::test]
async fn labels_are_sorted_and_blank_values_dropped_before_forwarding() {
    let s = setup();
    let req = request(vec![series(
        &[("zone", "z"), ("empty", ""), ("__name__", "up"), ("job", "a")],
        1,
    )]);
    s.d.push("t1", req).await.unwrap();
    let pushes = s.ingesters.pushes();
    assert_eq!(label_names(&pushes[0].2.timeseries[0]), vec!["__name__", "job", "zone"]);
}

#[tokio::test]
async fn forwarded_labels_share_the_decoded_buffer() {
    let s = setup();
    let body = encode_write_request(&request(vec![series(&[("__name__", "up"), ("job", "a")], 1)]));
    let req = crate::decode_write_request(&body, 1 << 20).unwrap();
    let original = req.timeseries[0].labels[1].value.as_ptr();
    s.d.push("t1", req).await.unwrap();
    for (_, _, r) in s.ingesters.pushes() {
        assert_eq!(
            r.timeseries[0].labels[1].value.as_ptr(),
            original,
            "label bytes were copied"
        );
    }
}

#[tokio::test]
async fn partial_validation_failure_stores_valid_series_and_returns_400() {
    let s = setup();
    let req = request(vec![
        series(&[("__name__", "ok")], 2),
        series(&[("__name__", "bad"), ("bad-label", "x")], 4),
        series(&[("job", "no_name")], 3),
        series(&[("__name__", "ok2")], 1),
    ]);
    let err = s.d.push("t1", req).await.unwrap_err();
    assert_eq!(err.code, 400);
    // Only the first error is reported.
    assert!(
        err.message.starts_with("sample invalid label: \"bad-label\""),
        "{}",
        err.message
    );
    assert!(!err.message.contains("missing metric name"));

    let pushes = s.ingesters.pushes();
    assert_eq!(pushes.len(), 3);
    let names: Vec<_> = pushes[0]
        .2
        .timeseries
        .iter()
        .map(|t| t.labels[0].value.clone())
        .collect();
    assert_eq!(names, vec![Bytes::from_static(b"ok"), Bytes::from_static(b"ok2")]);

    let m = &s.metrics;
    assert_eq!(
        metric(m, r#"cortex_discarded_samples_total{reason="label_invalid",user="t1"}"#),
        Some(4.0)
    );
    assert_eq!(
        metric(
            m,
            r#"cortex_discarded_samples_total{reason="missing_metric_name",user="t1"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(m, r#"cortex_distributor_samples_in_total{user="t1"}"#),
        Some(10.0)
    );
    assert_eq!(
        metric(m, r#"cortex_distributor_received_samples_total{user="t1"}"#),
        Some(3.0)
    );
}

#[tokio::test]
async fn nothing_valid_returns_the_error_and_pushes_nothing() {
    let s = setup();
    let mut req = request(vec![series(&[("__name__", "1bad")], 1)]);
    req.metadata.push(metadata(""));
    let err = s.d.push("t1", req).await.unwrap_err();
    assert_eq!(err.code, 400);
    assert!(err.message.starts_with("sample invalid metric name"), "{}", err.message);
    assert!(s.ingesters.pushes().is_empty());
    assert_eq!(
        metric(
            &s.metrics,
            r#"cortex_discarded_metadata_total{reason="missing_metric_name",user="t1"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn empty_request_and_label_less_series_succeed_without_pushing() {
    let s = setup();
    s.d.push("t1", request(vec![])).await.unwrap();
    s.d.push("t1", request(vec![series(&[("blank", "")], 1)]))
        .await
        .unwrap();
    assert!(s.ingesters.pushes().is_empty());
}

#[tokio::test]
async fn rate_limit_rejects_whole_request_with_429() {
    let limits = Limits {
        ingestion_rate: 1.0,
        ingestion_burst_size: 5,
        ..Limits::default()
    };
    let s = setup_with(Config::default(), limits, FakeRing::uniform(1));
    let mut req = request(vec![series(&[("__name__", "m")], 4)]);
    req.metadata.push(metadata("m"));
    s.d.push("t1", req).await.unwrap();

    let mut req = request(vec![series(&[("__name__", "m")], 2)]);
    req.metadata.push(metadata("m"));
    let err = s.d.push("t1", req).await.unwrap_err();
    assert_eq!(err.code, 429);
    assert!(
        err.message
            .starts_with("ingestion rate limit (1) exceeded while adding 2 samples and 1 metadata"),
        "{}",
        err.message
    );
    assert!(err.message.contains("-distributor.ingestion-rate-limit"));
    assert_eq!(s.ingesters.pushes().len(), 1, "the limited request was not forwarded");
    let m = &s.metrics;
    assert_eq!(
        metric(m, r#"cortex_discarded_samples_total{reason="rate_limited",user="t1"}"#),
        Some(2.0)
    );
    assert_eq!(
        metric(m, r#"cortex_discarded_metadata_total{reason="rate_limited",user="t1"}"#),
        Some(1.0)
    );
    // Another tenant has its own bucket.
    s.d.push("t2", request(vec![series(&[("__name__", "m")], 5)]))
        .await
        .unwrap();
}

#[tokio::test]
async fn tokens_by_metric_name_and_by_all_labels() {
    let s = setup();
    let mut req = request(vec![series(&[("job", "a"), ("__name__", "up")], 1)]);
    req.metadata.push(metadata("up"));
    s.d.push("t1", req).await.unwrap();
    assert_eq!(
        *s.ring.tokens.lock(),
        vec![
            model::shard_token_by_metric("t1", b"up"),
            model::shard_token_by_metric("t1", b"")
        ]
    );

    let cfg = Config {
        shard_by_all_labels: true,
        ..Config::default()
    };
    let s = setup_with(cfg, Limits::default(), FakeRing::uniform(3));
    let mut req = request(vec![series(&[("job", "a"), ("__name__", "up")], 1)]);
    req.metadata.push(metadata("up"));
    s.d.push("t1", req).await.unwrap();
    let sorted: [(&[u8], &[u8]); 2] = [(b"__name__", b"up"), (b"job", b"a")];
    assert_eq!(
        *s.ring.tokens.lock(),
        vec![
            model::shard_token_by_all_labels("t1", sorted),
            model::shard_token_by_metric("t1", b"up")
        ]
    );
    // Known value: FNV-1 32 of "t1" ++ "up".
    assert_eq!(
        model::shard_token_by_metric("t1", b"up"),
        model::hash::Fnv1_32::default().write(b"t1up").finish()
    );
}

#[tokio::test]
async fn each_ingester_gets_only_the_series_it_replicates() {
    // Token parity decides the replica set: even → {a, b}, odd → {b, c}.
    let replica = |n: &str| Replica {
        id: Arc::from(n),
        addr: Arc::from(n),
    };
    let even = ReplicaSet {
        instances: vec![replica("a"), replica("b")],
        max_errors: 0,
    };
    let odd = ReplicaSet {
        instances: vec![replica("b"), replica("c")],
        max_errors: 0,
    };
    let ring = Arc::new(FakeRing {
        rf: 2,
        pick: Box::new(move |t| if t & 1 == 0 { even.clone() } else { odd.clone() }),
        tokens: Mutex::new(vec![]),
    });
    let s = setup_with(Config::default(), Limits::default(), ring);
    let names: Vec<String> = (0..20).map(|i| format!("metric_{i}")).collect();
    let req = request(names.iter().map(|n| series(&[("__name__", n)], 1)).collect());
    s.d.push("t1", req).await.unwrap();

    let even_names: Vec<&String> = names
        .iter()
        .filter(|n| model::shard_token_by_metric("t1", n.as_bytes()) & 1 == 0)
        .collect();
    assert!(
        !even_names.is_empty() && even_names.len() < names.len(),
        "test needs both parities"
    );
    let pushes = s.ingesters.pushes();
    let got = |addr: &str| -> Vec<String> {
        pushes
            .iter()
            .find(|p| p.0 == addr)
            .map(|p| {
                p.2.timeseries
                    .iter()
                    .map(|t| String::from_utf8_lossy(&t.labels[0].value).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(got("a").len(), even_names.len());
    assert!(got("a").iter().all(|n| even_names.contains(&n)));
    assert_eq!(got("b").len(), names.len());
    assert_eq!(got("c").len(), names.len() - even_names.len());
}

#[tokio::test]
async fn quorum_with_fake_ingesters() {
    // RF=3: one failing ingester is tolerated.
    let s = setup();
    s.ingesters.fail("addr-0", HttpError::internal("down"));
    s.d.push("t1", request(vec![series(&[("__name__", "m")], 1)]))
        .await
        .unwrap();
    assert_eq!(
        metric(
            &s.metrics,
            r#"cortex_distributor_ingester_append_failures_total{ingester="addr-0",type="samples"}"#
        ),
        Some(1.0)
    );

    // Two failing ingesters break the quorum with the failing ingester's error.
    let s = setup();
    s.ingesters.fail("addr-0", HttpError::internal("down 0"));
    s.ingesters.fail("addr-2", HttpError::internal("down 2"));
    let err =
        s.d.push("t1", request(vec![series(&[("__name__", "m")], 1)]))
            .await
            .unwrap_err();
    assert_eq!(err.code, 500);
    assert!(err.message.starts_with("down "), "{}", err.message);

    // A 4xx from every replica stays a 4xx.
    let s = setup();
    for i in 0..3 {
        s.ingesters
            .fail(&format!("addr-{i}"), HttpError::bad_request("sample out of order"));
    }
    let err =
        s.d.push("t1", request(vec![series(&[("__name__", "m")], 1)]))
            .await
            .unwrap_err();
    assert_eq!(err, HttpError::bad_request("sample out of order"));

    // Quorum success still reports the partial validation error.
    let s = setup();
    s.ingesters.fail("addr-1", HttpError::internal("down"));
    let err =
        s.d.push(
            "t1",
            request(vec![
                series(&[("__name__", "m")], 1),
                series(&[("__name__", "m"), ("a", "1"), ("a", "2")], 1),
            ]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 400);
    assert!(err.message.starts_with("duplicate label name"), "{}", err.message);
}

#[tokio::test(start_paused = true)]
async fn each_rpc_has_its_own_timeout() {
    let cfg = Config {
        remote_timeout: model::GoDuration::millis(50),
        ..Config::default()
    };
    let s = setup_with(cfg, Limits::default(), FakeRing::uniform(1));
    s.ingesters.hang.lock().push("addr-0".into());
    let err =
        s.d.push("t1", request(vec![series(&[("__name__", "m")], 1)]))
            .await
            .unwrap_err();
    assert_eq!(err.code, 500);
    assert!(
        err.message
            .contains("timed out after 50ms (-distributor.remote-timeout)"),
        "{}",
        err.message
    );
}

// ------------------------------------------------------------- HTTP -------

async fn post(router: &axum::Router, path: &str, tenant: Option<&str>, body: Vec<u8>) -> (StatusCode, String) {
    let mut b = Request::builder().method("POST").uri(path);
    if let Some(t) = tenant {
        b = b.header("X-Scope-OrgID", t);
    }
    let resp = router.clone().oneshot(b.body(Body::from(body)).unwrap()).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn http_push_success_and_tenant() {
    let s = setup();
    let router = s.d.http_routes();
    let mut req = request(vec![series(&[("__name__", "up")], 1)]);
    req.source = SourceEnum::Rule as i32;
    req.skip_label_name_validation = true;
    let body = encode_write_request(&req);
    for path in ["/api/prom/push", "/api/v1/push"] {
        let (status, text) = post(&router, path, Some("team-a"), body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{path}: {text}");
        assert_eq!(text, "");
    }
    let pushes = s.ingesters.pushes();
    assert_eq!(pushes.len(), 6);
    assert!(pushes.iter().all(|p| p.1 == "team-a"));
    // HTTP clients cannot claim to be the ruler.
    assert!(pushes.iter().all(|p| p.2.source == SourceEnum::Api as i32));

    let (status, text) = post(&router, "/api/v1/push", None, body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(text.trim(), "no org id");
}

#[tokio::test]
async fn http_skip_label_name_validation_is_cleared() {
    let s = setup();
    let mut req = request(vec![series(&[("__name__", "up"), ("bad-name", "x")], 1)]);
    req.skip_label_name_validation = true;
    let (status, text) = post(
        &s.d.http_routes(),
        "/api/v1/push",
        Some("t"),
        encode_write_request(&req),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.starts_with("sample invalid label"), "{text}");
}

#[tokio::test]
async fn http_decode_errors() {
    let cfg = Config {
        max_recv_msg_size: 4096,
        ..Config::default()
    };
    let s = setup_with(cfg, Limits::default(), FakeRing::uniform(1));
    let router = s.d.http_routes();
    let good = encode_write_request(&request(vec![series(&[("__name__", "up")], 1)]));

    let (status, text) = post(&router, "/api/v1/push", Some("t"), vec![]).await;
    assert_eq!(
        (status, text.starts_with("empty request body")),
        (StatusCode::BAD_REQUEST, true),
        "{text}"
    );

    let (status, text) = post(&router, "/api/v1/push", Some("t"), good[..good.len() - 2].to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("snappy"), "{text}");

    let (status, text) = post(&router, "/api/v1/push", Some("t"), b"hello, not snappy at all".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");

    let garbage = snap::raw::Encoder::new().compress_vec(b"\x0a\xff\xff\xff").unwrap();
    let (status, text) = post(&router, "/api/v1/push", Some("t"), garbage).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.starts_with("unmarshalling protobuf WriteRequest"), "{text}");

    // Compressed size over the limit (Content-Length is known).
    let big = vec![7u8; 5000];
    let (status, text) = post(&router, "/api/v1/push", Some("t"), big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains("5000 bytes exceeds the limit of 4096 bytes"), "{text}");
    assert!(text.contains("-distributor.max-recv-msg-size"), "{text}");

    // Streamed body without Content-Length, over the limit.
    let chunks = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![1u8; 1000]))));
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/push")
        .header("X-Scope-OrgID", "t")
        .body(Body::from_stream(chunks))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Decompressed size over the limit.
    let zeros = snap::raw::Encoder::new().compress_vec(&[0u8; 50_000]).unwrap();
    assert!(zeros.len() < 4096);
    let (status, text) = post(&router, "/api/v1/push", Some("t"), zeros).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains("decompressed body of 50000 bytes"), "{text}");

    assert!(s.ingesters.pushes().is_empty());
}

#[tokio::test]
async fn http_non_utf8_label_value_is_400() {
    let s = setup();
    let mut ts = series(&[("__name__", "up")], 1);
    ts.labels.push(LabelPair {
        name: Bytes::from_static(b"job"),
        value: Bytes::from_static(b"\xc3\x28"),
    });
    let (status, text) = post(
        &s.d.http_routes(),
        "/api/v1/push",
        Some("t"),
        encode_write_request(&request(vec![ts])),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.starts_with("label value is not valid UTF-8"), "{text}");
}

// ------------------------------------------------ real gRPC ingesters ------

mod grpc {
    use super::*;
    use proto::cortex::ingester_server::{Ingester, IngesterServer};
    use proto::cortex::*;
    use tonic::{Request as GrpcRequest, Response, Status};

    /// A minimal ingester: records pushes with their tenant, or fails them.
    #[derive(Clone, Default)]
    struct StubIngester {
        pushes: Arc<Mutex<Vec<(String, WriteRequest)>>>,
        error: Option<HttpError>,
    }

    #[tonic::async_trait]
    impl Ingester for StubIngester {
        async fn push(&self, req: GrpcRequest<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
            let tenant = server::tenant::from_grpc(&req)?;
            if let Some(e) = &self.error {
                return Err(e.to_grpc_status());
            }
            self.pushes.lock().push((tenant, req.into_inner()));
            Ok(Response::new(WriteResponse {}))
        }
        async fn query(&self, _: GrpcRequest<QueryRequest>) -> Result<Response<QueryResponse>, Status> {
            Err(Status::unimplemented("stub"))
        }
        type QueryStreamStream = futures::stream::Empty<Result<QueryStreamResponse, Status>>;
        async fn query_stream(
            &self,
            _: GrpcRequest<QueryRequest>,
        ) -> Result<Response<Self::QueryStreamStream>, Status> {
            Err(Status::unimplemented("stub"))
        }
        async fn label_values(
            &self,
            _: GrpcRequest<LabelValuesRequest>,
        ) -> Result<Response<LabelValuesResponse>, Status> {
            Err(Status::unimplemented("stub"))
        }
        async fn label_names(&self, _: GrpcRequest<LabelNamesRequest>) -> Result<Response<LabelNamesResponse>, Status> {
            Err(Status::unimplemented("stub"))
        }
        async fn user_stats(&self, _: GrpcRequest<UserStatsRequest>) -> Result<Response<UserStatsResponse>, Status> {
            Err(Status::unimplemented("stub"))
        }
        async fn all_user_stats(
            &self,
            _: GrpcRequest<UserStatsRequest>,
        ) -> Result<Response<UsersStatsResponse>, Status> {
            Err(Status::unimplemented("stub"))
        }
        async fn metrics_for_label_matchers(
            &self,
            _: GrpcRequest<MetricsForLabelMatchersRequest>,
        ) -> Result<Response<MetricsForLabelMatchersResponse>, Status> {
            Err(Status::unimplemented("stub"))
        }
        async fn metrics_metadata(
            &self,
            _: GrpcRequest<MetricsMetadataRequest>,
        ) -> Result<Response<MetricsMetadataResponse>, Status> {
            Err(Status::unimplemented("stub"))
        }
        async fn transfer_chunks(
            &self,
            _: GrpcRequest<tonic::Streaming<TimeSeriesChunk>>,
        ) -> Result<Response<TransferChunksResponse>, Status> {
            Err(Status::unimplemented("stub"))
        }
    }

    /// How each of the three test ingesters behaves.
    enum Behaviour {
        Ok,
        Down,
        Fail(HttpError),
    }

    struct Cluster {
        d: Arc<Distributor>,
        stubs: Vec<StubIngester>,
        servers: Vec<tokio::task::JoinHandle<()>>,
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            for s in &self.servers {
                s.abort();
            }
        }
    }

    async fn cluster(behaviours: [Behaviour; 3]) -> Cluster {
        cluster_with(behaviours, false).await
    }

    /// A ring descriptor of ACTIVE, freshly heartbeating instances at `addrs`.
    fn ring_desc(addrs: &[String]) -> ring::Desc {
        let mut d = ring::Desc::default();
        for (i, addr) in addrs.iter().enumerate() {
            d.ingesters.insert(
                format!("ing-{i}"),
                ring::InstanceDesc {
                    addr: addr.clone(),
                    timestamp: model::now_ms() / 1000,
                    state: ring::InstanceState::Active as i32,
                    tokens: (0..8u32).map(|k| k * 0x2000_0000 + i as u32 * 7919).collect(),
                    ..Default::default()
                },
            );
        }
        d
    }

    async fn cluster_with(behaviours: [Behaviour; 3], real_ring: bool) -> Cluster {
        let mut addrs = vec![];
        let mut stubs = vec![];
        let mut servers = vec![];
        for b in behaviours {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let stub = StubIngester {
                error: match &b {
                    Behaviour::Fail(e) => Some(e.clone()),
                    _ => None,
                },
                ..Default::default()
            };
            if matches!(b, Behaviour::Down) {
                // Nothing listens on the port any more: connection refused.
                drop(listener);
            } else {
                let svc = IngesterServer::new(stub.clone());
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                servers.push(tokio::spawn(async move {
                    let _ = tonic::transport::Server::builder()
                        .add_service(svc)
                        .serve_with_incoming(incoming)
                        .await;
                }));
            }
            addrs.push(addr);
            stubs.push(stub);
        }
        let pool = server::IngesterPool::new(Duration::from_secs(1));
        let d = if real_ring {
            let cfg = ring::RingConfig {
                replication_factor: 3,
                ..Default::default()
            };
            let ring = ring::Ring::from_desc(cfg, ring_desc(&addrs));
            Distributor::new(
                Config::default(),
                Limits::default(),
                ring,
                pool,
                &server::Metrics::new(),
            )
        } else {
            let ring = FakeRing::with_addrs(addrs);
            Distributor::with_replica_picker(
                Config::default(),
                Limits::default(),
                ring,
                Arc::new(pool),
                &server::Metrics::new(),
            )
        };
        Cluster { d, stubs, servers }
    }

    fn two_series() -> WriteRequest {
        let mut req = request(vec![
            series(&[("__name__", "up"), ("job", "a")], 2),
            series(&[("__name__", "up")], 1),
        ]);
        req.metadata.push(metadata("up"));
        req
    }

    #[tokio::test]
    async fn rf3_all_up_every_ingester_gets_the_write() {
        let c = cluster([Behaviour::Ok, Behaviour::Ok, Behaviour::Ok]).await;
        c.d.push("tenant-1", two_series()).await.unwrap();
        // Quorum is 2 of 3; the third push finishes in the background.
        for stub in &c.stubs {
            for _ in 0..200 {
                if !stub.pushes.lock().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let pushes = stub.pushes.lock();
            assert_eq!(pushes.len(), 1);
            assert_eq!(pushes[0].0, "tenant-1", "tenant travels as x-scope-orgid");
            assert_eq!(pushes[0].1.timeseries.len(), 2);
            assert_eq!(pushes[0].1.metadata.len(), 1);
        }
    }

    #[tokio::test]
    async fn rf3_one_down_succeeds() {
        let c = cluster([Behaviour::Ok, Behaviour::Down, Behaviour::Ok]).await;
        c.d.push("tenant-1", two_series()).await.unwrap();
        assert_eq!(c.stubs[0].pushes.lock().len() + c.stubs[2].pushes.lock().len(), 2);
    }

    #[tokio::test]
    async fn rf3_two_down_fails_with_500() {
        let c = cluster([Behaviour::Down, Behaviour::Ok, Behaviour::Down]).await;
        let err = c.d.push("tenant-1", two_series()).await.unwrap_err();
        assert_eq!(err.code, 500, "{}", err.message);
    }

    #[tokio::test]
    async fn rf3_all_rejecting_with_400_gives_400() {
        let e = HttpError::bad_request("sample timestamp out of order for series up");
        let c = cluster([
            Behaviour::Fail(e.clone()),
            Behaviour::Fail(e.clone()),
            Behaviour::Fail(e.clone()),
        ])
        .await;
        let err = c.d.push("tenant-1", two_series()).await.unwrap_err();
        assert_eq!(err, e);
    }

    #[tokio::test]
    async fn real_ring_rf3_one_down_succeeds_two_down_fails() {
        let c = cluster_with([Behaviour::Ok, Behaviour::Ok, Behaviour::Down], true).await;
        c.d.push("tenant-1", two_series()).await.unwrap();
        let c = cluster_with([Behaviour::Ok, Behaviour::Down, Behaviour::Down], true).await;
        assert_eq!(c.d.push("tenant-1", two_series()).await.unwrap_err().code, 500);
    }

    #[tokio::test]
    async fn http_to_grpc_end_to_end() {
        let c = cluster([Behaviour::Ok, Behaviour::Ok, Behaviour::Down]).await;
        let (status, text) = post(
            &c.d.http_routes(),
            "/api/prom/push",
            Some("team-x"),
            encode_write_request(&two_series()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(c.stubs[0].pushes.lock()[0].0, "team-x");
        assert_eq!(c.stubs[1].pushes.lock()[0].0, "team-x");
    }
}

// ------------------------------------------------ per-tenant state -------

#[tokio::test]
async fn random_tenants_with_invalid_series_leave_no_state_after_the_idle_timeout() {
    let s = setup();
    for i in 0..10_000 {
        let tenant = format!("random-{i}");
        // Invalid: a metric name with a space.
        let err = s.d
            .push(&tenant, request(vec![series(&[("__name__", "not valid")], 1)]))
            .await
            .unwrap_err();
        assert_eq!(err.code, 400);
    }
    assert!(s.ingesters.pushes().is_empty());
    assert_eq!(s.d.rate_limited_tenants(), 0, "no bucket for a tenant that never got past validation");
    let text = s.metrics.encode();
    assert!(text.contains("cortex_discarded_samples_total{reason=\"metric_name_invalid\",user=\"random-9999\"} 1"));

    // A tenant that wrote something and then stopped, and one still active.
    s.d.push("quiet", request(vec![series(&[("__name__", "up")], 1)])).await.unwrap();
    assert_eq!(s.d.rate_limited_tenants(), 1);
    let now = std::time::Instant::now();
    assert_eq!(s.d.purge_inactive_tenants(now, crate::INACTIVE_TENANT_TIMEOUT), 0, "nobody is idle yet");

    let later = now + crate::INACTIVE_TENANT_TIMEOUT + Duration::from_secs(1);
    assert_eq!(s.d.purge_inactive_tenants(later, crate::INACTIVE_TENANT_TIMEOUT), 10_001);
    let text = s.metrics.encode();
    assert!(!text.contains("user=\""), "per-tenant label sets left:\n{}", &text[..text.len().min(2000)]);
    assert_eq!(s.d.rate_limited_tenants(), 0);

    // A tenant coming back starts afresh and is counted again.
    s.d.push("quiet", request(vec![series(&[("__name__", "up")], 2)])).await.unwrap();
    assert_eq!(metric(&s.metrics, "cortex_distributor_received_samples_total{user=\"quiet\"}"), Some(2.0));
}
