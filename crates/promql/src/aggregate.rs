//! Aggregation operators (`sum by (…) (…)` and friends), evaluated step by step.

use std::collections::HashMap;

use model::{Labels, LabelsBuilder};
use promql_parser::parser::{AggregateExpr, LabelModifier};

use crate::eval::{from_steps, to_steps, Evaluator, Val};
use crate::functions::quantile;
use crate::plan::Range;
use crate::PromqlError;

/// Per-group running state of one aggregation at one step.
struct Group {
    labels: Labels,
    count: usize,
    value: f64,
    mean: f64,
    /// Values kept for quantile; (series, value) kept for topk/bottomk.
    values: Vec<f64>,
    heap: Vec<(u32, f64)>,
}

/// The Go strconv.FormatFloat(f, 'f', -1, 64) spelling of a float.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn is_valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// Adds series `i`'s value `v` to its group at one step, as Prometheus's aggregation does.
fn accumulate(op: &str, g: &mut Group, i: u32, v: f64) {
    g.count += 1;
    let first = g.count == 1;
    match op {
        "sum" if !first => g.value += v,
        "avg" if !first => {
            let n = g.count as f64;
            if g.mean.is_infinite() {
                // Inf plus a finite value, or Inf of the same sign, stays that Inf.
                if v.is_infinite() && (g.mean > 0.0) == (v > 0.0) {
                    return;
                }
                if !v.is_infinite() && !v.is_nan() {
                    return;
                }
            }
            // Divide before subtracting to avoid overflowing to Inf.
            g.mean += v / n - g.mean / n;
        }
        "max" if g.value < v || g.value.is_nan() => g.value = v,
        "min" if g.value > v || g.value.is_nan() => g.value = v,
        "stddev" | "stdvar" => {
            if first {
                g.value = 0.0;
                g.mean = v;
            } else {
                let n = g.count as f64;
                let delta = v - g.mean;
                g.mean += delta / n;
                g.value += delta * (v - g.mean);
            }
        }
        "quantile" => g.values.push(v),
        "topk" | "bottomk" => g.heap.push((i, v)),
        _ => {}
    }
}

/// The value of a finished group at one step (not for topk/bottomk, which output series).
fn finish(op: &str, g: &mut Group, param: Option<f64>) -> f64 {
    match op {
        "sum" | "max" | "min" => g.value,
        "avg" => g.mean,
        "count" | "count_values" => g.count as f64,
        "group" => 1.0,
        "stdvar" => g.value / g.count as f64,
        "stddev" => (g.value / g.count as f64).sqrt(),
        _ => quantile(param.unwrap_or(f64::NAN), std::mem::take(&mut g.values)),
    }
}

impl Evaluator<'_> {
    /// Aggregations whose output is one series per group: each series' group is found
    /// once, and every step only touches per-group accumulators (no label hashing or
    /// label sets built per step).
    fn aggregate_groups(
        &self,
        op: &str,
        st: &crate::eval::Steps,
        series_key: &[Labels],
        param: Option<&[f64]>,
        r: Range,
    ) -> Result<Val, PromqlError> {
        let mut group_of: HashMap<&Labels, usize> = HashMap::new();
        let mut out: Vec<model::Series> = Vec::new();
        let series_group: Vec<usize> = series_key
            .iter()
            .map(|k| {
                *group_of.entry(k).or_insert_with(|| {
                    out.push(model::Series {
                        labels: k.clone(),
                        samples: Vec::new(),
                    });
                    out.len() - 1
                })
            })
            .collect();
        let mut acc: Vec<Group> = out
            .iter()
            .map(|s| Group {
                labels: s.labels.clone(),
                count: 0,
                value: 0.0,
                mean: 0.0,
                values: Vec::new(),
                heap: Vec::new(),
            })
            .collect();
        let mut touched: Vec<usize> = Vec::new();
        for (si, vec) in st.steps.iter().enumerate() {
            self.check_deadline()?;
            for &(i, v) in vec {
                let g = series_group[i as usize];
                let a = &mut acc[g];
                if a.count == 0 {
                    touched.push(g);
                    a.value = v;
                    a.mean = v;
                }
                accumulate(op, a, i, v);
            }
            let t = r.ts(si);
            // Each touched group gets its point for this step; the others have none.
            for &g in &touched {
                let a = &mut acc[g];
                let v = finish(op, a, param.map(|p| p[si]));
                out[g].samples.push(model::Sample { t, v });
                a.count = 0;
                a.values.clear();
            }
            touched.clear();
        }
        out.retain(|s| !s.samples.is_empty());
        Ok(Val::Vector(out))
    }

    pub(crate) fn eval_aggregate(&self, a: &AggregateExpr, r: Range) -> Result<Val, PromqlError> {
        let op = a.op.to_string();
        let (by, names): (bool, Vec<String>) = match &a.modifier {
            Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
            Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
            None => (true, Vec::new()),
        };
        let mut scalar_param = None;
        let mut value_label = None;
        if let Some(p) = &a.param {
            if op == "count_values" {
                let l = self.eval_string_arg(p, r)?;
                if !is_valid_label_name(&l) {
                    return Err(PromqlError::Execution(format!("invalid label name {l:?}")));
                }
                value_label = Some(l);
            } else {
                scalar_param = Some(self.eval_scalar_arg(p, r)?);
            }
        }
        let input = self.eval_vector_arg(&a.expr, r)?;
        let st = to_steps(input, r);
        // The group key of each series never changes, so compute it once per series.
        let series_key: Vec<Labels> = st.labels.iter().map(|l| l.project(&names, by)).collect();
        if !matches!(op.as_str(), "count_values" | "topk" | "bottomk") {
            return self.aggregate_groups(&op, &st, &series_key, scalar_param.as_deref(), r);
        }
        let mut out_steps = Vec::with_capacity(st.steps.len());
        for (si, vec) in st.steps.iter().enumerate() {
            self.check_deadline()?;
            let mut groups: Vec<Group> = Vec::new();
            let mut index: HashMap<Labels, usize> = HashMap::new();
            let k_param = scalar_param.as_ref().map(|p| p[si]);
            for &(i, v) in vec {
                let key = match &value_label {
                    Some(vl) => {
                        let mut b: LabelsBuilder = series_key[i as usize].to_builder();
                        b.set(vl.clone(), format_float(v));
                        b.build()
                    }
                    None => series_key[i as usize].clone(),
                };
                let gi = match index.get(&key) {
                    Some(&g) => g,
                    None => {
                        index.insert(key.clone(), groups.len());
                        groups.push(Group {
                            labels: key,
                            count: 0,
                            value: v,
                            mean: v,
                            values: Vec::new(),
                            heap: Vec::new(),
                        });
                        groups.len() - 1
                    }
                };
                accumulate(op.as_str(), &mut groups[gi], i, v);
            }
            let mut out: Vec<(Labels, f64)> = Vec::with_capacity(groups.len());
            for mut g in groups {
                let v = match op.as_str() {
                    "topk" | "bottomk" => {
                        let k = k_param.unwrap_or(0.0);
                        if k.is_nan() {
                            return Err(PromqlError::Execution("Parameter value is NaN".into()));
                        }
                        let k = if k >= 1.0 { k as usize } else { 0 };
                        let mut items = g.heap;
                        // NaN sorts last for both: it is neither the top nor the bottom.
                        if op == "topk" {
                            items.sort_by(|a, b| desc_nan_last(a.1, b.1));
                        } else {
                            items.sort_by(|a, b| asc_nan_last(a.1, b.1));
                        }
                        items.truncate(k);
                        for (i, v) in items {
                            out.push((st.labels[i as usize].clone(), v));
                        }
                        continue;
                    }
                    _ => finish(op.as_str(), &mut g, k_param),
                };
                out.push((g.labels, v));
            }
            out_steps.push(out);
        }
        Ok(Val::Vector(from_steps(out_steps, r)?))
    }
}

pub(crate) fn asc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
    }
}

pub(crate) fn desc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal),
    }
}
