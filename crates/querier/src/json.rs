//! Prometheus API v1 JSON, byte for byte the way Prometheus writes it
//! (timestamps as seconds with up to 3 decimals, values as strings).

use std::fmt::Write;

use model::Labels;
use promql::Value;

/// `1435781451781` → `1435781451.781`; `1000` → `1`.
pub fn write_timestamp(out: &mut String, t: i64) {
    let mut t = t;
    if t < 0 {
        out.push('-');
        t = -t;
    }
    let _ = write!(out, "{}", t / 1000);
    let frac = t % 1000;
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)` with Prometheus's spellings of the specials.
pub use promql::format_float as format_value;

pub fn write_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

pub fn write_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, &l.name);
        out.push(':');
        write_str(out, &l.value);
    }
    out.push('}');
}

fn write_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    write_timestamp(out, t);
    out.push_str(",\"");
    out.push_str(&format_value(v));
    out.push_str("\"]");
}

/// The `data` object of a query response.
pub fn write_query_data(out: &mut String, value: &Value) {
    match value {
        Value::Scalar { t, v } => {
            out.push_str("{\"resultType\":\"scalar\",\"result\":");
            write_point(out, *t, *v);
            out.push('}');
        }
        Value::String { t, s } => {
            out.push_str("{\"resultType\":\"string\",\"result\":[");
            write_timestamp(out, *t);
            out.push(',');
            write_str(out, s);
            out.push_str("]}");
        }
        Value::Vector(samples) => {
            out.push_str("{\"resultType\":\"vector\",\"result\":[");
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(out, &s.labels);
                out.push_str(",\"value\":");
                write_point(out, s.t, s.v);
                out.push('}');
            }
            out.push_str("]}");
        }
        Value::Matrix(series) => {
            out.push_str("{\"resultType\":\"matrix\",\"result\":[");
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(out, &s.labels);
                out.push_str(",\"values\":[");
                for (j, p) in s.samples.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    write_point(out, p.t, p.v);
                }
                out.push_str("]}");
            }
            out.push_str("]}");
        }
    }
}

/// `{"status":"success","data":<data>}`.
pub fn success(data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 32);
    out.push_str("{\"status\":\"success\",\"data\":");
    out.push_str(data);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Sample, Series};
    use promql::VectorSample;

    #[test]
    fn timestamps_and_values_like_prometheus() {
        let mut s = String::new();
        write_timestamp(&mut s, 1435781451781);
        assert_eq!(s, "1435781451.781");
        s.clear();
        write_timestamp(&mut s, 1000);
        assert_eq!(s, "1");
        s.clear();
        write_timestamp(&mut s, 1005);
        assert_eq!(s, "1.005");
        s.clear();
        write_timestamp(&mut s, -1500);
        assert_eq!(s, "-1.500");
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(1e21), "1000000000000000000000");
    }

    #[test]
    fn shapes() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let mut s = String::new();
        write_query_data(
            &mut s,
            &Value::Vector(vec![VectorSample {
                labels: l.clone(),
                t: 1000,
                v: 1.0,
            }]),
        );
        assert_eq!(
            s,
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[1,"1"]}]}"#
        );
        s.clear();
        write_query_data(
            &mut s,
            &Value::Matrix(vec![Series {
                labels: l,
                samples: vec![Sample { t: 1000, v: 1.0 }, Sample { t: 2500, v: 2.0 }],
            }]),
        );
        assert_eq!(
            s,
            r#"{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a"},"values":[[1,"1"],[2.500,"2"]]}]}"#
        );
        s.clear();
        write_query_data(&mut s, &Value::Scalar { t: 1000, v: 2.0 });
        assert_eq!(s, r#"{"resultType":"scalar","result":[1,"2"]}"#);
        s.clear();
        write_query_data(&mut s, &Value::String { t: 1000, s: "x".into() });
        assert_eq!(s, r#"{"resultType":"string","result":[1,"x"]}"#);
    }
}
