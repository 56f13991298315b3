//! The Prometheus HTTP API (v1) and remote read, under `/api/prom` and `/prometheus`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use model::Matcher;
use proto::cortex as pb;
use server::{HttpError, Tenant};

use crate::evaluation::{evaluate, Evaluation};
use crate::json;
use crate::params::{parse_duration_ms, parse_time};
use crate::Querier;

/// Prometheus refuses range queries with more points than this per series.
pub const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// A Prometheus API error: `errorType` and HTTP status go together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub error_type: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_data(m: impl Into<String>) -> Self {
        ApiError {
            error_type: "bad_data",
            message: m.into(),
        }
    }
    pub fn execution(m: impl Into<String>) -> Self {
        ApiError {
            error_type: "execution",
            message: m.into(),
        }
    }
    pub fn internal(m: impl Into<String>) -> Self {
        ApiError {
            error_type: "internal",
            message: m.into(),
        }
    }
    pub fn timeout(m: impl Into<String>) -> Self {
        ApiError {
            error_type: "timeout",
            message: m.into(),
        }
    }
    pub fn canceled(m: impl Into<String>) -> Self {
        ApiError {
            error_type: "canceled",
            message: m.into(),
        }
    }
    pub fn status(&self) -> StatusCode {
        match self.error_type {
            "bad_data" => StatusCode::BAD_REQUEST,
            "execution" => StatusCode::UNPROCESSABLE_ENTITY,
            "timeout" | "canceled" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "not_found" => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Errors from storage: a 4xx (a limit, a bad matcher) is the user's → `execution`;
/// anything else is ours → `internal`.
impl From<HttpError> for ApiError {
    fn from(e: HttpError) -> Self {
        if e.is_client_error() {
            ApiError::execution(e.message)
        } else {
            ApiError::internal(e.message)
        }
    }
}

impl From<promql::PromqlError> for ApiError {
    fn from(e: promql::PromqlError) -> Self {
        use promql::PromqlError as P;
        match e {
            P::Parse(m) => ApiError::bad_data(m),
            P::Timeout => ApiError::timeout("query timed out in query execution"),
            P::Canceled => ApiError::canceled("query was canceled in query execution"),
            P::Storage(s) if (400..500).contains(&s.code) => ApiError::execution(s.message),
            P::Storage(s) => ApiError::internal(s.message),
            other => ApiError::execution(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = String::from("{\"status\":\"error\",\"errorType\":\"");
        body.push_str(self.error_type);
        body.push_str("\",\"error\":");
        json::write_str(&mut body, &self.message);
        body.push('}');
        (self.status(), [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

fn ok_json(data: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json::success(&data)).into_response()
}

/// Query-string and (for form-encoded POSTs) body parameters, in order.
struct Params(Vec<(String, String)>);

/// Extracted from any request: handlers take `p: Params` as their last argument.
impl<S: Send + Sync> axum::extract::FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let method = req.method().clone();
        let headers = req.headers().clone();
        let query = req.uri().query().map(str::to_string);
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_data(format!("reading request body: {e}")))?;
        Ok(Params::parse(&method, &headers, query, &body))
    }
}

impl Params {
    fn parse(method: &Method, headers: &HeaderMap, query: Option<String>, body: &[u8]) -> Params {
        let mut v: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if *method == Method::POST && is_form {
            v.extend(form_urlencoded::parse(body).into_owned());
        }
        Params(v)
    }
    fn get(&self, k: &str) -> Option<&str> {
        // Form values take precedence over the URL, as in Go's Request.FormValue.
        self.0.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
    fn all(&self, k: &str) -> Vec<&str> {
        self.0.iter().filter(|(n, _)| n == k).map(|(_, v)| v.as_str()).collect()
    }
}

pub fn routes(q: Arc<Querier>) -> Router {
    let mut r = Router::new();
    for prefix in ["/api/prom", "/prometheus"] {
        r = r
            .route(&format!("{prefix}/api/v1/query"), get(query).post(query))
            .route(
                &format!("{prefix}/api/v1/query_range"),
                get(query_range).post(query_range),
            )
            .route(&format!("{prefix}/api/v1/series"), get(series).post(series))
            .route(&format!("{prefix}/api/v1/labels"), get(labels).post(labels))
            .route(&format!("{prefix}/api/v1/label/{{name}}/values"), get(label_values))
            .route(&format!("{prefix}/api/v1/metadata"), get(metadata))
            .route(&format!("{prefix}/api/v1/status/buildinfo"), get(buildinfo))
            .route(&format!("{prefix}/api/v1/read"), post(crate::remote_read::handler))
            .route(&format!("{prefix}/api/v1/user_stats"), get(user_stats));
    }
    r.route("/api/prom/read", post(crate::remote_read::handler))
        .route("/api/prom/user_stats", get(user_stats))
        .with_state(q)
}

fn timeout_param(q: &Querier, p: &Params) -> Result<Duration, ApiError> {
    let max = q.cfg.timeout.0;
    match p.get("timeout") {
        Some(t) => Ok(Duration::from_millis(parse_duration_ms(t, "timeout")?.max(0) as u64).min(max)),
        None => Ok(max),
    }
}

async fn query(State(q): State<Arc<Querier>>, Tenant(tenant): Tenant, p: Params) -> Result<Response, ApiError> {
    let t = match p.get("time") {
        Some(s) if !s.is_empty() => parse_time(s, "time")?,
        _ => model::now_ms(),
    };
    let expr = p.get("query").unwrap_or("");
    let timeout = timeout_param(&q, &p)?;
    let v = evaluate(&q, &tenant, expr, timeout, Evaluation::Instant { t }).await?;
    let mut data = String::new();
    json::write_query_data(&mut data, &v);
    Ok(ok_json(data))
}

async fn query_range(State(q): State<Arc<Querier>>, Tenant(tenant): Tenant, p: Params) -> Result<Response, ApiError> {
    let start = parse_time(p.get("start").unwrap_or(""), "start")?;
    let end = parse_time(p.get("end").unwrap_or(""), "end")?;
    if end < start {
        return Err(ApiError::bad_data("end timestamp must not be before start time"));
    }
    let step = parse_duration_ms(p.get("step").unwrap_or(""), "step")?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    // Wide arithmetic: `end - start` of two valid times can pass i64::MAX.
    if (end as i128 - start as i128) / step as i128 > MAX_POINTS_PER_SERIES as i128 {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let expr = p.get("query").unwrap_or("");
    let timeout = timeout_param(&q, &p)?;
    let v = evaluate(&q, &tenant, expr, timeout, Evaluation::Range { start, end, step }).await?;
    let mut data = String::new();
    json::write_query_data(&mut data, &v);
    Ok(ok_json(data))
}

/// Parses a series selector (`up{job="x"}`) into matcher sets (one per `or` branch).
pub fn parse_selector(s: &str) -> Result<Vec<Vec<Matcher>>, ApiError> {
    use promql_parser::label::MatchOp;
    use promql_parser::parser::Expr;
    let bad = |m: String| ApiError::bad_data(format!("invalid parameter \"match[]\": {m}"));
    // A selector has no operators or nesting; anything deep is refused before the
    // parser (which recurses per level, here on an async worker's stack) sees it.
    const MAX_SELECTOR_NESTING: usize = 64;
    if promql::nesting_bound(s) > MAX_SELECTOR_NESTING {
        return Err(bad("not a series selector: nested too deeply".into()));
    }
    let expr = promql_parser::parser::parse(s).map_err(bad)?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(bad(format!("{s:?} is not a series selector")));
    };
    let convert = |ms: &[promql_parser::label::Matcher]| -> Result<Vec<Matcher>, ApiError> {
        let mut out = Vec::with_capacity(ms.len() + 1);
        for m in ms {
            let kind = match m.op {
                MatchOp::Equal => model::MatchType::Equal,
                MatchOp::NotEqual => model::MatchType::NotEqual,
                MatchOp::Re(_) => model::MatchType::RegexMatch,
                MatchOp::NotRe(_) => model::MatchType::RegexNoMatch,
            };
            out.push(Matcher::new(kind, m.name.clone(), m.value.clone()).map_err(|e| bad(e.to_string()))?);
        }
        if let Some(name) = &vs.name {
            if !out.iter().any(|m| m.name == model::METRIC_NAME) {
                out.push(Matcher::equal(model::METRIC_NAME, name.clone()));
            }
        }
        Ok(out)
    };
    if vs.matchers.or_matchers.is_empty() {
        Ok(vec![convert(&vs.matchers.matchers)?])
    } else {
        vs.matchers.or_matchers.iter().map(|ms| convert(ms)).collect()
    }
}

async fn series(State(q): State<Arc<Querier>>, Tenant(tenant): Tenant, p: Params) -> Result<Response, ApiError> {
    let selectors = p.all("match[]");
    if selectors.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    check_time_range(&p)?;
    let mut sets = Vec::new();
    for s in selectors {
        sets.extend(parse_selector(s)?);
    }
    let found = q.require_ingesters()?.series(&tenant, &sets).await?;
    let mut data = String::from("[");
    for (i, l) in found.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        json::write_labels(&mut data, l);
    }
    data.push(']');
    Ok(ok_json(data))
}

fn string_array(items: &[String]) -> String {
    let mut data = String::from("[");
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        json::write_str(&mut data, s);
    }
    data.push(']');
    data
}

/// `start`/`end`/`match[]` of the label APIs are checked like Prometheus checks them, so a bad
/// value is a 400 rather than silently ignored (ingesters answer for everything they hold).
fn check_label_params(p: &Params) -> Result<(), ApiError> {
    check_time_range(p)?;
    for s in p.all("match[]") {
        parse_selector(s)?;
    }
    Ok(())
}

/// Optional `start`/`end` (absent = unbounded), each parseable and in order.
fn check_time_range(p: &Params) -> Result<(), ApiError> {
    let start = p
        .get("start")
        .filter(|s| !s.is_empty())
        .map(|s| parse_time(s, "start"))
        .transpose()?;
    let end = p
        .get("end")
        .filter(|s| !s.is_empty())
        .map(|s| parse_time(s, "end"))
        .transpose()?;
    if let (Some(start), Some(end)) = (start, end) {
        if end < start {
            return Err(ApiError::bad_data("end timestamp must not be before start time"));
        }
    }
    Ok(())
}

async fn labels(State(q): State<Arc<Querier>>, Tenant(tenant): Tenant, p: Params) -> Result<Response, ApiError> {
    check_label_params(&p)?;
    Ok(ok_json(string_array(
        &q.require_ingesters()?.label_names(&tenant).await?,
    )))
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

async fn label_values(
    State(q): State<Arc<Querier>>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    p: Params,
) -> Result<Response, ApiError> {
    if !valid_label_name(&name) {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    check_label_params(&p)?;
    Ok(ok_json(string_array(
        &q.require_ingesters()?.label_values(&tenant, &name).await?,
    )))
}

async fn metadata(State(q): State<Arc<Querier>>, Tenant(tenant): Tenant, p: Params) -> Result<Response, ApiError> {
    let limit: i64 = match p.get("limit") {
        Some(s) if !s.is_empty() => s.parse().map_err(|_| ApiError::bad_data("limit must be a number"))?,
        _ => -1,
    };
    let only = p.get("metric").filter(|s| !s.is_empty());
    let all = q.require_ingesters()?.metadata(&tenant).await?;
    let mut by_metric: std::collections::BTreeMap<String, Vec<&pb::MetricMetadata>> = Default::default();
    for m in &all {
        if only.is_some_and(|o| o != m.metric_family_name) {
            continue;
        }
        by_metric.entry(m.metric_family_name.clone()).or_default().push(m);
    }
    let mut data = String::from("{");
    for (i, (name, ms)) in by_metric.iter().enumerate() {
        if limit >= 0 && i as i64 >= limit {
            break;
        }
        if i > 0 {
            data.push(',');
        }
        json::write_str(&mut data, name);
        data.push_str(":[");
        for (j, m) in ms.iter().enumerate() {
            if j > 0 {
                data.push(',');
            }
            let ty = pb::metric_metadata::MetricType::try_from(m.r#type)
                .map(|t| t.as_str_name().to_ascii_lowercase())
                .unwrap_or_else(|_| "unknown".into());
            data.push_str("{\"type\":");
            json::write_str(&mut data, &ty);
            data.push_str(",\"help\":");
            json::write_str(&mut data, &m.help);
            data.push_str(",\"unit\":");
            json::write_str(&mut data, &m.unit);
            data.push('}');
        }
        data.push(']');
    }
    data.push('}');
    Ok(ok_json(data))
}

async fn buildinfo() -> Response {
    let data = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": option_env!("GIT_REVISION").unwrap_or("unknown"),
        "branch": option_env!("GIT_BRANCH").unwrap_or("unknown"),
        "buildUser": "",
        "buildDate": "",
        "goVersion": "rust",
    });
    ok_json(data.to_string())
}

async fn user_stats(State(q): State<Arc<Querier>>, Tenant(tenant): Tenant) -> Result<Response, ApiError> {
    let s = q.require_ingesters()?.user_stats(&tenant).await?;
    let body = serde_json::json!({
        "ingestionRate": s.ingestion_rate,
        "numSeries": s.num_series,
        "APIIngestionRate": s.api_ingestion_rate,
        "RuleIngestionRate": s.rule_ingestion_rate,
    });
    Ok(([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let sets = parse_selector(r#"up{job=~"a.*",env!="dev"}"#).unwrap();
        assert_eq!(sets.len(), 1);
        let names: Vec<_> = sets[0].iter().map(|m| m.to_string()).collect();
        assert!(names.contains(&"__name__=\"up\"".to_string()), "{names:?}");
        assert!(names.contains(&"job=~\"a.*\"".to_string()));
        assert!(parse_selector("sum(up)").is_err());
        assert!(parse_selector("up{").is_err());
    }

    #[test]
    fn error_types_map_to_status() {
        assert_eq!(ApiError::bad_data("x").status(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::execution("x").status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(ApiError::timeout("x").status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ApiError::from(HttpError::new(400, "limit")).error_type, "execution");
        assert_eq!(ApiError::from(HttpError::new(500, "down")).error_type, "internal");
    }
}

/// The query endpoints' limits and errors, through the real router.
#[cfg(test)]
mod http_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use model::{Labels, Sample, Series};
    use promql::promqltest::MemStorage;
    use tower::ServiceExt;

    use super::*;
    use crate::Config;

    /// One series `m{job="a"}` with a sample every 15s over the first hour.
    fn hour_of_data() -> MemStorage {
        let mut st = MemStorage::new();
        st.append(
            Labels::from_pairs([("__name__", "m"), ("job", "a")]),
            (0..240).map(|i| Sample {
                t: i * 15_000,
                v: i as f64,
            }),
        );
        st
    }

    fn querier(cfg: Config, data: impl promql::Queryable + 'static) -> Router {
        Querier::with_queryable(cfg, Arc::new(data)).http_routes()
    }

    async fn get(router: &Router, path_and_query: &str) -> (StatusCode, serde_json::Value) {
        let req = Request::get(path_and_query)
            .header("X-Scope-OrgID", "t1")
            .body(Body::empty())
            .unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    fn range_path(expr: &str, start: i64, end: i64, step: &str) -> String {
        let q: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        format!("/api/prom/api/v1/query_range?query={q}&start={start}&end={end}&step={step}")
    }

    #[tokio::test]
    async fn too_many_samples_is_422_execution() {
        let cfg = Config {
            max_samples: 100,
            ..Config::default()
        };
        let r = querier(cfg, hour_of_data());
        // 240 raw samples for a 1h window: over the limit although the result is tiny.
        let (status, body) = get(&r, &range_path("count_over_time(m[1h])", 3600, 3600, "60")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["errorType"], "execution");
        assert_eq!(
            body["error"],
            "query processing would load too many samples into memory in query execution"
        );
        // Under the limit the same data answers.
        let (status, body) = get(&r, &range_path("count_over_time(m[10m])", 3600, 3600, "60")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["result"][0]["values"][0][1], "40");
    }

    /// Storage that takes `delay` to answer.
    struct Slow {
        delay: Duration,
    }

    #[async_trait::async_trait]
    impl promql::Queryable for Slow {
        async fn select(&self, _: i64, _: i64, _: &[Matcher]) -> Result<Vec<Series>, promql::StorageError> {
            tokio::time::sleep(self.delay).await;
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn timeout_is_503_timeout() {
        let cfg = Config {
            timeout: model::GoDuration(Duration::from_millis(100)),
            ..Config::default()
        };
        let r = querier(
            cfg,
            Slow {
                delay: Duration::from_secs(30),
            },
        );
        let started = std::time::Instant::now();
        let (status, body) = get(&r, &range_path("m", 0, 60, "15")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["errorType"], "timeout");
        assert_eq!(body["error"], "query timed out in query execution");
        assert!(started.elapsed() < Duration::from_secs(5));
        // A request's own `timeout` shortens the configured one.
        let r = querier(
            Config::default(),
            Slow {
                delay: Duration::from_secs(30),
            },
        );
        let (status, _) = get(&r, "/api/prom/api/v1/query?query=m&time=60&timeout=50ms").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn more_than_11000_points_is_400() {
        let r = querier(Config::default(), hour_of_data());
        // (end - start) / step = 11,000 is the most allowed.
        let (status, body) = get(&r, &range_path("m", 0, 11_000, "1")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = get(&r, &range_path("m", 0, 11_001, "1")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["errorType"], "bad_data");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("exceeded maximum resolution of 11,000 points"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn parse_errors_are_400_bad_data_with_position() {
        let r = querier(Config::default(), hour_of_data());
        for (expr, want) in [
            ("1 * * 2", "1:5: parse error: unexpected <op:*>"),
            ("sum(rate(m[5m])", "1:16: parse error: unclosed left parenthesis"),
            (
                "rate(m)",
                "1:6: parse error: expected type range vector in call to function \"rate\", got instant vector",
            ),
        ] {
            let (status, body) = get(&r, &range_path(expr, 0, 60, "15")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{expr}: {body}");
            assert_eq!(body["errorType"], "bad_data");
            assert_eq!(body["error"], want);
            let q: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
            let (status, body) = get(&r, &format!("/prometheus/api/v1/query?query={q}&time=60")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_eq!(body["error"], format!("invalid parameter \"query\": {want}"));
        }
    }

    /// Storage that holds every query until released, counting the queries inside it.
    struct Gate {
        inside: AtomicUsize,
        release: tokio::sync::Semaphore,
    }

    /// The querier owns its storage; the test keeps a handle to the same gate.
    struct SharedGate(Arc<Gate>);

    #[async_trait::async_trait]
    impl promql::Queryable for SharedGate {
        async fn select(&self, _: i64, _: i64, _: &[Matcher]) -> Result<Vec<Series>, promql::StorageError> {
            self.0.inside.fetch_add(1, Ordering::SeqCst);
            self.0.release.acquire().await.expect("gate open").forget();
            Ok(Vec::new())
        }
    }

    async fn wait_until(mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "condition not reached");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_beyond_max_concurrent_wait_for_a_slot() {
        let gate = Arc::new(Gate {
            inside: AtomicUsize::new(0),
            release: tokio::sync::Semaphore::new(0),
        });
        let cfg = Config {
            max_concurrent: 2,
            ..Config::default()
        };
        let r = querier(cfg, SharedGate(gate.clone()));
        let mut running = Vec::new();
        for _ in 0..3 {
            let r = r.clone();
            running.push(tokio::spawn(
                async move { get(&r, &range_path("m", 0, 60, "15")).await },
            ));
        }
        wait_until(|| gate.inside.load(Ordering::SeqCst) == 2).await;
        // The third query waits for a slot instead of reaching storage or failing.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(gate.inside.load(Ordering::SeqCst), 2);
        assert!(running.iter().all(|h| !h.is_finished()));
        // Finishing one query lets the waiting one in.
        gate.release.add_permits(1);
        wait_until(|| gate.inside.load(Ordering::SeqCst) == 3).await;
        gate.release.add_permits(2);
        for h in running {
            let (status, body) = h.await.unwrap();
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
}

/// Hostile parameters across the query API: every one gets its 4xx/503 with
/// Prometheus's error shape, none reaches the panic-catching layer, and a normal query
/// still answers afterwards.
#[cfg(test)]
mod hostile_tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use model::{Labels, Sample};
    use promql::promqltest::MemStorage;
    use tower::ServiceExt;

    use super::*;
    use crate::Config;

    fn enc(s: &str) -> String {
        form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }

    /// The querier's routes behind the server's router (auth, metrics, panic catching).
    fn app(metrics: &server::Metrics) -> Router {
        let mut st = MemStorage::new();
        st.append(
            Labels::from_pairs([("__name__", "m"), ("job", "a")]),
            (0..240).map(|i| Sample {
                t: i * 15_000,
                v: i as f64,
            }),
        );
        // Long enough for the 10,000-term chain in a debug build on a busy 2-core
        // machine; runaway cases must still end well inside the per-request bound below.
        let cfg = Config {
            timeout: model::GoDuration(Duration::from_secs(6)),
            max_samples: 1_000_000,
            ..Config::default()
        };
        server::http::router(
            Querier::with_queryable(cfg, Arc::new(st)).http_routes(),
            metrics,
            server::tenant::AuthConfig { enabled: true },
            String::new(),
            Arc::new(|| Ok(())),
        )
    }

    async fn send(app: &Router, req: Request<Body>) -> (StatusCode, serde_json::Value, Duration) {
        let started = std::time::Instant::now();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
        (status, json, started.elapsed())
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path)
            .header("X-Scope-OrgID", "t1")
            .body(Body::empty())
            .unwrap()
    }

    fn post_form(path: &str, form: &str) -> Request<Body> {
        Request::post(path)
            .header("X-Scope-OrgID", "t1")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_string()))
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hostile_parameters_get_prometheus_errors_and_never_panic() {
        const Q: &str = "/api/prom/api/v1/query";
        const R: &str = "/api/prom/api/v1/query_range";
        const S: &str = "/api/prom/api/v1/series";
        let deep_chain = vec!["1"; 30_000].join("+");
        let deep_parens = format!("{}1{}", "(".repeat(30_000), ")".repeat(30_000));
        let ten_k_chain = vec!["1"; 10_000].join("+");
        let long_label = "a".repeat(1 << 14);
        let cases: Vec<(Request<Body>, u16, &str, Option<&str>)> = vec![
            // query: times
            (get(&format!("{Q}?query=m&time=abc")), 400, "bad_data", Some("invalid parameter \"time\": cannot parse \"abc\" to a valid timestamp")),
            (get(&format!("{Q}?query=m&time=NaN")), 400, "bad_data", Some("invalid parameter \"time\": cannot parse \"NaN\" to a valid timestamp")),
            (get(&format!("{Q}?query=m&time=Inf")), 400, "bad_data", None),
            (get(&format!("{Q}?query=m&time=-Inf")), 400, "bad_data", None),
            (get(&format!("{Q}?query=m&time=1e300")), 400, "bad_data", None),
            (get(&format!("{Q}?query=m&time=9999-99-99T99:99:99Z")), 400, "bad_data", None),
            (get(&format!("{Q}?query=m&time=%2B292277026596-12-04T15:30:07Z")), 400, "bad_data", None),
            // query: timeouts
            (get(&format!("{Q}?query=m&time=60&timeout=abc")), 400, "bad_data", Some("invalid parameter \"timeout\": cannot parse \"abc\" to a valid duration")),
            (get(&format!("{Q}?query=m&time=60&timeout=1e300")), 400, "bad_data", Some("invalid parameter \"timeout\": cannot parse \"1e300\" to a valid duration. It overflows int64")),
            (get(&format!("{Q}?query=m&time=60&timeout=99999999999999999y")), 400, "bad_data", None),
            (get(&format!("{Q}?query=m&time=60&timeout=NaN")), 400, "bad_data", None),
            (get(&format!("{Q}?query=m&time=60&timeout=-5s")), 400, "bad_data", None),
            // query: expressions
            (get(&format!("{Q}?query=")), 400, "bad_data", None),
            (get(&format!("{Q}?time=60")), 400, "bad_data", None),
            (get(&format!("{Q}?query={}&time=60", enc("count_over_time(vector(1)[100y:1ms])"))), 422, "execution", Some("query processing would load too many samples into memory in subquery")),
            (get(&format!("{Q}?query={}&time=60", enc("count_over_time(vector(1)[10000000s:1ms])"))), 422, "execution", None),
            (get(&format!("{Q}?query={}&time=60", enc("m offset 100000000y"))), 400, "bad_data", Some("invalid parameter \"query\": 1:10: parse error: duration out of range")),
            (get(&format!("{Q}?query={}&time=60", enc("m @ 1e300"))), 200, "", None),
            (get(&format!("{Q}?query={}&time=60", enc("rate(m[99999999999999999y])"))), 400, "bad_data", None),
            (get(&format!("{Q}?query={}&time=60", enc("m[100000000000000000000000000ms]"))), 400, "bad_data", None),
            (post_form(Q, &format!("query={}&time=60", enc(&deep_chain))), 400, "bad_data", None),
            (post_form(Q, &format!("query={}&time=60", enc(&deep_parens))), 400, "bad_data", None),
            (post_form(Q, &format!("query={}&time=60", enc(&"(".repeat(1 << 20)))), 400, "bad_data", None),
            (get(&format!("{Q}?query={}&time=60", enc("m{job=~\"(a+)+$\"}"))), 200, "", None),
            (get(&format!("{Q}?query={}&time=60", enc("label_replace(m, \"x\", \"$1\", \"job\", \"(\")"))), 422, "execution", None),
            (get(&format!("{Q}?query={}&time=60", enc("topk(1e300, m)"))), 200, "", None),
            (get(&format!("{Q}?query={}&time=60", enc("quantile(NaN, m)"))), 200, "", None),
            // query_range: start/end/step
            (get(&format!("{R}?query=m&start=abc&end=60&step=15")), 400, "bad_data", Some("invalid parameter \"start\": cannot parse \"abc\" to a valid timestamp")),
            (get(&format!("{R}?query=m&start=0&end=NaN&step=15")), 400, "bad_data", None),
            (get(&format!("{R}?query=m&start=-9e15&end=9e15&step=15")), 400, "bad_data", Some("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)")),
            (get(&format!("{R}?query=m&start=-9e15&end=9e15&step=9e15")), 400, "bad_data", Some("invalid parameter \"step\": cannot parse \"9e15\" to a valid duration. It overflows int64")),
            (get(&format!("{R}?query=m&start=-9e15&end=9e15&step=9e9")), 400, "bad_data", None),
            (get(&format!("{R}?query={}&start=9e15&end=9e15&step=1", enc("rate(m[5m] offset -1y)"))), 200, "", None),
            (get(&format!("{R}?query={}&start=-9e15&end=-9e15&step=1", enc("m offset 1y"))), 200, "", None),
            (get(&format!("{R}?query=m&start=60&end=0&step=15")), 400, "bad_data", Some("end timestamp must not be before start time")),
            (get(&format!("{R}?query=m&start=0&end=60&step=0")), 400, "bad_data", Some("zero or negative query resolution step widths are not accepted. Try a positive integer")),
            (get(&format!("{R}?query=m&start=0&end=60&step=-15")), 400, "bad_data", None),
            (get(&format!("{R}?query=m&start=0&end=60&step=abc")), 400, "bad_data", Some("invalid parameter \"step\": cannot parse \"abc\" to a valid duration")),
            (get(&format!("{R}?query=m&start=0&end=60&step=1e300")), 400, "bad_data", None),
            (get(&format!("{R}?query=m&start=0&end=60&step=NaN")), 400, "bad_data", None),
            (get(&format!("{R}?query=m&start=0&end=60&step=99999999999999999y")), 400, "bad_data", None),
            (get(&format!("{R}?query=m&start=0&end=60&step=0.0001")), 400, "bad_data", None),
            (get(&format!("{R}?query=m&start=0&end=86400000&step=1")), 400, "bad_data", None),
            (get(&format!("{R}?query=m&start=0&end=60")), 400, "bad_data", None),
            (get(&format!("{R}?query={}&start=0&end=3600&step=1", enc("count_over_time(vector(1)[100y:1ms])"))), 422, "execution", None),
            (post_form(R, &format!("query={}&start=0&end=60&step=15", enc(&deep_chain))), 400, "bad_data", None),
            (post_form(R, &format!("query=m&start=0&end=60&step={}", enc("1e309"))), 400, "bad_data", None),
            // series / labels / label values / metadata
            (get(S), 400, "bad_data", Some("no match[] parameter provided")),
            (get(&format!("{S}?match[]={}", enc("up{"))), 400, "bad_data", None),
            (get(&format!("{S}?match[]={}", enc("sum(up)"))), 400, "bad_data", None),
            (post_form(S, &format!("match[]={}", enc(&"(".repeat(1 << 20)))), 400, "bad_data", None),
            (post_form(S, &format!("match[]={}", enc(&deep_parens))), 400, "bad_data", None),
            (get(&format!("{S}?match[]={}", enc("up{a=~\"(\"}"))), 400, "bad_data", None),
            (get("/api/prom/api/v1/label/1abc/values"), 400, "bad_data", None),
            (get(&format!("/api/prom/api/v1/label/{}/values", enc("a-b"))), 400, "bad_data", None),
            (get(&format!("/api/prom/api/v1/label/{long_label}x-/values")), 400, "bad_data", None),
            (get("/api/prom/api/v1/metadata?limit=abc"), 400, "bad_data", Some("limit must be a number")),
            (get("/api/prom/api/v1/metadata?limit=99999999999999999999999"), 400, "bad_data", None),
            // A 10,000-term chain is answered, as Prometheus does.
            (get(&format!("{Q}?query={}&time=60", enc(&ten_k_chain))), 200, "", None),
        ];
        assert!(cases.len() >= 40, "{}", cases.len());
        let metrics = server::Metrics::new();
        let app = app(&metrics);
        for (req, want_status, want_type, want_error) in cases {
            let what = format!(
                "{} {}",
                req.method(),
                &req.uri().to_string()[..req.uri().to_string().len().min(120)]
            );
            let (status, body, took) = send(&app, req).await;
            assert_eq!(status.as_u16(), want_status, "{what}: {body}");
            assert!(took < Duration::from_secs(10), "{what}: took {took:?}");
            if want_status == 200 {
                assert_eq!(body["status"], "success", "{what}: {body}");
                continue;
            }
            assert_eq!(body["status"], "error", "{what}: {body}");
            assert_eq!(body["errorType"], want_type, "{what}: {body}");
            if let Some(e) = want_error {
                assert_eq!(body["error"], e, "{what}");
            }
        }
        // The ten-thousand-term chain's answer is right.
        let (_, body, _) = send(&app, get(&format!("{Q}?query={}&time=60", enc(&ten_k_chain)))).await;
        assert_eq!(body["data"]["result"][1], "10000");
        // Nothing reached the last line of defence, and normal queries still answer.
        let text = metrics.encode();
        assert!(text.contains("cortex_panics_total 0"), "{text}");
        let (status, body, _) = send(&app, get(&format!("{Q}?query={}&time=3585", enc("sum(m)")))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["result"][0]["value"][1], "239");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_runaway_query_ends_at_the_timeout_with_503() {
        let mut st = MemStorage::new();
        st.append(
            Labels::from_pairs([("__name__", "m")]),
            (0..86_400).map(|i| Sample {
                t: i * 1000,
                v: i as f64,
            }),
        );
        let cfg = Config {
            timeout: model::GoDuration(Duration::from_millis(300)),
            ..Config::default()
        };
        let app = Querier::with_queryable(cfg, Arc::new(st)).http_routes();
        let q = enc("quantile_over_time(0.5, m[1d])");
        let started = std::time::Instant::now();
        let (status, body, _) = send(
            &app,
            get(&format!(
                "/api/prom/api/v1/query_range?query={q}&start=86399&end=96399&step=1"
            )),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["errorType"], "timeout");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }
}
