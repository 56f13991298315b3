//! Prometheus's rule-file format (`groups: [{name, interval, limit, rules}]`) and the
//! checks `promtool check rules` makes, with messages naming the group and rule.

use std::collections::{BTreeMap, HashSet};

use model::GoDuration;
use serde::{Deserialize, Serialize};

use crate::template;

/// A rule file: what `promtool check rules` reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub groups: Vec<RuleGroup>,
}

/// One rule group; its rules are evaluated in order at one interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroup {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<GoDuration>,
    /// Most alerts or series one rule may produce (0 = no limit).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: u64,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A recording (`record`) or alerting (`alert`) rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    #[serde(default)]
    pub expr: String,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Rule {
    /// The rule's name: its `record` or `alert`.
    pub fn name(&self) -> &str {
        self.record.as_deref().or(self.alert.as_deref()).unwrap_or("")
    }
}

/// Why a rule file or group was refused: every problem found, each naming its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct RuleFmtErrors(pub Vec<String>);

/// Parses one rule group (the body of a rules-API `POST`), refusing unknown fields.
pub fn parse_group(text: &str) -> Result<RuleGroup, RuleFmtErrors> {
    let g: RuleGroup = serde_saphyr::from_str(text).map_err(|e| RuleFmtErrors(vec![e.to_string()]))?;
    validate_group(&g)?;
    Ok(g)
}

/// Parses a whole rule file and validates it like `promtool check rules`.
pub fn parse_file(text: &str) -> Result<RuleFile, RuleFmtErrors> {
    let f: RuleFile = serde_saphyr::from_str(text).map_err(|e| RuleFmtErrors(vec![e.to_string()]))?;
    let mut errs = vec![];
    let mut seen = HashSet::new();
    for g in &f.groups {
        if !seen.insert(g.name.as_str()) {
            errs.push(format!(
                "{:?}: groupname: \"{}\" is repeated in the same file",
                g.name, g.name
            ));
        }
        if let Err(e) = validate_group(g) {
            errs.extend(e.0);
        }
    }
    if errs.is_empty() {
        Ok(f)
    } else {
        Err(RuleFmtErrors(errs))
    }
}

/// Prometheus's `rulefmt` checks for one group.
pub fn validate_group(g: &RuleGroup) -> Result<(), RuleFmtErrors> {
    let mut errs = vec![];
    if g.name.is_empty() {
        errs.push("Groupname must not be empty".to_string());
    }
    for (i, r) in g.rules.iter().enumerate() {
        for e in validate_rule(r) {
            errs.push(format!("group {:?}, rule {}, {:?}: {e}", g.name, i + 1, r.name()));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(RuleFmtErrors(errs))
    }
}

fn validate_rule(r: &Rule) -> Vec<String> {
    let mut errs = vec![];
    match (&r.record, &r.alert) {
        (Some(_), Some(_)) => errs.push("only one of 'record' and 'alert' must be set".into()),
        (None, None) => errs.push("one of 'record' or 'alert' must be set".into()),
        _ => {}
    }
    if r.expr.is_empty() {
        errs.push("field 'expr' must be set in rule".into());
    } else if let Err(e) = promql::parse(&r.expr) {
        errs.push(format!("could not parse expression: {e}"));
    }
    if let Some(record) = &r.record {
        if !r.annotations.is_empty() {
            errs.push("invalid field 'annotations' in recording rule".into());
        }
        if r.for_.is_some() {
            errs.push("invalid field 'for' in recording rule".into());
        }
        if r.keep_firing_for.is_some() {
            errs.push("invalid field 'keep_firing_for' in recording rule".into());
        }
        if !is_metric_name(record) {
            errs.push(format!("invalid recording rule name: {record}"));
        }
    }
    if let Some(alert) = &r.alert {
        if alert.is_empty() {
            errs.push("alert name must not be empty".into());
        }
    }
    for (k, v) in &r.labels {
        if !is_label_name(k) || k == model::METRIC_NAME {
            errs.push(format!("invalid label name: {k}"));
        }
        if r.alert.is_some() {
            if let Err(e) = template::Template::parse(v) {
                errs.push(format!("label {k:?}: {e}"));
            }
        }
    }
    for (k, v) in &r.annotations {
        if !is_label_name(k) {
            errs.push(format!("invalid annotation name: {k}"));
        }
        if let Err(e) = template::Template::parse(v) {
            errs.push(format!("annotation {k:?}: {e}"));
        }
    }
    errs
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn is_metric_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn is_label_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> String {
        parse_file(text).unwrap_err().to_string()
    }

    #[test]
    fn accepts_prometheus_example() {
        let f = parse_file(
            r#"
groups:
- name: example
  interval: 30s
  rules:
  - record: job:up:sum
    expr: sum by (job) (up)
  - alert: HighRequestLatency
    expr: job:request_latency_seconds:mean5m{job="myjob"} > 0.5
    for: 10m
    keep_firing_for: 5m
    labels:
      severity: page
    annotations:
      summary: "High latency on {{ $labels.instance }}: {{ $value | humanize }}"
"#,
        )
        .unwrap();
        assert_eq!(f.groups[0].rules.len(), 2);
        assert_eq!(f.groups[0].interval.unwrap().0.as_secs(), 30);
        assert_eq!(f.groups[0].rules[1].for_.unwrap().0.as_secs(), 600);
        // Round trip through YAML keeps the group.
        let text = serde_saphyr::to_string(&f).unwrap();
        assert_eq!(parse_file(&text).unwrap(), f);
    }

    #[test]
    fn rejects_what_promtool_rejects() {
        let e = errs("groups:\n- name: g\n  rules:\n  - record: 'bad name'\n    expr: up\n");
        assert!(e.contains("invalid recording rule name: bad name"), "{e}");
        let e = errs("groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n    for: 5m\n");
        assert!(
            e.contains(r#"group "g", rule 1, "r": invalid field 'for' in recording rule"#),
            "{e}"
        );
        let e = errs("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: 'sum(up'\n");
        assert!(e.contains(r#"rule 1, "A": could not parse expression"#), "{e}");
        let e = errs("groups:\n- name: g\n  rules:\n  - alert: A\n    record: r\n    expr: up\n");
        assert!(e.contains("only one of 'record' and 'alert' must be set"), "{e}");
        let e = errs("groups:\n- name: g\n  rules:\n  - expr: up\n");
        assert!(e.contains("one of 'record' or 'alert' must be set"), "{e}");
        let e = errs("groups:\n- name: g\n  rules:\n  - alert: A\n");
        assert!(e.contains("field 'expr' must be set in rule"), "{e}");
        let e = errs("groups:\n- name: g\n  rules: []\n- name: g\n  rules: []\n");
        assert!(e.contains("groupname: \"g\" is repeated in the same file"), "{e}");
        let e = errs("groups:\n- name: ''\n  rules: []\n");
        assert!(e.contains("Groupname must not be empty"), "{e}");
        let e = errs("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    labels:\n      'a-b': x\n");
        assert!(e.contains("invalid label name: a-b"), "{e}");
        let e = errs("groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n    annotations:\n      a: x\n");
        assert!(e.contains("invalid field 'annotations' in recording rule"), "{e}");
        let e =
            errs("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    annotations:\n      a: '{{ $value'\n");
        assert!(e.contains(r#""A": annotation "a""#), "{e}");
        // Unknown fields are refused, as rulefmt's strict YAML decoding does.
        let e = errs("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    severity: page\n");
        assert!(e.contains("severity"), "{e}");
    }

    #[test]
    fn group_body_for_the_api() {
        let g = parse_group("name: g\nrules:\n- record: r\n  expr: up\n").unwrap();
        assert_eq!(g.name, "g");
        let e = parse_group("name: g\nrules:\n- record: r\n  expr: up\n  for: 1m\n").unwrap_err();
        assert!(e.to_string().contains("\"r\": invalid field 'for'"), "{e}");
    }
}
