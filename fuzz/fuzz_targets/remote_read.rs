//! Remote read through the querier's real HTTP router: `POST
//! /api/prom/api/v1/read` (or `/api/prom/read`) with a snappy `ReadRequest`,
//! answered as samples or streamed XOR chunks as the request asks.
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
    // Remote read answers over the fixed data set too: any 5xx is a failure of ours on bad
    // input (the budget is the fuzz querier's -querier.max-samples; timeouts are 503 and
    // cannot happen on this data).
    let text = String::from_utf8_lossy(&body);
    assert!(!status.is_server_error(), "remote read answered {status}: {text}");
});
