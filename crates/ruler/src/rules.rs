//! Recording and alerting rules: what one evaluation of a rule does with the
//! query result, and the alert state machine of the alert-generator spec
//! (inactive → pending → firing → inactive, `for`, `keep_firing_for`, resend rules).
//!
//! Time is milliseconds since the epoch throughout, so tests drive the machine
//! with a fake clock by passing timestamps.

use std::collections::{BTreeMap, HashMap};

use model::{Labels, LabelsBuilder, METRIC_NAME};
use promql::VectorSample;

use crate::rulefmt::Rule;
use crate::template::{self, TemplateData};

/// How long a resolved alert is still sent to Alertmanager (Prometheus's `resolvedRetention`).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// Values and label names of the series alerting rules write.
pub const ALERT_METRIC_NAME: &str = "ALERTS";
pub const ALERT_FOR_STATE_METRIC_NAME: &str = "ALERTS_FOR_STATE";
pub const ALERT_NAME_LABEL: &str = "alertname";
pub const ALERT_STATE_LABEL: &str = "alertstate";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleHealth {
    Unknown,
    Ok,
    Err,
}

/// One alert of an alerting rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub value: f64,
    pub state: AlertState,
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    pub last_sent_at: Option<i64>,
    /// `endsAt` of a firing alert as last sent.
    pub valid_until: i64,
    pub keep_firing_since: Option<i64>,
}

impl Alert {
    /// Prometheus's `needsSending`: firing or resolved alerts, when first in that state
    /// or when `resend_delay` has passed since the last send.
    fn needs_sending(&self, ts: i64, resend_delay_ms: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        let Some(last) = self.last_sent_at else {
            return true;
        };
        if self.resolved_at.is_some_and(|r| r > last) {
            return true;
        }
        last + resend_delay_ms < ts
    }
}

/// A rule evaluation that failed after the query succeeded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleEvalError {
    #[error("vector contains metrics with the same labelset after applying alert labels")]
    DuplicateAlertLabels,
    #[error("vector contains metrics with the same labelset after applying rule labels")]
    DuplicateSeriesLabels,
    #[error("exceeded limit of {limit} with {got} alerts")]
    AlertLimit { limit: u64, got: usize },
    #[error("exceeded limit of {limit} with {got} series")]
    SeriesLimit { limit: u64, got: usize },
    #[error("{0}")]
    Template(#[from] template::TemplateError),
    #[error("{0}")]
    Query(String),
}

/// What a template of this rule can see besides the alert's own labels and value.
#[derive(Debug, Clone, Default)]
pub struct TemplateContext {
    pub external_labels: BTreeMap<String, String>,
    pub external_url: String,
}

/// A `record` rule.
#[derive(Debug, Clone)]
pub struct RecordingRule {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl RecordingRule {
    /// The series to write for one query result: `__name__` set to the rule's name,
    /// the rule's labels over the result's.
    pub fn apply(&self, result: Vec<VectorSample>, limit: u64) -> Result<Vec<(Labels, f64)>, RuleEvalError> {
        let mut out = Vec::with_capacity(result.len());
        for s in result {
            let mut b = s.labels.to_builder();
            b.set(METRIC_NAME, self.name.as_str());
            for (k, v) in &self.labels {
                b.set(k.as_str(), v.as_str());
            }
            out.push((b.build(), s.v));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        if out.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(RuleEvalError::DuplicateSeriesLabels);
        }
        if limit > 0 && out.len() as u64 > limit {
            return Err(RuleEvalError::SeriesLimit { limit, got: out.len() });
        }
        Ok(out)
    }
}

/// An `alert` rule and its alerts.
#[derive(Debug, Clone)]
pub struct AlertingRule {
    pub name: String,
    pub hold_ms: i64,
    pub keep_firing_for_ms: i64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Active alerts and resolved ones still being sent, by labels.
    pub active: HashMap<Labels, Alert>,
}

impl AlertingRule {
    pub fn new(rule: &Rule) -> Self {
        AlertingRule {
            name: rule.alert.clone().unwrap_or_default(),
            hold_ms: rule.for_.map_or(0, |d| d.as_millis()),
            keep_firing_for_ms: rule.keep_firing_for.map_or(0, |d| d.as_millis()),
            labels: rule.labels.clone(),
            annotations: rule.annotations.clone(),
            active: HashMap::new(),
        }
    }

    /// The rule's state for `/api/v1/rules`: firing if any alert fires, else pending if any is.
    pub fn state(&self) -> AlertState {
        let mut s = AlertState::Inactive;
        for a in self.active.values() {
            match a.state {
                AlertState::Firing => return AlertState::Firing,
                AlertState::Pending => s = AlertState::Pending,
                AlertState::Inactive => {}
            }
        }
        s
    }

    /// Pending and firing alerts, sorted by labels.
    pub fn active_alerts(&self) -> Vec<&Alert> {
        let mut v: Vec<&Alert> = self
            .active
            .values()
            .filter(|a| a.state != AlertState::Inactive)
            .collect();
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v
    }

    /// One evaluation at `ts` with the query's `result`: steps 1–4 and the state
    /// conditions of the spec. Returns the `ALERTS` and `ALERTS_FOR_STATE` samples.
    /// On error nothing changes (no alert state, nothing to write or send).
    pub fn apply(
        &mut self,
        ts: i64,
        result: Vec<VectorSample>,
        ctx: &TemplateContext,
        limit: u64,
    ) -> Result<Vec<(Labels, f64)>, RuleEvalError> {
        let mut produced: HashMap<Labels, (BTreeMap<String, String>, f64)> = HashMap::with_capacity(result.len());
        for s in result {
            let data = TemplateData {
                labels: s
                    .labels
                    .iter()
                    .filter(|l| l.name != METRIC_NAME)
                    .map(|l| (l.name.as_str(), l.value.as_str()))
                    .collect(),
                value: s.v,
                external_labels: ctx
                    .external_labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
                external_url: &ctx.external_url,
            };
            // Prometheus drops the metric name from alert labels.
            let mut b = s.labels.to_builder();
            b.del(METRIC_NAME);
            for (k, v) in &self.labels {
                b.set(k.as_str(), template::expand(v, &data)?);
            }
            b.set(ALERT_NAME_LABEL, self.name.as_str());
            let labels = b.build();
            let mut annotations = BTreeMap::new();
            for (k, v) in &self.annotations {
                annotations.insert(k.clone(), template::expand(v, &data)?);
            }
            if produced.insert(labels, (annotations, s.v)).is_some() {
                return Err(RuleEvalError::DuplicateAlertLabels);
            }
        }
        if limit > 0 && produced.len() as u64 > limit {
            // Prometheus forgets the rule's alerts when the limit is hit.
            self.active.clear();
            return Err(RuleEvalError::AlertLimit {
                limit,
                got: produced.len(),
            });
        }
        for (labels, (annotations, value)) in &produced {
            match self.active.get_mut(labels) {
                Some(a) if a.state != AlertState::Inactive => {
                    a.value = *value;
                    a.annotations = annotations.clone();
                }
                // New, or the same labels as a resolved alert: a new alert.
                _ => {
                    self.active.insert(
                        labels.clone(),
                        Alert {
                            labels: labels.clone(),
                            annotations: annotations.clone(),
                            value: *value,
                            state: AlertState::Pending,
                            active_at: ts,
                            fired_at: None,
                            resolved_at: None,
                            last_sent_at: None,
                            valid_until: 0,
                            keep_firing_since: None,
                        },
                    );
                }
            }
        }
        let mut out = vec![];
        let (hold, keep_for) = (self.hold_ms, self.keep_firing_for_ms);
        self.active.retain(|labels, a| {
            if !produced.contains_key(labels) {
                let mut keep_firing = false;
                if a.state == AlertState::Firing && keep_for > 0 {
                    let since = *a.keep_firing_since.get_or_insert(ts);
                    keep_firing = ts - since < keep_for;
                }
                if a.state == AlertState::Pending || a.resolved_at.is_some_and(|r| ts - r > RESOLVED_RETENTION_MS) {
                    return false;
                }
                if a.state != AlertState::Inactive && !keep_firing {
                    a.state = AlertState::Inactive;
                    a.resolved_at = Some(ts);
                }
                if !keep_firing {
                    return true;
                }
            } else {
                a.keep_firing_since = None;
            }
            if a.state == AlertState::Pending && ts - a.active_at >= hold {
                a.state = AlertState::Firing;
                a.fired_at = Some(ts);
            }
            out.push((alert_series(labels, a.state), 1.0));
            out.push((for_state_series(labels), (a.active_at / 1000) as f64));
            true
        });
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The alerts to send after the evaluation at `ts` (firing, and resolved within
    /// 15 minutes), marking them sent. `endsAt` of a firing alert is `ts + 4 ×
    /// max(resend delay, interval)`, of a resolved one its `ResolvedAt`.
    pub fn alerts_to_send(&mut self, ts: i64, resend_delay_ms: i64, interval_ms: i64) -> Vec<Alert> {
        let mut out = vec![];
        for a in self.active.values_mut() {
            if a.needs_sending(ts, resend_delay_ms) {
                a.last_sent_at = Some(ts);
                a.valid_until = ts + 4 * resend_delay_ms.max(interval_ms);
                out.push(a.clone());
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }
}

/// `ALERTS{alertstate=…, <alert labels>}`.
fn alert_series(labels: &Labels, state: AlertState) -> Labels {
    let mut b: LabelsBuilder = labels.to_builder();
    b.set(METRIC_NAME, ALERT_METRIC_NAME);
    b.set(ALERT_STATE_LABEL, state.as_str());
    b.build()
}

/// `ALERTS_FOR_STATE{<alert labels>}`, valued the alert's `ActiveAt` in seconds.
fn for_state_series(labels: &Labels) -> Labels {
    let mut b = labels.to_builder();
    b.set(METRIC_NAME, ALERT_FOR_STATE_METRIC_NAME);
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::GoDuration;

    const MIN: i64 = 60_000;

    fn rule(for_: u64, keep: u64) -> AlertingRule {
        AlertingRule::new(&Rule {
            alert: Some("HighLatency".into()),
            expr: "latency > 1".into(),
            for_: (for_ > 0).then(|| GoDuration::secs(for_)),
            keep_firing_for: (keep > 0).then(|| GoDuration::secs(keep)),
            labels: [("severity".to_string(), "page".to_string())].into(),
            annotations: [("summary".to_string(), "{{ $labels.job }} at {{ $value }}".to_string())].into(),
            ..Default::default()
        })
    }

    fn sample(job: &str, v: f64) -> VectorSample {
        VectorSample {
            labels: Labels::from_pairs([("__name__", "latency"), ("job", job)]),
            t: 0,
            v,
        }
    }

    fn eval(r: &mut AlertingRule, ts: i64, samples: Vec<VectorSample>) -> Vec<(Labels, f64)> {
        r.apply(ts, samples, &TemplateContext::default(), 0).unwrap()
    }

    #[test]
    fn pending_then_firing_then_resolved_with_for() {
        let mut r = rule(120, 0);
        let out = eval(&mut r, 0, vec![sample("api", 2.0)]);
        assert_eq!(r.state(), AlertState::Pending);
        let a = &r.active_alerts()[0];
        assert_eq!(a.labels.get("alertname"), "HighLatency");
        assert_eq!(a.labels.get("__name__"), "", "metric name dropped from alert labels");
        assert_eq!(a.labels.get("severity"), "page");
        assert_eq!(a.annotations["summary"], "api at 2");
        assert_eq!(out[0].0.get("__name__"), "ALERTS");
        assert_eq!(out[0].0.get("alertstate"), "pending");
        assert_eq!(out[1].0.get("__name__"), "ALERTS_FOR_STATE");
        assert!(r.alerts_to_send(0, MIN, MIN).is_empty(), "pending alerts are not sent");

        // Still pending just before `for` has passed; annotations follow the value.
        eval(&mut r, MIN, vec![sample("api", 3.0)]);
        assert_eq!(r.state(), AlertState::Pending);
        assert_eq!(r.active_alerts()[0].annotations["summary"], "api at 3");
        // Firing once ts - ActiveAt >= for.
        let out = eval(&mut r, 2 * MIN, vec![sample("api", 3.0)]);
        assert_eq!(r.state(), AlertState::Firing);
        assert_eq!(out[0].0.get("alertstate"), "firing");
        assert_eq!(out[1].1, 0.0, "ALERTS_FOR_STATE holds ActiveAt in seconds");
        let sent = r.alerts_to_send(2 * MIN, MIN, MIN);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].fired_at, Some(2 * MIN));
        assert_eq!(sent[0].valid_until, 2 * MIN + 4 * MIN);

        // Gone from the result: resolved at once, no series, sent with ResolvedAt.
        let out = eval(&mut r, 3 * MIN, vec![]);
        assert!(out.is_empty(), "no series for inactive alerts");
        assert_eq!(r.state(), AlertState::Inactive);
        let sent = r.alerts_to_send(3 * MIN, MIN, MIN);
        assert_eq!(sent[0].state, AlertState::Inactive);
        assert_eq!(sent[0].resolved_at, Some(3 * MIN));
    }

    #[test]
    fn zero_for_fires_at_once_and_pending_that_vanishes_is_forgotten() {
        let mut r = rule(0, 0);
        eval(&mut r, 0, vec![sample("api", 2.0)]);
        assert_eq!(r.state(), AlertState::Firing);
        assert_eq!(r.active_alerts()[0].fired_at, Some(0));

        let mut r = rule(300, 0);
        eval(&mut r, 0, vec![sample("api", 2.0)]);
        eval(&mut r, MIN, vec![]);
        assert!(r.active.is_empty(), "a pending alert that resolves is dropped");
        assert!(r.alerts_to_send(MIN, MIN, MIN).is_empty());
    }

    #[test]
    fn for_shorter_than_interval_fires_on_next_evaluation() {
        let mut r = rule(10, 0);
        eval(&mut r, 0, vec![sample("api", 2.0)]);
        assert_eq!(r.state(), AlertState::Pending);
        eval(&mut r, MIN, vec![sample("api", 2.0)]);
        assert_eq!(r.state(), AlertState::Firing);
    }

    #[test]
    fn resend_delay_and_resolved_retention() {
        let mut r = rule(0, 0);
        let resend = MIN;
        let interval = 30_000;
        eval(&mut r, 0, vec![sample("api", 2.0)]);
        assert_eq!(
            r.alerts_to_send(0, resend, interval).len(),
            1,
            "sent when it first fires"
        );
        let mut sends = vec![];
        for i in 1..=6 {
            let ts = i * interval;
            eval(&mut r, ts, vec![sample("api", 2.0)]);
            if !r.alerts_to_send(ts, resend, interval).is_empty() {
                sends.push(ts);
            }
        }
        // Resent on evaluations more than the resend delay after the last send.
        assert_eq!(sends, vec![90_000, 180_000]);
        // Resolved: sent at once, then again every resend period until 15m after ResolvedAt.
        let resolved = 7 * interval;
        eval(&mut r, resolved, vec![]);
        assert_eq!(r.alerts_to_send(resolved, resend, interval).len(), 1);
        let mut last = resolved;
        let mut ts = resolved;
        while ts < resolved + 20 * MIN {
            ts += interval;
            eval(&mut r, ts, vec![]);
            let sent = r.alerts_to_send(ts, resend, interval);
            if let Some(a) = sent.first() {
                assert_eq!(a.resolved_at, Some(resolved), "endsAt stays ResolvedAt");
                last = ts;
            }
        }
        assert!(
            last <= resolved + RESOLVED_RETENTION_MS,
            "sent until 15m after resolution: {last}"
        );
        assert!(last > resolved + RESOLVED_RETENTION_MS - 2 * MIN, "{last}");
        assert!(r.active.is_empty(), "forgotten after retention");
    }

    #[test]
    fn same_labels_after_resolution_is_a_new_alert() {
        let mut r = rule(60, 0);
        eval(&mut r, 0, vec![sample("api", 2.0)]);
        eval(&mut r, MIN, vec![sample("api", 2.0)]);
        assert_eq!(r.state(), AlertState::Firing);
        eval(&mut r, 2 * MIN, vec![]);
        eval(&mut r, 3 * MIN, vec![sample("api", 2.0)]);
        let a = r.active_alerts()[0].clone();
        assert_eq!(
            (a.state, a.active_at, a.resolved_at),
            (AlertState::Pending, 3 * MIN, None)
        );
    }

    #[test]
    fn keep_firing_for_holds_the_alert() {
        let mut r = rule(0, 120);
        eval(&mut r, 0, vec![sample("api", 2.0)]);
        let out = eval(&mut r, MIN, vec![]);
        assert_eq!(r.state(), AlertState::Firing, "kept firing");
        assert_eq!(out.len(), 2, "series still written while kept firing");
        eval(&mut r, 2 * MIN, vec![]);
        assert_eq!(r.state(), AlertState::Firing);
        eval(&mut r, 3 * MIN, vec![]);
        assert_eq!(r.state(), AlertState::Inactive);
        // Coming back resets the keep-firing clock.
        let mut r = rule(0, 120);
        eval(&mut r, 0, vec![sample("api", 2.0)]);
        eval(&mut r, MIN, vec![]);
        eval(&mut r, 2 * MIN, vec![sample("api", 2.0)]);
        assert_eq!(r.active_alerts()[0].keep_firing_since, None);
    }

    #[test]
    fn duplicate_labels_after_templating_is_an_error_and_changes_nothing() {
        let mut r = rule(0, 0);
        r.labels.insert("job".into(), "same".into());
        let e = r
            .apply(
                0,
                vec![sample("a", 1.0), sample("b", 1.0)],
                &TemplateContext::default(),
                0,
            )
            .unwrap_err();
        assert_eq!(e, RuleEvalError::DuplicateAlertLabels);
        assert!(r.active.is_empty());
    }

    #[test]
    fn limits_and_recording_rules() {
        let mut r = rule(0, 0);
        let e = r
            .apply(
                0,
                vec![sample("a", 1.0), sample("b", 1.0)],
                &TemplateContext::default(),
                1,
            )
            .unwrap_err();
        assert_eq!(e.to_string(), "exceeded limit of 1 with 2 alerts");
        let rec = RecordingRule {
            name: "job:latency:max".into(),
            labels: [("team".to_string(), "x".to_string())].into(),
        };
        let out = rec.apply(vec![sample("a", 1.5)], 0).unwrap();
        assert_eq!(
            out,
            vec![(
                Labels::from_pairs([("__name__", "job:latency:max"), ("job", "a"), ("team", "x")]),
                1.5
            )]
        );
        let e = rec.apply(vec![sample("a", 1.0), sample("b", 1.0)], 1).unwrap_err();
        assert_eq!(e.to_string(), "exceeded limit of 1 with 2 series");
    }
}
