//! The range-query middlewares, in Cortex's order (spec §7.4): [`limits`] (max query length,
//! step alignment), [`split`] by interval, [`results_cache`], then the retrying downstream.

pub mod limits;
pub mod results_cache;
pub mod split;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use proto::frontend::{PrometheusResponse, PrometheusResponseHeader};

use crate::downstream::RoundTripper;
use crate::error::FrontendError;
use crate::request::RangeRequest;
use crate::response;

/// One stage of the chain.
#[async_trait]
pub trait Handler: Send + Sync {
    async fn handle(&self, tenant: &str, req: RangeRequest) -> Result<PrometheusResponse, FrontendError>;
}

/// The end of the chain: one request through the (retrying) round tripper, JSON decoded.
pub struct ToDownstream(pub Arc<dyn RoundTripper>);

#[async_trait]
impl Handler for ToDownstream {
    async fn handle(&self, tenant: &str, req: RangeRequest) -> Result<PrometheusResponse, FrontendError> {
        let resp = self.0.round_trip(tenant, req.to_http(tenant)).await?;
        if resp.code != 200 {
            return Err(FrontendError::Downstream(resp));
        }
        let mut r = response::from_json(&resp.body)?;
        // Kept so the results cache can honour the downstream's Cache-Control.
        r.headers = resp
            .headers
            .into_iter()
            .filter(|h| h.key.eq_ignore_ascii_case("cache-control"))
            .map(|h| PrometheusResponseHeader {
                name: h.key,
                values: h.values,
            })
            .collect();
        Ok(r)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    method: String,
}

/// `cortex_frontend_query_range_duration_seconds{method}`: time spent in a stage and below.
pub struct Instrumented {
    pub name: &'static str,
    pub inner: Arc<dyn Handler>,
    pub duration: Family<MethodLabels, Histogram>,
}

pub fn duration_family() -> Family<MethodLabels, Histogram> {
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 4.0, 8)))
}

#[async_trait]
impl Handler for Instrumented {
    async fn handle(&self, tenant: &str, req: RangeRequest) -> Result<PrometheusResponse, FrontendError> {
        let start = Instant::now();
        let r = self.inner.handle(tenant, req).await;
        self.duration
            .get_or_create(&MethodLabels {
                method: self.name.to_string(),
            })
            .observe(start.elapsed().as_secs_f64());
        r
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use parking_lot::Mutex;

    use super::*;
    use crate::response::tests::{response, stream};

    /// A stand-in querier: answers every request with one series `{x="1"}` whose value at each
    /// evaluated point is its timestamp, and records the requests it got.
    #[derive(Default)]
    pub struct Recorder {
        pub calls: Mutex<Vec<RangeRequest>>,
    }

    impl Recorder {
        pub fn ranges(&self) -> Vec<(i64, i64)> {
            self.calls.lock().iter().map(|r| (r.start, r.end)).collect()
        }
    }

    /// What [`Recorder`] answers for `req`.
    pub fn evaluate(req: &RangeRequest) -> PrometheusResponse {
        let points: Vec<(i64, f64)> = (0..)
            .map(|k| req.start + k * req.step)
            .take_while(|t| *t <= req.end)
            .map(|t| (t, t as f64))
            .collect();
        response(vec![stream(&[("x", "1")], &points)])
    }

    #[async_trait]
    impl Handler for Recorder {
        async fn handle(&self, _: &str, req: RangeRequest) -> Result<PrometheusResponse, FrontendError> {
            let r = evaluate(&req);
            self.calls.lock().push(req);
            Ok(r)
        }
    }

    pub fn req(start: i64, end: i64, step: i64) -> RangeRequest {
        RangeRequest {
            path: "/api/prom/api/v1/query_range".into(),
            start,
            end,
            step,
            timeout: None,
            query: "up".into(),
            no_store: false,
        }
    }

    pub fn timestamps(r: &PrometheusResponse) -> Vec<i64> {
        r.data
            .as_ref()
            .map(|d| {
                d.result
                    .iter()
                    .flat_map(|s| s.samples.iter().map(|p| p.timestamp_ms))
                    .collect()
            })
            .unwrap_or_default()
    }
}
