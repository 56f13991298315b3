//! Formatting of the ingester's client-facing error messages, matching how
//! Cortex (Go) prints timestamps, floats and label sets in them.

use std::fmt::Write;

use model::Labels;

/// Prometheus `labels.Labels.String()`: `{__name__="up", job="api"}`.
pub(crate) fn format_series(labels: &Labels) -> String {
    let mut out = String::from("{");
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}={:?}", l.name, l.value);
    }
    out.push('}');
    out
}

/// Same as [`format_series`] for raw request pairs that may not be UTF-8.
pub(crate) fn format_pairs_lossy(pairs: &[(&[u8], &[u8])]) -> String {
    let mut out = String::from("{");
    for (i, (n, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}={:?}", String::from_utf8_lossy(n), String::from_utf8_lossy(v));
    }
    out.push('}');
    out
}

/// Prometheus `model.Time.String()`: seconds with the shortest exact decimals.
pub(crate) fn format_go_time(ms: i64) -> String {
    format!("{}", ms as f64 / 1000.0)
}

/// Go's `%v` for a float64: shortest representation, exponent form when the
/// decimal exponent is < -4 or >= 21 (`1e+21`, `1e-05`), `NaN`, `+Inf`, `-Inf`.
pub(crate) fn format_go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        // Rust: "1e21", "1.5e-7" → Go: "1e+21", "1.5e-07".
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').expect("exponent form");
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    format!("{v}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formats() {
        assert_eq!(format_go_time(1_500), "1.5");
        assert_eq!(format_go_time(1_609_459_200_123), "1609459200.123");
        assert_eq!(format_go_time(-2_000), "-2");
        assert_eq!(format_go_float(1.0), "1");
        assert_eq!(format_go_float(0.25), "0.25");
        assert_eq!(format_go_float(1e21), "1e+21");
        assert_eq!(format_go_float(-1.5e-7), "-1.5e-07");
        assert_eq!(format_go_float(123456.0), "123456");
        assert_eq!(format_go_float(f64::NAN), "NaN");
        assert_eq!(format_go_float(f64::NEG_INFINITY), "-Inf");
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]);
        assert_eq!(format_series(&l), r#"{__name__="up", job="a\"b"}"#);
    }
}
