//! Go-style durations (`15s`, `1m30s`, `2h`, `500ms`; also Prometheus `d`, `w`, `y`)
//! for flags and YAML, serialised back in the same style.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration read and printed the way Cortex's flags and YAML spell them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    pub const fn secs(s: u64) -> Self {
        GoDuration(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        GoDuration(Duration::from_millis(ms))
    }
    pub fn as_millis(&self) -> i64 {
        self.0.as_millis() as i64
    }
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Duration {
        d.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: expected a number with a unit, such as 15s, 1m30s, 2h or 500ms")]
pub struct DurationError(pub String);

/// Parses `1h30m`, `15s`, `250ms`, `1.5h`, `0`, `2d`, `1w`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(s.to_string());
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err(err());
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "w" => 7.0 * 86400.0,
            "y" => 365.0 * 86400.0,
            _ => return Err(err()),
        };
        total += n * secs;
    }
    // `99999999999999999y` is a valid spelling of a duration no Duration can hold.
    Duration::try_from_secs_f64(total).map_err(|_| err())
}

impl std::str::FromStr for GoDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(GoDuration)
    }
}

impl fmt::Display for GoDuration {
    /// Go's `time.Duration.String` style: `1h30m0s`, `15s`, `500ms`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        if d < Duration::from_secs(1) {
            let ms = d.as_secs_f64() * 1e3;
            return if ms.fract() == 0.0 {
                write!(f, "{}ms", ms as u64)
            } else {
                write!(f, "{}ms", ms)
            };
        }
        let total = d.as_secs();
        let (h, m, s) = (total / 3600, (total / 60) % 60, total % 60);
        let frac = d.subsec_nanos();
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if h > 0 || m > 0 {
            write!(f, "{m}m")?;
        }
        if frac == 0 {
            write!(f, "{s}s")
        } else {
            write!(f, "{}s", s as f64 + frac as f64 / 1e9)
        }
    }
}

impl fmt::Debug for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(f64),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
            // A bare number in YAML: Go would read nanoseconds; nobody means that, so seconds.
            Raw::N(n) if n >= 0.0 => Ok(GoDuration(Duration::from_secs_f64(n))),
            Raw::N(n) => Err(serde::de::Error::custom(format!("negative duration {n}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print_round_trip() {
        for (s, want) in [
            ("15s", 15.0),
            ("1m30s", 90.0),
            ("2h", 7200.0),
            ("500ms", 0.5),
            ("0", 0.0),
            ("1.5h", 5400.0),
            ("2d", 172800.0),
        ] {
            assert_eq!(parse_duration(s).unwrap().as_secs_f64(), want, "{s}");
        }
        assert_eq!(GoDuration::secs(5400).to_string(), "1h30m0s");
        assert_eq!(GoDuration::secs(15).to_string(), "15s");
        assert_eq!(GoDuration::millis(250).to_string(), "250ms");
        assert_eq!(GoDuration::secs(0).to_string(), "0s");
        // Too long for a Duration: an error, not a panic.
        let infinite = format!("{}s", "9".repeat(400));
        for bad in ["", "15", "s", "1x", "1h-5m", "99999999999999999y", infinite.as_str()] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
