//! Parsing of Prometheus API parameters: times, durations, steps. Every value a client
//! can send parses to a number the engine can do arithmetic with, or to a 400.

use crate::api::ApiError;

/// The latest time Prometheus accepts (its `MaxTime`, `math.MaxInt64/1000 - 62135596801`
/// seconds), in milliseconds; the earliest is its negation (Prometheus's `MinTime` is
/// one second earlier, which no client relies on). Times beyond are refused, so that
/// `end - start` of any accepted pair is computed without overflow in 128-bit arithmetic
/// and every time fits an `i64` of milliseconds.
const MAX_TIME_MS: i64 = (i64::MAX / 1000 - 62_135_596_801) * 1000;

/// Parses a time as the Prometheus API accepts it: Unix seconds (float) or RFC 3339.
pub fn parse_time(s: &str, param: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad_data(format!(
            "invalid parameter {param:?}: cannot parse {s:?} to a valid timestamp"
        ))
    };
    if let Ok(f) = s.parse::<f64>() {
        // Milliseconds, rounded like Prometheus (which keeps nanoseconds then truncates to ms).
        let ms = (f * 1000.0).round();
        // NaN fails both comparisons.
        if ms >= -(MAX_TIME_MS as f64) && ms <= MAX_TIME_MS as f64 {
            return Ok(ms as i64);
        }
        return Err(bad());
    }
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(s) {
        let ms = dt.timestamp_millis();
        if (-MAX_TIME_MS..=MAX_TIME_MS).contains(&ms) {
            return Ok(ms);
        }
    }
    Err(bad())
}

/// Parses a duration: float seconds or a Prometheus duration (`5m`, `1h30m`), in
/// milliseconds. Like Prometheus, a duration must fit Go's `time.Duration` (an int64 of
/// nanoseconds, about 292 years).
pub fn parse_duration_ms(s: &str, param: &str) -> Result<i64, ApiError> {
    const MAX_NANOS: f64 = i64::MAX as f64;
    if let Ok(f) = s.parse::<f64>() {
        let nanos = f * 1e9;
        if nanos.is_nan() {
            return Err(ApiError::bad_data(format!(
                "invalid parameter {param:?}: cannot parse {s:?} to a valid duration"
            )));
        }
        if !(-MAX_NANOS..=MAX_NANOS).contains(&nanos) {
            return Err(ApiError::bad_data(format!(
                "invalid parameter {param:?}: cannot parse {s:?} to a valid duration. It overflows int64"
            )));
        }
        return Ok((f * 1000.0).round() as i64);
    }
    model::duration::parse_duration(s)
        .ok()
        .filter(|d| d.as_nanos() <= i64::MAX as u128)
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| {
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
        assert_eq!(parse_time("-1.5", "t").unwrap(), -1500);
        // Prometheus's MaxTime is accepted (floats are coarse there), a bit later is not.
        assert!(parse_time("9223309901257974", "t").unwrap() <= MAX_TIME_MS);
        assert!(parse_time("9223309901258000", "t").is_err());
        // The issue's `start=-9e15&end=9e15` are valid times (their difference is not an i64).
        assert_eq!(parse_time("9e15", "t").unwrap(), 9_000_000_000_000_000_000);
        for bad in [
            "yesterday",
            "",
            "NaN",
            "Inf",
            "-Inf",
            "1e300",
            "1e16",
            "-1e16",
            "9223372036854775807",
        ] {
            let e = parse_time(bad, "start").unwrap_err();
            assert_eq!(e.error_type, "bad_data", "{bad}");
            assert_eq!(
                e.message,
                format!("invalid parameter \"start\": cannot parse {bad:?} to a valid timestamp")
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("15", "step").unwrap(), 15000);
        assert_eq!(parse_duration_ms("1m", "step").unwrap(), 60000);
        assert_eq!(parse_duration_ms("0.001", "step").unwrap(), 1);
        assert_eq!(parse_duration_ms("-5", "step").unwrap(), -5000);
        assert!(parse_duration_ms("x", "step").is_err());
        assert!(parse_duration_ms("NaN", "step").is_err());
        assert_eq!(
            parse_duration_ms("1e300", "step").unwrap_err().message,
            "invalid parameter \"step\": cannot parse \"1e300\" to a valid duration. It overflows int64"
        );
        assert!(parse_duration_ms("Inf", "timeout").is_err());
        assert!(parse_duration_ms("99999999999999999y", "timeout").is_err());
        assert!(parse_duration_ms("300y", "timeout").is_err());
        assert_eq!(parse_duration_ms("290y", "timeout").unwrap(), 290 * 365 * 86_400_000);
    }
}
