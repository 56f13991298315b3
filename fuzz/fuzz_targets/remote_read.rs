//! Remote read through the querier's real HTTP router: `POST
//! /api/prom/api/v1/read` with a snappy `ReadRequest`.
//!
//! First byte: even → the rest is the body as sent; odd → the rest is the
//! protobuf, compressed here (mutations then reach the protobuf decoder and
//! the matcher conversion).
#![no_main]

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let body = if mode & 1 == 1 {
        snap::raw::Encoder::new()
            .compress_vec(rest)
            .expect("in-memory compression")
    } else {
        rest.to_vec()
    };
    let path = if mode & 2 == 2 {
        "/api/prom/read"
    } else {
        "/api/prom/api/v1/read"
    };
    let req = Request::post(path)
        .header("X-Scope-OrgID", cortex_fuzz::TENANT)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .body(Body::from(body))
        .expect("request");
    let (status, body) = cortex_fuzz::call(cortex_fuzz::querier_router(), req);
    // A querier over a fixed data set may answer that remote read needs
    // ingesters (500); any other 5xx is a failure of ours on bad input.
    if status.is_server_error() {
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("fixed data set"), "remote read answered {status}: {text}");
    }
});
