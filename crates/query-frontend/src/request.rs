//! A range query as the middlewares see it, parsed from and turned back into HTTP.

use proto::httpgrpc::{Header, HttpRequest};

use crate::error::FrontendError;

/// Prometheus refuses range queries with more points than this per series.
pub const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// One `query_range` call; times in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRequest {
    /// The path it came on (`/api/prom/api/v1/query_range`), reused for the pieces.
    pub path: String,
    pub start: i64,
    pub end: i64,
    pub step: i64,
    /// The client's `timeout` parameter, passed on untouched.
    pub timeout: Option<String>,
    pub query: String,
    /// `Cache-Control: no-store` on the request: neither read nor fill the results cache.
    pub no_store: bool,
}

impl RangeRequest {
    /// Parses the parameters as the querier would, so that bad input gets the querier's
    /// `bad_data` answer before anything is queued.
    pub fn from_params(path: &str, params: &[(String, String)], no_store: bool) -> Result<Self, FrontendError> {
        // Form values take precedence over the URL, as in Go's Request.FormValue.
        let get = |k: &str| params.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let start = parse_time(get("start").unwrap_or(""), "start")?;
        let end = parse_time(get("end").unwrap_or(""), "end")?;
        if end < start {
            return Err(FrontendError::BadData(
                "end timestamp must not be before start time".into(),
            ));
        }
        let step = parse_duration_ms(get("step").unwrap_or(""), "step")?;
        if step <= 0 {
            return Err(FrontendError::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if (end - start) / step > MAX_POINTS_PER_SERIES {
            return Err(FrontendError::BadData(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
            ));
        }
        Ok(RangeRequest {
            path: path.to_string(),
            start,
            end,
            step,
            timeout: get("timeout").map(str::to_string),
            query: get("query").unwrap_or("").to_string(),
            no_store,
        })
    }

    pub fn with_start_end(&self, start: i64, end: i64) -> RangeRequest {
        RangeRequest {
            start,
            end,
            ..self.clone()
        }
    }

    /// The last point evaluated: `start + k·step ≤ end`.
    pub fn last_point(&self) -> i64 {
        self.start + (self.end - self.start) / self.step * self.step
    }

    /// As the GET request a querier (or Prometheus) answers.
    pub fn to_http(&self, tenant: &str) -> HttpRequest {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("end", &format_seconds(self.end));
        q.append_pair("query", &self.query);
        q.append_pair("start", &format_seconds(self.start));
        q.append_pair("step", &format_seconds(self.step));
        if let Some(t) = &self.timeout {
            q.append_pair("timeout", t);
        }
        HttpRequest {
            method: "GET".into(),
            url: format!("{}?{}", self.path, q.finish()),
            headers: vec![
                header(model::tenant::ORG_ID_HEADER, tenant),
                header("Accept", "application/json"),
            ],
            body: Vec::new(),
        }
    }
}

pub fn header(key: &str, value: &str) -> Header {
    Header {
        key: key.to_string(),
        values: vec![value.to_string()],
    }
}

/// `1435781451781` → `1435781451.781`; `1000` → `1`.
pub fn format_seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let a = ms.unsigned_abs();
    if a.is_multiple_of(1000) {
        format!("{sign}{}", a / 1000)
    } else {
        let frac = format!("{:03}", a % 1000);
        format!("{sign}{}.{}", a / 1000, frac.trim_end_matches('0'))
    }
}

/// A time as the Prometheus API accepts it: Unix seconds (float) or RFC 3339.
pub fn parse_time(s: &str, param: &str) -> Result<i64, FrontendError> {
    if let Ok(f) = s.parse::<f64>() {
        // Beyond ±2^53 ms the float has no millisecond precision left; Prometheus refuses too.
        if f.is_finite() && f.abs() < 9.0e12 {
            return Ok((f * 1000.0).round() as i64);
        }
    }
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(dt.timestamp_millis());
    }
    Err(FrontendError::BadData(format!(
        "invalid parameter {param:?}: cannot parse {s:?} to a valid timestamp"
    )))
}

/// A duration: float seconds or a Prometheus duration (`5m`, `1h30m`).
pub fn parse_duration_ms(s: &str, param: &str) -> Result<i64, FrontendError> {
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() && f.abs() < 9.0e12 {
            return Ok((f * 1000.0).round() as i64);
        }
    }
    model::duration::parse_duration(s)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| {
            FrontendError::BadData(format!(
                "invalid parameter {param:?}: cannot parse {s:?} to a valid duration"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_and_round_trips_through_http() {
        let r = RangeRequest::from_params(
            "/api/prom/api/v1/query_range",
            &params(&[
                ("query", "sum(rate(m[5m]))"),
                ("start", "1.5"),
                ("end", "1970-01-01T01:00:00Z"),
                ("step", "15s"),
            ]),
            false,
        )
        .unwrap();
        assert_eq!((r.start, r.end, r.step), (1500, 3_600_000, 15_000));
        let h = r.to_http("t1");
        let (path, qs) = h.url.split_once('?').unwrap();
        assert_eq!(path, "/api/prom/api/v1/query_range");
        let back: Vec<(String, String)> = form_urlencoded::parse(qs.as_bytes()).into_owned().collect();
        assert_eq!(RangeRequest::from_params(path, &back, false).unwrap(), r);
        assert_eq!(h.headers[0].values, vec!["t1"]);
    }

    #[test]
    fn bad_input_is_bad_data() {
        let bad = |kv: &[(&str, &str)]| match RangeRequest::from_params("/q", &params(kv), false) {
            Err(FrontendError::BadData(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(bad(&[("start", "x"), ("end", "1"), ("step", "1")]).contains("\"start\""));
        assert_eq!(
            bad(&[("start", "10"), ("end", "1"), ("step", "1")]),
            "end timestamp must not be before start time"
        );
        assert!(bad(&[("start", "1"), ("end", "2"), ("step", "0")]).starts_with("zero or negative"));
        assert!(bad(&[("start", "1"), ("end", "2"), ("step", "1e300")]).contains("\"step\""));
        assert!(bad(&[("start", "0"), ("end", "11001"), ("step", "1")]).contains("11,000 points"));
    }

    #[test]
    fn seconds_formatting() {
        assert_eq!(format_seconds(1_435_781_451_781), "1435781451.781");
        assert_eq!(format_seconds(1000), "1");
        assert_eq!(format_seconds(1500), "1.5");
        assert_eq!(format_seconds(-1500), "-1.5");
        assert_eq!(format_seconds(0), "0");
    }
}
