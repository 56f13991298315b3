//! PromQL parse and evaluation through the querier's HTTP API parameters.
//!
//! The input is text, one parameter per line: `query` first; with four or
//! more lines a range query (`start`, `end`, `step`, then `timeout`),
//! otherwise an instant query (`time`, then `timeout`). The data set is
//! [`cortex_fuzz::data_set`]; every answer must be a 2xx/4xx, or 503 for a
//! timeout, with a JSON body.
#![no_main]

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines: Vec<&str> = text.split('\n').collect();
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("query", lines[0]);
    let path = if lines.len() >= 4 {
        form.append_pair("start", lines[1]);
        form.append_pair("end", lines[2]);
        form.append_pair("step", lines[3]);
        if let Some(t) = lines.get(4) {
            form.append_pair("timeout", t);
        }
        "/api/prom/api/v1/query_range"
    } else {
        if let Some(t) = lines.get(1) {
            form.append_pair("time", t);
        }
        if let Some(t) = lines.get(2) {
            form.append_pair("timeout", t);
        }
        "/api/prom/api/v1/query"
    };
    let body = form.finish();
    let req = Request::post(path)
        .header("X-Scope-OrgID", cortex_fuzz::TENANT)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .expect("request");
    let (status, body) = cortex_fuzz::call(cortex_fuzz::querier_router(), req);
    let text = String::from_utf8_lossy(&body);
    assert!(
        !status.is_server_error() || status.as_u16() == 503,
        "{status} for {:?}: {text}",
        lines
    );
    let json: serde_json::Value =
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text}"));
    let want = if status.is_success() { "success" } else { "error" };
    assert_eq!(json["status"], want, "{status}: {text}");
});
