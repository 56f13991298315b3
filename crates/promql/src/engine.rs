//! The engine: plan a query, fetch each selector once, then evaluate in memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use promql_parser::parser::Expr;

use crate::eval::{self, Val};
use crate::{parse, plan, Cancellation, PromqlError, Queryable, SampleLimit};

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

/// The PromQL engine. Cheap to share; holds no per-query state.
#[derive(Debug, Clone)]
pub struct Engine {
    opts: EngineOpts,
    cancel: Option<Cancellation>,
}

impl Engine {
    pub fn new(opts: EngineOpts) -> Self {
        Engine { opts, cancel: None }
    }

    pub fn opts(&self) -> &EngineOpts {
        &self.opts
    }

    /// This engine with a shorter timeout (a request's `timeout` parameter); never a longer one.
    pub fn with_timeout(&self, timeout: Duration) -> Engine {
        let mut e = self.clone();
        e.opts.timeout = e.opts.timeout.min(timeout);
        e
    }

    /// This engine, stopping its evaluations with [`PromqlError::Canceled`] once `cancel` is set.
    pub fn with_cancellation(&self, cancel: Cancellation) -> Engine {
        Engine {
            opts: self.opts.clone(),
            cancel: Some(cancel),
        }
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
        // Every expression holds at least one value per step: more steps than the budget
        // can never be answered, and are refused before any buffer is sized by them.
        if r.steps() > self.opts.max_samples {
            return Err(PromqlError::TooManySamples);
        }
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
        let stop = eval::Stop {
            // A timeout too long to add to now is no deadline at all.
            deadline: Instant::now().checked_add(self.opts.timeout),
            cancel: self.cancel.clone(),
        };
        let times = plan::QueryTimes {
            start: r.start,
            end: r.end,
            lookback: plan::duration_ms(&self.opts.lookback_delta),
            default_step: plan::duration_ms(&self.opts.default_eval_interval).max(1),
            max_samples: self.opts.max_samples,
        };
        let mut fetches = Vec::new();
        plan::collect(expr, r, &times, &mut fetches)?;
        // Raw series stay in memory for the whole evaluation, so they count against the
        // same budget as the intermediate results computed from them.
        let limit = SampleLimit::new(self.opts.max_samples);
        let mut data = HashMap::with_capacity(fetches.len());
        for f in fetches {
            let series = q.select_limited(f.min_t, f.max_t, &f.matchers, &limit).await?;
            stop.check()?;
            data.insert(f.key, series);
        }
        let ev = eval::Evaluator {
            q: times,
            data: &data,
            max_samples: self.opts.max_samples,
            current: std::cell::Cell::new(limit.used()),
            stop,
        };
        ev.eval(expr, r)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use async_trait::async_trait;
    use model::{Labels, Sample};

    use super::*;
    use crate::promqltest::MemStorage;
    use crate::{functions, rewrite_raw_strings, StorageError};

    fn storage(series: &[(&str, &[(i64, f64)])]) -> MemStorage {
        let mut st = MemStorage::new();
        for (name, pts) in series {
            st.append(
                Labels::from_pairs([("__name__", *name), ("job", "a")]),
                pts.iter().map(|&(t, v)| Sample { t, v }),
            );
        }
        st
    }

    fn engine() -> Engine {
        Engine::new(EngineOpts::default())
    }

    async fn instant_values(e: &Engine, st: &MemStorage, q: &str, t: i64) -> Vec<f64> {
        match e.instant(st, q, t).await.unwrap() {
            Value::Vector(v) => v.into_iter().map(|s| s.v).collect(),
            other => panic!("expected a vector, got {other:?}"),
        }
    }

    #[test]
    fn rate_extrapolates_to_window_edges_and_stops_at_counter_zero() {
        // Samples 30s inside both edges of a 120s window: extrapolated by 30s each side.
        let s = [Sample { t: 30_000, v: 5.0 }, Sample { t: 90_000, v: 15.0 }];
        let inc = functions::extrapolated_rate(&s, 0, 120_000, 120_000, true, false).unwrap();
        assert!((inc - 20.0).abs() < 1e-9, "{inc}");
        let rate = functions::extrapolated_rate(&s, 0, 120_000, 120_000, true, true).unwrap();
        assert!((rate - 20.0 / 120.0).abs() < 1e-12, "{rate}");
        // Starting at 2 with slope 10/60s, the counter would hit zero 12s before the first
        // sample: extrapolation to the left stops there (60 + 12 + 30 = 102s).
        let s = [Sample { t: 30_000, v: 2.0 }, Sample { t: 90_000, v: 12.0 }];
        let inc = functions::extrapolated_rate(&s, 0, 120_000, 120_000, true, false).unwrap();
        assert!((inc - 10.0 * 102.0 / 60.0).abs() < 1e-9, "{inc}");
        // A counter reset adds the value before the reset.
        let s = [
            Sample { t: 0, v: 10.0 },
            Sample { t: 60_000, v: 3.0 },
            Sample { t: 120_000, v: 8.0 },
        ];
        let inc = functions::extrapolated_rate(&s, 0, 120_000, 120_000, true, false).unwrap();
        assert!((inc - 8.0).abs() < 1e-9, "{inc}");
        // One sample is not enough.
        assert!(functions::extrapolated_rate(&s[..1], 0, 120_000, 120_000, true, true).is_none());
    }

    #[tokio::test]
    async fn lookback_window_is_closed_and_configurable() {
        let st = storage(&[("m", &[(0, 1.0)])]);
        let e = engine();
        assert_eq!(instant_values(&e, &st, "m", 300_000).await, vec![1.0]);
        assert!(instant_values(&e, &st, "m", 300_001).await.is_empty());
        let short = Engine::new(EngineOpts {
            lookback_delta: Duration::from_secs(60),
            ..EngineOpts::default()
        });
        assert_eq!(instant_values(&short, &st, "m", 60_000).await, vec![1.0]);
        assert!(instant_values(&short, &st, "m", 60_001).await.is_empty());
    }

    #[tokio::test]
    async fn stale_marker_ends_series_and_is_not_a_range_sample() {
        let st = storage(&[("m", &[(0, 1.0), (10_000, model::stale_nan()), (20_000, 2.0)])]);
        let e = engine();
        assert_eq!(instant_values(&e, &st, "m", 5_000).await, vec![1.0]);
        assert!(instant_values(&e, &st, "m", 15_000).await.is_empty());
        assert_eq!(instant_values(&e, &st, "m", 25_000).await, vec![2.0]);
        assert_eq!(
            instant_values(&e, &st, "count_over_time(m[1m])", 30_000).await,
            vec![2.0]
        );
        // Range mode: the gap appears as missing points.
        let Value::Matrix(m) = e.range(&st, "m", 0, 20_000, 5_000).await.unwrap() else {
            panic!("range query returns a matrix")
        };
        let ts: Vec<i64> = m[0].samples.iter().map(|p| p.t).collect();
        assert_eq!(ts, vec![0, 5_000, 20_000]);
    }

    #[tokio::test]
    async fn backtick_strings_are_raw() {
        let mut st = MemStorage::new();
        st.append(
            Labels::from_pairs([("__name__", "m"), ("a", "foo.bar")]),
            [Sample { t: 0, v: 1.0 }],
        );
        st.append(
            Labels::from_pairs([("__name__", "m"), ("a", "fooxbar")]),
            [Sample { t: 0, v: 2.0 }],
        );
        let e = engine();
        assert_eq!(instant_values(&e, &st, "m{a=~`foo\\.bar`}", 0).await, vec![1.0]);
        assert_eq!(rewrite_raw_strings(r#"x{a=`"\`}"#), r#"x{a="\"\\"}"#);
        // Backticks inside ordinary strings are left alone.
        assert_eq!(rewrite_raw_strings(r#"x{a="`"}"#), r#"x{a="`"}"#);
    }

    #[tokio::test]
    async fn errors_are_typed() {
        let st = storage(&[("a", &[(0, 1.0)]), ("b", &[(0, 1.0)])]);
        let e = engine();
        match e.instant(&st, "sum(", 0).await {
            Err(PromqlError::Parse(m)) => assert_eq!(m, "1:5: parse error: unclosed left parenthesis"),
            other => panic!("expected a parse error, got {other:?}"),
        }
        assert!(matches!(e.instant(&st, "xyz(a)", 0).await, Err(PromqlError::Parse(_))));
        let mut st2 = st.clone();
        st2.append(
            Labels::from_pairs([("__name__", "b"), ("job", "a"), ("x", "1")]),
            [Sample { t: 0, v: 1.0 }],
        );
        match e.instant(&st2, "a + on(job) b", 0).await {
            Err(PromqlError::Execution(m)) => assert!(m.contains("many-to-many matching not allowed"), "{m}"),
            other => panic!("expected many-to-many error, got {other:?}"),
        }
        match e.instant(&st2, "b + on(job) group_left a", 0).await {
            Ok(Value::Vector(v)) => assert_eq!(v.len(), 2),
            other => panic!("group_left should match, got {other:?}"),
        }
        let tiny = Engine::new(EngineOpts {
            max_samples: 1,
            ..EngineOpts::default()
        });
        assert!(matches!(
            tiny.instant(&st2, "b", 0).await,
            Err(PromqlError::TooManySamples)
        ));
        assert!(matches!(
            e.range(&st, "\"s\"", 0, 10, 1).await,
            Err(PromqlError::Execution(_))
        ));
    }

    #[tokio::test]
    async fn raw_samples_loaded_count_against_max_samples() {
        // 100 raw samples, but `count_over_time` outputs one point: only counting what is
        // loaded from storage can refuse this query.
        let pts: Vec<(i64, f64)> = (0..100).map(|i| (i * 1000, i as f64)).collect();
        let st = storage(&[("m", &pts)]);
        let q = "count_over_time(m[100s])";
        let opts = |max_samples| EngineOpts {
            max_samples,
            ..EngineOpts::default()
        };
        assert_eq!(
            instant_values(&Engine::new(opts(101)), &st, q, 99_000).await,
            vec![100.0]
        );
        assert!(matches!(
            Engine::new(opts(99)).instant(&st, q, 99_000).await,
            Err(PromqlError::TooManySamples)
        ));
        // Each selector loads its 100 samples (its lookback window); both share one budget.
        assert!(Engine::new(opts(210)).instant(&st, "m + m", 99_000).await.is_ok());
        assert!(matches!(
            Engine::new(opts(199)).instant(&st, "m + m", 99_000).await,
            Err(PromqlError::TooManySamples)
        ));
    }

    /// A storage that charges samples one series at a time and records how far it got.
    struct Streaming {
        series: usize,
        loaded: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl Queryable for Streaming {
        async fn select(&self, _: i64, _: i64, _: &[model::Matcher]) -> Result<Vec<model::Series>, StorageError> {
            unreachable!("the engine loads through select_limited")
        }
        async fn select_limited(
            &self,
            start_ms: i64,
            _: i64,
            _: &[model::Matcher],
            limit: &SampleLimit,
        ) -> Result<Vec<model::Series>, PromqlError> {
            let mut out = Vec::new();
            for i in 0..self.series {
                limit.add(10)?;
                self.loaded.fetch_add(1, Ordering::Relaxed);
                out.push(model::Series {
                    labels: Labels::from_pairs([("__name__", "m".to_string()), ("i", i.to_string())]),
                    samples: (0..10)
                        .map(|k| Sample {
                            t: start_ms + k,
                            v: 1.0,
                        })
                        .collect(),
                });
            }
            Ok(out)
        }
    }

    #[tokio::test]
    async fn storage_stops_loading_once_the_budget_is_spent() {
        let st = Streaming {
            series: 1000,
            loaded: Default::default(),
        };
        let e = Engine::new(EngineOpts {
            max_samples: 55,
            ..EngineOpts::default()
        });
        assert!(matches!(e.instant(&st, "m", 0).await, Err(PromqlError::TooManySamples)));
        assert_eq!(st.loaded.load(Ordering::Relaxed), 5, "loading must stop at the limit");
    }

    #[tokio::test]
    async fn timeout_is_an_error_and_only_ever_shortened() {
        let st = storage(&[("m", &[(0, 1.0)])]);
        let e = engine().with_timeout(Duration::ZERO);
        assert!(matches!(e.instant(&st, "m", 0).await, Err(PromqlError::Timeout)));
        assert!(matches!(
            e.range(&st, "m", 0, 60_000, 1000).await,
            Err(PromqlError::Timeout)
        ));
        let longer = engine().with_timeout(Duration::from_secs(3600));
        assert_eq!(longer.opts().timeout, EngineOpts::default().timeout);
    }

    #[tokio::test]
    async fn range_query_of_scalar_is_one_unlabelled_series() {
        let st = MemStorage::new();
        let Value::Matrix(m) = engine().range(&st, "time()", 0, 120_000, 60_000).await.unwrap() else {
            panic!("matrix expected")
        };
        assert_eq!(m.len(), 1);
        assert!(m[0].labels.is_empty());
        let v: Vec<f64> = m[0].samples.iter().map(|p| p.v).collect();
        assert_eq!(v, vec![0.0, 60.0, 120.0]);
    }
}
