//! A runner for Prometheus's `promqltest` conformance files (v2.53 format): `load`, `clear`,
//! `eval instant`, `eval range`, `eval_fail`, `eval_ordered`, with the range-mode and
//! `@`-modifier re-checks Prometheus's own runner performs.

use std::time::Duration;

use async_trait::async_trait;
use model::{Labels, Sample, Series};
use promql_parser::parser::{AtModifier, Expr};

use crate::plan::ms_to_system_time;
use crate::{Engine, EngineOpts, Queryable, StorageError, Value};

/// An in-memory storage: series sorted by labels, samples in time order.
#[derive(Debug, Default, Clone)]
pub struct MemStorage {
    series: Vec<Series>,
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends samples to the series with these labels (created if new).
    pub fn append(&mut self, labels: Labels, samples: impl IntoIterator<Item = Sample>) {
        let i = match self.series.binary_search_by(|s| s.labels.cmp(&labels)) {
            Ok(i) => i,
            Err(i) => {
                self.series.insert(
                    i,
                    Series {
                        labels,
                        samples: Vec::new(),
                    },
                );
                i
            }
        };
        let s = &mut self.series[i];
        s.samples.extend(samples);
        s.samples.sort_by_key(|p| p.t);
    }

    pub fn clear(&mut self) {
        self.series.clear();
    }
}

#[async_trait]
impl Queryable for MemStorage {
    async fn select(
        &self,
        start_ms: i64,
        end_ms: i64,
        matchers: &[model::Matcher],
    ) -> Result<Vec<Series>, StorageError> {
        Ok(self
            .series
            .iter()
            .filter(|s| model::matches_all(matchers, &s.labels))
            .filter_map(|s| {
                let samples: Vec<Sample> = s
                    .samples
                    .iter()
                    .copied()
                    .filter(|p| p.t >= start_ms && p.t <= end_ms)
                    .collect();
                (!samples.is_empty()).then(|| Series {
                    labels: s.labels.clone(),
                    samples,
                })
            })
            .collect())
    }
}

/// The engine settings the test files assume.
pub fn test_engine() -> Engine {
    Engine::new(EngineOpts {
        lookback_delta: Duration::from_secs(300),
        max_samples: 10_000,
        timeout: Duration::from_secs(100),
        default_eval_interval: Duration::from_secs(60),
    })
}

/// Outcome of one file.
#[derive(Debug, Default, Clone)]
pub struct FileResult {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// One message per failed eval: `file:line: what went wrong`.
    pub failures: Vec<String>,
}

/// Parses a test-file number: decimals, exponents, hex integers, Inf/NaN in any case.
pub fn parse_number(s: &str) -> Option<f64> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        let v = i64::from_str_radix(hex, 16).ok()? as f64;
        return Some(if neg { -v } else { v });
    }
    let lower = body.to_ascii_lowercase();
    let v = match lower.as_str() {
        "inf" | "infinity" => f64::INFINITY,
        "nan" => f64::NAN,
        _ => {
            if !body
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
            {
                return None;
            }
            body.parse::<f64>().ok()?
        }
    };
    Some(if neg { -v } else { v })
}

/// One expanded value of a series description: `None` is `_` (no sample).
fn expand_values(items: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for tok in items.split_whitespace() {
        if tok == "_" {
            out.push(None);
            continue;
        }
        if tok.eq_ignore_ascii_case("stale") {
            out.push(Some(model::stale_nan()));
            continue;
        }
        // `0x10` is "0 repeated", not hex 16: a repetition suffix of decimal digits wins.
        let is_repetition = tok
            .rfind('x')
            .is_some_and(|x| x > 0 && x + 1 < tok.len() && tok[x + 1..].bytes().all(|b| b.is_ascii_digit()));
        if !is_repetition {
            if let Some(v) = parse_number(tok) {
                out.push(Some(v));
                continue;
            }
        }
        let Some(xpos) = tok.rfind('x') else {
            return Err(format!("bad value {tok:?}"));
        };
        let times: usize = tok[xpos + 1..]
            .parse()
            .map_err(|_| format!("bad repeat count in {tok:?}"))?;
        let base = &tok[..xpos];
        if base == "_" {
            out.extend(std::iter::repeat_n(None, times));
            continue;
        }
        if let Some(v) = parse_number(base) {
            out.extend(std::iter::repeat_n(Some(v), times + 1));
            continue;
        }
        let bytes = base.as_bytes();
        let mut done = false;
        for i in 1..bytes.len() {
            if (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E') {
                let (Some(a), Some(b)) = (parse_number(&base[..i]), parse_number(&base[i + 1..])) else {
                    continue;
                };
                let b = if bytes[i] == b'-' { -b } else { b };
                let mut v = a;
                for _ in 0..=times {
                    out.push(Some(v));
                    v += b;
                }
                done = true;
                break;
            }
        }
        if !done {
            return Err(format!("bad value {tok:?}"));
        }
    }
    Ok(out)
}

/// Parses `name{a="b", …}` at the start of `s`; returns the labels and the rest of the line.
pub fn parse_series_labels(s: &str) -> Result<(Labels, &str), String> {
    let s = s.trim_start();
    let name_end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    let mut pairs: Vec<(String, String)> = Vec::new();
    if name_end > 0 {
        pairs.push((model::METRIC_NAME.to_string(), s[..name_end].to_string()));
    }
    let mut rest = &s[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut it = body.char_indices().peekable();
        let consumed;
        loop {
            while it.peek().is_some_and(|(_, c)| c.is_whitespace() || *c == ',') {
                it.next();
            }
            let Some(&(i, c)) = it.peek() else {
                return Err(format!("unterminated label set in {s:?}"));
            };
            if c == '}' {
                consumed = i + 1;
                break;
            }
            let mut name = String::new();
            while let Some(&(_, c)) = it.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    it.next();
                } else {
                    break;
                }
            }
            while it.peek().is_some_and(|(_, c)| c.is_whitespace()) {
                it.next();
            }
            if it.next().map(|(_, c)| c) != Some('=') {
                return Err(format!("expected '=' after label {name:?} in {s:?}"));
            }
            while it.peek().is_some_and(|(_, c)| c.is_whitespace()) {
                it.next();
            }
            let quote = match it.next() {
                Some((_, q @ ('"' | '\''))) => q,
                _ => return Err(format!("expected a quoted value for label {name:?} in {s:?}")),
            };
            let mut value = String::new();
            loop {
                match it.next() {
                    None => return Err(format!("unterminated string in {s:?}")),
                    Some((_, c)) if c == quote => break,
                    Some((_, '\\')) => match it.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some('t') => value.push('\t'),
                        Some('r') => value.push('\r'),
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('\'') => value.push('\''),
                        Some(o) => {
                            value.push('\\');
                            value.push(o);
                        }
                        None => return Err(format!("unterminated string in {s:?}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            }
            pairs.push((name, value));
        }
        rest = &body[consumed..];
    } else if name_end == 0 {
        return Err(format!("expected a series description, got {s:?}"));
    }
    Ok((Labels::from_pairs(pairs), rest))
}

fn parse_duration_ms(s: &str) -> Result<i64, String> {
    if s == "0" {
        return Ok(0);
    }
    model::duration::parse_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| e.to_string())
}

/// Float equality as Prometheus's test runner: both NaN, identical, or relative error < 1e-6.
pub fn almost_equal(a: f64, b: f64) -> bool {
    // The test format also treats NaN as equal to NaN.
    (a.is_nan() && b.is_nan()) || crate::functions::almost_equal(a, b, 1e-6)
}

enum Expected {
    Scalar(f64),
    /// (labels, value) per line, in file order.
    Vector(Vec<(Labels, f64)>),
}

struct EvalCmd {
    line: usize,
    expr: String,
    t: i64,
    fail: bool,
    ordered: bool,
    expected: Expected,
}

fn compare(exp: &Expected, got: &Value, ordered: bool) -> Result<(), String> {
    match (exp, got) {
        (Expected::Scalar(e), Value::Scalar { v, .. }) => {
            if almost_equal(*e, *v) {
                Ok(())
            } else {
                Err(format!("expected scalar {e} but got {v}"))
            }
        }
        (Expected::Scalar(e), other) => Err(format!("expected scalar {e} but got {}", describe(other))),
        (Expected::Vector(exp), Value::Vector(got)) => {
            if exp.len() != got.len() {
                return Err(format!(
                    "expected {} samples, got {}: {}",
                    exp.len(),
                    got.len(),
                    describe(&Value::Vector(got.clone()))
                ));
            }
            for (pos, s) in got.iter().enumerate() {
                let Some(ei) = exp.iter().position(|(l, _)| *l == s.labels) else {
                    return Err(format!("unexpected sample {} {}", s.labels, s.v));
                };
                if ordered && ei != pos {
                    return Err(format!("expected {} at position {ei}, got it at {pos}", s.labels));
                }
                if !almost_equal(exp[ei].1, s.v) {
                    return Err(format!("expected {} for {} but got {}", exp[ei].1, s.labels, s.v));
                }
            }
            Ok(())
        }
        (Expected::Vector(_), other) => Err(format!("expected a vector, got {}", describe(other))),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Scalar { v, .. } => format!("scalar {v}"),
        Value::String { s, .. } => format!("string {s:?}"),
        Value::Vector(vs) => {
            let items: Vec<String> = vs.iter().take(10).map(|s| format!("{} {}", s.labels, s.v)).collect();
            format!("vector [{}]", items.join(", "))
        }
        Value::Matrix(m) => format!("matrix of {} series", m.len()),
    }
}

/// Sets `@ t` on every selector and subquery without one, leaving subqueries' insides alone.
fn add_at(e: &mut Expr, t: i64) {
    let at = || Some(AtModifier::At(ms_to_system_time(t)));
    match e {
        Expr::VectorSelector(vs) if vs.at.is_none() => vs.at = at(),
        Expr::MatrixSelector(ms) if ms.vs.at.is_none() => ms.vs.at = at(),
        // Prometheus sets a subquery's @ before visiting its children, and skips everything
        // below a subquery with @, so the inner expression stays as written.
        Expr::Subquery(sq) if sq.at.is_none() => sq.at = at(),
        Expr::Aggregate(a) => {
            add_at(&mut a.expr, t);
            if let Some(p) = &mut a.param {
                add_at(p, t);
            }
        }
        Expr::Unary(u) => add_at(&mut u.expr, t),
        Expr::Binary(b) => {
            add_at(&mut b.lhs, t);
            add_at(&mut b.rhs, t);
        }
        Expr::Paren(p) => add_at(&mut p.expr, t),
        Expr::Call(c) => {
            for a in &mut c.args.args {
                add_at(a, t);
            }
        }
        _ => {}
    }
}

/// Functions whose result depends on the evaluation time itself, so `@` rewriting changes them.
fn uses_eval_time(e: &Expr) -> bool {
    const TIME_FNS: &[&str] = &[
        "time",
        "timestamp",
        "predict_linear",
        "year",
        "month",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "days_in_month",
        "hour",
        "minute",
    ];
    match e {
        Expr::Call(c) => TIME_FNS.contains(&c.func.name) || c.args.args.iter().any(|a| uses_eval_time(a)),
        Expr::Aggregate(a) => uses_eval_time(&a.expr) || a.param.as_ref().is_some_and(|p| uses_eval_time(p)),
        Expr::Unary(u) => uses_eval_time(&u.expr),
        Expr::Binary(b) => uses_eval_time(&b.lhs) || uses_eval_time(&b.rhs),
        Expr::Paren(p) => uses_eval_time(&p.expr),
        Expr::Subquery(s) => uses_eval_time(&s.expr),
        _ => false,
    }
}

async fn run_instant(engine: &Engine, st: &MemStorage, cmd: &EvalCmd, ast: &Expr, t: i64) -> Result<(), String> {
    let res = engine.instant_expr(st, ast, t).await;
    let v = match res {
        Err(_) if cmd.fail => return Ok(()),
        Err(e) => return Err(format!("error evaluating at {t}: {e}")),
        Ok(_) if cmd.fail => return Err("expected an error but got none".into()),
        Ok(v) => v,
    };
    compare(&cmd.expected, &v, cmd.ordered).map_err(|e| format!("at {t}: {e}"))?;
    let range = engine
        .range_expr(st, ast, t - 60_000, t + 60_000, 60_000)
        .await
        .map_err(|e| format!("error in range mode at {t}: {e}"))?;
    if cmd.ordered {
        return Ok(());
    }
    let Value::Matrix(m) = range else {
        return Err("range query did not return a matrix".into());
    };
    if m.windows(2).any(|w| w[0].labels > w[1].labels) {
        return Err("range result is not sorted by labels".into());
    }
    let vec: Vec<crate::VectorSample> = m
        .iter()
        .filter_map(|s| {
            s.samples.iter().find(|p| p.t == t).map(|p| crate::VectorSample {
                labels: s.labels.clone(),
                t,
                v: p.v,
            })
        })
        .collect();
    let as_value = match (&v, vec.first()) {
        (Value::Scalar { .. }, Some(s)) => Value::Scalar { t, v: s.v },
        _ => Value::Vector(vec),
    };
    compare(&cmd.expected, &as_value, false).map_err(|e| format!("in range mode at {t}: {e}"))
}

async fn run_eval(engine: &Engine, st: &MemStorage, cmd: &EvalCmd) -> Result<(), String> {
    let ast = crate::parse(&cmd.expr).map_err(|e| format!("parse error: {e}"))?;
    run_instant(engine, st, cmd, &ast, cmd.t).await?;
    if uses_eval_time(&ast) {
        return Ok(());
    }
    let mut at_ast = ast.clone();
    add_at(&mut at_ast, cmd.t);
    let times: Vec<i64> = if cmd.t == 0 {
        vec![-1000, 0, 1000]
    } else {
        vec![-10 * cmd.t, 0, cmd.t / 5, cmd.t, 10 * cmd.t]
    };
    for t in times {
        run_instant(engine, st, cmd, &at_ast, t)
            .await
            .map_err(|e| format!("with @ {}: {e}", cmd.t))?;
    }
    Ok(())
}

/// Runs one test file. `name` is used in failure messages only.
pub async fn run_file(name: &str, content: &str) -> FileResult {
    let engine = test_engine();
    let mut st = MemStorage::new();
    let mut res = FileResult::default();
    let lines: Vec<&str> = content.lines().collect();
    let mut i = 0;
    let is_blank = |l: &str| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    };
    while i < lines.len() {
        let line = lines[i].trim();
        let lineno = i + 1;
        i += 1;
        if is_blank(line) {
            continue;
        }
        let word = line.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
        if word == "clear" {
            st.clear();
            continue;
        }
        let mut block = Vec::new();
        while i < lines.len() && !is_blank(lines[i]) {
            block.push(lines[i].trim());
            i += 1;
        }
        if word == "load" {
            let interval = line.split_whitespace().nth(1).map(parse_duration_ms);
            let Some(Ok(interval)) = interval else {
                res.failures.push(format!("{name}:{lineno}: bad load interval"));
                continue;
            };
            for l in block {
                match parse_series_labels(l).and_then(|(labels, rest)| Ok((labels, expand_values(rest)?))) {
                    Ok((labels, values)) => {
                        let samples: Vec<Sample> = values
                            .into_iter()
                            .enumerate()
                            .filter_map(|(k, v)| {
                                v.map(|v| Sample {
                                    t: k as i64 * interval,
                                    v,
                                })
                            })
                            .collect();
                        st.append(labels, samples);
                    }
                    Err(e) => res.failures.push(format!("{name}:{lineno}: bad load line: {e}")),
                }
            }
        } else if word.starts_with("eval") {
            match parse_eval(line, &block, lineno) {
                Ok(cmd) => match run_eval(&engine, &st, &cmd).await {
                    Ok(()) => res.passed += 1,
                    Err(e) => {
                        res.failed += 1;
                        res.failures.push(format!("{name}:{}: {}: {e}", cmd.line, cmd.expr));
                    }
                },
                Err(e) => {
                    // A command we cannot read (e.g. `eval range`) counts as a failure, not a skip.
                    res.failed += 1;
                    res.failures.push(format!("{name}:{lineno}: {e}"));
                }
            }
        } else {
            res.failures.push(format!("{name}:{lineno}: unknown command {word:?}"));
        }
    }
    res
}

fn parse_eval(line: &str, block: &[&str], lineno: usize) -> Result<EvalCmd, String> {
    let mut words = line.splitn(2, char::is_whitespace);
    let word = words.next().unwrap_or("").to_ascii_lowercase();
    let rest = words.next().unwrap_or("").trim_start();
    let (fail, ordered) = match word.as_str() {
        "eval" => (false, false),
        "eval_fail" => (true, false),
        "eval_ordered" => (false, true),
        other => return Err(format!("unsupported command {other:?}")),
    };
    let Some(rest) = rest.strip_prefix("instant") else {
        return Err(format!("only instant evals are supported: {line:?}"));
    };
    let rest = rest.trim_start();
    let rest = rest
        .strip_prefix("at")
        .ok_or_else(|| format!("expected 'at' in {line:?}"))?
        .trim_start();
    let (time_s, expr) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("no expression in {line:?}"))?;
    let t = parse_duration_ms(time_s)?;
    let mut scalar = None;
    let mut vector = Vec::new();
    for l in block {
        if let Some(v) = parse_number(l.trim()) {
            scalar = Some(v);
            break;
        }
        let (labels, rest) = parse_series_labels(l)?;
        let vals = expand_values(rest)?;
        let [Some(v)] = vals.as_slice() else {
            return Err(format!("expected exactly one value in {l:?}"));
        };
        vector.push((labels, *v));
    }
    Ok(EvalCmd {
        line: lineno,
        expr: expr.trim().to_string(),
        t,
        fail,
        ordered,
        expected: match scalar {
            Some(v) => Expected::Scalar(v),
            None => Expected::Vector(vector),
        },
    })
}

/// The test files shipped with the crate, as (file name, content).
pub fn bundled_files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("aggregators.test", include_str!("../testdata/aggregators.test")),
        ("at_modifier.test", include_str!("../testdata/at_modifier.test")),
        ("collision.test", include_str!("../testdata/collision.test")),
        ("functions.test", include_str!("../testdata/functions.test")),
        ("histograms.test", include_str!("../testdata/histograms.test")),
        ("literals.test", include_str!("../testdata/literals.test")),
        (
            "native_histograms.test",
            include_str!("../testdata/native_histograms.test"),
        ),
        ("operators.test", include_str!("../testdata/operators.test")),
        ("selectors.test", include_str!("../testdata/selectors.test")),
        ("staleness.test", include_str!("../testdata/staleness.test")),
        ("subquery.test", include_str!("../testdata/subquery.test")),
        ("trig_functions.test", include_str!("../testdata/trig_functions.test")),
    ]
}

/// Files we skip wholesale (native histograms are not supported yet); their evals count as skipped.
pub const SKIPPED_FILES: &[&str] = &["native_histograms.test"];

fn count_evals(content: &str) -> usize {
    content
        .lines()
        .filter(|l| l.trim_start().to_ascii_lowercase().starts_with("eval"))
        .count()
}

/// Runs every bundled file; returns the totals and the failure messages.
pub async fn run_all() -> FileResult {
    let mut total = FileResult::default();
    for (name, content) in bundled_files() {
        if SKIPPED_FILES.contains(&name) {
            total.skipped += count_evals(content);
            continue;
        }
        let r = run_file(name, content).await;
        total.passed += r.passed;
        total.failed += r.failed;
        total.failures.extend(r.failures);
    }
    total
}

impl FileResult {
    /// `promqltest: P passed, F failed, S skipped`
    pub fn summary(&self) -> String {
        format!(
            "promqltest: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}
