//! The first two stages: refuse ranges above `-store.max-query-length`, and (optionally) snap
//! start and end to the step.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use model::GoDuration;
use proto::frontend::PrometheusResponse;

use super::Handler;
use crate::error::FrontendError;
use crate::request::RangeRequest;

pub struct MaxQueryLength {
    /// 0 = no limit.
    pub max_ms: i64,
    pub next: Arc<dyn Handler>,
}

#[async_trait]
impl Handler for MaxQueryLength {
    async fn handle(&self, tenant: &str, req: RangeRequest) -> Result<PrometheusResponse, FrontendError> {
        let len = req.end - req.start;
        if self.max_ms > 0 && len > self.max_ms {
            return Err(FrontendError::BadData(format!(
                "the query time range exceeds the limit (query length: {}, limit: {}); the limit is -store.max-query-length",
                GoDuration(Duration::from_millis(len as u64)),
                GoDuration(Duration::from_millis(self.max_ms as u64)),
            )));
        }
        self.next.handle(tenant, req).await
    }
}

/// `-querier.align-querier-with-step`: `start` and `end` rounded down to multiples of `step`.
pub struct StepAlign {
    pub next: Arc<dyn Handler>,
}

#[async_trait]
impl Handler for StepAlign {
    async fn handle(&self, tenant: &str, req: RangeRequest) -> Result<PrometheusResponse, FrontendError> {
        let start = req.start.div_euclid(req.step) * req.step;
        let end = req.end.div_euclid(req.step) * req.step;
        self.next.handle(tenant, req.with_start_end(start, end)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::test_support::{req, Recorder};

    #[tokio::test]
    async fn too_long_is_400_naming_the_flag() {
        let rec = Arc::new(Recorder::default());
        let m = MaxQueryLength {
            max_ms: 24 * 3_600_000,
            next: rec.clone(),
        };
        let e = m.handle("t", req(0, 7 * 24 * 3_600_000, 60_000)).await.unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(
            e.to_string(),
            "the query time range exceeds the limit (query length: 168h0m0s, limit: 24h0m0s); the limit is -store.max-query-length"
        );
        m.handle("t", req(0, 24 * 3_600_000, 60_000)).await.unwrap();
        assert_eq!(rec.calls.lock().len(), 1);
    }

    #[tokio::test]
    async fn step_align_rounds_down() {
        let rec = Arc::new(Recorder::default());
        let s = StepAlign { next: rec.clone() };
        s.handle("t", req(61_000, 179_999, 60_000)).await.unwrap();
        let got = rec.calls.lock()[0].clone();
        assert_eq!((got.start, got.end), (60_000, 120_000));
    }
}
