//! Our own PromQL engine (Prometheus v2.53 semantics) over a [`Queryable`] storage.
//!
//! `promql-parser` is used for parsing only. Evaluation works in three phases:
//! collect every selector with the time range it needs, fetch each selector's
//! series once, then evaluate synchronously over the in-memory data.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use promql_parser::parser::Expr;

mod aggregate;
mod binary;
mod eval;
mod functions;
mod plan;
pub mod promqltest;

use eval::Val;

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
        let ast = parse(expr)?;
        self.instant_expr(q, &ast, t_ms).await
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
        let ast = parse(expr)?;
        self.range_expr(q, &ast, start_ms, end_ms, step_ms).await
    }

    /// [`Engine::instant`] for an already parsed expression.
    pub async fn instant_expr(&self, q: &dyn Queryable, expr: &Expr, t_ms: i64) -> Result<Value, PromqlError> {
        let r = plan::Range {
            start: t_ms,
            end: t_ms,
            step: 1,
        };
        Ok(match self.exec(q, expr, r).await? {
            Val::Scalar(v) => Value::Scalar { t: t_ms, v: v[0] },
            Val::String(s) => Value::String { t: t_ms, s },
            Val::Vector(m) => Value::Vector(
                m.into_iter()
                    .filter_map(|s| {
                        s.samples.first().map(|p| VectorSample {
                            labels: s.labels,
                            t: t_ms,
                            v: p.v,
                        })
                    })
                    .collect(),
            ),
            Val::Matrix(m) => Value::Matrix(m),
        })
    }

    /// [`Engine::range`] for an already parsed expression. The result matrix is sorted by labels.
    pub async fn range_expr(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Value, PromqlError> {
        if step_ms <= 0 {
            return Err(PromqlError::Execution(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(PromqlError::Execution(
                "end timestamp must not be before start time".into(),
            ));
        }
        let r = plan::Range {
            start: start_ms,
            end: end_ms,
            step: step_ms,
        };
        let mut m = match self.exec(q, expr, r).await? {
            Val::Scalar(v) => vec![model::Series {
                labels: model::Labels::empty(),
                samples: v
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| model::Sample { t: r.ts(i), v })
                    .collect(),
            }],
            Val::Vector(m) => m,
            Val::String(_) => {
                return Err(PromqlError::Execution(
                    "invalid expression type \"string\" for range query, must be Scalar or instant Vector".into(),
                ))
            }
            Val::Matrix(_) => {
                return Err(PromqlError::Execution(
                    "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector".into(),
                ))
            }
        };
        m.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(Value::Matrix(m))
    }

    async fn exec(&self, q: &dyn Queryable, expr: &Expr, r: plan::Range) -> Result<Val, PromqlError> {
        let deadline = std::time::Instant::now() + self.opts.timeout;
        let times = plan::QueryTimes {
            start: r.start,
            end: r.end,
            lookback: self.opts.lookback_delta.as_millis() as i64,
            default_step: (self.opts.default_eval_interval.as_millis() as i64).max(1),
        };
        let mut fetches = Vec::new();
        plan::collect(expr, r, &times, &mut fetches)?;
        let mut data = HashMap::with_capacity(fetches.len());
        for f in fetches {
            let series = q
                .select(f.min_t, f.max_t, &f.matchers)
                .await
                .map_err(PromqlError::Storage)?;
            if std::time::Instant::now() > deadline {
                return Err(PromqlError::Timeout);
            }
            data.insert(f.key, series);
        }
        let ev = eval::Evaluator {
            q: times,
            data: &data,
            max_samples: self.opts.max_samples,
            current: std::cell::Cell::new(0),
            deadline,
        };
        ev.eval(expr, r)
    }
}

/// Parses a PromQL expression. Backtick raw strings are rewritten to double-quoted strings
/// first, because promql-parser mis-reads escapes inside them.
pub fn parse(expr: &str) -> Result<Expr, PromqlError> {
    register_functions();
    let src = rewrite_raw_strings(expr);
    promql_parser::parser::parse(&src).map_err(PromqlError::Parse)
}

/// `holt_winters` is the v2 name of `double_exponential_smoothing`; the parser only knows the new one.
fn register_functions() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use promql_parser::parser::value::ValueType;
        let _ = promql_parser::parser::register_extra_functions(vec![promql_parser::parser::Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
}

/// Rewrites each `raw` string (outside other strings and comments) as an escaped "…" string.
pub fn rewrite_raw_strings(expr: &str) -> String {
    if !expr.contains('`') {
        return expr.to_string();
    }
    let mut out = String::with_capacity(expr.len() + 8);
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                out.push(c);
                while let Some(d) = chars.next() {
                    out.push(d);
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            out.push(e);
                        }
                    } else if d == c {
                        break;
                    }
                }
            }
            '#' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '`' => {
                out.push('"');
                for d in chars.by_ref() {
                    match d {
                        '`' => break,
                        '\\' => out.push_str("\\\\"),
                        '"' => out.push_str("\\\""),
                        '\n' => out.push_str("\\n"),
                        _ => out.push(d),
                    }
                }
                out.push('"');
            }
            _ => out.push(c),
        }
    }
    out
}
