//! Split by interval: a range query becomes one piece per UTC interval (day), each ending on
//! the last step point before the boundary and the next starting one step later, so every point
//! of the original is evaluated exactly once. Pieces run with at most
//! `-querier.max-query-parallelism` in flight; their matrices are concatenated per series.

use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use prometheus_client::metrics::counter::Counter;
use proto::frontend::PrometheusResponse;

use super::Handler;
use crate::error::FrontendError;
use crate::request::RangeRequest;
use crate::response;

pub struct SplitByInterval {
    pub interval_ms: i64,
    pub max_parallelism: usize,
    pub next: Arc<dyn Handler>,
    /// `cortex_frontend_split_queries_total`.
    pub split_queries: Counter,
}

/// The pieces of `req`, in time order.
pub fn split(req: &RangeRequest, interval_ms: i64) -> Vec<RangeRequest> {
    if req.start == req.end || interval_ms <= 0 {
        return vec![req.clone()];
    }
    let last = req.last_point();
    let mut out = Vec::new();
    let mut start = req.start;
    while start <= last {
        let mut end = last_point_before_boundary(start, req.step, interval_ms);
        if end + req.step > last {
            // The final piece keeps the original end (which may lie between step points).
            end = req.end;
        }
        out.push(req.with_start_end(start, end));
        start = end + req.step;
    }
    out
}

/// The last point `start + k·step` (k ≥ 0) before the interval boundary after `start`.
fn last_point_before_boundary(start: i64, step: i64, interval: i64) -> i64 {
    let boundary = (start.div_euclid(interval) + 1) * interval;
    // Points at or past the boundary belong to the next interval.
    let k = (boundary - start - 1) / step;
    start + k * step
}

#[async_trait]
impl Handler for SplitByInterval {
    async fn handle(&self, tenant: &str, req: RangeRequest) -> Result<PrometheusResponse, FrontendError> {
        let pieces = split(&req, self.interval_ms);
        self.split_queries.inc_by(pieces.len() as u64);
        if pieces.len() == 1 {
            return self.next.handle(tenant, req).await;
        }
        // `buffered` keeps time order; the first error drops (cancels) the pieces still running.
        let results: Vec<PrometheusResponse> = futures::stream::iter(pieces)
            .map(|p| self.next.handle(tenant, p))
            .buffered(self.max_parallelism.max(1))
            .try_collect()
            .await?;
        Ok(response::merge(results))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::test_support::{evaluate, req, timestamps, Recorder};

    const DAY: i64 = 86_400_000;
    const H: i64 = 3_600_000;

    fn ranges(r: &RangeRequest) -> Vec<(i64, i64)> {
        split(r, DAY).iter().map(|p| (p.start, p.end)).collect()
    }

    /// Every point of the original, once, in order; each piece inside one UTC day.
    fn check_partition(r: &RangeRequest) {
        let pieces = split(r, DAY);
        let want = timestamps(&evaluate(r));
        let got: Vec<i64> = pieces.iter().flat_map(|p| timestamps(&evaluate(p))).collect();
        assert_eq!(got, want, "{r:?}");
        for p in &pieces {
            assert_eq!(
                p.start.div_euclid(DAY),
                p.last_point().div_euclid(DAY),
                "{p:?} crosses a day"
            );
            assert_eq!((p.start - r.start) % r.step, 0, "{p:?} off the step grid");
        }
    }

    #[test]
    fn splits_at_utc_day_edges() {
        // 22:00 day 0 → 02:00 day 2, hourly.
        let r = req(22 * H, 2 * DAY + 2 * H, H);
        assert_eq!(
            ranges(&r),
            vec![(22 * H, 23 * H), (DAY, DAY + 23 * H), (2 * DAY, 2 * DAY + 2 * H)]
        );
        check_partition(&r);
        // Starting exactly on a boundary and ending exactly on one.
        let r = req(DAY, 3 * DAY, H);
        assert_eq!(
            ranges(&r),
            vec![(DAY, DAY + 23 * H), (2 * DAY, 2 * DAY + 23 * H), (3 * DAY, 3 * DAY)]
        );
        check_partition(&r);
    }

    #[test]
    fn steps_that_do_not_divide_a_day() {
        for step in [7 * 60_000, 13 * 60_000 + 7_000, 5 * H, 25 * H, 3 * DAY] {
            for start in [0, 1_234_567, DAY - 1, 5 * DAY + 17] {
                check_partition(&req(start, start + 9 * DAY + 3 * H, step));
            }
        }
        // 7-minute steps: day 0's last point is 23:55, day 1 starts at 00:02.
        let p = split(&req(0, 2 * DAY, 7 * 60_000), DAY);
        assert_eq!(p[0].end, DAY - 5 * 60_000);
        assert_eq!(p[1].start, DAY + 2 * 60_000);
    }

    #[test]
    fn single_points_and_unaligned_ends() {
        assert_eq!(ranges(&req(5, 5, 60_000)), vec![(5, 5)]);
        // The final piece keeps the client's end; no point past it.
        let r = req(0, DAY + 90_000, 60_000);
        assert_eq!(ranges(&r).last(), Some(&(DAY, DAY + 90_000)));
        check_partition(&r);
        // Negative times (before 1970) split at UTC days too.
        check_partition(&req(-2 * DAY - 5, DAY, H));
    }

    #[tokio::test]
    async fn pieces_run_and_merge_into_the_unsplit_answer() {
        let rec = Arc::new(Recorder::default());
        let s = SplitByInterval {
            interval_ms: DAY,
            max_parallelism: 3,
            next: rec.clone(),
            split_queries: Counter::default(),
        };
        let r = req(3 * H, 6 * DAY + 3 * H, 5 * 60_000);
        let got = s.handle("t", r.clone()).await.unwrap();
        assert_eq!(got, evaluate(&r));
        assert_eq!(rec.calls.lock().len(), 7);
        assert_eq!(s.split_queries.get(), 7);
    }
}
