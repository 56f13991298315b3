//! Ingester behaviour end to end: append rules, limits, matchers, tenants,
//! concurrency, and the gRPC/HTTP surfaces over real sockets.

use std::sync::Arc;

use bytes::Bytes;
use chunk::XorChunk;
use model::{MatchType, Matcher};
use prost::Message;
use proto::cortex::ingester_client::IngesterClient;
use proto::cortex::{
    write_request::SourceEnum, LabelMatcher, LabelMatchers, LabelNamesRequest, LabelPair, LabelValuesRequest,
    MetricMetadata, MetricsForLabelMatchersRequest, MetricsMetadataRequest, QueryRequest, Sample, TimeSeries,
    UserStatsRequest, WriteRequest,
};
use server::tenant::grpc_request;
use server::HttpError;
use tonic::transport::Channel;

use crate::user_state::{PushOutcome, SeriesLimits, UserState};
use crate::{Config, Ingester};

fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| LabelPair {
                name: Bytes::copy_from_slice(n.as_bytes()),
                value: Bytes::copy_from_slice(v.as_bytes()),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(t, v)| Sample {
                value: v,
                timestamp_ms: t,
            })
            .collect(),
    }
}

fn write(series: Vec<TimeSeries>) -> WriteRequest {
    WriteRequest {
        timeseries: series,
        ..Default::default()
    }
}

fn new_ingester(cfg: Config) -> (Arc<Ingester>, server::Metrics) {
    let metrics = server::Metrics::new();
    (Ingester::new(cfg, &metrics), metrics)
}

/// Chunks cut at 120 samples only (spread flushes also cut at each
/// series' slot in the max-chunk-age cycle, which tests counting chunks avoid).
fn without_spread_flushes() -> Config {
    let mut cfg = Config::default();
    cfg.flush.spread_flushes = false;
    cfg
}

fn eq(n: &str, v: &str) -> Matcher {
    Matcher::equal(n, v)
}

fn samples_of(ing: &Ingester, tenant: &str, matchers: &[Matcher]) -> Vec<(String, Vec<(i64, f64)>)> {
    let mut out: Vec<_> = ing
        .query(tenant, i64::MIN, i64::MAX, matchers)
        .unwrap()
        .into_iter()
        .map(|s| (s.labels.to_string(), s.samples.iter().map(|p| (p.t, p.v)).collect()))
        .collect();
    out.sort_by(|a: &(String, Vec<_>), b| a.0.cmp(&b.0));
    out
}

fn metric_line(metrics: &server::Metrics, prefix: &str) -> Option<String> {
    metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(prefix))
        .map(str::to_string)
}

#[tokio::test]
async fn in_order_and_duplicate_samples_are_accepted() {
    let (ing, metrics) = new_ingester(Config::default());
    let up = [("__name__", "up"), ("job", "api")];
    ing.push("t1", write(vec![series(&up, &[(1000, 1.0), (2000, 2.0)])]))
        .await
        .unwrap();
    // Same timestamp, same value: silently ignored.
    ing.push("t1", write(vec![series(&up, &[(2000, 2.0), (3000, 3.0)])]))
        .await
        .unwrap();
    assert_eq!(
        samples_of(&ing, "t1", &[eq("__name__", "up")]),
        vec![(
            r#"up{job="api"}"#.to_string(),
            vec![(1000, 1.0), (2000, 2.0), (3000, 3.0)]
        )]
    );
    assert_eq!(
        metric_line(&metrics, "cortex_discarded_samples_total{").as_deref(),
        Some(r#"cortex_discarded_samples_total{reason="duplicate-sample",user="t1"} 1"#)
    );
    assert_eq!(
        metric_line(&metrics, "cortex_ingester_ingested_samples_total ").as_deref(),
        Some("cortex_ingester_ingested_samples_total 3")
    );
    assert_eq!(
        metric_line(&metrics, "cortex_ingester_memory_series ").as_deref(),
        Some("cortex_ingester_memory_series 1")
    );
    assert_eq!(
        metric_line(&metrics, "cortex_ingester_memory_users ").as_deref(),
        Some("cortex_ingester_memory_users 1")
    );
    assert_eq!(
        metric_line(&metrics, "cortex_ingester_memory_chunks ").as_deref(),
        Some("cortex_ingester_memory_chunks 1")
    );
    assert_eq!(
        metric_line(&metrics, "cortex_ingester_memory_series_created_total{").as_deref(),
        Some(r#"cortex_ingester_memory_series_created_total{user="t1"} 1"#)
    );
}

#[tokio::test]
async fn out_of_order_and_new_value_are_rejected_but_the_rest_is_applied() {
    // The family is shared with the distributor when both run in one process.
    let metrics = server::Metrics::new();
    let distributor_side = metrics.discarded_samples();
    let ing = Ingester::new(Config::default(), &metrics);
    let a = [("__name__", "a")];
    let b = [("__name__", "b")];
    ing.push(
        "t1",
        write(vec![series(&a, &[(2000, 1.0)]), series(&b, &[(5000, 1.0)])]),
    )
    .await
    .unwrap();

    let err = ing
        .push(
            "t1",
            write(vec![
                series(&a, &[(1500, 9.0), (3000, 3.0)]), // first out of order, second fine
                series(&b, &[(5000, 2.0), (6000, 6.0)]), // new value for timestamp, then fine
            ]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 400);
    assert_eq!(
        err.message,
        r#"user=t1: sample timestamp out of order; last timestamp: 2, incoming timestamp: 1.5 for series {__name__="a"}"#
    );
    assert_eq!(
        samples_of(
            &ing,
            "t1",
            &[Matcher::new(MatchType::RegexMatch, "__name__", "a|b").unwrap()]
        ),
        vec![
            ("a".to_string(), vec![(2000, 1.0), (3000, 3.0)]),
            ("b".to_string(), vec![(5000, 1.0), (6000, 6.0)]),
        ]
    );
    let text = metrics.encode();
    assert!(
        text.contains(r#"cortex_discarded_samples_total{reason="sample-out-of-order",user="t1"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"cortex_discarded_samples_total{reason="new-value-for-timestamp",user="t1"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("cortex_ingester_ingested_samples_failures_total 2"),
        "{text}"
    );
    assert_eq!(
        text.matches("# TYPE cortex_discarded_samples counter").count(),
        1,
        "{text}"
    );
    let reason = server::metrics::ReasonUserLabels {
        reason: "sample-out-of-order".into(),
        user: "t1".into(),
    };
    assert_eq!(distributor_side.get_or_create(&reason).get(), 1);

    let err = ing
        .push("t1", write(vec![series(&b, &[(6000, 7.0)])]))
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        r#"user=t1: sample with repeated timestamp but different value; last value: 6, incoming value: 7 for series {__name__="b"}"#
    );
}

#[tokio::test]
async fn empty_label_values_are_dropped_before_lookup() {
    let (ing, _) = new_ingester(Config::default());
    ing.push(
        "t1",
        write(vec![series(
            &[("__name__", "m"), ("job", "x"), ("env", "")],
            &[(1, 1.0)],
        )]),
    )
    .await
    .unwrap();
    ing.push(
        "t1",
        write(vec![series(&[("job", "x"), ("__name__", "m")], &[(2, 2.0)])]),
    )
    .await
    .unwrap();
    assert_eq!(ing.num_series("t1"), 1);
    assert_eq!(ing.label_names("t1"), vec!["__name__", "job"]);
    assert_eq!(samples_of(&ing, "t1", &[eq("job", "x")])[0].1, vec![(1, 1.0), (2, 2.0)]);
}

#[tokio::test]
async fn per_user_series_limit() {
    let (ing, metrics) = new_ingester(Config {
        max_series_per_user: 2,
        ..Config::default()
    });
    let err = ing
        .push(
            "t1",
            write(vec![
                series(&[("__name__", "m"), ("i", "1")], &[(1, 1.0)]),
                series(&[("__name__", "m"), ("i", "2")], &[(1, 1.0)]),
                series(&[("__name__", "m"), ("i", "3")], &[(1, 1.0), (2, 2.0)]),
            ]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 400);
    assert!(
        err.message.starts_with("user=t1: per-user series limit of 2 exceeded"),
        "{}",
        err.message
    );
    assert_eq!(ing.num_series("t1"), 2);
    assert!(metrics
        .encode()
        .contains(r#"cortex_discarded_samples_total{reason="per_user_series_limit",user="t1"} 2"#));
    // Existing series still take samples; other tenants are not affected.
    ing.push("t1", write(vec![series(&[("__name__", "m"), ("i", "1")], &[(5, 5.0)])]))
        .await
        .unwrap();
    ing.push("t2", write(vec![series(&[("__name__", "m"), ("i", "3")], &[(1, 1.0)])]))
        .await
        .unwrap();
}

#[tokio::test]
async fn per_metric_series_limit() {
    let (ing, metrics) = new_ingester(Config {
        max_series_per_metric: 1,
        ..Config::default()
    });
    ing.push("t1", write(vec![series(&[("__name__", "a"), ("i", "1")], &[(1, 1.0)])]))
        .await
        .unwrap();
    let err = ing
        .push("t1", write(vec![series(&[("__name__", "a"), ("i", "2")], &[(1, 1.0)])]))
        .await
        .unwrap_err();
    assert!(
        err.message
            .starts_with("user=t1: per-metric series limit of 1 exceeded"),
        "{}",
        err.message
    );
    assert!(
        err.message.ends_with(r#"for series {__name__="a", i="2"}"#),
        "{}",
        err.message
    );
    // Another metric name has its own budget.
    ing.push("t1", write(vec![series(&[("__name__", "b"), ("i", "2")], &[(1, 1.0)])]))
        .await
        .unwrap();
    assert_eq!(ing.num_series_for_metric("t1", "a"), 1);
    assert_eq!(ing.num_series_for_metric("t1", "b"), 1);
    assert!(metrics
        .encode()
        .contains(r#"cortex_discarded_samples_total{reason="per_metric_series_limit",user="t1"} 1"#));
}

async fn matcher_fixture() -> Arc<Ingester> {
    let (ing, _) = new_ingester(Config::default());
    ing.push(
        "t1",
        write(vec![
            series(&[("__name__", "up"), ("job", "api"), ("env", "prod")], &[(1, 1.0)]),
            series(&[("__name__", "up"), ("job", "db")], &[(1, 2.0)]),
            series(&[("__name__", "cpu"), ("job", "api"), ("env", "dev")], &[(1, 3.0)]),
        ]),
    )
    .await
    .unwrap();
    ing
}

fn names(ing: &Ingester, matchers: &[Matcher]) -> Vec<String> {
    samples_of(ing, "t1", matchers).into_iter().map(|(n, _)| n).collect()
}

#[tokio::test]
async fn matchers_through_the_inverted_index() {
    let ing = matcher_fixture().await;
    let m = |k, n: &str, v: &str| Matcher::new(k, n, v).unwrap();
    use MatchType::*;
    assert_eq!(
        names(&ing, &[m(Equal, "__name__", "up")]),
        vec![r#"up{env="prod", job="api"}"#, r#"up{job="db"}"#]
    );
    assert_eq!(
        names(&ing, &[m(Equal, "job", "api"), m(NotEqual, "__name__", "up")]),
        vec![r#"cpu{env="dev", job="api"}"#]
    );
    assert_eq!(
        names(&ing, &[m(RegexMatch, "env", "pro.*")]),
        vec![r#"up{env="prod", job="api"}"#]
    );
    assert_eq!(
        names(&ing, &[m(Equal, "__name__", "up"), m(RegexNoMatch, "job", "a.*")]),
        vec![r#"up{job="db"}"#]
    );
    // Absent labels: env="" selects series without env; env!="" those with it.
    assert_eq!(
        names(&ing, &[m(Equal, "__name__", "up"), m(Equal, "env", "")]),
        vec![r#"up{job="db"}"#]
    );
    assert_eq!(names(&ing, &[m(NotEqual, "env", "")]).len(), 2);
    // != on a value: series lacking the label match too.
    assert_eq!(names(&ing, &[m(NotEqual, "env", "prod")]).len(), 2);
    // Only empty-matching matchers: answered by scanning every series.
    assert_eq!(names(&ing, &[m(RegexMatch, "env", "dev|")]).len(), 2);
    // A label no series has.
    assert!(names(&ing, &[m(Equal, "region", "eu")]).is_empty());
    assert!(names(&ing, &[m(RegexMatch, "__name__", "nope.*")]).is_empty());
    assert_eq!(ing.label_values("t1", "job"), vec!["api", "db"]);
    assert_eq!(ing.label_names("t1"), vec!["__name__", "env", "job"]);
}

#[tokio::test]
async fn query_time_range_and_limits() {
    let (ing, _) = new_ingester(Config {
        max_samples_per_query: 5,
        max_series_per_query: 2,
        ..Config::default()
    });
    let pts: Vec<_> = (0..10).map(|i| (i * 10, i as f64)).collect();
    ing.push("t1", write(vec![series(&[("__name__", "a")], &pts)]))
        .await
        .unwrap();
    let got = ing.query("t1", 20, 50, &[eq("__name__", "a")]).unwrap();
    assert_eq!(
        got[0].samples.iter().map(|s| s.t).collect::<Vec<_>>(),
        vec![20, 30, 40, 50]
    );
    let err = ing.query("t1", 0, 100, &[eq("__name__", "a")]).unwrap_err();
    assert_eq!(err.code, 413);
    ing.push(
        "t1",
        write(vec![
            series(&[("__name__", "b")], &[(1, 1.0)]),
            series(&[("__name__", "c")], &[(1, 1.0)]),
        ]),
    )
    .await
    .unwrap();
    let all = Matcher::new(MatchType::RegexMatch, "__name__", ".+").unwrap();
    assert_eq!(ing.query("t1", 0, 5, &[all]).unwrap_err().code, 413);
}

#[tokio::test]
async fn tenants_are_isolated() {
    let (ing, _) = new_ingester(Config::default());
    ing.push(
        "a",
        write(vec![series(&[("__name__", "secret"), ("t", "a")], &[(1, 1.0)])]),
    )
    .await
    .unwrap();
    ing.push(
        "b",
        write(vec![series(&[("__name__", "public"), ("t", "b")], &[(1, 2.0)])]),
    )
    .await
    .unwrap();
    let any = Matcher::new(MatchType::RegexMatch, "__name__", ".+").unwrap();
    assert_eq!(names_for(&ing, "a", &any), vec![r#"secret{t="a"}"#]);
    assert_eq!(names_for(&ing, "b", &any), vec![r#"public{t="b"}"#]);
    assert!(names_for(&ing, "c", &any).is_empty());
    assert_eq!(ing.label_values("b", "__name__"), vec!["public"]);
    assert_eq!(ing.num_series("a"), 1);
    assert_eq!(ing.user_stats("b").num_series, 1);
    assert!(ing.series_for_matchers("a", &[vec![eq("t", "b")]]).is_empty());
}

fn names_for(ing: &Ingester, tenant: &str, m: &Matcher) -> Vec<String> {
    samples_of(ing, tenant, std::slice::from_ref(m))
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_from_many_tasks() {
    let (ing, _) = new_ingester(without_spread_flushes());
    let tasks = 8;
    let per_task_series = 50;
    let rounds = 30;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let ing = ing.clone();
        handles.push(tokio::spawn(async move {
            for round in 0..rounds {
                let batch: Vec<_> = (0..per_task_series)
                    .map(|s| {
                        // Half the series are shared by all tasks: they race on the same shards.
                        let id = if s % 2 == 0 {
                            format!("shared-{s}")
                        } else {
                            format!("t{task}-{s}")
                        };
                        series(&[("__name__", "load"), ("id", &id)], &[(round * 1000 + task, 1.0)])
                    })
                    .collect();
                // Shared series see interleaved timestamps, so some samples are
                // legitimately out of order; only errors of that kind are allowed.
                if let Err(e) = ing.push("t1", write(batch)).await {
                    assert!(e.message.contains("out of order"), "{}", e.message);
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let shared = per_task_series / 2;
    let own = tasks as usize * (per_task_series / 2);
    assert_eq!(ing.num_series("t1"), shared + own);
    // Every own series got every round, in order.
    let got = ing.query("t1", i64::MIN, i64::MAX, &[eq("id", "t3-1")]).unwrap();
    assert_eq!(got[0].samples.len(), rounds as usize);
    assert_eq!(ing.num_chunks("t1"), shared + own);
}

#[test]
fn colliding_fingerprints_keep_separate_series() {
    let user = UserState::new(Arc::from("t1"), std::time::Duration::from_secs(15));
    let limits = SeriesLimits {
        max_series_per_user: 0,
        max_series_per_metric: 0,
    };
    let fake_fp = 42; // force both label sets onto one fingerprint
    let a: Vec<(&[u8], &[u8])> = vec![(b"__name__", b"m"), (b"x", b"1")];
    let b: Vec<(&[u8], &[u8])> = vec![(b"__name__", b"m"), (b"x", b"2")];
    let mut out = PushOutcome::default();
    let s = |t, v| Sample {
        value: v,
        timestamp_ms: t,
    };
    user.push_series(fake_fp, &a, &[s(1, 1.0)], limits, 0, &mut out);
    user.push_series(fake_fp, &b, &[s(1, 2.0)], limits, 0, &mut out);
    user.push_series(fake_fp, &a, &[s(2, 3.0)], limits, 0, &mut out);
    assert_eq!(out.series_created, 2);
    assert!(out.first_error.is_none(), "{:?}", out.first_error);
    assert_eq!(user.num_series(), 2);
    let all = [eq("__name__", "m")];
    let fps = user.candidate_fingerprints(&all);
    assert_eq!(fps, vec![42]);
    let mut seen = Vec::new();
    user.for_each_matching(&fps, &all, |s, labels| {
        seen.push((
            labels.get("x").to_string(),
            s.chunks[0].chunk.iter().collect::<Vec<_>>(),
        ))
    });
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        vec![("1".into(), vec![(1, 1.0), (2, 3.0)]), ("2".into(), vec![(1, 2.0)])]
    );
    let only_b = [eq("x", "2")];
    let mut hits = 0;
    user.for_each_matching(&user.candidate_fingerprints(&only_b), &only_b, |_, _| hits += 1);
    assert_eq!(hits, 1);
}

#[tokio::test]
async fn ingestion_rate_and_metadata() {
    let (ing, _) = new_ingester(Config::default());
    let batch = (0..30)
        .map(|i| series(&[("__name__", "r"), ("i", &i.to_string())], &[(1, 1.0)]))
        .collect();
    ing.push("t1", write(batch)).await.unwrap();
    let mut rule = write(vec![series(&[("__name__", "rule")], &[(1, 1.0)])]);
    rule.source = SourceEnum::Rule as i32;
    rule.metadata = vec![MetricMetadata {
        r#type: 1,
        metric_family_name: "r".into(),
        help: "help".into(),
        unit: String::new(),
    }];
    ing.push("t1", rule.clone()).await.unwrap();
    ing.push("t1", write(vec![])).await.unwrap();
    ing.tick();
    let stats = ing.user_stats("t1");
    assert_eq!(stats.num_series, 31);
    assert!((stats.api_ingestion_rate - 30.0 / 15.0).abs() < 1e-9, "{stats:?}");
    assert!((stats.rule_ingestion_rate - 1.0 / 15.0).abs() < 1e-9, "{stats:?}");
    assert!((stats.ingestion_rate - 31.0 / 15.0).abs() < 1e-9);
    // EWMA: an idle period decays the rate by alpha = 0.2.
    ing.tick();
    assert!((ing.user_stats("t1").api_ingestion_rate - 2.0 * 0.8).abs() < 1e-9);
    // Metadata is stored once per distinct entry.
    // Same request again: the sample is a duplicate (ignored), the metadata entry is refreshed.
    ing.push("t1", rule).await.unwrap();
    assert_eq!(ing.metadata("t1").len(), 1);
    assert_eq!(ing.metadata("t1")[0].help, "help");
    assert!(ing.metadata("t2").is_empty());
}

// ---- gRPC over a real socket -------------------------------------------------

async fn serve(ing: &Arc<Ingester>) -> IngesterClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = ing.grpc_service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    // The same pooled client the distributor and querier use.
    server::IngesterPool::new(std::time::Duration::from_secs(5))
        .get(&addr.to_string())
        .unwrap()
}

fn lm(kind: MatchType, name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        r#type: kind as i32,
        name: name.into(),
        value: value.into(),
    }
}

#[tokio::test]
async fn query_stream_round_trip_over_grpc() {
    let (ing, _) = new_ingester(without_spread_flushes());
    let mut client = serve(&ing).await;
    // 300 series × 250 samples: 3 chunks each (120 + 120 + 10 in the open head).
    let batch: Vec<_> = (0..300)
        .map(|i| {
            let pts: Vec<_> = (0..250).map(|j| (j * 15_000, (i * 1000 + j) as f64)).collect();
            series(&[("__name__", "stream"), ("i", &i.to_string())], &pts)
        })
        .collect();
    client.push(grpc_request("t1", write(batch))).await.unwrap();

    let req = QueryRequest {
        start_timestamp_ms: 0,
        end_timestamp_ms: i64::MAX,
        matchers: vec![lm(MatchType::Equal, "__name__", "stream")],
    };
    let mut stream = client.query_stream(grpc_request("t1", req)).await.unwrap().into_inner();
    let mut sizes = Vec::new();
    let mut seen = 0;
    while let Some(msg) = stream.message().await.unwrap() {
        sizes.push(msg.chunkseries.len());
        for s in msg.chunkseries {
            let i: i64 = s
                .labels
                .iter()
                .find(|l| &l.name[..] == b"i")
                .map(|l| std::str::from_utf8(&l.value).unwrap().parse().unwrap())
                .unwrap();
            assert_eq!(s.chunks.len(), 3);
            let mut samples = Vec::new();
            for c in &s.chunks {
                assert_eq!(c.encoding, chunk::ENCODING_PROMETHEUS_XOR);
                let decoded = XorChunk::from_bytes(c.data.clone()).unwrap();
                assert_eq!(decoded.first_time(), Some(c.start_timestamp_ms));
                assert_eq!(decoded.last_time(), Some(c.end_timestamp_ms));
                samples.extend(decoded.iter());
            }
            let want: Vec<_> = (0..250).map(|j| (j * 15_000, (i * 1000 + j) as f64)).collect();
            assert_eq!(samples, want, "series {i}");
            seen += 1;
        }
    }
    assert_eq!(seen, 300);
    assert_eq!(sizes, vec![128, 128, 44]);

    // A range touching only the last chunk sends only that chunk.
    let req = QueryRequest {
        start_timestamp_ms: 240 * 15_000,
        end_timestamp_ms: 245 * 15_000,
        matchers: vec![lm(MatchType::Equal, "i", "7")],
    };
    let mut stream = client.query_stream(grpc_request("t1", req)).await.unwrap().into_inner();
    let msg = stream.message().await.unwrap().unwrap();
    assert_eq!(msg.chunkseries.len(), 1);
    assert_eq!(msg.chunkseries[0].chunks.len(), 1);
    assert_eq!(msg.chunkseries[0].chunks[0].start_timestamp_ms, 240 * 15_000);
    assert!(stream.message().await.unwrap().is_none());

    // Another tenant sees nothing.
    let req = QueryRequest {
        start_timestamp_ms: 0,
        end_timestamp_ms: i64::MAX,
        matchers: vec![lm(MatchType::Equal, "__name__", "stream")],
    };
    let mut stream = client.query_stream(grpc_request("t2", req)).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_none());
}

#[tokio::test]
async fn other_rpcs_over_grpc() {
    let (ing, _) = new_ingester(Config::default());
    let mut client = serve(&ing).await;
    let mut req = write(vec![
        series(&[("__name__", "up"), ("job", "api")], &[(1000, 1.0), (2000, 1.0)]),
        series(&[("__name__", "up"), ("job", "db")], &[(1000, 0.0)]),
        series(&[("__name__", "cpu"), ("job", "api")], &[(1000, 0.5)]),
    ]);
    req.metadata = vec![MetricMetadata {
        r#type: 2,
        metric_family_name: "up".into(),
        help: "Is it up".into(),
        unit: String::new(),
    }];
    client.push(grpc_request("t1", req)).await.unwrap();

    // Client errors keep their HTTP meaning across gRPC.
    let st = client
        .push(grpc_request(
            "t1",
            write(vec![series(&[("__name__", "up"), ("job", "api")], &[(500, 1.0)])]),
        ))
        .await
        .unwrap_err();
    let e = HttpError::from_grpc_status(&st);
    assert_eq!(e.code, 400);
    assert!(
        e.message.starts_with("user=t1: sample timestamp out of order"),
        "{}",
        e.message
    );
    // No tenant → 401.
    let st = client.push(tonic::Request::new(write(vec![]))).await.unwrap_err();
    assert_eq!(HttpError::from_grpc_status(&st).code, 401);

    let resp = client
        .query(grpc_request(
            "t1",
            QueryRequest {
                start_timestamp_ms: 0,
                end_timestamp_ms: 1500,
                matchers: vec![lm(MatchType::Equal, "job", "api")],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.timeseries.len(), 2);
    assert!(resp
        .timeseries
        .iter()
        .all(|t| t.samples.len() == 1 && t.samples[0].timestamp_ms == 1000));

    let bad = client
        .query(grpc_request(
            "t1",
            QueryRequest {
                start_timestamp_ms: 0,
                end_timestamp_ms: 1,
                matchers: vec![lm(MatchType::RegexMatch, "job", "(")],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(HttpError::from_grpc_status(&bad).code, 400);

    let names = client
        .label_names(grpc_request("t1", LabelNamesRequest::default()))
        .await
        .unwrap();
    assert_eq!(names.into_inner().label_names, vec!["__name__", "job"]);
    let values = client
        .label_values(grpc_request(
            "t1",
            LabelValuesRequest {
                label_name: "job".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert_eq!(values.into_inner().label_values, vec!["api", "db"]);

    // Union over matcher sets, each series once.
    let metrics = client
        .metrics_for_label_matchers(grpc_request(
            "t1",
            MetricsForLabelMatchersRequest {
                start_timestamp_ms: 0,
                end_timestamp_ms: 0,
                matchers_set: vec![
                    LabelMatchers {
                        matchers: vec![lm(MatchType::Equal, "job", "db")],
                    },
                    LabelMatchers {
                        matchers: vec![lm(MatchType::Equal, "__name__", "up")],
                    },
                ],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metrics.metric.len(), 2);

    let stats = client
        .user_stats(grpc_request("t1", UserStatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.num_series, 3);
    let all = client
        .all_user_stats(grpc_request("t1", UserStatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.stats.len(), 1);
    assert_eq!(all.stats[0].user_id, "t1");
    assert_eq!(all.stats[0].data.as_ref().unwrap().num_series, 3);

    let md = client
        .metrics_metadata(grpc_request("t1", MetricsMetadataRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(md.metadata.len(), 1);
    assert_eq!(md.metadata[0].help, "Is it up");

    let st = client
        .transfer_chunks(grpc_request("t1", tokio_stream::iter(vec![])))
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::Unimplemented);
    assert_eq!(HttpError::from_grpc_status(&st).code, 501);
}

#[tokio::test]
async fn no_raw_push_route_bypasses_the_distributor() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let (ing, _) = new_ingester(Config::default());
    let body = write(vec![series(&[("__name__", "via_http")], &[(1, 1.0)])]).encode_to_vec();
    let compressed = snap::raw::Encoder::new().compress_vec(&body).unwrap();
    for path in ["/ingester/push", "/push"] {
        let req = axum::http::Request::post(path)
            .header("X-Scope-OrgID", "web")
            .body(axum::body::Body::from(compressed.clone()))
            .unwrap();
        let resp = ing.http_routes().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }
    assert_eq!(ing.num_series("web"), 0);
    ing.push("web", write(vec![series(&[("__name__", "via_grpc")], &[(1, 1.0)])]))
        .await
        .unwrap();

    let req = axum::http::Request::get("/ingester/all_user_stats")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = ing.http_routes().oneshot(req).await.unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(json[0]["user_id"], "web");
    assert_eq!(json[0]["num_series"], 1);
}

#[test]
fn readiness_delegates_to_the_installed_check() {
    let metrics = server::Metrics::new();
    let ing = Ingester::new(Config::default(), &metrics);
    assert!(ing.check_ready().is_ok());
    ing.set_readiness_check(Arc::new(|| Err("ring: not yet ACTIVE".to_string())));
    assert_eq!(ing.check_ready(), Err("ring: not yet ACTIVE".to_string()));
}

#[test]
fn config_defaults_and_flags() {
    let cfg = Config::default();
    assert_eq!(cfg.max_series_per_user, 5_000_000);
    assert_eq!(cfg.max_series_per_metric, 50_000);
    let args: Vec<String> = ["-ingester.max-series-per-user=10", "-ingester.rate-update-period=30s"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let loaded: Config = server::config::load(&args, Config::FLAGS).unwrap();
    assert_eq!(loaded.max_series_per_user, 10);
    assert_eq!(loaded.rate_update_period, model::GoDuration::secs(30));
    assert_eq!(loaded.max_series_per_metric, 50_000);
}

#[tokio::test]
async fn readiness_comes_from_the_ring_lifecycler() {
    let metrics = server::Metrics::new();
    let kv_cfg = ring::kv::KvConfig {
        store: "inmemory".into(),
        ..Default::default()
    };
    let kv = ring::kv::new_client(&kv_cfg, &metrics).await.unwrap();
    let start = |id: &str, min_ready: model::GoDuration| {
        let cfg = ring::LifecyclerConfig {
            id: id.into(),
            min_ready_duration: min_ready,
            join_after: model::GoDuration::secs(0),
            heartbeat_period: model::GoDuration::millis(50),
            final_sleep: model::GoDuration::secs(0),
            ..Default::default()
        };
        ring::Lifecycler::start(
            cfg,
            kv.clone(),
            ring::INGESTER_RING_KEY,
            "127.0.0.1:9095".into(),
            &metrics,
        )
    };

    // Not ready while the lifecycler waits out min_ready_duration.
    let ing = Ingester::new(Config::default(), &metrics);
    let slow = start("ing-slow", model::GoDuration::secs(3600)).await.unwrap();
    ing.set_lifecycler(slow.clone());
    let why = ing.check_ready().unwrap_err();
    assert!(why.contains("waiting"), "{why}");
    slow.shutdown().await;

    let (ing, _) = new_ingester(Config::default());
    let l = start("ing-1", model::GoDuration::secs(0)).await.unwrap();
    ing.set_lifecycler(l.clone());
    // Wait on the condition, not a fixed sleep: the lifecycler joins in the background.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while ing.check_ready().is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {:?}",
            ing.check_ready()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    l.shutdown().await;
}

#[test]
fn flags_include_the_lifecycler_nested() {
    let flags = Config::flags();
    let tokens = flags.iter().find(|f| f.name == "ingester.num-tokens").unwrap();
    assert_eq!(tokens.path, "lifecycler.num_tokens");
    let args = vec![
        "-ingester.num-tokens=64".to_string(),
        "-ingester.max-series-per-metric=7".to_string(),
    ];
    let cfg: Config = server::config::load(&args, &flags).unwrap();
    assert_eq!(cfg.lifecycler.num_tokens, 64);
    assert_eq!(cfg.max_series_per_metric, 7);
}

#[tokio::test]
async fn tenants_whose_pushes_all_fail_leave_no_state() {
    let mut cfg = Config::default();
    cfg.max_series_per_metric = 1;
    let (ing, metrics) = new_ingester(cfg);
    let bad = LabelPair {
        name: Bytes::from_static(b"__name__"),
        value: Bytes::from_static(b"\xff\xfe"),
    };
    for i in 0..10_000 {
        let mut ts = series(&[], &[(1, 1.0)]);
        ts.labels.push(bad.clone());
        let err = ing.push(&format!("random-{i}"), write(vec![ts])).await.unwrap_err();
        assert_eq!(err.code, 400);
    }
    assert_eq!(ing.num_users(), 0);
    assert_eq!(metric_line(&metrics, "cortex_ingester_memory_users").as_deref(), Some("cortex_ingester_memory_users 0"));
    // A tenant with one series stays; its second series is over the
    // per-metric limit, which removes nothing.
    ing.push("real", write(vec![series(&[("__name__", "up"), ("a", "1")], &[(1, 1.0)])]))
        .await
        .unwrap();
    let err = ing
        .push("real", write(vec![series(&[("__name__", "up"), ("a", "2")], &[(1, 1.0)])]))
        .await
        .unwrap_err();
    assert_eq!(err.code, 400);
    assert_eq!(ing.num_users(), 1);
    assert_eq!(ing.num_series("real"), 1);
    let text = metrics.encode();
    assert!(text.contains("cortex_discarded_samples_total{reason=\"label_invalid\",user=\"random-9999\"} 1"), "{text}");

    // Label sets stay until the idle timeout, then go, except the live tenant's.
    let now = std::time::Instant::now();
    ing.purge_idle_tenants(now);
    assert!(metrics.encode().contains("user=\"random-0\""));
    ing.purge_idle_tenants(now + ing.config().active_series_metrics_idle_timeout.0 + std::time::Duration::from_secs(1));
    let text = metrics.encode();
    let users: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split("user=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(users.into_iter().collect::<Vec<_>>(), vec!["real"], "{text}");
    assert_eq!(ing.num_users(), 1);
}

#[tokio::test]
async fn a_tenant_left_with_nothing_is_purged_on_the_next_tick() {
    let mut cfg = Config::default();
    cfg.metadata_retain_period = model::GoDuration(std::time::Duration::ZERO);
    let (ing, _) = new_ingester(cfg);
    // Metadata alone keeps a tenant (until it expires).
    let req = WriteRequest {
        metadata: vec![MetricMetadata {
            r#type: 1,
            metric_family_name: "up".into(),
            help: "h".into(),
            unit: String::new(),
        }],
        ..Default::default()
    };
    ing.push("md", req).await.unwrap();
    assert_eq!(ing.num_users(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    ing.tick();
    assert_eq!(ing.num_users(), 0);
    assert!(ing.metadata("md").is_empty());
}
