//! Per-series and per-metadata validation (spec §1.3). Each failure carries
//! Cortex's discard reason and a message naming the limit and the flag that
//! changes it. Nothing here allocates unless a check fails.

use std::fmt::Write as _;

use proto::cortex::{LabelPair, MetricMetadata, TimeSeries};

use crate::config::Limits;

/// Longest excerpt of user data quoted in an error (Cortex's `%.200q`).
const MAX_QUOTED_CHARS: usize = 200;

/// Discard reason for samples refused by the rate limiter.
pub const REASON_RATE_LIMITED: &str = "rate_limited";

/// Why a series or metadata entry was refused. All of these are HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error(
        "sample missing metric name (err-cortex-missing-metric-name: every series needs a __name__ label; \
         set -validation.enforce-metric-name=false to accept series without one)"
    )]
    MissingMetricName,
    #[error(
        "sample invalid metric name: {metric} (err-cortex-metric-name-invalid: metric names must match \
         [a-zA-Z_:][a-zA-Z0-9_:]*)"
    )]
    InvalidMetricName { metric: String },
    #[error(
        "series has too many labels (actual: {actual}, limit: {limit}) series: '{series}' \
         (err-cortex-max-label-names-per-series: raise -validation.max-label-names-per-series)"
    )]
    TooManyLabels {
        actual: usize,
        limit: usize,
        series: String,
    },
    #[error(
        "sample invalid label: {label} metric {metric} (err-cortex-label-invalid: label names must match \
         [a-zA-Z_][a-zA-Z0-9_]*)"
    )]
    InvalidLabel { label: String, metric: String },
    #[error(
        "label name too long: {label} metric {metric} (err-cortex-label-name-too-long: the limit is {limit} \
         bytes; raise -validation.max-length-label-name)"
    )]
    LabelNameTooLong {
        label: String,
        metric: String,
        limit: usize,
    },
    #[error(
        "label value too long: {value} metric {metric} (err-cortex-label-value-too-long: the limit is {limit} \
         bytes; raise -validation.max-length-label-value)"
    )]
    LabelValueTooLong {
        value: String,
        metric: String,
        limit: usize,
    },
    #[error(
        "label value is not valid UTF-8: label {label} value {value} metric {metric} \
         (err-cortex-label-value-invalid: label values must be UTF-8 text)"
    )]
    InvalidLabelValue {
        label: String,
        value: String,
        metric: String,
    },
    #[error(
        "duplicate label name: {label} metric {metric} (err-cortex-duplicate-label-names: a label name may \
         appear only once per series)"
    )]
    DuplicateLabelNames { label: String, metric: String },
    #[error(
        "labels not sorted: {label} metric {metric} (err-cortex-labels-not-sorted: labels must be sorted by name)"
    )]
    LabelsNotSorted { label: String, metric: String },
    #[error(
        "timestamp too old: {timestamp_ms} metric: {metric} (err-cortex-sample-too-old: samples older than \
         {max_age} are rejected; raise -validation.reject-old-samples.max-age or set \
         -validation.reject-old-samples=false)"
    )]
    TooOld {
        timestamp_ms: i64,
        metric: String,
        max_age: model::GoDuration,
    },
    #[error(
        "timestamp too new: {timestamp_ms} metric: {metric} (err-cortex-too-far-in-future: samples more than \
         {grace} ahead of the distributor's clock are rejected; raise -validation.create-grace-period)"
    )]
    TooNew {
        timestamp_ms: i64,
        metric: String,
        grace: model::GoDuration,
    },
    #[error(
        "metadata missing metric name (err-cortex-metadata-missing-metric-name: set \
         -validation.enforce-metadata-metric-name=false to accept metadata without one)"
    )]
    MetadataMissingMetricName,
    #[error(
        "metadata '{kind}' value too long: {value} metric {metric} (err-cortex-metadata-too-long: the limit is \
         {limit} bytes; raise -validation.max-metadata-length)"
    )]
    MetadataTooLong {
        kind: &'static str,
        value: String,
        metric: String,
        limit: usize,
    },
}

impl ValidationError {
    /// The `reason` label of `cortex_discarded_samples_total` /
    /// `cortex_discarded_metadata_total` for this failure (Cortex's names).
    pub fn reason(&self) -> &'static str {
        match self {
            ValidationError::MissingMetricName | ValidationError::MetadataMissingMetricName => "missing_metric_name",
            ValidationError::InvalidMetricName { .. } => "metric_name_invalid",
            ValidationError::TooManyLabels { .. } => "max_label_names_per_series",
            ValidationError::InvalidLabel { .. } => "label_invalid",
            ValidationError::LabelNameTooLong { .. } => "label_name_too_long",
            ValidationError::LabelValueTooLong { .. } => "label_value_too_long",
            ValidationError::InvalidLabelValue { .. } => "label_value_invalid",
            ValidationError::DuplicateLabelNames { .. } => "duplicate_label_names",
            ValidationError::LabelsNotSorted { .. } => "labels_not_sorted",
            ValidationError::TooOld { .. } => "greater_than_max_sample_age",
            ValidationError::TooNew { .. } => "too_far_in_future",
            ValidationError::MetadataTooLong {
                kind: "METRIC_NAME", ..
            } => "metric_name_too_long",
            ValidationError::MetadataTooLong { kind: "HELP", .. } => "help_too_long",
            ValidationError::MetadataTooLong { .. } => "unit_too_long",
        }
    }
}

impl From<ValidationError> for server::HttpError {
    fn from(e: ValidationError) -> Self {
        server::HttpError::bad_request(e.to_string())
    }
}

/// Removes empty-value labels (empty means absent in Prometheus) and sorts by
/// name when the sender did not. Sorting is in place and allocation-free.
pub fn normalize_labels(labels: &mut Vec<LabelPair>) {
    labels.retain(|l| !l.value.is_empty());
    if !labels.windows(2).all(|w| w[0].name <= w[1].name) {
        labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    }
}

/// The `__name__` value of (unsorted or sorted) labels.
pub fn metric_name(labels: &[LabelPair]) -> Option<&[u8]> {
    labels
        .iter()
        .find(|l| &l.name[..] == model::METRIC_NAME.as_bytes())
        .map(|l| &l.value[..])
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn is_valid_metric_name(name: &[u8]) -> bool {
    match name.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_' || *first == b':')
                && rest
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
        }
        None => false,
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn is_valid_label_name(name: &[u8]) -> bool {
    match name.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        }
        None => false,
    }
}

/// Quotes at most 200 characters of possibly non-UTF-8 user data.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{:?}", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// `name{a="b", c="d"}`, cut to 200 characters.
fn format_series(labels: &[LabelPair]) -> String {
    let mut out = String::new();
    if let Some(name) = metric_name(labels) {
        out.push_str(&String::from_utf8_lossy(name));
    }
    out.push('{');
    let mut first = true;
    for l in labels.iter().filter(|l| &l.name[..] != model::METRIC_NAME.as_bytes()) {
        if !first {
            out.push_str(", ");
        }
        first = false;
        let _ = write!(
            out,
            "{}={:?}",
            String::from_utf8_lossy(&l.name),
            String::from_utf8_lossy(&l.value)
        );
    }
    out.push('}');
    if let Some((cut, _)) = out.char_indices().nth(MAX_QUOTED_CHARS) {
        out.truncate(cut);
    }
    out
}

/// Validates series and metadata of one request for one tenant at one instant.
pub struct Validator<'a> {
    limits: &'a Limits,
    skip_label_name_validation: bool,
    /// Samples before this are too old (None: old samples accepted).
    oldest_ms: Option<i64>,
    /// Samples after this are too far in the future.
    newest_ms: i64,
}

impl<'a> Validator<'a> {
    pub fn new(limits: &'a Limits, skip_label_name_validation: bool, now_ms: i64) -> Self {
        Validator {
            limits,
            skip_label_name_validation,
            oldest_ms: limits
                .reject_old_samples
                .then(|| now_ms.saturating_sub(limits.reject_old_samples_max_age.as_millis())),
            newest_ms: now_ms.saturating_add(limits.creation_grace_period.as_millis()),
        }
    }

    /// Checks one series whose labels went through [`normalize_labels`].
    pub fn validate_series(&self, ts: &TimeSeries) -> Result<(), ValidationError> {
        self.validate_labels(&ts.labels)?;
        for s in &ts.samples {
            if self.oldest_ms.is_some_and(|oldest| s.timestamp_ms < oldest) {
                return Err(ValidationError::TooOld {
                    timestamp_ms: s.timestamp_ms,
                    metric: quote(metric_name(&ts.labels).unwrap_or_default()),
                    max_age: self.limits.reject_old_samples_max_age,
                });
            }
            if s.timestamp_ms > self.newest_ms {
                return Err(ValidationError::TooNew {
                    timestamp_ms: s.timestamp_ms,
                    metric: quote(metric_name(&ts.labels).unwrap_or_default()),
                    grace: self.limits.creation_grace_period,
                });
            }
        }
        Ok(())
    }

    fn validate_labels(&self, labels: &[LabelPair]) -> Result<(), ValidationError> {
        let limits = self.limits;
        let name = metric_name(labels);
        if limits.enforce_metric_name {
            match name {
                None => return Err(ValidationError::MissingMetricName),
                Some(n) if !is_valid_metric_name(n) => {
                    return Err(ValidationError::InvalidMetricName { metric: quote(n) })
                }
                Some(_) => {}
            }
        }
        if labels.len() > limits.max_label_names_per_series {
            return Err(ValidationError::TooManyLabels {
                actual: labels.len(),
                limit: limits.max_label_names_per_series,
                series: format_series(labels),
            });
        }
        let metric = || quote(name.unwrap_or_default());
        let mut last_name: &[u8] = b"";
        for l in labels {
            if !self.skip_label_name_validation && !is_valid_label_name(&l.name) {
                return Err(ValidationError::InvalidLabel {
                    label: quote(&l.name),
                    metric: metric(),
                });
            }
            if l.name.len() > limits.max_label_name_length {
                return Err(ValidationError::LabelNameTooLong {
                    label: quote(&l.name),
                    metric: metric(),
                    limit: limits.max_label_name_length,
                });
            }
            if l.value.len() > limits.max_label_value_length {
                return Err(ValidationError::LabelValueTooLong {
                    value: quote(&l.value),
                    metric: metric(),
                    limit: limits.max_label_value_length,
                });
            }
            if std::str::from_utf8(&l.value).is_err() {
                return Err(ValidationError::InvalidLabelValue {
                    label: quote(&l.name),
                    value: quote(&l.value),
                    metric: metric(),
                });
            }
            match last_name.cmp(&l.name[..]) {
                std::cmp::Ordering::Equal => {
                    return Err(ValidationError::DuplicateLabelNames {
                        label: quote(&l.name),
                        metric: metric(),
                    })
                }
                std::cmp::Ordering::Greater => {
                    return Err(ValidationError::LabelsNotSorted {
                        label: quote(&l.name),
                        metric: metric(),
                    })
                }
                std::cmp::Ordering::Less => {}
            }
            last_name = &l.name;
        }
        Ok(())
    }

    /// Checks one metadata entry.
    pub fn validate_metadata(&self, m: &MetricMetadata) -> Result<(), ValidationError> {
        if self.limits.enforce_metadata_metric_name && m.metric_family_name.is_empty() {
            return Err(ValidationError::MetadataMissingMetricName);
        }
        let limit = self.limits.max_metadata_length;
        let too_long = [
            ("METRIC_NAME", &m.metric_family_name),
            ("HELP", &m.help),
            ("UNIT", &m.unit),
        ]
        .into_iter()
        .find(|(_, v)| v.len() > limit);
        if let Some((kind, value)) = too_long {
            return Err(ValidationError::MetadataTooLong {
                kind,
                value: quote(value.as_bytes()),
                metric: quote(m.metric_family_name.as_bytes()),
                limit,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
// Tests change one limit at a time from the defaults; that reads best as assignments.
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proto::cortex::Sample;

    const NOW: i64 = 1_700_000_000_000;

    fn lp(n: &str, v: &str) -> LabelPair {
        LabelPair {
            name: Bytes::copy_from_slice(n.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
        }
    }

    fn series(labels: &[(&str, &str)], ts: i64) -> TimeSeries {
        let mut labels: Vec<_> = labels.iter().map(|(n, v)| lp(n, v)).collect();
        normalize_labels(&mut labels);
        TimeSeries {
            labels,
            samples: vec![Sample {
                value: 1.0,
                timestamp_ms: ts,
            }],
        }
    }

    fn check(limits: &Limits, ts: &TimeSeries) -> Result<(), ValidationError> {
        Validator::new(limits, false, NOW).validate_series(ts)
    }

    #[test]
    fn normalize_drops_blank_values_and_sorts() {
        let mut labels = vec![lp("b", "2"), lp("empty", ""), lp("__name__", "m"), lp("a", "1")];
        normalize_labels(&mut labels);
        let names: Vec<&[u8]> = labels.iter().map(|l| &l.name[..]).collect();
        assert_eq!(names, vec![&b"__name__"[..], b"a", b"b"]);
    }

    #[test]
    fn valid_series_passes() {
        let l = Limits::default();
        assert_eq!(check(&l, &series(&[("__name__", "up"), ("job", "x")], NOW)), Ok(()));
        // Exactly at the limits passes.
        let mut l = Limits::default();
        l.max_label_names_per_series = 2;
        l.max_label_name_length = 8; // "__name__"
        l.max_label_value_length = 4;
        assert_eq!(
            check(&l, &series(&[("__name__", "upup"), ("job", "abcd")], NOW)),
            Ok(())
        );
    }

    fn expect(err: Result<(), ValidationError>, reason: &str, text: &[&str]) {
        let e = err.expect_err("expected a validation error");
        assert_eq!(e.reason(), reason, "{e}");
        let msg = e.to_string();
        for t in text {
            assert!(msg.contains(t), "{msg:?} should contain {t:?}");
        }
        assert_eq!(server::HttpError::from(e).code, 400);
    }

    #[test]
    fn missing_metric_name() {
        let l = Limits::default();
        expect(
            check(&l, &series(&[("job", "x")], NOW)),
            "missing_metric_name",
            &["sample missing metric name", "-validation.enforce-metric-name"],
        );
        let mut off = Limits::default();
        off.enforce_metric_name = false;
        assert_eq!(check(&off, &series(&[("job", "x")], NOW)), Ok(()));
    }

    #[test]
    fn invalid_metric_name() {
        expect(
            check(&Limits::default(), &series(&[("__name__", "1bad-name")], NOW)),
            "metric_name_invalid",
            &[
                "sample invalid metric name: \"1bad-name\"",
                "err-cortex-metric-name-invalid",
            ],
        );
        // Colons are fine in metric names.
        assert_eq!(
            check(&Limits::default(), &series(&[("__name__", "a:b_c1")], NOW)),
            Ok(())
        );
    }

    #[test]
    fn too_many_labels() {
        let mut l = Limits::default();
        l.max_label_names_per_series = 2;
        expect(
            check(&l, &series(&[("__name__", "m"), ("a", "1"), ("b", "2")], NOW)),
            "max_label_names_per_series",
            &[
                "series has too many labels (actual: 3, limit: 2) series: 'm{a=\"1\", b=\"2\"}'",
                "(err-cortex-max-label-names-per-series: raise -validation.max-label-names-per-series)",
            ],
        );
    }

    #[test]
    fn invalid_label_name() {
        expect(
            check(
                &Limits::default(),
                &series(&[("__name__", "m"), ("bad-label", "1")], NOW),
            ),
            "label_invalid",
            &[
                "sample invalid label: \"bad-label\" metric \"m\"",
                "err-cortex-label-invalid",
            ],
        );
        // Non-UTF-8 label names fail the charset check.
        let mut ts = series(&[("__name__", "m")], NOW);
        ts.labels.push(LabelPair {
            name: Bytes::from_static(b"\xff\xfe"),
            value: Bytes::from_static(b"v"),
        });
        expect(
            check(&Limits::default(), &ts),
            "label_invalid",
            &["sample invalid label"],
        );
        // The ruler may skip label-name validation.
        assert_eq!(
            Validator::new(&Limits::default(), true, NOW)
                .validate_series(&series(&[("__name__", "m"), ("bad-label", "1")], NOW)),
            Ok(())
        );
    }

    #[test]
    fn label_name_too_long() {
        let mut l = Limits::default();
        l.max_label_name_length = 10;
        expect(
            check(&l, &series(&[("__name__", "m"), ("a_very_long_name", "1")], NOW)),
            "label_name_too_long",
            &[
                "label name too long: \"a_very_long_name\"",
                "limit is 10 bytes",
                "-validation.max-length-label-name",
            ],
        );
    }

    #[test]
    fn label_value_too_long_including_metric_name() {
        let mut l = Limits::default();
        l.max_label_value_length = 5;
        expect(
            check(&l, &series(&[("__name__", "m"), ("a", "123456")], NOW)),
            "label_value_too_long",
            &[
                "label value too long: \"123456\" metric \"m\"",
                "-validation.max-length-label-value",
            ],
        );
        expect(
            check(&l, &series(&[("__name__", "long_metric")], NOW)),
            "label_value_too_long",
            &["label value too long: \"long_metric\""],
        );
        // Quoted excerpts are cut to 200 characters.
        let mut l = Limits::default();
        l.max_label_value_length = 10;
        let huge = "x".repeat(5000);
        let e = check(&l, &series(&[("__name__", "m"), ("a", &huge)], NOW)).unwrap_err();
        assert!(e.to_string().contains(&format!("\"{}\"", "x".repeat(200))));
        assert!(!e.to_string().contains(&"x".repeat(201)));
    }

    #[test]
    fn non_utf8_label_value() {
        let mut ts = series(&[("__name__", "m")], NOW);
        ts.labels.push(LabelPair {
            name: Bytes::from_static(b"job"),
            value: Bytes::from_static(b"a\xffb"),
        });
        expect(
            check(&Limits::default(), &ts),
            "label_value_invalid",
            &["label value is not valid UTF-8: label \"job\"", "metric \"m\""],
        );
    }

    #[test]
    fn duplicate_label_names() {
        expect(
            check(
                &Limits::default(),
                &series(&[("__name__", "m"), ("a", "1"), ("a", "2")], NOW),
            ),
            "duplicate_label_names",
            &["duplicate label name: \"a\" metric \"m\""],
        );
    }

    #[test]
    fn labels_not_sorted_when_not_normalized() {
        let ts = TimeSeries {
            labels: vec![lp("__name__", "m"), lp("b", "1"), lp("a", "2")],
            samples: vec![],
        };
        expect(
            check(&Limits::default(), &ts),
            "labels_not_sorted",
            &["labels not sorted: \"a\" metric \"m\""],
        );
    }

    #[test]
    fn too_old_only_when_enabled() {
        let old = NOW - 15 * 24 * 3600 * 1000;
        assert_eq!(check(&Limits::default(), &series(&[("__name__", "m")], old)), Ok(()));
        let mut l = Limits::default();
        l.reject_old_samples = true;
        expect(
            check(&l, &series(&[("__name__", "m")], old)),
            "greater_than_max_sample_age",
            &[
                &format!("timestamp too old: {old} metric: \"m\""),
                "-validation.reject-old-samples.max-age",
            ],
        );
        assert_eq!(
            check(&l, &series(&[("__name__", "m")], NOW - 13 * 24 * 3600 * 1000)),
            Ok(())
        );
    }

    #[test]
    fn too_new() {
        let l = Limits::default();
        let future = NOW + 11 * 60 * 1000;
        expect(
            check(&l, &series(&[("__name__", "m")], future)),
            "too_far_in_future",
            &[
                &format!("timestamp too new: {future} metric: \"m\""),
                "-validation.create-grace-period",
            ],
        );
        assert_eq!(check(&l, &series(&[("__name__", "m")], NOW + 9 * 60 * 1000)), Ok(()));
    }

    fn md(name: &str, help: &str, unit: &str) -> MetricMetadata {
        MetricMetadata {
            r#type: 1,
            metric_family_name: name.into(),
            help: help.into(),
            unit: unit.into(),
        }
    }

    #[test]
    fn metadata_rules() {
        let mut l = Limits::default();
        l.max_metadata_length = 5;
        let v = Validator::new(&l, false, NOW);
        assert_eq!(v.validate_metadata(&md("up", "help", "s")), Ok(()));
        expect(
            v.validate_metadata(&md("", "h", "")),
            "missing_metric_name",
            &[
                "metadata missing metric name",
                "-validation.enforce-metadata-metric-name",
            ],
        );
        expect(
            v.validate_metadata(&md("longname", "h", "")),
            "metric_name_too_long",
            &[
                "metadata 'METRIC_NAME' value too long: \"longname\"",
                "-validation.max-metadata-length",
            ],
        );
        expect(
            v.validate_metadata(&md("up", "long help", "")),
            "help_too_long",
            &["metadata 'HELP' value too long: \"long help\" metric \"up\""],
        );
        expect(
            v.validate_metadata(&md("up", "", "seconds")),
            "unit_too_long",
            &["metadata 'UNIT' value too long: \"seconds\""],
        );
    }
}
