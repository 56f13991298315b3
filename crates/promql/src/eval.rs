//! Phase 4 of a query: synchronous evaluation over the fetched, in-memory series.
//!
//! Every expression is evaluated over all steps of its [`Range`] at once. Selectors and
//! range-vector functions run series-at-a-time (one pass over each series' samples with
//! cursors); operators and aggregations run step-at-a-time, as Prometheus does.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::time::Instant;

use model::{Labels, Sample, Series};
use promql_parser::parser::{Expr, MatrixSelector, VectorSelector};

use crate::plan::{at_ms, duration_ms, offset_ms, selector_key, subquery_range, QueryTimes, Range};
use crate::{Cancellation, PromqlError};

/// Steps between two looks at the deadline inside one series' loop over the steps.
const CHECK_EVERY_STEPS: usize = 4096;
/// Window samples handed to range functions between two looks at the deadline: a
/// window's cost grows with its samples (`quantile_over_time` sorts them), so steps
/// alone are no measure of time.
const CHECK_EVERY_WINDOW_SAMPLES: usize = 1 << 16;

/// When an evaluation must stop: its deadline (`-querier.timeout` or the request's
/// `timeout`), or its caller giving up.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stop {
    pub deadline: Option<Instant>,
    pub cancel: Option<Cancellation>,
}

impl Stop {
    pub fn check(&self) -> Result<(), PromqlError> {
        if self.cancel.as_ref().is_some_and(Cancellation::is_canceled) {
            return Err(PromqlError::Canceled);
        }
        if self.deadline.is_some_and(|d| Instant::now() > d) {
            return Err(PromqlError::Timeout);
        }
        Ok(())
    }
}

/// The value of an expression over all steps of its range.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    /// One value per step.
    Scalar(Vec<f64>),
    String(String),
    /// Series whose points sit exactly on step timestamps.
    Vector(Vec<Series>),
    /// Raw samples of a range selector or subquery (only at the top of an instant query).
    Matrix(Vec<Series>),
}

impl Val {
    fn points(&self) -> usize {
        match self {
            Val::Scalar(v) => v.len(),
            Val::String(_) => 0,
            Val::Vector(m) | Val::Matrix(m) => m.iter().map(|s| s.samples.len()).sum(),
        }
    }
}

/// A range-vector argument: series with stale markers removed, plus the window geometry.
pub(crate) struct RangeSource<'a> {
    pub series: Vec<(Labels, Cow<'a, [Sample]>)>,
    pub range: i64,
    pub offset: i64,
    pub at: Option<i64>,
}

/// A step-major view of an instant vector: series labels once, then per step (series index, value).
pub(crate) struct Steps {
    pub labels: Vec<Labels>,
    pub steps: Vec<Vec<(u32, f64)>>,
}

pub(crate) fn to_steps(m: Vec<Series>, r: Range) -> Steps {
    let mut steps = vec![Vec::new(); r.steps()];
    let mut labels = Vec::with_capacity(m.len());
    for (i, s) in m.into_iter().enumerate() {
        for p in &s.samples {
            steps[r.index(p.t)].push((i as u32, p.v));
        }
        labels.push(s.labels);
    }
    Steps { labels, steps }
}

pub(crate) const DUPLICATE_LABELSET: &str = "vector cannot contain metrics with the same labelset";

/// Reassembles per-step output vectors into series; a label set twice in one step is an error.
pub(crate) fn from_steps(steps: Vec<Vec<(Labels, f64)>>, r: Range) -> Result<Vec<Series>, PromqlError> {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut out: Vec<Series> = Vec::new();
    for (i, vec) in steps.into_iter().enumerate() {
        let t = r.ts(i);
        for (l, v) in vec {
            match index.get(&l) {
                Some(&k) => {
                    let s = &mut out[k];
                    if s.samples.last().is_some_and(|p| p.t == t) {
                        return Err(PromqlError::Execution(DUPLICATE_LABELSET.into()));
                    }
                    s.samples.push(Sample { t, v });
                }
                None => {
                    index.insert(l.clone(), out.len());
                    out.push(Series {
                        labels: l,
                        samples: vec![Sample { t, v }],
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Merges series that ended up with the same labels (after dropping `__name__`, say);
/// that is only an error where both have a point at the same step.
pub(crate) fn merge_same_labels(m: Vec<Series>) -> Result<Vec<Series>, PromqlError> {
    let mut index: HashMap<Labels, usize> = HashMap::with_capacity(m.len());
    let mut out: Vec<Series> = Vec::with_capacity(m.len());
    for s in m {
        if s.samples.is_empty() {
            continue;
        }
        match index.get(&s.labels) {
            Some(&k) => {
                let target = &mut out[k];
                target.samples.extend(s.samples);
                target.samples.sort_by_key(|p| p.t);
                if target.samples.windows(2).any(|w| w[0].t == w[1].t) {
                    return Err(PromqlError::Execution(DUPLICATE_LABELSET.into()));
                }
            }
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
            }
        }
    }
    Ok(out)
}

pub(crate) struct Evaluator<'a> {
    pub q: QueryTimes,
    pub data: &'a HashMap<usize, Vec<Series>>,
    pub max_samples: usize,
    pub current: Cell<usize>,
    pub stop: Stop,
}

impl<'a> Evaluator<'a> {
    /// Fails once the query is past its deadline or canceled.
    pub fn check_deadline(&self) -> Result<(), PromqlError> {
        self.stop.check()
    }

    /// Samples that may still be charged.
    pub fn room(&self) -> usize {
        self.max_samples.saturating_sub(self.current.get())
    }

    /// Fails unless `n` more samples fit the budget; called before allocating `n` of them
    /// (they are charged when the expression's value is complete).
    pub fn reserve(&self, n: usize) -> Result<(), PromqlError> {
        if n > self.room() {
            return Err(PromqlError::TooManySamples);
        }
        Ok(())
    }

    /// Accounts `n` more samples held in memory.
    pub fn add_samples(&self, n: usize) -> Result<(), PromqlError> {
        let c = self.current.get().saturating_add(n);
        if c > self.max_samples {
            return Err(PromqlError::TooManySamples);
        }
        self.current.set(c);
        Ok(())
    }

    /// Evaluates `expr` over `r`. Children's samples are released once the parent has its
    /// output, so the budget approximates the peak number of samples held at once.
    pub fn eval(&self, expr: &Expr, r: Range) -> Result<Val, PromqlError> {
        self.check_deadline()?;
        let before = self.current.get();
        let v = self.eval_inner(expr, r)?;
        self.current.set(before);
        self.add_samples(v.points())?;
        Ok(v)
    }

    fn eval_inner(&self, expr: &Expr, r: Range) -> Result<Val, PromqlError> {
        match expr {
            Expr::NumberLiteral(n) => {
                self.reserve(r.steps())?;
                Ok(Val::Scalar(vec![n.val; r.steps()]))
            }
            Expr::StringLiteral(s) => Ok(Val::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, r),
            Expr::Unary(u) => match self.eval(&u.expr, r)? {
                Val::Scalar(v) => Ok(Val::Scalar(v.into_iter().map(|x| -x).collect())),
                Val::Vector(m) => {
                    let m = m
                        .into_iter()
                        .map(|mut s| {
                            s.labels = s.labels.without_metric_name();
                            s.samples.iter_mut().for_each(|p| p.v = -p.v);
                            s
                        })
                        .collect();
                    Ok(Val::Vector(merge_same_labels(m)?))
                }
                _ => Err(PromqlError::Execution(
                    "unary minus applies to scalars and vectors only".into(),
                )),
            },
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.eval_vector_selector(vs, r, false)?)),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                let src = self.range_source(expr, r)?;
                Ok(Val::Matrix(self.raw_windows(&src, r)))
            }
            Expr::Binary(b) => self.eval_binary(b, r),
            Expr::Aggregate(a) => self.eval_aggregate(a, r),
            Expr::Call(c) => self.eval_call(c, r),
            Expr::Extension(_) => Err(PromqlError::Execution("extension expressions are not supported".into())),
        }
    }

    pub fn series_for(&self, vs: &VectorSelector) -> &'a [Series] {
        self.data.get(&selector_key(vs)).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// An instant-vector selector: at each step, the newest sample in [ref - lookback, ref] (v2 closed window),
    /// unless that sample is a staleness marker. `want_timestamp` yields the sample's time
    /// in seconds instead of its value (for `timestamp()`).
    pub fn eval_vector_selector(
        &self,
        vs: &VectorSelector,
        r: Range,
        want_timestamp: bool,
    ) -> Result<Vec<Series>, PromqlError> {
        let off = offset_ms(&vs.offset);
        let at = at_ms(&vs.at, &self.q);
        let n = r.steps();
        let mut out = Vec::new();
        for s in self.series_for(vs) {
            self.check_deadline()?;
            // A series' points are charged when it is complete; until then they may not
            // outgrow what is left of the budget.
            let room = self.room();
            let mut pts = Vec::new();
            let mut j = 0;
            for i in 0..n {
                if i % CHECK_EVERY_STEPS == CHECK_EVERY_STEPS - 1 {
                    self.check_deadline()?;
                }
                let t = r.ts(i);
                let reft = at.unwrap_or(t).saturating_sub(off);
                while j < s.samples.len() && s.samples[j].t <= reft {
                    j += 1;
                }
                if j == 0 {
                    continue;
                }
                let smp = s.samples[j - 1];
                if smp.t < reft.saturating_sub(self.q.lookback) || model::is_stale_nan(smp.v) {
                    continue;
                }
                let v = if want_timestamp { smp.t as f64 / 1000.0 } else { smp.v };
                if pts.len() == room {
                    return Err(PromqlError::TooManySamples);
                }
                pts.push(Sample { t, v });
            }
            if !pts.is_empty() {
                self.add_samples(pts.len())?;
                out.push(Series {
                    labels: s.labels.clone(),
                    samples: pts,
                });
            }
        }
        Ok(out)
    }

    /// The data behind a range-vector argument (a matrix selector or subquery, maybe in parens).
    pub fn range_source(&self, expr: &Expr, r: Range) -> Result<RangeSource<'a>, PromqlError> {
        match expr {
            Expr::Paren(p) => self.range_source(&p.expr, r),
            Expr::MatrixSelector(MatrixSelector { vs, range }) => {
                let series = self
                    .series_for(vs)
                    .iter()
                    .map(|s| {
                        let samples = if s.samples.iter().any(|p| model::is_stale_nan(p.v)) {
                            Cow::Owned(
                                s.samples
                                    .iter()
                                    .copied()
                                    .filter(|p| !model::is_stale_nan(p.v))
                                    .collect(),
                            )
                        } else {
                            Cow::Borrowed(s.samples.as_slice())
                        };
                        (s.labels.clone(), samples)
                    })
                    .collect();
                Ok(RangeSource {
                    series,
                    range: duration_ms(range),
                    offset: offset_ms(&vs.offset),
                    at: at_ms(&vs.at, &self.q),
                })
            }
            Expr::Subquery(sq) => {
                let step = sq
                    .step
                    .as_ref()
                    .map(duration_ms)
                    .filter(|s| *s > 0)
                    .unwrap_or(self.q.default_step);
                let offset = offset_ms(&sq.offset);
                let at = at_ms(&sq.at, &self.q);
                let range = duration_ms(&sq.range);
                let inner = subquery_range(r, range, offset, at, step);
                // Charged before the inner expression sizes anything by its steps
                // (Prometheus's "…in subquery"); the planner checked against the whole budget.
                if inner.steps() > self.room() {
                    return Err(PromqlError::TooManySamplesInSubquery);
                }
                let series = match self.eval(&sq.expr, inner)? {
                    Val::Vector(m) => m.into_iter().map(|s| (s.labels, Cow::Owned(s.samples))).collect(),
                    Val::Scalar(v) => {
                        let pts: Vec<Sample> = v
                            .iter()
                            .enumerate()
                            .map(|(i, &v)| Sample { t: inner.ts(i), v })
                            .collect();
                        vec![(Labels::empty(), Cow::Owned(pts))]
                    }
                    _ => {
                        return Err(PromqlError::Execution(
                            "subquery is only allowed on instant vectors".into(),
                        ))
                    }
                };
                Ok(RangeSource {
                    series,
                    range,
                    offset,
                    at,
                })
            }
            _ => Err(PromqlError::Execution(format!("expected a range vector, got {expr}"))),
        }
    }

    /// Calls `f(step index, window)` for every series and every step whose window
    /// [ref - range, ref] (closed, as in Prometheus v2) is non-empty; collects `Some` results as points at the step.
    pub fn for_each_window(
        &self,
        src: &RangeSource<'_>,
        r: Range,
        mut f: impl FnMut(usize, &[Sample]) -> Option<f64>,
    ) -> Result<Vec<(usize, Vec<Sample>)>, PromqlError> {
        let n = r.steps();
        let mut out = Vec::new();
        // The output points are new memory: charged per series here (the caller's `eval`
        // charges the finished value in their place), and no series may outgrow what is
        // left of the budget before it is charged.
        for (si, (_, samples)) in src.series.iter().enumerate() {
            self.check_deadline()?;
            let room = self.room();
            let (mut lo, mut hi) = (0usize, 0usize);
            let mut pts = Vec::new();
            let mut work = 0usize;
            for i in 0..n {
                work += 1;
                if work >= CHECK_EVERY_WINDOW_SAMPLES {
                    self.check_deadline()?;
                    work = 0;
                }
                let t = r.ts(i);
                let reft = src.at.unwrap_or(t).saturating_sub(src.offset);
                let mint = reft.saturating_sub(src.range);
                while hi < samples.len() && samples[hi].t <= reft {
                    hi += 1;
                }
                while lo < hi && samples[lo].t < mint {
                    lo += 1;
                }
                if lo >= hi {
                    continue;
                }
                work += hi - lo;
                // The window is a view of samples already charged when loaded (or when the
                // subquery producing them was evaluated): no new memory to account.
                if let Some(v) = f(i, &samples[lo..hi]) {
                    if pts.len() == room {
                        return Err(PromqlError::TooManySamples);
                    }
                    pts.push(Sample { t, v });
                }
            }
            if !pts.is_empty() {
                self.add_samples(pts.len())?;
                out.push((si, pts));
            }
        }
        Ok(out)
    }

    /// The raw samples of each window, for a range vector at the top of an instant query.
    fn raw_windows(&self, src: &RangeSource<'_>, r: Range) -> Vec<Series> {
        let t = r.ts(0);
        let reft = src.at.unwrap_or(t).saturating_sub(src.offset);
        let mint = reft.saturating_sub(src.range);
        src.series
            .iter()
            .filter_map(|(l, s)| {
                let pts: Vec<Sample> = s.iter().copied().filter(|p| p.t >= mint && p.t <= reft).collect();
                (!pts.is_empty()).then(|| Series {
                    labels: l.clone(),
                    samples: pts,
                })
            })
            .collect()
    }

    /// Evaluates an argument that must be a scalar, one value per step.
    pub fn eval_scalar_arg(&self, e: &Expr, r: Range) -> Result<Vec<f64>, PromqlError> {
        match self.eval(e, r)? {
            Val::Scalar(v) => Ok(v),
            _ => Err(PromqlError::Execution(format!("expected a scalar, got {e}"))),
        }
    }

    pub fn eval_vector_arg(&self, e: &Expr, r: Range) -> Result<Vec<Series>, PromqlError> {
        match self.eval(e, r)? {
            Val::Vector(m) => Ok(m),
            _ => Err(PromqlError::Execution(format!("expected an instant vector, got {e}"))),
        }
    }

    pub fn eval_string_arg(&self, e: &Expr, r: Range) -> Result<String, PromqlError> {
        match self.eval(e, r)? {
            Val::String(s) => Ok(s),
            _ => Err(PromqlError::Execution(format!("expected a string, got {e}"))),
        }
    }
}
