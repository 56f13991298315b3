//! One config tree, two spellings: Cortex-style flags (`-distributor.replication-factor=3`,
//! one or two dashes) and a YAML file (`-config.file`), over serde defaults.
//!
//! Every config struct is `Serialize + Deserialize + Default`. A [`Flag`] names
//! a flag and the dotted YAML path it sets. Loading starts from the defaults,
//! overlays the YAML file (unknown keys are errors), then the flags (unknown
//! flags are errors), and deserialises the result. A flag's value is read with
//! the type its default has in the tree, so the tables stay declarative.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

/// A command-line flag bound to a YAML path (`distributor.replication_factor`).
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    pub name: &'static str,
    pub path: &'static str,
    pub help: &'static str,
}

impl Flag {
    pub const fn new(name: &'static str, path: &'static str, help: &'static str) -> Self {
        Flag { name, path, help }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("flag provided but not defined: -{0} (see -help)")]
    UnknownFlag(String),
    #[error("invalid value {value:?} for flag -{flag}: {reason}")]
    BadFlagValue {
        flag: String,
        value: String,
        reason: String,
    },
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("reading config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("config file {path}: unknown field {field:?}")]
    UnknownField { path: String, field: String },
    /// A known key whose value asks for something this program does not do.
    #[error("config file {path}: {field}: {value} is not supported: {reason}")]
    Unsupported {
        path: String,
        field: String,
        value: String,
        reason: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// `-help` was given; the text is the usage.
    #[error("{0}")]
    Help(String),
}

/// Joins `const` flag tables into one (`N` must be their total length; checked at
/// compile time when used in a `const`).
pub const fn concat_flags<const N: usize>(parts: &[&[Flag]]) -> [Flag; N] {
    let mut out = [Flag::new("", "", ""); N];
    let (mut i, mut n) = (0, 0);
    while i < parts.len() {
        let mut j = 0;
        while j < parts[i].len() {
            out[n] = parts[i][j];
            n += 1;
            j += 1;
        }
        i += 1;
    }
    assert!(n == N, "flag count mismatch");
    out
}

/// Loads `C` from defaults, then `-config.file`, then flags.
pub fn load<C: Serialize + DeserializeOwned + Default>(args: &[String], flags: &[Flag]) -> Result<C, ConfigError> {
    load_from(C::default(), args, flags)
}

/// Like [`load`], starting from `base` instead of `C::default()` (binaries
/// with other defaults, such as the all-in-one's embedded ones).
pub fn load_from<C: Serialize + DeserializeOwned>(base: C, args: &[String], flags: &[Flag]) -> Result<C, ConfigError> {
    load_translated(base, args, flags, &|_, yaml| Ok(yaml))
}

/// Rewrites a config file's YAML tree before it is merged (the file's path, its tree).
pub type Translate<'a> = &'a dyn Fn(&str, Value) -> Result<Value, ConfigError>;

/// Like [`load_from`], passing the file's YAML through `translate` first: how a binary
/// accepts another program's spelling of the same settings (Cortex's YAML keys).
pub fn load_translated<C: Serialize + DeserializeOwned>(
    base: C,
    args: &[String],
    flags: &[Flag],
    translate: Translate<'_>,
) -> Result<C, ConfigError> {
    let mut tree = serde_json::to_value(base).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let parsed = parse_args(args, flags, &tree)?;

    if let Some(path) = parsed.config_file {
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let yaml: Value = if text.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            serde_saphyr::from_str(&text).map_err(|e| ConfigError::File {
                path: path.clone(),
                reason: e.to_string(),
            })?
        };
        let yaml = translate(&path, yaml)?;
        merge(&mut tree, yaml, "").map_err(|field| ConfigError::UnknownField {
            path: path.clone(),
            field,
        })?;
    }
    for (flag, value) in parsed.values {
        set_path(&mut tree, flag.path, value);
    }
    serde_json::from_value(tree).map_err(|e| ConfigError::Invalid(e.to_string()))
}

/// The effective config as YAML, for `/config`: secrets masked
/// ([`crate::secret`]).
pub fn to_yaml<C: Serialize>(c: &C) -> String {
    match crate::secret::redacted(|| serde_json::to_value(c)) {
        Ok(v) => {
            let mut out = String::new();
            write_yaml(&mut out, &v, 0);
            out
        }
        Err(e) => format!("# error rendering config: {e}\n"),
    }
}

/// `-help` text.
pub fn usage(flags: &[Flag], defaults: &Value) -> String {
    let mut out = String::from("Usage of cortex:\n  -config.file string\n    \tConfiguration file to load (YAML).\n");
    let mut sorted: Vec<_> = flags.iter().collect();
    sorted.sort_by_key(|f| f.name);
    for f in sorted {
        let def = get_path(defaults, f.path).map(render_scalar).unwrap_or_default();
        out.push_str(&format!("  -{}\n    \t{} (default {})\n", f.name, f.help, def));
    }
    out
}

struct Parsed {
    config_file: Option<String>,
    values: Vec<(Flag, Value)>,
}

fn parse_args(args: &[String], flags: &[Flag], defaults: &Value) -> Result<Parsed, ConfigError> {
    let mut out = Parsed {
        config_file: None,
        values: vec![],
    };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(ConfigError::Invalid(format!(
                "unexpected argument {arg:?}: flags look like -name=value"
            )));
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        if matches!(name, "h" | "help") {
            return Err(ConfigError::Help(usage(flags, defaults)));
        }
        if name == "config.file" {
            let v = match inline {
                Some(v) => v,
                None => args
                    .get(i)
                    .cloned()
                    .inspect(|_| i += 1)
                    .ok_or_else(|| ConfigError::MissingValue(name.into()))?,
            };
            out.config_file = Some(v);
            continue;
        }
        let flag = *flags
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| ConfigError::UnknownFlag(name.into()))?;
        let default = get_path(defaults, flag.path)
            .cloned()
            .unwrap_or(Value::String(String::new()));
        let raw = match inline {
            Some(v) => v,
            None if default.is_boolean() => "true".into(),
            None => args
                .get(i)
                .cloned()
                .inspect(|_| i += 1)
                .ok_or_else(|| ConfigError::MissingValue(name.into()))?,
        };
        let bad = |reason: &str| ConfigError::BadFlagValue {
            flag: name.into(),
            value: raw.clone(),
            reason: reason.into(),
        };
        let value = match &default {
            Value::Bool(_) => Value::Bool(raw.parse().map_err(|_| bad("expected true or false"))?),
            Value::Number(n) if n.is_f64() => Value::from(raw.parse::<f64>().map_err(|_| bad("expected a number"))?),
            Value::Number(_) => match raw.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => Value::from(raw.parse::<f64>().map_err(|_| bad("expected a number"))?),
            },
            Value::Array(_) => Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.into()))
                    .collect(),
            ),
            _ => Value::String(raw.clone()),
        };
        out.values.push((flag, value));
    }
    Ok(out)
}

fn get_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn set_path(v: &mut Value, path: &str, value: Value) {
    let mut cur = v;
    let parts: Vec<&str> = path.split('.').collect();
    for k in &parts[..parts.len() - 1] {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur = cur
            .as_object_mut()
            .expect("object")
            .entry(k.to_string())
            .or_insert(Value::Object(Map::new()));
    }
    if let Value::Object(m) = cur {
        m.insert(parts[parts.len() - 1].to_string(), value);
    }
}

/// Deep-merges `over` into `base`. Keys unknown to a non-empty default object
/// are errors (strict, as Cortex); empty default objects are open maps.
fn merge(base: &mut Value, over: Value, at: &str) -> Result<(), String> {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let open = b.is_empty();
            for (k, v) in o {
                let here = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v, &here)?,
                    None if open => {
                        b.insert(k, v);
                    }
                    None => return Err(here),
                }
            }
            Ok(())
        }
        (slot, v) => {
            // YAML numbers for string-typed durations ("15s" vs 15) are left to serde.
            *slot = v;
            Ok(())
        }
    }
}

fn render_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => format!("{:?}", a.iter().map(render_scalar).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

fn write_yaml(out: &mut String, v: &Value, indent: usize) {
    let pad = "  ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::Object(inner) if !inner.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        write_yaml(out, v, indent + 1);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        for item in a {
                            out.push_str(&format!("{pad}  - {}\n", yaml_scalar(item)));
                        }
                    }
                    _ => out.push_str(&format!("{pad}{k}: {}\n", yaml_scalar(v))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", yaml_scalar(other))),
    }
}

fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => {
            if s.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:".contains(c))
                && s.parse::<f64>().is_err()
                && !matches!(s.as_str(), "true" | "false" | "null")
            {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap_or_default()
            }
        }
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::GoDuration;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(default)]
    struct Inner {
        replication_factor: u32,
        remote_timeout: GoDuration,
        shard_by_all_labels: bool,
        endpoints: Vec<String>,
    }
    impl Default for Inner {
        fn default() -> Self {
            Inner {
                replication_factor: 3,
                remote_timeout: GoDuration::secs(2),
                shard_by_all_labels: false,
                endpoints: vec![],
            }
        }
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
    #[serde(default)]
    struct Top {
        target: String,
        distributor: Inner,
    }
    const FLAGS: &[Flag] = &[
        Flag::new("target", "target", "roles"),
        Flag::new("distributor.replication-factor", "distributor.replication_factor", "rf"),
        Flag::new("distributor.remote-timeout", "distributor.remote_timeout", "timeout"),
        Flag::new(
            "distributor.shard-by-all-labels",
            "distributor.shard_by_all_labels",
            "all",
        ),
        Flag::new("etcd.endpoints", "distributor.endpoints", "eps"),
    ];
    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_with_one_or_two_dashes_and_typed_values() {
        let c: Top = load(
            &args(&[
                "-distributor.replication-factor=1",
                "--distributor.remote-timeout",
                "5s",
                "-distributor.shard-by-all-labels",
                "-etcd.endpoints=a:1,b:2",
                "-target=ingester",
            ]),
            FLAGS,
        )
        .unwrap();
        assert_eq!(c.distributor.replication_factor, 1);
        assert_eq!(c.distributor.remote_timeout, GoDuration::secs(5));
        assert!(c.distributor.shard_by_all_labels);
        assert_eq!(c.distributor.endpoints, vec!["a:1", "b:2"]);
        assert_eq!(c.target, "ingester");
    }

    #[test]
    fn yaml_then_flags_override() {
        let dir = std::env::temp_dir().join(format!("cfgtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.yaml");
        std::fs::write(&f, "distributor:\n  replication_factor: 2\n  remote_timeout: 10s\n").unwrap();
        let c: Top = load(
            &args(&[
                &format!("-config.file={}", f.display()),
                "-distributor.remote-timeout=1s",
            ]),
            FLAGS,
        )
        .unwrap();
        assert_eq!(c.distributor.replication_factor, 2);
        assert_eq!(c.distributor.remote_timeout, GoDuration::secs(1));
        let back = to_yaml(&c);
        assert!(back.contains("replication_factor: 2"), "{back}");
    }

    #[test]
    fn errors_are_clear() {
        let e = load::<Top>(&args(&["-no.such-flag=1"]), FLAGS).unwrap_err();
        assert_eq!(
            e.to_string(),
            "flag provided but not defined: -no.such-flag (see -help)"
        );
        let e = load::<Top>(&args(&["-distributor.replication-factor=three"]), FLAGS).unwrap_err();
        assert!(e.to_string().contains("expected a number"), "{e}");
        let e = load::<Top>(&args(&["-distributor.remote-timeout=5"]), FLAGS).unwrap_err();
        assert!(e.to_string().contains("invalid duration"), "{e}");
        let dir = std::env::temp_dir().join(format!("cfgtest2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bad.yaml");
        std::fs::write(&f, "distributor:\n  replication_factr: 2\n").unwrap();
        let e = load::<Top>(&args(&[&format!("-config.file={}", f.display())]), FLAGS).unwrap_err();
        assert!(e.to_string().contains("distributor.replication_factr"), "{e}");
        assert!(matches!(
            load::<Top>(&args(&["-help"]), FLAGS),
            Err(ConfigError::Help(_))
        ));
    }
}
