//! Our own PromQL engine (Prometheus v2.53 semantics) over a [`Queryable`] storage.
//!
//! `promql-parser` is used for parsing only. Evaluation works in three phases:
//! collect every selector with the time range it needs, fetch each selector's
//! series once, then evaluate synchronously over the in-memory data.
//!
//! - [`parse`](mod@parse): parsing, and the nesting bound that sizes a query's stack.
//! - [`engine`]: [`Engine`], its options and results.
//! - `plan` (selectors and their time ranges), `eval`, `binary`, `aggregate`,
//!   `functions`: evaluation.
//! - [`Queryable`], [`SampleLimit`], [`Cancellation`]: what the engine reads, and what bounds it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

mod aggregate;
mod binary;
#[cfg(test)]
mod bounds_tests;
pub mod engine;
mod eval;
mod functions;
pub mod parse;
mod parse_error;
mod plan;
pub mod promqltest;
#[cfg(test)]
mod test_alloc;

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)` with Prometheus's `NaN`/`+Inf`/`-Inf`: how values are spelled in the API and in labels.
pub use aggregate::format_float;
pub use engine::{Engine, EngineOpts, Value, VectorSample};
pub use parse::{check_nesting, nesting_bound, parse, rewrite_raw_strings, stack_size_for, MAX_NESTING};

/// A storage error with an HTTP meaning: 4xx is the user's fault (→ 422), 5xx is ours (→ 500).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StorageError {
    pub code: u16,
    pub message: String,
}

/// The storage the engine reads from.
#[async_trait]
pub trait Queryable: Send + Sync {
    /// Every series matching all matchers with its samples in [start_ms, end_ms], oldest first.
    async fn select(
        &self,
        start_ms: i64,
        end_ms: i64,
        matchers: &[model::Matcher],
    ) -> Result<Vec<model::Series>, StorageError>;

    /// [`Queryable::select`], charging every sample loaded to the query's `limit`.
    ///
    /// The default charges after the fact, which is right for data already in memory.
    /// Storage that fetches or decodes should override it and charge as samples arrive,
    /// so that a query over too much data fails before that data is in memory.
    async fn select_limited(
        &self,
        start_ms: i64,
        end_ms: i64,
        matchers: &[model::Matcher],
        limit: &SampleLimit,
    ) -> Result<Vec<model::Series>, PromqlError> {
        let series = self
            .select(start_ms, end_ms, matchers)
            .await
            .map_err(PromqlError::Storage)?;
        limit.add(series.iter().map(|s| s.samples.len()).sum())?;
        Ok(series)
    }
}

/// A query's budget of samples held in memory (`-querier.max-samples`), shared by the
/// storage (raw samples as they are loaded) and the evaluator (intermediate results).
#[derive(Debug)]
pub struct SampleLimit {
    max: usize,
    used: AtomicUsize,
}

/// The query would hold more samples than its [`SampleLimit`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("query processing would load too many samples into memory in query execution")]
pub struct TooManySamples;

impl From<TooManySamples> for PromqlError {
    fn from(_: TooManySamples) -> Self {
        PromqlError::TooManySamples
    }
}

impl SampleLimit {
    pub fn new(max: usize) -> Self {
        SampleLimit {
            max,
            used: AtomicUsize::new(0),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Samples charged so far.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Samples that may still be charged.
    pub fn remaining(&self) -> usize {
        self.max.saturating_sub(self.used())
    }

    /// Charges `n` more samples; fails (charging nothing) if that would pass the limit.
    pub fn add(&self, n: usize) -> Result<(), TooManySamples> {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                u.checked_add(n).filter(|&t| t <= self.max)
            })
            .map(|_| ())
            .map_err(|_| TooManySamples)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PromqlError {
    /// The query text is not valid PromQL (HTTP 400, errorType bad_data).
    #[error("{0}")]
    Parse(String),
    /// The query is valid but cannot be evaluated (HTTP 422, errorType execution).
    #[error("{0}")]
    Execution(String),
    /// HTTP 422.
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    /// The steps of a subquery alone would pass the sample limit (HTTP 422).
    #[error("query processing would load too many samples into memory in subquery")]
    TooManySamplesInSubquery,
    /// HTTP 503.
    #[error("query timed out in query execution")]
    Timeout,
    /// The caller gave up on the query ([`Cancellation::cancel`]).
    #[error("query was canceled in query execution")]
    Canceled,
    #[error("{0}")]
    Storage(StorageError),
}

/// A flag the caller sets to stop an evaluation (client gone, outer timeout); the
/// evaluator looks at it as often as at its deadline. Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Cancellation(Arc<AtomicBool>);

impl Cancellation {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_canceled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_limit_refuses_without_charging() {
        let l = SampleLimit::new(10);
        l.add(7).unwrap();
        assert_eq!(l.add(4), Err(TooManySamples));
        assert_eq!(l.used(), 7);
        assert_eq!(l.remaining(), 3);
        l.add(3).unwrap();
        assert_eq!(l.add(usize::MAX), Err(TooManySamples));
    }
}
