//! Remote write as the distributor receives it: block snappy around a
//! protobuf `WriteRequest`, then the per-series and per-metadata validation.
//!
//! First byte: even → the rest is the HTTP body as sent (snappy);
//! odd → the rest is the protobuf, compressed here, so that mutations reach
//! the protobuf decoder instead of being rejected by snappy.
#![no_main]

use distributor::validation::{normalize_labels, Validator};
use libfuzzer_sys::fuzz_target;

const MAX_SIZE: usize = 1 << 20;

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
    let Ok(mut req) = distributor::decode_write_request(&body, MAX_SIZE) else {
        return;
    };
    let limits = distributor::Limits::default();
    let validator = Validator::new(&limits, false, 1_700_000_000_000);
    for ts in &mut req.timeseries {
        normalize_labels(&mut ts.labels);
        if validator.validate_series(ts).is_ok() {
            // Everything a valid series carries must be what validation promised.
            assert!(distributor::validation::metric_name(&ts.labels).is_some());
        }
    }
    for m in &req.metadata {
        let _ = validator.validate_metadata(m);
    }
});
