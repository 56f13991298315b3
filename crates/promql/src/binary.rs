//! Binary operators: arithmetic, comparison and set operators with vector matching.

use std::collections::{HashMap, HashSet};

use model::{Labels, LabelsBuilder, Series, METRIC_NAME};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use crate::eval::{from_steps, merge_same_labels, to_steps, Evaluator, Stop, Val};
use crate::plan::Range;
use crate::PromqlError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl Op {
    fn parse(s: &str) -> Result<Op, PromqlError> {
        Ok(match s {
            "+" => Op::Add,
            "-" => Op::Sub,
            "*" => Op::Mul,
            "/" => Op::Div,
            "%" => Op::Mod,
            "^" => Op::Pow,
            "atan2" => Op::Atan2,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" => Op::Ge,
            "<=" => Op::Le,
            "and" => Op::And,
            "or" => Op::Or,
            "unless" => Op::Unless,
            other => return Err(PromqlError::Execution(format!("unknown binary operator {other:?}"))),
        })
    }
    fn is_comparison(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Gt | Op::Lt | Op::Ge | Op::Le)
    }
    fn is_set(self) -> bool {
        matches!(self, Op::And | Op::Or | Op::Unless)
    }
    /// Arithmetic results are no longer the metric they came from.
    fn drops_metric_name(self) -> bool {
        matches!(
            self,
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Mod | Op::Pow | Op::Atan2
        )
    }
}

/// Go's math.Mod: result has the sign of x.
fn go_mod(x: f64, y: f64) -> f64 {
    x % y
}

/// Applies `op` to two floats. For comparisons the bool says whether the pair is kept.
fn elem(op: Op, l: f64, r: f64) -> (f64, bool) {
    match op {
        Op::Add => (l + r, true),
        Op::Sub => (l - r, true),
        Op::Mul => (l * r, true),
        Op::Div => (l / r, true),
        Op::Mod => (go_mod(l, r), true),
        Op::Pow => (l.powf(r), true),
        Op::Atan2 => (l.atan2(r), true),
        Op::Eq => (l, l == r),
        Op::Ne => (l, l != r),
        Op::Gt => (l, l > r),
        Op::Lt => (l, l < r),
        Op::Ge => (l, l >= r),
        Op::Le => (l, l <= r),
        Op::And | Op::Or | Op::Unless => (l, true),
    }
}

struct Matching {
    card: VectorMatchCardinality,
    on: bool,
    labels: Vec<String>,
    include: Vec<String>,
}

impl Matching {
    fn from_expr(b: &BinaryExpr, op: Op) -> Matching {
        let (card, matching) = match &b.modifier {
            Some(m) => (m.card.clone(), m.matching.clone()),
            None => (VectorMatchCardinality::OneToOne, None),
        };
        let card = if op.is_set() {
            VectorMatchCardinality::ManyToMany
        } else {
            card
        };
        let (on, labels) = match matching {
            Some(LabelModifier::Include(l)) => (true, l.labels),
            Some(LabelModifier::Exclude(l)) => (false, l.labels),
            None => (false, Vec::new()),
        };
        let include = card.labels().map(|l| l.labels.clone()).unwrap_or_default();
        Matching {
            card,
            on,
            labels,
            include,
        }
    }

    /// The match-group key of a series: only the `on` labels, or all but the `ignoring`
    /// labels and the metric name.
    fn signature(&self, l: &Labels) -> Labels {
        l.project(&self.labels, self.on)
    }
}

impl Evaluator<'_> {
    pub(crate) fn eval_binary(&self, b: &BinaryExpr, r: Range) -> Result<Val, PromqlError> {
        let op = Op::parse(&b.op.to_string())?;
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let lhs = self.eval(&b.lhs, r)?;
        let rhs = self.eval(&b.rhs, r)?;
        match (lhs, rhs) {
            (Val::Scalar(l), Val::Scalar(rv)) => Ok(Val::Scalar(
                l.iter()
                    .zip(rv.iter())
                    .map(|(&a, &c)| {
                        let (v, keep) = elem(op, a, c);
                        if op.is_comparison() {
                            if keep {
                                1.0
                            } else {
                                0.0
                            }
                        } else {
                            v
                        }
                    })
                    .collect(),
            )),
            (Val::Vector(m), Val::Scalar(s)) => Ok(Val::Vector(vector_scalar(op, m, &s, r, false, return_bool)?)),
            (Val::Scalar(s), Val::Vector(m)) => Ok(Val::Vector(vector_scalar(op, m, &s, r, true, return_bool)?)),
            (Val::Vector(l), Val::Vector(rv)) => {
                let matching = Matching::from_expr(b, op);
                if op.is_set() {
                    Ok(Val::Vector(set_op(op, l, rv, &matching, r, &self.stop)?))
                } else {
                    Ok(Val::Vector(vector_vector(
                        op,
                        l,
                        rv,
                        &matching,
                        return_bool,
                        r,
                        &self.stop,
                    )?))
                }
            }
            _ => Err(PromqlError::Execution(format!(
                "binary operator {} is not defined on these operand types",
                b.op
            ))),
        }
    }
}

fn vector_scalar(
    op: Op,
    m: Vec<Series>,
    s: &[f64],
    r: Range,
    swap: bool,
    return_bool: bool,
) -> Result<Vec<Series>, PromqlError> {
    let drop_name = op.drops_metric_name() || return_bool;
    let out = m
        .into_iter()
        .map(|mut series| {
            if drop_name {
                series.labels = series.labels.without_metric_name();
            }
            series.samples.retain_mut(|p| {
                let sv = s[r.index(p.t)];
                let (l, rv) = if swap { (sv, p.v) } else { (p.v, sv) };
                let (mut v, keep) = elem(op, l, rv);
                // A comparison keeps the vector element's value even when it is on the right.
                if op.is_comparison() && swap {
                    v = p.v;
                }
                if return_bool {
                    p.v = if keep { 1.0 } else { 0.0 };
                    return true;
                }
                p.v = v;
                keep
            });
            series
        })
        .collect();
    merge_same_labels(out)
}

fn set_op(
    op: Op,
    l: Vec<Series>,
    rv: Vec<Series>,
    m: &Matching,
    r: Range,
    stop: &Stop,
) -> Result<Vec<Series>, PromqlError> {
    let ls = to_steps(l, r);
    let rs = to_steps(rv, r);
    let lsig: Vec<Labels> = ls.labels.iter().map(|l| m.signature(l)).collect();
    let rsig: Vec<Labels> = rs.labels.iter().map(|l| m.signature(l)).collect();
    let mut out_steps = Vec::with_capacity(ls.steps.len());
    for (lv, rvv) in ls.steps.iter().zip(rs.steps.iter()) {
        stop.check()?;
        let mut out: Vec<(Labels, f64)> = Vec::new();
        match op {
            Op::And => {
                let right: HashSet<&Labels> = rvv.iter().map(|(i, _)| &rsig[*i as usize]).collect();
                for &(i, v) in lv {
                    if right.contains(&lsig[i as usize]) {
                        out.push((ls.labels[i as usize].clone(), v));
                    }
                }
            }
            Op::Or => {
                let left: HashSet<&Labels> = lv.iter().map(|(i, _)| &lsig[*i as usize]).collect();
                for &(i, v) in lv {
                    out.push((ls.labels[i as usize].clone(), v));
                }
                for &(i, v) in rvv {
                    if !left.contains(&rsig[i as usize]) {
                        out.push((rs.labels[i as usize].clone(), v));
                    }
                }
            }
            _ => {
                let right: HashSet<&Labels> = rvv.iter().map(|(i, _)| &rsig[*i as usize]).collect();
                for &(i, v) in lv {
                    if !right.contains(&lsig[i as usize]) {
                        out.push((ls.labels[i as usize].clone(), v));
                    }
                }
            }
        }
        out_steps.push(out);
    }
    from_steps(out_steps, r)
}

fn vector_vector(
    op: Op,
    l: Vec<Series>,
    rv: Vec<Series>,
    m: &Matching,
    return_bool: bool,
    r: Range,
    stop: &Stop,
) -> Result<Vec<Series>, PromqlError> {
    let one_to_many = matches!(m.card, VectorMatchCardinality::OneToMany(_));
    let one_to_one = matches!(m.card, VectorMatchCardinality::OneToOne);
    // For one-to-many, swap sides so the right is always the "one" side.
    let (l, rv) = if one_to_many { (rv, l) } else { (l, rv) };
    let ls = to_steps(l, r);
    let rs = to_steps(rv, r);
    let lsig: Vec<Labels> = ls.labels.iter().map(|x| m.signature(x)).collect();
    let rsig: Vec<Labels> = rs.labels.iter().map(|x| m.signature(x)).collect();
    let mut metric_cache: HashMap<(u32, u32), Labels> = HashMap::new();
    let mut out_steps = Vec::with_capacity(ls.steps.len());
    for (lv, rvv) in ls.steps.iter().zip(rs.steps.iter()) {
        stop.check()?;
        let mut out: Vec<(Labels, f64)> = Vec::new();
        if lv.is_empty() || rvv.is_empty() {
            out_steps.push(out);
            continue;
        }
        let mut right: HashMap<&Labels, (u32, f64)> = HashMap::with_capacity(rvv.len());
        for &(i, v) in rvv {
            let sig = &rsig[i as usize];
            if let Some(&(dup, _)) = right.get(sig) {
                let side = if one_to_many { "left" } else { "right" };
                let group = rs.labels[i as usize].project(&m.labels, m.on);
                return Err(PromqlError::Execution(format!(
                    "found duplicate series for the match group {group} on the {side} hand-side of the operation: \
                     [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    rs.labels[i as usize], rs.labels[dup as usize]
                )));
            }
            right.insert(sig, (i, v));
        }
        let mut matched: HashMap<&Labels, HashSet<Labels>> = HashMap::new();
        for &(li, lval) in lv {
            let sig = &lsig[li as usize];
            let Some(&(ri, rval)) = right.get(sig) else { continue };
            let (fl, fr) = if one_to_many { (rval, lval) } else { (lval, rval) };
            let (mut v, keep) = elem(op, fl, fr);
            if return_bool {
                v = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
            let metric = metric_cache
                .entry((li, ri))
                .or_insert_with(|| result_metric(&ls.labels[li as usize], &rs.labels[ri as usize], op, m, return_bool))
                .clone();
            let seen = matched.entry(sig).or_default();
            if one_to_one {
                if !seen.is_empty() {
                    return Err(PromqlError::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                            .into(),
                    ));
                }
            } else if seen.contains(&metric) {
                return Err(PromqlError::Execution(
                    "multiple matches for labels: grouping labels must ensure unique matches".into(),
                ));
            }
            seen.insert(metric.clone());
            out.push((metric, v));
        }
        out_steps.push(out);
    }
    from_steps(out_steps, r)
}

fn result_metric(l: &Labels, r: &Labels, op: Op, m: &Matching, return_bool: bool) -> Labels {
    let mut b: LabelsBuilder = l.to_builder();
    if op.drops_metric_name() || return_bool {
        b.del(METRIC_NAME);
    }
    if matches!(m.card, VectorMatchCardinality::OneToOne) {
        if m.on {
            let keep: Vec<String> = l
                .iter()
                .filter(|x| !m.labels.contains(&x.name))
                .map(|x| x.name.clone())
                .collect();
            for n in keep {
                b.del(&n);
            }
        } else {
            for n in &m.labels {
                b.del(n);
            }
        }
    }
    for n in &m.include {
        let v = r.get(n);
        if v.is_empty() {
            b.del(n);
        } else {
            b.set(n.clone(), v.to_string());
        }
    }
    b.build()
}
