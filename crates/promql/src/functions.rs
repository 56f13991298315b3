//! PromQL functions with Prometheus v2.53 semantics.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Timelike};
use model::{Labels, Sample, Series, METRIC_NAME};
use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr};
use regex::Regex;

use crate::aggregate::{asc_nan_last, desc_nan_last};
use crate::eval::{merge_same_labels, to_steps, Evaluator, Val, DUPLICATE_LABELSET};
use crate::plan::Range;
use crate::PromqlError;

/// Go's math.Max / math.Min: NaN wins, unlike f64::max.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Neumaier-compensated summation step, as Prometheus's kahanSumInc.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Prometheus's quantile over a set of values (linear interpolation between closest ranks).
pub(crate) fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // NaN sorts first, as in Prometheus's vectorByValueHeap.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// rate/increase/delta with Prometheus's extrapolation to the window boundaries.
pub(crate) fn extrapolated_rate(
    samples: &[Sample],
    range_start: i64,
    range_end: i64,
    range_ms: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let first = samples[0];
    let last = samples[samples.len() - 1];
    let mut result = last.v - first.v;
    if is_counter {
        let mut prev = first.v;
        for p in &samples[1..] {
            if p.v < prev {
                result += prev;
            }
            prev = p.v;
        }
    }
    let mut duration_to_start = (first.t - range_start) as f64 / 1000.0;
    let mut duration_to_end = (range_end - last.t) as f64 / 1000.0;
    let sampled_interval = (last.t - first.t) as f64 / 1000.0;
    let avg_between = sampled_interval / (samples.len() - 1) as f64;
    // Extrapolate to a boundary only if a sample is expected there; otherwise by half an interval.
    let threshold = avg_between * 1.1;
    if duration_to_start >= threshold {
        duration_to_start = avg_between / 2.0;
    }
    if is_counter && result > 0.0 && first.v >= 0.0 {
        // A counter cannot go below zero: don't extrapolate past the point where it would be 0.
        let duration_to_zero = sampled_interval * (first.v / result);
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    if duration_to_end >= threshold {
        duration_to_end = avg_between / 2.0;
    }
    let extrapolate_to = sampled_interval + duration_to_start + duration_to_end;
    let mut factor = extrapolate_to / sampled_interval;
    if is_rate {
        factor /= range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

fn instant_value(samples: &[Sample], is_rate: bool) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let last = samples[samples.len() - 1];
    let prev = samples[samples.len() - 2];
    let mut v = if is_rate && last.v < prev.v {
        last.v
    } else {
        last.v - prev.v
    };
    let dt = last.t - prev.t;
    if dt == 0 {
        return None;
    }
    if is_rate {
        v /= dt as f64 / 1000.0;
    }
    Some(v)
}

/// Least-squares fit of the samples; x is seconds relative to `intercept_time`.
pub(crate) fn linear_regression(samples: &[Sample], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut cx, mut sum_y, mut cy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut cxy, mut sum_x2, mut cx2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = samples[0].v;
    let mut const_y = true;
    for (i, p) in samples.iter().enumerate() {
        if const_y && i > 0 && p.v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (p.t - intercept_time) as f64 / 1e3;
        (sum_x, cx) = kahan_inc(x, sum_x, cx);
        (sum_y, cy) = kahan_inc(p.v, sum_y, cy);
        (sum_xy, cxy) = kahan_inc(x * p.v, sum_xy, cxy);
        (sum_x2, cx2) = kahan_inc(x * x, sum_x2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sum_x += cx;
    sum_y += cy;
    sum_xy += cxy;
    sum_x2 += cx2;
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

fn holt_winters(samples: &[Sample], sf: f64, tf: f64) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let trend = |i: usize, s0: f64, s1: f64, b: f64| if i == 0 { b } else { tf * (s1 - s0) + (1.0 - tf) * b };
    let (mut s0, mut s1) = (0.0, samples[0].v);
    let mut b = samples[1].v - samples[0].v;
    for (i, p) in samples.iter().enumerate().skip(1) {
        let x = sf * p.v;
        b = trend(i - 1, s0, s1, b);
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

fn over_time(name: &str, w: &[Sample], q: f64) -> Option<f64> {
    Some(match name {
        "avg_over_time" => {
            let (mut mean, mut count, mut c) = (0.0f64, 0.0f64, 0.0f64);
            for p in w {
                count += 1.0;
                if mean.is_infinite() {
                    if p.v.is_infinite() && (mean > 0.0) == (p.v > 0.0) {
                        continue;
                    }
                    if !p.v.is_infinite() && !p.v.is_nan() {
                        continue;
                    }
                }
                (mean, c) = kahan_inc(p.v / count - mean / count, mean, c);
            }
            if mean.is_infinite() {
                mean
            } else {
                mean + c
            }
        }
        "sum_over_time" => {
            let (mut sum, mut c) = (0.0, 0.0);
            for p in w {
                (sum, c) = kahan_inc(p.v, sum, c);
            }
            if sum.is_infinite() {
                sum
            } else {
                sum + c
            }
        }
        "count_over_time" => w.len() as f64,
        "min_over_time" => {
            let mut m = w[0].v;
            for p in w {
                if p.v < m || m.is_nan() {
                    m = p.v;
                }
            }
            m
        }
        "max_over_time" => {
            let mut m = w[0].v;
            for p in w {
                if p.v > m || m.is_nan() {
                    m = p.v;
                }
            }
            m
        }
        "stddev_over_time" | "stdvar_over_time" => {
            let (mut count, mut mean, mut cmean, mut aux, mut caux) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for p in w {
                count += 1.0;
                let delta = p.v - (mean + cmean);
                (mean, cmean) = kahan_inc(delta / count, mean, cmean);
                (aux, caux) = kahan_inc(delta * (p.v - (mean + cmean)), aux, caux);
            }
            let var = (aux + caux) / count;
            if name == "stddev_over_time" {
                var.sqrt()
            } else {
                var
            }
        }
        "quantile_over_time" => quantile(q, w.iter().map(|p| p.v).collect()),
        "mad_over_time" => {
            let median = quantile(0.5, w.iter().map(|p| p.v).collect());
            quantile(0.5, w.iter().map(|p| (p.v - median).abs()).collect())
        }
        "last_over_time" => w[w.len() - 1].v,
        "present_over_time" | "absent_over_time" => 1.0,
        "resets" => {
            let mut n = 0;
            let mut prev = w[0].v;
            for p in &w[1..] {
                if p.v < prev {
                    n += 1;
                }
                prev = p.v;
            }
            n as f64
        }
        "changes" => {
            let mut n = 0;
            let mut prev = w[0].v;
            for p in &w[1..] {
                if p.v != prev && !(p.v.is_nan() && prev.is_nan()) {
                    n += 1;
                }
                prev = p.v;
            }
            n as f64
        }
        _ => return None,
    })
}

/// The labels `absent()` reports: the selector's equality matchers (a label matched twice is dropped).
fn absent_labels(e: &Expr) -> Labels {
    let vs = match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::empty(),
    };
    let mut b = model::LabelsBuilder::default();
    let mut has = std::collections::HashSet::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.op, MatchOp::Equal) && !has.contains(&m.name) {
            b.set(m.name.clone(), m.value.clone());
            has.insert(m.name.clone());
        } else {
            b.del(&m.name);
        }
    }
    b.build()
}

fn unwrap_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_parens(&p.expr),
        _ => e,
    }
}

fn simple(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sqrt" => f64::sqrt,
        "sgn" => |v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        },
        "acos" => f64::acos,
        "acosh" => f64::acosh,
        "asin" => f64::asin,
        "asinh" => f64::asinh,
        "atan" => f64::atan,
        "atanh" => f64::atanh,
        "cos" => f64::cos,
        "cosh" => f64::cosh,
        "sin" => f64::sin,
        "sinh" => f64::sinh,
        "tan" => f64::tan,
        "tanh" => f64::tanh,
        "deg" => |v: f64| v * 180.0 / std::f64::consts::PI,
        "rad" => |v: f64| v * std::f64::consts::PI / 180.0,
        _ => return None,
    })
}

fn date_fn(name: &str, v: f64) -> f64 {
    let Some(t) = DateTime::from_timestamp(v as i64, 0) else {
        return f64::NAN;
    };
    match name {
        "day_of_month" => t.day() as f64,
        "day_of_week" => t.weekday().num_days_from_sunday() as f64,
        "day_of_year" => t.ordinal() as f64,
        "days_in_month" => {
            let (y, m) = (t.year(), t.month());
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let first_next = chrono::NaiveDate::from_ymd_opt(ny, nm, 1);
            let first = chrono::NaiveDate::from_ymd_opt(y, m, 1);
            match (first, first_next) {
                (Some(a), Some(b)) => (b - a).num_days() as f64,
                _ => f64::NAN,
            }
        }
        "hour" => t.hour() as f64,
        "minute" => t.minute() as f64,
        "month" => t.month() as f64,
        "year" => t.year() as f64,
        _ => f64::NAN,
    }
}

const DATE_FUNCTIONS: &[&str] = &[
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "hour",
    "minute",
    "month",
    "year",
];

/// Go's natural-sort comparison used by sort_by_label: digit runs compare numerically.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let na = a[si..i].trim_start_matches('0');
            let nb = b[sj..j].trim_start_matches('0');
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        } else {
            if ab[i] != bb[j] {
                return ab[i].cmp(&bb[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}

fn is_valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

impl Evaluator<'_> {
    // Each function's work is a method of its own: `eval_call` is on the stack once per
    // level of nested calls, so its frame must stay small (debug builds give every local
    // of a function its own slot).
    pub(crate) fn eval_call(&self, c: &Call, r: Range) -> Result<Val, PromqlError> {
        let name = c.func.name;
        let args: Vec<&Expr> = c.args.args.iter().map(|b| b.as_ref()).collect();
        let n = r.steps();
        match name {
            "rate" | "increase" | "delta" | "irate" | "idelta" | "deriv" | "resets" | "changes" | "avg_over_time"
            | "sum_over_time" | "count_over_time" | "min_over_time" | "max_over_time" | "stddev_over_time"
            | "stdvar_over_time" | "last_over_time" | "present_over_time" | "absent_over_time" | "mad_over_time" => {
                self.range_function(name, args[0], None, r)
            }
            "quantile_over_time" => {
                let q = self.eval_scalar_arg(args[0], r)?;
                self.range_function(name, args[1], Some((q, Vec::new())), r)
            }
            "predict_linear" => {
                let d = self.eval_scalar_arg(args[1], r)?;
                self.range_function(name, args[0], Some((d, Vec::new())), r)
            }
            "holt_winters" | "double_exponential_smoothing" => {
                let sf = self.eval_scalar_arg(args[1], r)?;
                let tf = self.eval_scalar_arg(args[2], r)?;
                self.range_function("holt_winters", args[0], Some((sf, tf)), r)
            }
            "time" => {
                self.reserve(n)?;
                Ok(Val::Scalar((0..n).map(|i| r.ts(i) as f64 / 1000.0).collect()))
            }
            "pi" => {
                self.reserve(n)?;
                Ok(Val::Scalar(vec![std::f64::consts::PI; n]))
            }
            "vector" => self.call_vector(&args, r),
            "scalar" => self.call_scalar(&args, r),
            "timestamp" => self.call_timestamp(&args, r),
            "absent" => self.call_absent(&args, r),
            "clamp" | "clamp_min" | "clamp_max" | "round" => self.call_clamp_or_round(name, &args, r),
            _ if DATE_FUNCTIONS.contains(&name) => self.call_date(name, &args, r),
            "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" => self.call_sort(name, &args, r),
            "label_replace" => self.call_label_replace(&args, r),
            "label_join" => self.call_label_join(&args, r),
            "histogram_quantile" => {
                let q = self.eval_scalar_arg(args[0], r)?;
                let m = self.eval_vector_arg(args[1], r)?;
                self.histogram_quantile(&q, m, r)
            }
            _ => self.call_simple(name, &args, r),
        }
    }

    fn call_vector(&self, args: &[&Expr], r: Range) -> Result<Val, PromqlError> {
        let n = r.steps();
        let s = self.eval_scalar_arg(args[0], r)?;
        self.reserve(n)?;
        let samples = s.iter().enumerate().map(|(i, &v)| Sample { t: r.ts(i), v }).collect();
        Ok(Val::Vector(vec![Series {
            labels: Labels::empty(),
            samples,
        }]))
    }

    fn call_scalar(&self, args: &[&Expr], r: Range) -> Result<Val, PromqlError> {
        let n = r.steps();
        let m = self.eval_vector_arg(args[0], r)?;
        self.reserve(n)?;
        let mut out = vec![f64::NAN; n];
        let mut count = vec![0u32; n];
        for s in &m {
            for p in &s.samples {
                let i = r.index(p.t);
                count[i] += 1;
                out[i] = p.v;
            }
        }
        for i in 0..n {
            if count[i] != 1 {
                out[i] = f64::NAN;
            }
        }
        Ok(Val::Scalar(out))
    }

    fn call_timestamp(&self, args: &[&Expr], r: Range) -> Result<Val, PromqlError> {
        let m = match unwrap_parens(args[0]) {
            Expr::VectorSelector(vs) => self.eval_vector_selector(vs, r, true)?,
            other => {
                // Points of computed vectors sit on the step, so their timestamp is the step's.
                let mut m = self.eval_vector_arg(other, r)?;
                for s in &mut m {
                    s.samples.iter_mut().for_each(|p| p.v = p.t as f64 / 1000.0);
                }
                m
            }
        };
        Ok(Val::Vector(self.map_values(m, r, true, |_, v| Some(v))?))
    }

    fn call_absent(&self, args: &[&Expr], r: Range) -> Result<Val, PromqlError> {
        let n = r.steps();
        let m = self.eval_vector_arg(args[0], r)?;
        self.reserve(n)?;
        let mut present = vec![false; n];
        for s in &m {
            for p in &s.samples {
                present[r.index(p.t)] = true;
            }
        }
        let samples: Vec<Sample> = (0..n)
            .filter(|&i| !present[i])
            .map(|i| Sample { t: r.ts(i), v: 1.0 })
            .collect();
        if samples.is_empty() {
            return Ok(Val::Vector(Vec::new()));
        }
        Ok(Val::Vector(vec![Series {
            labels: absent_labels(args[0]),
            samples,
        }]))
    }

    fn call_clamp_or_round(&self, name: &str, args: &[&Expr], r: Range) -> Result<Val, PromqlError> {
        let n = r.steps();
        let m = self.eval_vector_arg(args[0], r)?;
        let a = match args.get(1) {
            Some(e) => self.eval_scalar_arg(e, r)?,
            None => {
                self.reserve(n)?;
                vec![1.0; n]
            }
        };
        let b = match args.get(2) {
            Some(e) => Some(self.eval_scalar_arg(e, r)?),
            None => None,
        };
        let m = self.map_values(m, r, true, |i, v| match name {
            "clamp" => {
                let (lo, hi) = (a[i], b.as_ref().map(|b| b[i]).unwrap_or(f64::NAN));
                if hi < lo {
                    None
                } else {
                    Some(go_max(lo, go_min(hi, v)))
                }
            }
            "clamp_min" => Some(go_max(a[i], v)),
            "clamp_max" => Some(go_min(a[i], v)),
            _ => {
                let inv = 1.0 / a[i];
                Some((v * inv + 0.5).floor() / inv)
            }
        })?;
        Ok(Val::Vector(m))
    }

    fn call_date(&self, name: &str, args: &[&Expr], r: Range) -> Result<Val, PromqlError> {
        let n = r.steps();
        let m = match args.first() {
            Some(e) => self.eval_vector_arg(e, r)?,
            None => {
                self.reserve(n)?;
                vec![Series {
                    labels: Labels::empty(),
                    samples: (0..n)
                        .map(|i| Sample {
                            t: r.ts(i),
                            v: r.ts(i) as f64 / 1000.0,
                        })
                        .collect(),
                }]
            }
        };
        Ok(Val::Vector(self.map_values(m, r, true, |_, v| Some(date_fn(name, v)))?))
    }

    fn call_sort(&self, name: &str, args: &[&Expr], r: Range) -> Result<Val, PromqlError> {
        let m = self.eval_vector_arg(args[0], r)?;
        let label_names: Vec<String> = args[1..]
            .iter()
            .map(|e| self.eval_string_arg(e, r))
            .collect::<Result<_, _>>()?;
        Ok(Val::Vector(sort_instant(name, m, &label_names, r)))
    }

    fn call_label_replace(&self, args: &[&Expr], r: Range) -> Result<Val, PromqlError> {
        let m = self.eval_vector_arg(args[0], r)?;
        let dst = self.eval_string_arg(args[1], r)?;
        let repl = self.eval_string_arg(args[2], r)?;
        let src = self.eval_string_arg(args[3], r)?;
        let re_s = self.eval_string_arg(args[4], r)?;
        let re = Regex::new(&format!("^(?s:{re_s})$")).map_err(|e| {
            PromqlError::Execution(format!("invalid regular expression in label_replace(): {re_s}: {e}"))
        })?;
        if !is_valid_label_name(&dst) {
            return Err(PromqlError::Execution(format!(
                "invalid destination label name in label_replace(): {dst}"
            )));
        }
        let m = m
            .into_iter()
            .map(|mut s| {
                if let Some(caps) = re.captures(s.labels.get(&src)) {
                    let mut out = String::new();
                    caps.expand(&repl, &mut out);
                    let mut b = s.labels.to_builder();
                    b.set(dst.clone(), out);
                    s.labels = b.build();
                }
                s
            })
            .collect();
        Ok(Val::Vector(merge_same_labels(m)?))
    }

    fn call_label_join(&self, args: &[&Expr], r: Range) -> Result<Val, PromqlError> {
        let m = self.eval_vector_arg(args[0], r)?;
        let dst = self.eval_string_arg(args[1], r)?;
        let sep = self.eval_string_arg(args[2], r)?;
        let srcs: Vec<String> = args[3..]
            .iter()
            .map(|e| self.eval_string_arg(e, r))
            .collect::<Result<_, _>>()?;
        if !is_valid_label_name(&dst) {
            return Err(PromqlError::Execution(format!(
                "invalid destination label name in label_join(): {dst}"
            )));
        }
        for s in &srcs {
            if !is_valid_label_name(s) {
                return Err(PromqlError::Execution(format!(
                    "invalid source label name in label_join(): {s}"
                )));
            }
        }
        let m = m
            .into_iter()
            .map(|mut s| {
                let v: Vec<&str> = srcs.iter().map(|n| s.labels.get(n)).collect();
                let joined = v.join(&sep);
                let mut b = s.labels.to_builder();
                b.set(dst.clone(), joined);
                s.labels = b.build();
                s
            })
            .collect();
        Ok(Val::Vector(merge_same_labels(m)?))
    }

    fn call_simple(&self, name: &str, args: &[&Expr], r: Range) -> Result<Val, PromqlError> {
        if let Some(f) = simple(name) {
            let m = self.eval_vector_arg(args[0], r)?;
            return Ok(Val::Vector(self.map_values(m, r, true, |_, v| Some(f(v)))?));
        }
        Err(PromqlError::Execution(format!("function {name:?} is not supported")))
    }

    /// Series-at-a-time map over values; `f(step index, value)` returning None drops the point.
    fn map_values(
        &self,
        m: Vec<Series>,
        r: Range,
        drop_name: bool,
        mut f: impl FnMut(usize, f64) -> Option<f64>,
    ) -> Result<Vec<Series>, PromqlError> {
        let mut out = Vec::with_capacity(m.len());
        for mut s in m {
            if drop_name {
                s.labels = s.labels.without_metric_name();
            }
            let mut samples = Vec::with_capacity(s.samples.len());
            for p in &s.samples {
                if let Some(v) = f(r.index(p.t), p.v) {
                    samples.push(Sample { t: p.t, v });
                }
            }
            s.samples = samples;
            out.push(s);
        }
        merge_same_labels(out)
    }

    fn range_function(
        &self,
        name: &str,
        arg: &Expr,
        extra: Option<(Vec<f64>, Vec<f64>)>,
        r: Range,
    ) -> Result<Val, PromqlError> {
        let src = self.range_source(arg, r)?;
        let (p1, p2) = extra.unwrap_or_default();
        let range_ms = src.range;
        let out = self.for_each_window(&src, r, |i, w| {
            let t = r.ts(i);
            let reft = src.at.unwrap_or(t) - src.offset;
            match name {
                "rate" => extrapolated_rate(w, reft - range_ms, reft, range_ms, true, true),
                "increase" => extrapolated_rate(w, reft - range_ms, reft, range_ms, true, false),
                "delta" => extrapolated_rate(w, reft - range_ms, reft, range_ms, false, false),
                "irate" => instant_value(w, true),
                "idelta" => instant_value(w, false),
                "deriv" => {
                    if w.len() < 2 {
                        return None;
                    }
                    Some(linear_regression(w, w[0].t).0)
                }
                "predict_linear" => {
                    if w.len() < 2 {
                        return None;
                    }
                    let (slope, intercept) = linear_regression(w, t);
                    Some(slope * p1[i] + intercept)
                }
                "holt_winters" => holt_winters(w, p1[i], p2[i]),
                "quantile_over_time" => over_time(name, w, p1[i]),
                _ => over_time(name, w, f64::NAN),
            }
        })?;
        if name == "holt_winters" {
            for i in 0..r.steps() {
                let (sf, tf) = (p1[i], p2[i]);
                if sf <= 0.0 || sf >= 1.0 {
                    return Err(PromqlError::Execution(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
                    )));
                }
                if tf <= 0.0 || tf >= 1.0 {
                    return Err(PromqlError::Execution(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
                    )));
                }
            }
        }
        if name == "absent_over_time" {
            let n = r.steps();
            if out.iter().any(|(_, pts)| pts.len() == n) {
                return Ok(Val::Vector(Vec::new()));
            }
            self.reserve(n)?;
            let mut found = vec![false; n];
            for (_, pts) in &out {
                for p in pts {
                    found[r.index(p.t)] = true;
                }
            }
            let samples: Vec<Sample> = (0..n)
                .filter(|&i| !found[i])
                .map(|i| Sample { t: r.ts(i), v: 1.0 })
                .collect();
            if samples.is_empty() {
                return Ok(Val::Vector(Vec::new()));
            }
            return Ok(Val::Vector(vec![Series {
                labels: absent_labels(unwrap_parens(arg)),
                samples,
            }]));
        }
        let keep_name = name == "last_over_time";
        let mut m = Vec::with_capacity(out.len());
        let mut seen = std::collections::HashSet::new();
        for (si, samples) in out {
            let l = &src.series[si].0;
            let labels = if keep_name { l.clone() } else { l.without_metric_name() };
            if !seen.insert(labels.clone()) {
                return Err(PromqlError::Execution(DUPLICATE_LABELSET.into()));
            }
            m.push(Series { labels, samples });
        }
        Ok(Val::Vector(m))
    }

    fn histogram_quantile(&self, q: &[f64], m: Vec<Series>, r: Range) -> Result<Val, PromqlError> {
        let st = to_steps(m, r);
        // Group key: all labels but `le` (the metric name included); output drops both.
        // Each series' group and bucket bound are found once, not once per step.
        let mut group_of: HashMap<Labels, usize> = HashMap::new();
        let mut out: Vec<Series> = Vec::new();
        let mut bucket_of: Vec<Option<(usize, f64)>> = Vec::with_capacity(st.labels.len());
        for l in &st.labels {
            let Some(ub) = parse_go_float(l.get("le")) else {
                bucket_of.push(None);
                continue;
            };
            let mut b = l.to_builder();
            b.del("le");
            let key = b.build();
            let g = *group_of.entry(key).or_insert_with_key(|key| {
                out.push(Series {
                    labels: key.without_metric_name(),
                    samples: Vec::new(),
                });
                out.len() - 1
            });
            bucket_of.push(Some((g, ub)));
        }
        let mut buckets: Vec<Vec<(f64, f64)>> = vec![Vec::new(); out.len()];
        let mut touched: Vec<usize> = Vec::new();
        for (si, vec) in st.steps.iter().enumerate() {
            self.check_deadline()?;
            for &(i, v) in vec {
                let Some((g, ub)) = bucket_of[i as usize] else { continue };
                if buckets[g].is_empty() {
                    touched.push(g);
                }
                buckets[g].push((ub, v));
            }
            let t = r.ts(si);
            for &g in &touched {
                let v = bucket_quantile(q[si], std::mem::take(&mut buckets[g]));
                out[g].samples.push(Sample { t, v });
            }
            touched.clear();
        }
        // Groups whose label sets differ only by the metric name collide once it is dropped.
        Ok(Val::Vector(merge_same_labels(out)?))
    }
}

/// Go's strconv.ParseFloat for label values such as `le="+Inf"` or `le="0.5"`.
pub(crate) fn parse_go_float(s: &str) -> Option<f64> {
    let t = s.trim_start_matches(['+', '-']);
    let lower = t.to_ascii_lowercase();
    if lower == "inf" || lower == "infinity" || lower == "nan" {
        return s.parse::<f64>().ok();
    }
    if t.is_empty() || !t.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Prometheus's `almostEqual`: relative comparison that treats values near 0 sensibly.
pub(crate) fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    let min_normal = f64::from_bits(0x0010000000000000);
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < min_normal {
        return diff < eps * min_normal;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

/// Quantile of classic `le` buckets (upper bound, cumulative count), as Prometheus's bucketQuantile.
pub(crate) fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Coalesce buckets with the same upper bound.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for (ub, c) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    let mut buckets = merged;
    // Force monotonic counts and ignore tiny floating-point deltas.
    let mut prev = buckets[0].1;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.1;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, 1e-12) || curr < prev {
            b.1 = prev;
            continue;
        }
        prev = curr;
    }
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let n = buckets.len() - 1;
    let b = buckets[..n].partition_point(|x| x.1 < rank);
    if b == n {
        return buckets[n - 1].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let mut start = 0.0;
    let end = buckets[b].0;
    let mut count = buckets[b].1;
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// The sort functions only order instant results; a range result is sorted by labels anyway.
fn sort_instant(name: &str, mut m: Vec<Series>, label_names: &[String], r: Range) -> Vec<Series> {
    if r.steps() != 1 {
        return m;
    }
    let val = |s: &Series| s.samples.first().map(|p| p.v).unwrap_or(f64::NAN);
    match name {
        "sort" => m.sort_by(|a, b| asc_nan_last(val(a), val(b))),
        "sort_desc" => m.sort_by(|a, b| desc_nan_last(val(a), val(b))),
        _ => {
            // Prometheus first sorts by value (ascending, or descending for _desc; NaN last),
            // then stably by the given labels in natural order.
            let desc = name == "sort_by_label_desc";
            if desc {
                m.sort_by(|a, b| desc_nan_last(val(a), val(b)));
            } else {
                m.sort_by(|a, b| asc_nan_last(val(a), val(b)));
            }
            m.sort_by(|a, b| {
                for l in label_names {
                    let o = natural_cmp(a.labels.get(l), b.labels.get(l));
                    if o != std::cmp::Ordering::Equal {
                        return if desc { o.reverse() } else { o };
                    }
                }
                std::cmp::Ordering::Equal
            });
        }
    }
    m
}
