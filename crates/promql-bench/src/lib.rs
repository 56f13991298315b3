//! Helpers shared by the two PromQL benchmarks (`promql-bench`, `bench-longrange`): parsing
//! `query_range` answers, comparing them within a float tolerance, medians.

use std::collections::BTreeMap;

/// One query's result: labels (canonical text) → points (t in ms, value).
pub type Result = BTreeMap<String, Vec<(i64, f64)>>;

pub fn parse_value(v: &serde_json::Value) -> f64 {
    match v.as_str().unwrap_or("NaN") {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().unwrap_or(f64::NAN),
    }
}

pub fn parse_result(body: &[u8]) -> std::result::Result<Result, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if v["status"] != "success" {
        return Err(String::from_utf8_lossy(body).into_owned());
    }
    let mut out = Result::new();
    for s in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        let metric: BTreeMap<String, String> = serde_json::from_value(s["metric"].clone()).unwrap_or_default();
        let key = metric
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(",");
        let points = s["values"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| {
                (
                    (p[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64,
                    parse_value(&p[1]),
                )
            })
            .collect();
        out.insert(key, points);
    }
    Ok(out)
}

/// Whether two answers agree: same series, same timestamps, values within 1e-9 relative.
pub fn compare(a: &Result, b: &Result) -> std::result::Result<(), String> {
    compare_within(a, b, 1e-9)
}

/// [`compare`] with a relative tolerance `rel` (summation order differs between engines).
pub fn compare_within(a: &Result, b: &Result, rel: f64) -> std::result::Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{} series vs {}", a.len(), b.len()));
    }
    for (k, pa) in a {
        let Some(pb) = b.get(k) else {
            return Err(format!("series {{{k}}} missing"));
        };
        if pa.len() != pb.len() {
            return Err(format!("{{{k}}}: {} points vs {}", pa.len(), pb.len()));
        }
        for (x, y) in pa.iter().zip(pb) {
            let same = x.0 == y.0
                && (x.1 == y.1
                    || (x.1.is_nan() && y.1.is_nan())
                    || (x.1 - y.1).abs() <= rel * x.1.abs().max(y.1.abs()));
            if !same {
                return Err(format!("{{{k}}}: {:?} vs {:?}", x, y));
            }
        }
    }
    Ok(())
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
