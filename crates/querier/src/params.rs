//! Parsing of Prometheus API parameters: times, durations, steps.

use crate::api::ApiError;

/// Parses a time as the Prometheus API accepts it: Unix seconds (float) or RFC 3339.
pub fn parse_time(s: &str, param: &str) -> Result<i64, ApiError> {
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() {
            // Milliseconds, rounded like Prometheus (which keeps nanoseconds then truncates to ms).
            return Ok((f * 1000.0).round() as i64);
        }
    }
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(dt.timestamp_millis());
    }
    Err(ApiError::bad_data(format!(
        "invalid parameter {param:?}: cannot parse {s:?} to a valid timestamp"
    )))
}

/// Parses a duration: float seconds or a Prometheus duration (`5m`, `1h30m`).
pub fn parse_duration_ms(s: &str, param: &str) -> Result<i64, ApiError> {
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() {
            return Ok((f * 1000.0).round() as i64);
        }
    }
    model::duration::parse_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| {
            ApiError::bad_data(format!(
                "invalid parameter {param:?}: cannot parse {s:?} to a valid duration"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1435781451.781", "t").unwrap(), 1435781451781);
        assert_eq!(parse_time("2015-07-01T20:10:51.781Z", "t").unwrap(), 1435781451781);
        assert!(parse_time("yesterday", "t").is_err());
        assert_eq!(parse_duration_ms("15", "step").unwrap(), 15000);
        assert_eq!(parse_duration_ms("1m", "step").unwrap(), 60000);
        assert!(parse_duration_ms("x", "step").is_err());
    }
}
