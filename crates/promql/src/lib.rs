//! Our own PromQL engine (Prometheus v2.53 semantics) over a [`Queryable`] storage.
//!
//! `promql-parser` is used for parsing only. Evaluation works in three phases:
//! collect every selector with the time range it needs, fetch each selector's
//! series once, then evaluate synchronously over the in-memory data.

use std::time::Duration;

use async_trait::async_trait;

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
}

/// Engine limits and defaults.
#[derive(Debug, Clone)]
pub struct EngineOpts {
    /// How far back an instant selector looks for the newest sample (Prometheus default 5m).
    pub lookback_delta: Duration,
    /// Most samples a query may hold in memory at once.
    pub max_samples: usize,
    /// Wall-clock limit for one query.
    pub timeout: Duration,
    /// Step of a subquery written without one (`[5m:]`).
    pub default_eval_interval: Duration,
}

impl Default for EngineOpts {
    fn default() -> Self {
        EngineOpts {
            lookback_delta: Duration::from_secs(300),
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            default_eval_interval: Duration::from_secs(60),
        }
    }
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSample {
    pub labels: model::Labels,
    pub t: i64,
    pub v: f64,
}

/// A query result.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar { t: i64, v: f64 },
    String { t: i64, s: String },
    Vector(Vec<VectorSample>),
    Matrix(Vec<model::Series>),
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
    /// HTTP 503.
    #[error("query timed out in query execution")]
    Timeout,
    #[error("{0}")]
    Storage(StorageError),
}

/// The PromQL engine. Cheap to share; holds no per-query state.
#[derive(Debug, Clone)]
pub struct Engine {
    opts: EngineOpts,
}

impl Engine {
    pub fn new(opts: EngineOpts) -> Self {
        Engine { opts }
    }

    pub fn opts(&self) -> &EngineOpts {
        &self.opts
    }

    /// Evaluates `expr` at `t_ms`.
    pub async fn instant(&self, q: &dyn Queryable, expr: &str, t_ms: i64) -> Result<Value, PromqlError> {
        let _ = (q, expr, t_ms);
        Err(PromqlError::Execution("engine not implemented yet".into()))
    }

    /// Evaluates `expr` at every step from `start_ms` to `end_ms`.
    pub async fn range(
        &self,
        q: &dyn Queryable,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Value, PromqlError> {
        let _ = (q, expr, start_ms, end_ms, step_ms);
        Err(PromqlError::Execution("engine not implemented yet".into()))
    }
}
