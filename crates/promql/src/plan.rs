//! Phase 2 of a query: find every selector in the AST and the time range it needs,
//! so that each one is fetched from storage exactly once.

use std::time::{Duration, SystemTime};

use promql_parser::label::MatchOp;
use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};

use crate::PromqlError;

/// The evaluation interval of one (sub)expression: steps `start, start+step, …, <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl Range {
    /// How many steps; computed wide, since `end - start` can pass `i64::MAX`.
    pub fn steps(&self) -> usize {
        if self.end < self.start {
            0
        } else {
            let n = (self.end as i128 - self.start as i128) / self.step as i128 + 1;
            usize::try_from(n).unwrap_or(usize::MAX)
        }
    }
    /// The time of step `i` (< `steps()`). The result lies in [start, end], so modular
    /// arithmetic is exact even where `i * step` alone would overflow (start far below 0).
    pub fn ts(&self, i: usize) -> i64 {
        self.start.wrapping_add((i as i64).wrapping_mul(self.step))
    }
    /// Index of the step at exactly `t` (in [start, end]); `t - start` fits a u64.
    pub fn index(&self, t: i64) -> usize {
        (t.wrapping_sub(self.start) as u64 / self.step as u64) as usize
    }
}

/// Query-wide constants the evaluator and planner share.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueryTimes {
    pub start: i64,
    pub end: i64,
    pub lookback: i64,
    pub default_step: i64,
    /// `-querier.max-samples`: a subquery with more steps is refused before it is evaluated.
    pub max_samples: usize,
}

/// Milliseconds of a duration; `[100000000y]` saturates instead of wrapping.
///
/// All time arithmetic below saturates too: a window reaching past the representable
/// times covers them all, which is what such a query asks for.
pub(crate) fn duration_ms(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
    }
}

pub(crate) fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => duration_ms(&d),
        Err(e) => -duration_ms(&e.duration()),
    }
}

pub(crate) fn ms_to_system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// The timestamp an `@` modifier pins evaluation to, if any.
pub(crate) fn at_ms(at: &Option<AtModifier>, q: &QueryTimes) -> Option<i64> {
    match at {
        None => None,
        Some(AtModifier::Start) => Some(q.start),
        Some(AtModifier::End) => Some(q.end),
        Some(AtModifier::At(t)) => Some(system_time_ms(t)),
    }
}

/// The evaluation range of a subquery's inner expression, given the outer range.
/// Prometheus aligns the inner steps to multiples of the subquery step (absolute time),
/// starting with the first aligned timestamp inside the window.
pub(crate) fn subquery_range(outer: Range, range_ms: i64, offset: i64, at: Option<i64>, step: i64) -> Range {
    let (start, end) = match at {
        Some(t) => (t, t),
        None => (outer.start, outer.end),
    };
    let lowest = start.saturating_sub(offset).saturating_sub(range_ms);
    // Go's integer division truncates towards zero, as Rust's does.
    let mut s = step * (lowest / step);
    if s < lowest {
        s = s.saturating_add(step);
    }
    Range {
        start: s,
        end: end.saturating_sub(offset),
        step,
    }
}

/// One selector to fetch: its identity (node address), matchers and time range.
#[derive(Debug)]
pub(crate) struct Fetch {
    pub key: usize,
    pub matchers: Vec<model::Matcher>,
    pub min_t: i64,
    pub max_t: i64,
}

pub(crate) fn selector_key(vs: &VectorSelector) -> usize {
    vs as *const VectorSelector as usize
}

/// The storage matchers of a selector: its metric name (if written bare) plus its matchers.
pub(crate) fn selector_matchers(vs: &VectorSelector) -> Result<Vec<model::Matcher>, PromqlError> {
    let mut out = Vec::with_capacity(vs.matchers.matchers.len() + 1);
    if let Some(name) = &vs.name {
        out.push(model::Matcher::equal(model::METRIC_NAME, name.clone()));
    }
    for m in &vs.matchers.matchers {
        let kind = match m.op {
            MatchOp::Equal => model::MatchType::Equal,
            MatchOp::NotEqual => model::MatchType::NotEqual,
            MatchOp::Re(_) => model::MatchType::RegexMatch,
            MatchOp::NotRe(_) => model::MatchType::RegexNoMatch,
        };
        out.push(
            model::Matcher::new(kind, m.name.clone(), m.value.clone())
                .map_err(|e| PromqlError::Parse(e.to_string()))?,
        );
    }
    Ok(out)
}

/// Walks `expr` evaluated over `range` and records what each selector needs.
pub(crate) fn collect(expr: &Expr, range: Range, q: &QueryTimes, out: &mut Vec<Fetch>) -> Result<(), PromqlError> {
    match expr {
        Expr::VectorSelector(vs) => add(vs, range, q.lookback, q, out)?,
        Expr::MatrixSelector(ms) => add(&ms.vs, range, duration_ms(&ms.range), q, out)?,
        Expr::Subquery(sq) => {
            let step = sq
                .step
                .as_ref()
                .map(duration_ms)
                .filter(|s| *s > 0)
                .unwrap_or(q.default_step);
            let inner = subquery_range(
                range,
                duration_ms(&sq.range),
                offset_ms(&sq.offset),
                at_ms(&sq.at, q),
                step,
            );
            // The inner expression holds at least one value per step: refuse before
            // fetching anything (the evaluator checks again against what is left).
            if inner.steps() > q.max_samples {
                return Err(PromqlError::TooManySamplesInSubquery);
            }
            collect(&sq.expr, inner, q, out)?;
        }
        Expr::Aggregate(a) => {
            collect(&a.expr, range, q, out)?;
            if let Some(p) = &a.param {
                collect(p, range, q, out)?;
            }
        }
        Expr::Unary(u) => collect(&u.expr, range, q, out)?,
        Expr::Binary(b) => {
            collect(&b.lhs, range, q, out)?;
            collect(&b.rhs, range, q, out)?;
        }
        Expr::Paren(p) => collect(&p.expr, range, q, out)?,
        Expr::Call(c) => {
            for a in &c.args.args {
                collect(a, range, q, out)?;
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
    Ok(())
}

fn add(
    vs: &VectorSelector,
    range: Range,
    window: i64,
    q: &QueryTimes,
    out: &mut Vec<Fetch>,
) -> Result<(), PromqlError> {
    let off = offset_ms(&vs.offset);
    let (s, e) = match at_ms(&vs.at, q) {
        Some(t) => (t, t),
        None => (range.start, range.end),
    };
    let key = selector_key(vs);
    let (min_t, max_t) = (s.saturating_sub(off).saturating_sub(window), e.saturating_sub(off));
    if let Some(f) = out.iter_mut().find(|f| f.key == key) {
        f.min_t = f.min_t.min(min_t);
        f.max_t = f.max_t.max(max_t);
    } else {
        out.push(Fetch {
            key,
            matchers: selector_matchers(vs)?,
            min_t,
            max_t,
        });
    }
    Ok(())
}
