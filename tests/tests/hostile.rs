//! Hostile requests against the real all-in-one (`cortex`, auth enabled,
//! `-querier.timeout=5s`): absurd ranges and steps, runaway subqueries,
//! expressions nested 10,000 deep, regexes that explode, megabyte label
//! values, NaN/Inf/overflowing times, wrong content types, lying snappy and
//! protobuf lengths, bad and random tenants — on every public endpoint.
//!
//! Every request must be answered within the query timeout + 5 s, with a 4xx
//! (or a 503 that says it timed out) — or, where answering is legitimate
//! (Prometheus answers `((((1))))`), with a correct answer. The process must
//! stay up, its peak RSS (`VmHWM`) stay under [`RSS_LIMIT_KIB`], no request may
//! reach the panic handler (`cortex_panics_total`), and a normal query must
//! answer correctly afterwards. A table of request → status → ms is printed;
//! every failing case is listed before the test fails.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use e2e::*;
use prost::Message;
use proto::cortex as pb;

/// `-querier.max-samples` of the process under test.
const MAX_SAMPLES: usize = 500_000;
/// `-querier.timeout` of the process under test.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Peak resident memory the process may reach while answering the suite.
const RSS_LIMIT_KIB: u64 = 1024 * 1024;
const TENANT: &str = "hostile";

/// What a case must get back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// A 4xx, or a 503 whose message says the query timed out.
    Refused,
    /// Anything but a 5xx: answering is legitimate, refusing with a 4xx too.
    /// With `Some(text)`, a 200 must contain `text` (the correct answer).
    Survives(Option<&'static str>),
}

struct Case {
    name: String,
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    expect: Expect,
    /// Sent over a raw TCP connection: hyper's client refuses URIs over 64 KiB.
    raw: bool,
}

impl Case {
    fn new(name: impl Into<String>, method: &'static str, path: impl Into<String>) -> Case {
        Case {
            name: name.into(),
            method,
            path: path.into(),
            headers: vec![("X-Scope-OrgID".into(), TENANT.into())],
            body: Vec::new(),
            expect: Expect::Refused,
            raw: false,
        }
    }

    fn get(name: impl Into<String>, path: impl Into<String>) -> Case {
        Case::new(name, "GET", path)
    }

    /// A form-encoded POST (how Grafana sends long queries).
    fn form(name: impl Into<String>, path: &str, params: &[(&str, &str)]) -> Case {
        let mut c = Case::new(name, "POST", path);
        c.headers
            .push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
        c.body = encode_form(params).into_bytes();
        c
    }

    fn post(name: impl Into<String>, path: &str, content_type: &str, body: Vec<u8>) -> Case {
        let mut c = Case::new(name, "POST", path);
        c.headers.push(("Content-Type".into(), content_type.into()));
        c.body = body;
        c
    }

    fn push(name: impl Into<String>, body: Vec<u8>) -> Case {
        let mut c = Case::post(name, "/api/prom/push", "application/x-protobuf", body);
        c.headers.push(("Content-Encoding".into(), "snappy".into()));
        c
    }

    fn remote_read(name: impl Into<String>, body: Vec<u8>) -> Case {
        let mut c = Case::post(name, "/api/prom/api/v1/read", "application/x-protobuf", body);
        c.headers.push(("Content-Encoding".into(), "snappy".into()));
        c
    }

    fn tenant(mut self, id: Option<&str>) -> Case {
        self.headers.retain(|(k, _)| k != "X-Scope-OrgID");
        if let Some(id) = id {
            self.headers.push(("X-Scope-OrgID".into(), id.into()));
        }
        self
    }

    fn expect(mut self, e: Expect) -> Case {
        self.expect = e;
        self
    }

    fn raw(mut self) -> Case {
        self.raw = true;
        self
    }
}

fn encode_form(params: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

fn query(q: &str, extra: &[(&str, &str)]) -> String {
    let mut p = vec![("query", q)];
    p.extend_from_slice(extra);
    format!("/api/prom/api/v1/query?{}", encode_form(&p))
}

fn query_range(q: &str, start: &str, end: &str, step: &str) -> String {
    format!(
        "/api/prom/api/v1/query_range?{}",
        encode_form(&[("query", q), ("start", start), ("end", end), ("step", step)])
    )
}

fn pair(n: &str, v: &str) -> pb::LabelPair {
    pb::LabelPair {
        name: n.to_string().into_bytes().into(),
        value: v.to_string().into_bytes().into(),
    }
}

fn write_request(series: Vec<pb::TimeSeries>) -> Vec<u8> {
    pb::WriteRequest {
        timeseries: series,
        ..Default::default()
    }
    .encode_to_vec()
}

fn series(labels: Vec<pb::LabelPair>, t: i64, v: f64) -> pb::TimeSeries {
    pb::TimeSeries {
        labels,
        samples: vec![pb::Sample {
            value: v,
            timestamp_ms: t,
        }],
    }
}

/// A snappy block whose length header claims `len` bytes, followed by `tail`.
fn snappy_claiming(len: u64, tail: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(len, &mut out);
    out.extend_from_slice(tail);
    out
}

fn read_request(queries: Vec<pb::QueryRequest>) -> Vec<u8> {
    snappy(&pb::ReadRequest { queries }.encode_to_vec())
}

fn matcher(t: i32, n: &str, v: &str) -> pb::LabelMatcher {
    pb::LabelMatcher {
        r#type: t,
        name: n.into(),
        value: v.into(),
    }
}

/// A deterministic stream of tenant IDs (no rand dependency needed).
fn random_tenants(n: usize) -> Vec<String> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("t{x:016x}")
        })
        .collect()
}

fn cases() -> Vec<Case> {
    let now_s = model::now_ms() / 1000;
    let now = now_s.to_string();
    let hour_ago = (now_s - 3600).to_string();
    let mb = "x".repeat(1 << 20);
    let kb60 = "x".repeat(60_000);
    let deep_parens = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    let long_sum = vec!["1"; 10_000].join("+");
    let long_or = vec!["vector(1)"; 5_000].join(" or ");
    let deep_calls = format!("{}vector(1){}", "abs(".repeat(5_000), ")".repeat(5_000));
    let many_matchers = format!(
        "hostile_canary{{{}}}",
        (0..10_000).map(|i| format!("l{i}=\"x\"")).collect::<Vec<_>>().join(",")
    );
    let good = write_request(vec![series(vec![pair("__name__", "hostile_ok")], model::now_ms(), 1.0)]);
    let good_snappy = snappy(&good);

    let mut c = vec![
        // --- query: runaway work must be refused before it is done.
        Case::get("100y:1ms subquery", query("count_over_time(vector(1)[100y:1ms])", &[])),
        Case::get(
            "10^6-step subquery",
            query("sum_over_time(vector(1)[1000000s:1s])", &[]),
        ),
        Case::get(
            "nested 10^6-step subqueries",
            query("max_over_time(sum_over_time(vector(1)[1000000s:1s])[1000000s:1s])", &[]),
        ),
        Case::get("range of a 100y subquery", query("vector(1)[100y:1ms]", &[])),
        Case::get(
            "subquery over real data 100y:1ms",
            query("rate(hostile_canary[1m])[100y:1ms]", &[]),
        ),
        Case::get("subquery step 0", query("vector(1)[1h:0s]", &[])),
        // 8640 × 86400 inner steps within the sample budget: answering it (correctly) is legitimate;
        // the timeout path of a truly runaway query is covered by the querier's
        // `a_runaway_query_ends_at_the_timeout_with_503`.
        Case::get(
            "nested subqueries within budget",
            query("count_over_time(count_over_time(vector(1)[1d:1s])[1d:10s])", &[]),
        )
        .expect(Expect::Survives(Some("\"8640\""))),
        Case::get("time=NaN", query("vector(1)", &[("time", "NaN")])),
        Case::get("time=+Inf", query("vector(1)", &[("time", "+Inf")])),
        Case::get("time=-Inf", query("vector(1)", &[("time", "-Inf")])),
        Case::get("time=1e300", query("vector(1)", &[("time", "1e300")])),
        Case::get(
            "time=overflowing integer",
            query("vector(1)", &[("time", "99999999999999999999999")]),
        ),
        Case::get("time=garbage", query("vector(1)", &[("time", "yesterday")])),
        Case::get("timeout=1e300", query("vector(1)", &[("timeout", "1e300")])),
        Case::get(
            "timeout=huge duration",
            query("vector(1)", &[("timeout", "999999999999h")]),
        ),
        Case::get("timeout=-1s", query("vector(1)", &[("timeout", "-1s")])).expect(Expect::Survives(None)),
        Case::get("timeout=NaN", query("vector(1)", &[("timeout", "NaN")])),
        Case::get("empty query", query("", &[])),
        Case::get("syntax error", query("sum((", &[])),
        Case::get("unknown function", query("no_such_fn(1)", &[])),
        Case::get("@ 1e300", query("vector(1) @ 1e300", &[])),
        Case::get("offset 1000000000y", query("hostile_canary offset 1000000000y", &[])),
        Case::get("deep parentheses 10k", query(&deep_parens, &[])).expect(Expect::Survives(Some("\"1\""))),
        Case::form("1+1+... 10k terms", "/api/prom/api/v1/query", &[("query", &long_sum)])
            .expect(Expect::Survives(Some("\"10000\""))),
        Case::form("or chain 5k", "/api/prom/api/v1/query", &[("query", &long_or)])
            .expect(Expect::Survives(Some("\"1\""))),
        Case::form("nested calls 5k", "/api/prom/api/v1/query", &[("query", &deep_calls)])
            .expect(Expect::Survives(Some("\"1\""))),
        Case::get(
            "regex that would backtrack",
            query("hostile_canary{job=~\"(a+)+(b+)+(c+)+$\"}", &[]),
        )
        .expect(Expect::Survives(None)),
        Case::get(
            "regex of exploding size",
            query("hostile_canary{job=~\"((a{1000}){1000}){1000}\"}", &[]),
        ),
        Case::get("invalid regex", query("hostile_canary{job=~\"(\"}", &[])),
        Case::form(
            "label_replace regex of exploding size",
            "/api/prom/api/v1/query",
            &[(
                "query",
                "label_replace(vector(1), \"a\", \"$1\", \"b\", \"(x{1000}){1000}\")",
            )],
        ),
        Case::form(
            "1 MB label value in a query",
            "/api/prom/api/v1/query",
            &[("query", &format!("hostile_canary{{job=\"{mb}\"}}"))],
        )
        .expect(Expect::Survives(Some("\"result\":[]"))),
        Case::get(
            "1 MB query in the URL",
            query(&format!("hostile_canary{{job=\"{mb}\"}}"), &[]),
        )
        .raw(),
        Case::get(
            "60 kB query in the URL",
            query(&format!("hostile_canary{{job=\"{kb60}\"}}"), &[]),
        )
        .expect(Expect::Survives(Some("\"result\":[]"))),
        Case::form(
            "10,000 matchers",
            "/api/prom/api/v1/query",
            &[("query", &many_matchers)],
        )
        .expect(Expect::Survives(Some("\"result\":[]"))),
        Case::get("topk(1e300)", query("topk(1e300, hostile_canary)", &[])).expect(Expect::Survives(None)),
        Case::get("quantile(NaN)", query("quantile(NaN, hostile_canary)", &[])).expect(Expect::Survives(None)),
        Case::post(
            "query as JSON body",
            "/api/prom/api/v1/query",
            "application/json",
            br#"{"query":"vector(1)"}"#.to_vec(),
        ),
        // --- query_range: steps and ranges.
        Case::get("step=0", query_range("vector(1)", &hour_ago, &now, "0")),
        Case::get("step=-1", query_range("vector(1)", &hour_ago, &now, "-1")),
        Case::get("step=1e300", query_range("vector(1)", &hour_ago, &now, "1e300")),
        Case::get(
            "step=overflowing integer",
            query_range("vector(1)", &hour_ago, &now, "99999999999999999999"),
        ),
        Case::get("step=NaN", query_range("vector(1)", &hour_ago, &now, "NaN")),
        Case::get("step=1ms over 1h", query_range("vector(1)", &hour_ago, &now, "0.001")),
        Case::get("start=-9e15 end=9e15", query_range("vector(1)", "-9e15", "9e15", "60")),
        Case::get(
            "start=-9e15 end=9e15 huge step",
            query_range("hostile_canary", "-9e15", "9e15", "1e15"),
        ),
        Case::get("start=NaN", query_range("vector(1)", "NaN", &now, "60")),
        Case::get("end=+Inf", query_range("vector(1)", &hour_ago, "+Inf", "60")),
        Case::get("end before start", query_range("vector(1)", &now, &hour_ago, "60")),
        Case::get("1e6 steps", query_range("vector(1)", "0", "1000000", "1")),
        Case::get(
            "100y:1ms subquery per step",
            query_range("count_over_time(vector(1)[100y:1ms])", &hour_ago, &now, "60"),
        ),
        Case::get(
            "range query, 10^6-step subquery",
            query_range("sum_over_time(vector(1)[1000000s:1s])", &hour_ago, &now, "600"),
        ),
        Case::form(
            "range query timeout=1e300",
            "/api/prom/api/v1/query_range",
            &[
                ("query", "vector(1)"),
                ("start", &hour_ago),
                ("end", &now),
                ("step", "60"),
                ("timeout", "1e300"),
            ],
        ),
        // --- series / labels / label values / metadata.
        Case::get("series without match[]", "/api/prom/api/v1/series"),
        Case::get("series match[]={}", "/api/prom/api/v1/series?match[]=%7B%7D"),
        Case::get(
            "series match[]=not a selector",
            format!("/api/prom/api/v1/series?{}", encode_form(&[("match[]", "sum(up)")])),
        ),
        Case::get(
            "series start=NaN",
            format!(
                "/api/prom/api/v1/series?{}",
                encode_form(&[("match[]", "hostile_canary"), ("start", "NaN")])
            ),
        ),
        Case::get(
            "series start=1e300",
            format!(
                "/api/prom/api/v1/series?{}",
                encode_form(&[("match[]", "hostile_canary"), ("start", "1e300")])
            ),
        ),
        Case::get(
            "series end before start",
            format!(
                "/api/prom/api/v1/series?{}",
                encode_form(&[("match[]", "hostile_canary"), ("start", "9e15"), ("end", "-9e15")])
            ),
        ),
        Case::form(
            "series 1 MB label value",
            "/api/prom/api/v1/series",
            &[("match[]", &format!("hostile_canary{{job=\"{mb}\"}}"))],
        )
        .expect(Expect::Survives(Some("\"data\":[]"))),
        Case::form(
            "series regex of exploding size",
            "/api/prom/api/v1/series",
            &[("match[]", "{job=~\"((a{1000}){1000}){1000}\"}")],
        ),
        Case::get(
            "labels match[]=garbage",
            format!("/api/prom/api/v1/labels?{}", encode_form(&[("match[]", "{{{")])),
        ),
        Case::get("labels start=garbage", "/api/prom/api/v1/labels?start=abc"),
        Case::get("labels end=-Inf", "/api/prom/api/v1/labels?end=-Inf"),
        Case::get(
            "label values of an invalid name",
            "/api/prom/api/v1/label/bad-name/values",
        ),
        Case::get(
            "label values of a 1 MB name",
            format!("/api/prom/api/v1/label/{}/values", "a".repeat(1 << 20)),
        )
        .raw(),
        Case::get(
            "label values of a 60 kB name",
            format!("/api/prom/api/v1/label/{kb60}/values"),
        )
        .expect(Expect::Survives(Some("\"data\":[]"))),
        Case::get("label values start=NaN", "/api/prom/api/v1/label/job/values?start=NaN"),
        Case::get("metadata limit=garbage", "/api/prom/api/v1/metadata?limit=abc"),
        Case::get(
            "metadata limit=overflowing integer",
            "/api/prom/api/v1/metadata?limit=99999999999999999999",
        ),
        // --- remote read.
        Case::remote_read("remote read empty body", vec![]),
        Case::remote_read("remote read not snappy", b"not snappy at all".to_vec()),
        Case::remote_read("remote read truncated snappy", {
            let b = read_request(vec![pb::QueryRequest {
                start_timestamp_ms: 0,
                end_timestamp_ms: 1,
                matchers: vec![matcher(0, "__name__", "hostile_canary")],
            }]);
            b[..b.len() / 2].to_vec()
        }),
        Case::remote_read("remote read claims 4 GB", snappy_claiming(0xffff_ffff, &[0; 32])),
        Case::remote_read(
            "remote read protobuf with lying length",
            snappy(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x07, 0x08, 0x01]),
        ),
        Case::remote_read(
            "remote read bad matcher type",
            read_request(vec![pb::QueryRequest {
                start_timestamp_ms: 0,
                end_timestamp_ms: 1,
                matchers: vec![matcher(99, "__name__", "x")],
            }]),
        ),
        Case::remote_read(
            "remote read invalid regex",
            read_request(vec![pb::QueryRequest {
                start_timestamp_ms: 0,
                end_timestamp_ms: 1,
                matchers: vec![matcher(2, "job", "(")],
            }]),
        ),
        Case::remote_read(
            "remote read regex of exploding size",
            read_request(vec![pb::QueryRequest {
                start_timestamp_ms: 0,
                end_timestamp_ms: 1,
                matchers: vec![matcher(2, "job", "((a{1000}){1000}){1000}")],
            }]),
        ),
        Case::remote_read(
            "remote read 10,000 queries",
            read_request(
                (0..10_000)
                    .map(|_| pb::QueryRequest {
                        start_timestamp_ms: 0,
                        end_timestamp_ms: 1,
                        matchers: vec![matcher(0, "__name__", "hostile_nothing")],
                    })
                    .collect(),
            ),
        )
        .expect(Expect::Survives(None)),
        Case::post(
            "remote read as JSON",
            "/api/prom/api/v1/read",
            "application/json",
            br#"{"queries":[]}"#.to_vec(),
        ),
        // --- push.
        Case::push("push empty body", vec![]),
        Case::push("push not snappy", b"definitely not snappy".to_vec()),
        Case::push("push truncated snappy", good_snappy[..good_snappy.len() / 2].to_vec()),
        Case::push("push snappy claims 4 GB", snappy_claiming(0xffff_ffff, &[0; 64])),
        Case::push(
            "push framed snappy instead of block",
            [&b"\xff\x06\x00\x00sNaPpY"[..], &good].concat(),
        ),
        Case::push(
            "push protobuf with lying length",
            snappy(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x07, 0x0a, 0x02]),
        ),
        Case::push("push nested lying length", {
            let mut raw = write_request(vec![series(vec![pair("__name__", "m")], 1, 1.0)]);
            // The label pair (field 1 of TimeSeries, third byte) claims 127 bytes.
            raw[3] = 0x7f;
            snappy(&raw)
        }),
        Case::push(
            "push 1 MB label value",
            snappy(&write_request(vec![series(
                vec![pair("__name__", "m"), pair("job", &mb)],
                model::now_ms(),
                1.0,
            )])),
        ),
        Case::push(
            "push 1 MB label name",
            snappy(&write_request(vec![series(
                vec![pair("__name__", "m"), pair(&"a".repeat(1 << 20), "v")],
                model::now_ms(),
                1.0,
            )])),
        ),
        Case::push("push 10,000 label names", {
            let mut labels = vec![pair("__name__", "m")];
            labels.extend((0..10_000).map(|i| pair(&format!("l{i:05}"), "v")));
            snappy(&write_request(vec![series(labels, model::now_ms(), 1.0)]))
        }),
        Case::push(
            "push duplicate label names",
            snappy(&write_request(vec![series(
                vec![pair("__name__", "m"), pair("a", "1"), pair("a", "2")],
                model::now_ms(),
                1.0,
            )])),
        ),
        Case::push(
            "push no metric name",
            snappy(&write_request(vec![series(
                vec![pair("job", "x")],
                model::now_ms(),
                1.0,
            )])),
        ),
        Case::push(
            "push timestamp i64::MAX",
            snappy(&write_request(vec![series(
                vec![pair("__name__", "hostile_future")],
                i64::MAX,
                1.0,
            )])),
        ),
        Case::push(
            "push 1 MB metadata help",
            snappy(
                &pb::WriteRequest {
                    metadata: vec![pb::MetricMetadata {
                        r#type: 1,
                        metric_family_name: "m".into(),
                        help: mb.clone(),
                        unit: String::new(),
                    }],
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
        ),
        Case::post(
            "push as JSON",
            "/api/prom/push",
            "application/json",
            br#"{"timeseries":[]}"#.to_vec(),
        ),
        Case::push("push without tenant", good_snappy.clone()).tenant(None),
        Case::push("push tenant ../..", good_snappy.clone()).tenant(Some("../..")),
        Case::push("push tenant a/b", good_snappy.clone()).tenant(Some("a/b")),
        Case::push("push tenant of 10 kB", good_snappy.clone()).tenant(Some(&"t".repeat(10_000))),
        Case::push("push tenant with |", good_snappy.clone()).tenant(Some("a|b")),
        Case::get("query tenant .", query("vector(1)", &[])).tenant(Some(".")),
        Case::get("query tenant with spaces", query("vector(1)", &[])).tenant(Some("a b")),
        Case::get("query without tenant", query("vector(1)", &[])).tenant(None),
        Case::new("GET on push", "GET", "/api/prom/push"),
        // --- rules and ring.
        Case::get("rules list", "/api/prom/rules"),
        Case::post(
            "rules: garbage YAML",
            "/api/prom/rules/ns",
            "application/yaml",
            b"groups: [[[".to_vec(),
        ),
        Case::new(
            "rules: delete a 1 MB namespace",
            "DELETE",
            format!("/api/prom/rules/{mb}"),
        )
        .raw(),
        Case::get("prometheus rules API", "/prometheus/api/v1/rules?type=garbage"),
        Case::post(
            "ring forget without id",
            "/ring",
            "application/x-www-form-urlencoded",
            vec![],
        ),
        Case::post(
            "ring forget as JSON",
            "/ring",
            "application/json",
            br#"{"forget":"x"}"#.to_vec(),
        ),
        Case::post(
            "ring forget of a 1 MB id",
            "/ring",
            "application/x-www-form-urlencoded",
            format!("forget={mb}").into_bytes(),
        )
        .expect(Expect::Survives(None)),
        Case::get("ring with 1 MB query string", format!("/ring?tokens={mb}")).raw(),
        Case::get("1 MB header", "/api/prom/api/v1/query?query=1")
            .tenant(Some(&"t".repeat(1 << 20)))
            .raw(),
    ];
    // Random (valid) tenant IDs, each with a bad body: refused, and no state kept.
    for (i, t) in random_tenants(200).into_iter().enumerate() {
        c.push(Case::push(format!("random tenant #{i:03}"), b"junk".to_vec()).tenant(Some(&t)));
    }
    c
}

struct Outcome {
    name: String,
    status: Option<u16>,
    ms: u128,
    failure: Option<String>,
}

/// One HTTP/1.1 request written by hand on a fresh connection; returns the
/// status and whatever body arrived before the server closed.
async fn raw_http(base: &str, c: &Case) -> Result<(u16, Vec<u8>), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n",
        c.method, c.path
    );
    for (k, v) in &c.headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    let _ = write!(head, "Content-Length: {}\r\n\r\n", c.body.len());
    // The server may answer and close before reading everything: a failed
    // write is fine as long as a status line comes back.
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(&c.body).await;
    let mut resp = Vec::new();
    let _ = conn.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line (got {} bytes)", resp.len()))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.as_bytes().to_vec())
        .unwrap_or_default();
    Ok((status, body))
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn run_case(client: &HttpClient, base: &str, c: &Case) -> Outcome {
    let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let url = format!("{base}{}", c.path);
    let started = Instant::now();
    let limit = QUERY_TIMEOUT + Duration::from_secs(5);
    let send = async {
        if c.raw {
            raw_http(base, c).await
        } else {
            http(client, c.method, &url, &headers, c.body.clone())
                .await
                .map(|(s, _, b)| (s, b.to_vec()))
        }
    };
    let r = tokio::time::timeout(limit, send).await;
    let ms = started.elapsed().as_millis();
    let mut out = Outcome {
        name: c.name.clone(),
        status: None,
        ms,
        failure: None,
    };
    let (status, body) = match r {
        Err(_) => {
            out.failure = Some(format!("no answer within {limit:?}"));
            return out;
        }
        Ok(Err(e)) => {
            let e: String = e.replace(&url, "").chars().take(200).collect();
            out.failure = Some(format!("no response: {e}"));
            return out;
        }
        Ok(Ok((s, b))) => (s, String::from_utf8_lossy(&b).into_owned()),
    };
    out.status = Some(status);
    let short: String = body.chars().take(200).collect();
    let timed_out = status == 503 && body.contains("timed out");
    out.failure = match c.expect {
        Expect::Refused if (400..500).contains(&status) || timed_out => None,
        Expect::Refused => Some(format!("wanted a 4xx (or 503 timeout), got {status}: {short}")),
        Expect::Survives(_) if status >= 500 && !timed_out => Some(format!("{status}: {short}")),
        Expect::Survives(Some(want)) if status == 200 && !body.contains(want) => {
            Some(format!("200 without the correct answer {want}: {short}"))
        }
        Expect::Survives(_) => None,
    };
    out
}

/// The process under test; restarted after a crash so that one run lists
/// every failing case (each crash is still a failure of its case).
struct Cortex {
    dir: std::path::PathBuf,
    args: Vec<String>,
    proc: Proc,
    base: String,
    restarts: usize,
}

impl Cortex {
    async fn start(dir: &std::path::Path, client: &HttpClient) -> Cortex {
        let (http_port, grpc_port) = (free_port(), free_port());
        let args = vec![
            format!("-server.http-listen-port={http_port}"),
            format!("-server.grpc-listen-port={grpc_port}"),
            "-auth.enabled=true".to_string(),
            format!("-querier.timeout={}s", QUERY_TIMEOUT.as_secs()),
            // A budget a 10^6-step subquery exceeds (the default, 50M, would admit it, as Prometheus does).
            format!("-querier.max-samples={MAX_SAMPLES}"),
            format!("-ingester.wal-dir={}", dir.join("wal").display()),
        ];
        let proc = Proc::start("cortex", &our_binary("cortex"), &args, dir);
        let c = Cortex {
            dir: dir.to_path_buf(),
            args,
            proc,
            base: format!("http://127.0.0.1:{http_port}"),
            restarts: 0,
        };
        c.wait_ready(client).await;
        c
    }

    async fn wait_ready(&self, client: &HttpClient) {
        wait_ready(client, &format!("{}/ready", self.base), Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.proc.log_tail()));
    }

    /// The exit status, if the process is gone.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.child.as_mut().and_then(|ch| ch.try_wait().ok().flatten())
    }

    async fn restart(&mut self, client: &HttpClient) {
        let log = std::fs::read_to_string(&self.proc.log).unwrap_or_default();
        self.restarts += 1;
        std::fs::write(self.dir.join(format!("cortex-crash-{}.log", self.restarts)), log).unwrap();
        self.proc = Proc::start("cortex", &our_binary("cortex"), &self.args, &self.dir);
        self.wait_ready(client).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_4xx_and_leave_the_process_serving() {
    let dir = tempfile::tempdir().unwrap();
    let client = http_client();
    let mut cortex = Cortex::start(dir.path(), &client).await;
    let base = cortex.base.clone();

    // A canary series to check correct answers after the barrage.
    let now = model::now_ms();
    let canary = snappy(&write_request(vec![series(
        vec![pair("__name__", "hostile_canary"), pair("job", "canary")],
        now,
        42.0,
    )]));
    let (s, m) = push(&client, &base, TENANT, canary).await;
    assert_eq!(s, 200, "canary push: {m}");

    let cases = cases();
    assert!(cases.len() >= 60);
    let mut outcomes = Vec::new();
    let mut peak_kib = 0;
    for c in &cases {
        let mut o = run_case(&client, &base, c).await;
        if let Some(kib) = vm_hwm_kib(cortex.proc.pid()) {
            peak_kib = peak_kib.max(kib);
            if kib > RSS_LIMIT_KIB && o.failure.is_none() {
                o.failure = Some(format!("VmHWM {kib} KiB over the {RSS_LIMIT_KIB} KiB bound"));
            }
        }
        // A crash shows as a broken connection; give the exit a moment to register.
        if o.status.is_none() {
            for _ in 0..30 {
                if cortex.exited().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if let Some(st) = cortex.exited() {
            let log = std::fs::read_to_string(&cortex.proc.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let why = lines
                .iter()
                .position(|l| l.contains("panicked at") || l.contains("memory allocation") || l.contains("overflow"))
                .map(|i| lines[i..(i + 2).min(lines.len())].join(" "))
                .unwrap_or_default();
            o.failure = Some(format!("the process exited ({st}) {why}"));
            cortex.restart(&client).await;
        }
        outcomes.push(o);
    }

    let mut table = String::new();
    let _ = writeln!(table, "{:<48} {:>6} {:>7}  result", "request", "status", "ms");
    let mut failures = Vec::new();
    for o in &outcomes {
        let status = o.status.map_or("-".to_string(), |s| s.to_string());
        let result = o.failure.as_deref().unwrap_or("ok");
        // The random tenants are one row per outcome kind, not 200 rows.
        if !o.name.starts_with("random tenant #") || o.failure.is_some() || o.name.ends_with("#000") {
            let _ = writeln!(table, "{:<48} {:>6} {:>7}  {}", o.name, status, o.ms, result);
        }
        if let Some(f) = &o.failure {
            failures.push(format!("{}: {f}", o.name));
        }
    }
    let random: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.name.starts_with("random tenant #"))
        .collect();
    let _ = writeln!(
        table,
        "{:<48} {:>6} {:>7}  {} of {} refused",
        "random tenants (all)",
        "4xx",
        random.iter().map(|o| o.ms).max().unwrap_or(0),
        random.iter().filter(|o| o.failure.is_none()).count(),
        random.len()
    );
    let _ = writeln!(
        table,
        "peak RSS (VmHWM): {} MiB (bound {} MiB)",
        peak_kib / 1024,
        RSS_LIMIT_KIB / 1024
    );
    println!("{table}");

    // Still serving, and correctly.

    let _ = writeln!(table, "process restarts after a crash: {}", cortex.restarts);
    let (s, _, b) = http(
        &client,
        "GET",
        &format!("{base}{}", query("hostile_canary", &[])),
        &[("X-Scope-OrgID", TENANT)],
        vec![],
    )
    .await
    .unwrap();
    let body = String::from_utf8_lossy(&b);
    if s != 200 || !body.contains("\"42\"") || !body.contains("\"job\":\"canary\"") {
        failures.push(format!("normal query afterwards: {s} {body}"));
    }
    let (s, _, b) = http(&client, "GET", &format!("{base}/metrics"), &[], vec![])
        .await
        .unwrap();
    assert_eq!(s, 200);
    let metrics = String::from_utf8_lossy(&b);
    for line in metrics.lines().filter(|l| l.starts_with("cortex_panics_total")) {
        let v: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
        if v != 0.0 {
            failures.push(format!("panics were caught: {line}"));
        }
    }
    let users = metrics
        .lines()
        .find(|l| l.starts_with("cortex_ingester_memory_users"))
        .unwrap_or("cortex_ingester_memory_users (absent)");
    println!("after {} random tenants with refused pushes: {users}", random.len());
    assert!(
        failures.is_empty(),
        "{} of {} hostile requests failed:\n{}",
        failures.len(),
        outcomes.len(),
        failures.join("\n")
    );
    assert_eq!(
        cortex.proc.terminate(Duration::from_secs(20)),
        Some(0),
        "{}",
        cortex.proc.log_tail()
    );
}
