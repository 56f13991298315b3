//! Command-line flags (`--name value` or `--name=value`).

use std::time::Duration;

pub const USAGE: &str = "\
loadgen: remote-write load generator (node-exporter-like series)

  --url URL                  remote-write endpoint (e.g. http://127.0.0.1:9009/api/v1/push)
  --series N                 distinct series (default 10000)
  --samples-per-series M     samples per series, one scrape round each (default 10)
  --batch B                  samples per request (default 1000)
  --concurrency C            requests in flight (default 8; at most series/batch,
                             so a series' samples arrive in order)
  --tenant T                 X-Scope-OrgID header (default: none)
  --interval D               time between a series' samples, e.g. 15s (default 15s)
  --timeout D                per-request timeout (default 30s)
  --seed S                   random seed (default 1)
  --free-port                print a free loopback TCP port and exit (for scripts)
";

/// Parsed flags.
#[derive(Clone, Debug, PartialEq)]
pub struct Args {
    pub url: String,
    pub series: usize,
    pub samples_per_series: usize,
    pub batch: usize,
    pub concurrency: usize,
    pub tenant: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub seed: u64,
    pub free_port: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            url: String::new(),
            series: 10_000,
            samples_per_series: 10,
            batch: 1000,
            concurrency: 8,
            tenant: None,
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(30),
            seed: 1,
            free_port: false,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArgsError {
    #[error("unknown flag {0}\n\n{USAGE}")]
    Unknown(String),
    #[error("flag {0} needs a value")]
    MissingValue(String),
    #[error("flag {flag}: invalid value {value:?}: {reason}")]
    Invalid {
        flag: String,
        value: String,
        reason: String,
    },
    #[error("--url is required\n\n{USAGE}")]
    NoUrl,
    #[error("help requested")]
    Help,
}

fn parse_duration(flag: &str, v: &str) -> Result<Duration, ArgsError> {
    let invalid = |reason: &str| ArgsError::Invalid {
        flag: flag.into(),
        value: v.into(),
        reason: reason.into(),
    };
    let (num, unit) = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| v.split_at(i))
        .ok_or_else(|| invalid("needs a unit: ms, s or m"))?;
    let n: f64 = num.parse().map_err(|_| invalid("not a number"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(invalid("unit must be ms, s or m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, ArgsError> {
    v.parse().map_err(|_| ArgsError::Invalid {
        flag: flag.into(),
        value: v.into(),
        reason: "not a non-negative integer".into(),
    })
}

impl Args {
    pub fn parse(argv: impl IntoIterator<Item = String>) -> Result<Args, ArgsError> {
        let mut a = Args::default();
        let mut it = argv.into_iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) => (f.to_string(), Some(v.to_string())),
                None => (arg.clone(), None),
            };
            let flag = format!("--{}", flag.trim_start_matches('-'));
            match flag.as_str() {
                "--help" | "--h" => return Err(ArgsError::Help),
                "--free-port" => {
                    a.free_port = true;
                    continue;
                }
                _ => {}
            }
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next())
                    .ok_or(ArgsError::MissingValue(flag.clone()))
            };
            match flag.as_str() {
                "--url" => a.url = value()?,
                "--series" => a.series = parse_num(&flag, &value()?)?,
                "--samples-per-series" => a.samples_per_series = parse_num(&flag, &value()?)?,
                "--batch" => a.batch = parse_num(&flag, &value()?)?,
                "--concurrency" => a.concurrency = parse_num(&flag, &value()?)?,
                "--tenant" => a.tenant = Some(value()?).filter(|t| !t.is_empty()),
                "--interval" => a.interval = parse_duration(&flag, &value()?)?,
                "--timeout" => a.timeout = parse_duration(&flag, &value()?)?,
                "--seed" => a.seed = parse_num(&flag, &value()?)?,
                _ => return Err(ArgsError::Unknown(arg)),
            }
        }
        if a.free_port {
            return Ok(a);
        }
        if a.url.is_empty() {
            return Err(ArgsError::NoUrl);
        }
        for (flag, v) in [
            ("--series", a.series),
            ("--samples-per-series", a.samples_per_series),
            ("--batch", a.batch),
            ("--concurrency", a.concurrency),
        ] {
            if v == 0 {
                return Err(ArgsError::Invalid {
                    flag: flag.into(),
                    value: "0".into(),
                    reason: "must be at least 1".into(),
                });
            }
        }
        Ok(a)
    }

    /// Requests per scrape round. More requests in flight than this could
    /// deliver a series' next sample before its previous one.
    pub fn requests_per_round(&self) -> usize {
        self.series.div_ceil(self.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[&str]) -> Result<Args, ArgsError> {
        Args::parse(s.iter().map(|s| s.to_string()))
    }

    #[test]
    fn both_flag_forms_and_defaults() {
        let a = parse(&[
            "--url",
            "http://x/push",
            "--series=5",
            "-batch",
            "2",
            "--tenant=t1",
            "--interval=500ms",
        ])
        .unwrap();
        assert_eq!(a.url, "http://x/push");
        assert_eq!(a.series, 5);
        assert_eq!(a.batch, 2);
        assert_eq!(a.tenant.as_deref(), Some("t1"));
        assert_eq!(a.interval, Duration::from_millis(500));
        assert_eq!(a.samples_per_series, 10);
        assert_eq!(a.requests_per_round(), 3);
    }

    #[test]
    fn errors_name_the_flag() {
        assert_eq!(parse(&["--series", "1"]), Err(ArgsError::NoUrl));
        assert_eq!(parse(&["--url"]), Err(ArgsError::MissingValue("--url".into())));
        assert!(matches!(parse(&["--url=u", "--batch=x"]), Err(ArgsError::Invalid { flag, .. }) if flag == "--batch"));
        assert!(matches!(
            parse(&["--url=u", "--batch=0"]),
            Err(ArgsError::Invalid { .. })
        ));
        assert!(matches!(
            parse(&["--url=u", "--interval=15"]),
            Err(ArgsError::Invalid { .. })
        ));
        assert!(matches!(parse(&["--bogus"]), Err(ArgsError::Unknown(f)) if f == "--bogus"));
        assert!(parse(&["--free-port"]).unwrap().free_port);
    }
}
