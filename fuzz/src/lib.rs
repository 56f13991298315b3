//! Shared pieces of the fuzz targets: one runtime, the querier's real HTTP
//! router over a small in-memory data set, and the input splitting the
//! targets agree on with the seed generator (`make_seeds`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use model::{Labels, Sample};
use promql::promqltest::MemStorage;
use tower::ServiceExt;

/// Separates the records of a framed-WAL input (see `wal_replay`).
pub const RECORD_SEPARATOR: &[u8] = b"|REC|";

/// Tenant of every fuzzed request and chunk object.
pub const TENANT: &str = "fuzz";

/// The single-threaded runtime all targets run their futures on.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("tokio runtime")
    })
}

/// What the querier serves: a few series over the first hour (15 s apart),
/// with the special values PromQL must handle (NaN, ±Inf, stale markers).
pub fn data_set() -> MemStorage {
    let mut st = MemStorage::new();
    for (job, slope) in [("a", 1.0), ("b", -0.5), ("c", 1e300)] {
        st.append(
            Labels::from_pairs([("__name__", "m"), ("job", job), ("instance", "i1")]),
            (0..240).map(|i| Sample {
                t: i * 15_000,
                v: i as f64 * slope,
            }),
        );
    }
    for code in ["200", "500"] {
        st.append(
            Labels::from_pairs([("__name__", "http_requests_total"), ("code", code)]),
            (0..240).map(|i| Sample {
                t: i * 15_000,
                // A counter with a reset in the middle.
                v: ((i % 120) * 10) as f64,
            }),
        );
    }
    let specials = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        model::stale_nan(),
        -0.0,
        1.0,
    ];
    st.append(
        Labels::from_pairs([("__name__", "odd"), ("le", "+Inf")]),
        (0..240).map(|i| Sample {
            t: i * 15_000,
            v: specials[i as usize % specials.len()],
        }),
    );
    for le in ["0.1", "1", "+Inf"] {
        st.append(
            Labels::from_pairs([("__name__", "lat_bucket"), ("le", le)]),
            (0..240).map(|i| Sample {
                t: i * 15_000,
                v: (i as f64) * le.parse::<f64>().map_or(3.0, |b| b.min(3.0)),
            }),
        );
    }
    st
}

/// Limits small enough that a runaway query is refused quickly, as a
/// production querier would refuse it at its own (larger) limits.
pub fn querier_config() -> querier::Config {
    querier::Config {
        max_concurrent: 4,
        timeout: model::GoDuration(Duration::from_secs(2)),
        max_samples: 1_000_000,
        ..querier::Config::default()
    }
}

/// The querier's real router (`/api/prom/...`) over [`data_set`].
pub fn querier_router() -> &'static axum::Router {
    static ROUTER: OnceLock<axum::Router> = OnceLock::new();
    ROUTER.get_or_init(|| querier::Querier::with_queryable(querier_config(), Arc::new(data_set())).http_routes())
}

/// Sends one request through `router`; returns the status and body.
pub fn call(router: &axum::Router, req: Request<Body>) -> (StatusCode, bytes::Bytes) {
    runtime().block_on(async {
        let resp = router.clone().oneshot(req).await.expect("router is infallible");
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (status, body)
    })
}

/// Splits `data` at every [`RECORD_SEPARATOR`].
pub fn split_records(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(RECORD_SEPARATOR.len()).position(|w| w == RECORD_SEPARATOR) {
        out.push(&rest[..i]);
        rest = &rest[i + RECORD_SEPARATOR.len()..];
    }
    out.push(rest);
    out
}

/// Frames `records` as a WAL segment (Prometheus `tsdb/wlog` pages: 32 KiB,
/// 7-byte fragment headers with CRC-32C), so the fuzzer's mutations reach the
/// record decoder instead of dying at the checksum.
pub fn frame_segment(records: &[&[u8]]) -> Vec<u8> {
    const PAGE: usize = 32 * 1024;
    const HEADER: usize = 7;
    let mut out = Vec::new();
    for rec in records {
        let mut rest: &[u8] = rec;
        let mut first = true;
        loop {
            let in_page = PAGE - out.len() % PAGE;
            if in_page <= HEADER {
                out.resize(out.len() + in_page, 0);
                continue;
            }
            let n = rest.len().min(in_page - HEADER);
            let last = n == rest.len();
            let typ = match (first, last) {
                (true, true) => 1,
                (true, false) => 2,
                (false, false) => 3,
                (false, true) => 4,
            };
            let (part, tail) = rest.split_at(n);
            out.push(typ);
            out.extend_from_slice(&(n as u16).to_be_bytes());
            out.extend_from_slice(&crc32c::crc32c(part).to_be_bytes());
            out.extend_from_slice(part);
            rest = tail;
            first = false;
            if last {
                break;
            }
        }
    }
    out
}

/// The records of a WAL segment (the inverse of [`frame_segment`] for intact
/// segments; used to turn real segments into seeds).
pub fn unframe_segment(data: &[u8]) -> Vec<Vec<u8>> {
    const PAGE: usize = 32 * 1024;
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut pos = 0;
    while pos + 7 <= data.len() {
        if PAGE - pos % PAGE < 7 || data[pos] == 0 {
            pos += PAGE - pos % PAGE;
            continue;
        }
        let len = u16::from_be_bytes([data[pos + 1], data[pos + 2]]) as usize;
        let part = &data[pos + 7..(pos + 7 + len).min(data.len())];
        cur.extend_from_slice(part);
        if matches!(data[pos], 1 | 4) {
            out.push(std::mem::take(&mut cur));
        }
        pos += 7 + len;
    }
    out
}
