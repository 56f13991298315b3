//! Cortex v1.x config files, loaded unchanged (issue 12). Our tree spells most keys as Cortex
//! does; this module rewrites the rest of a file's YAML before it is merged:
//!
//! - keys we implement under another path (`storage.boltdb.directory`, the inline `schema:`,
//!   `ruler_storage`, `chunk_store.*`, …) are **moved** there, logged when the meaning shifts;
//! - keys for things that have no effect here, or whose value is what we do anyway, are
//!   **accepted with a warning** naming them (never silently);
//! - keys whose value asks for a feature we don't have (`purger.enable: true`,
//!   `storage.engine: blocks`, …) are **refused**: one line naming the key, the value and why.
//!
//! Keys in neither table go through as they are; unknown ones then fail the strict merge, as in
//! Cortex. The table is [`RULES`]; docs/migrating-from-cortex.md lists it for people.

use serde_json::{Map, Value};
use server::config::ConfigError;

/// What happens to one Cortex key (and everything under it, unless a deeper rule says otherwise).
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// Same meaning at another path of our tree; `note` (if not empty) is logged.
    Moved { to: &'static str, note: &'static str },
    /// Accepted; no effect here, for the reason given (logged as a warning).
    Ignored { why: &'static str },
    /// Accepted (warning: `why`) while the value is `ok`; any other value is refused with `refused`.
    OnlyIf {
        ok: Expect,
        why: &'static str,
        refused: &'static str,
    },
}

/// A value [`Action::OnlyIf`] accepts.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    Bool(bool),
    Str(&'static str),
    /// Zero or absent: a number ≤ 0 (Cortex's "disabled") or null.
    NotPositive,
    /// Null or an empty mapping (a section left at its defaults).
    Empty,
}

impl Expect {
    fn matches(self, v: &Value) -> bool {
        match (self, v) {
            (_, Value::Null) => true,
            (Expect::Bool(b), Value::Bool(x)) => *x == b,
            (Expect::Bool(b), Value::String(s)) => s.trim().parse::<bool>() == Ok(b),
            (Expect::Str(want), Value::String(s)) => s.trim() == want,
            (Expect::NotPositive, Value::Number(n)) => n.as_f64().is_some_and(|f| f <= 0.0),
            (Expect::Empty, Value::Object(m)) => m.is_empty(),
            _ => false,
        }
    }
}

/// One rule: a Cortex YAML path (dotted) and what it becomes.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub cortex: &'static str,
    pub action: Action,
}

const fn moved(cortex: &'static str, to: &'static str, note: &'static str) -> Rule {
    Rule {
        cortex,
        action: Action::Moved { to, note },
    }
}

const fn ignored(cortex: &'static str, why: &'static str) -> Rule {
    Rule {
        cortex,
        action: Action::Ignored { why },
    }
}

const fn only_if(cortex: &'static str, ok: Expect, why: &'static str, refused: &'static str) -> Rule {
    Rule {
        cortex,
        action: Action::OnlyIf { ok, why, refused },
    }
}

const BLOCKS_ONLY: &str = "used only by the blocks storage engine (storage.engine: blocks), which is not implemented";
const NO_ROLE: &str = "configures a Cortex role this binary does not have (-target refuses it)";

/// Every Cortex v1.13 key that is not spelled the same way in our tree.
pub const RULES: &[Rule] = &[
    // --- moved: same meaning, our path ---
    moved("schema", "storage.schema", "the inline schema config; it wins over -schema-config-file, as in Cortex"),
    moved(
        "storage.boltdb.directory",
        "storage.boltdb_directory",
        "the directory of our embedded index (its own format, not BoltDB files: copy no BoltDB data there)",
    ),
    moved(
        "storage.filesystem.directory",
        "storage.filesystem_directory",
        "the directory of our embedded object store",
    ),
    moved("distributor.pool.health_check_ingesters", "distributor.health_check_ingesters", ""),
    moved("distributor.pool.client_cleanup_period", "distributor.client_cleanup_period", ""),
    moved("chunk_store.chunk_cache_config", "storage.chunk_cache_config", ""),
    moved("chunk_store.write_dedupe_cache_config", "storage.write_dedupe_cache_config", ""),
    moved(
        "limits.max_chunks_per_query",
        "storage.max_chunks_per_query",
        "one limit for every tenant (no per-tenant overrides)",
    ),
    moved(
        "limits.max_query_length",
        "storage.max_query_length",
        "one limit for every tenant (no per-tenant overrides)",
    ),
    moved(
        "limits.cardinality_limit",
        "storage.cardinality_limit",
        "one limit for every tenant (no per-tenant overrides)",
    ),
    moved("ruler_storage.backend", "ruler.storage.backend", ""),
    moved("ruler_storage.local.directory", "ruler.storage.local_directory", ""),
    moved("ruler_storage.filesystem.dir", "ruler.storage.filesystem_dir", ""),
    // --- the storage engine and what hangs off features we don't have ---
    only_if(
        "storage.engine",
        Expect::Str("chunks"),
        "the chunks storage engine is the only one here",
        "only the chunks storage engine is implemented",
    ),
    ignored("blocks_storage", BLOCKS_ONLY),
    ignored("compactor", BLOCKS_ONLY),
    ignored("store_gateway", BLOCKS_ONLY),
    only_if(
        "purger.enable",
        Expect::Bool(false),
        "the purger is off, as here",
        "delete requests (the purger) are not implemented",
    ),
    ignored("purger", "only used by the purger (purger.enable), which is not implemented"),
    ignored(
        "storage.delete_store",
        "only used for delete requests (purger.enable), which are not implemented; with the purger off Cortex does not use it either",
    ),
    ignored("alertmanager", NO_ROLE),
    ignored("alertmanager_storage", NO_ROLE),
    ignored("query_scheduler", NO_ROLE),
    ignored("flusher", NO_ROLE),
    ignored("configs", NO_ROLE),
    ignored(
        "memberlist",
        "only used by a memberlist ring store, which is not implemented (-ring.store refuses it)",
    ),
    only_if(
        "tenant_federation.enabled",
        Expect::Bool(false),
        "tenant federation is off, as here",
        "cross-tenant queries (tenant federation) are not implemented",
    ),
    only_if(
        "runtime_config.file",
        Expect::Str(""),
        "no runtime config file",
        "per-tenant overrides from a runtime config file are not implemented",
    ),
    ignored("runtime_config.period", "no runtime config file is reloaded here"),
    only_if(
        "api.prometheus_http_prefix",
        Expect::Str("/prometheus"),
        "the Prometheus API is served under /prometheus, as here",
        "the Prometheus API is served under /prometheus only",
    ),
    ignored("api.response_compression_enabled", "API responses are not compressed"),
    ignored("api.alertmanager_http_prefix", NO_ROLE),
    only_if(
        "http_prefix",
        Expect::Str("/api/prom"),
        "the legacy /api/prom prefix is Cortex's default",
        "the legacy API prefix is fixed at /api/prom",
    ),
    // --- TLS ---
    only_if(
        "server.grpc_tls_config",
        Expect::Empty,
        "no TLS",
        "TLS on the gRPC server is not implemented (terminate TLS in front, e.g. nginx)",
    ),
    only_if(
        "server.http_tls_config",
        Expect::Empty,
        "no TLS",
        "TLS on the HTTP server is not implemented (terminate TLS in front, e.g. nginx)",
    ),
    // --- the distributor → ingester client ---
    only_if(
        "ingester_client.grpc_client_config.tls_enabled",
        Expect::Bool(false),
        "plaintext gRPC to ingesters, as here",
        "TLS between distributors and ingesters is not implemented",
    ),
    ignored(
        "ingester_client",
        "our ingester client accepts and sends messages up to 100 MiB and does not compress",
    ),
    // --- ingester and ring details without an effect here ---
    ignored(
        "ingester.max_transfer_retries",
        "chunks are never handed over between ingesters: a leaving ingester flushes (Cortex's fallback)",
    ),
    ignored(
        "ingester.lifecycler.interface_names",
        "the advertised address is -ingester.lifecycler.addr or the host's",
    ),
    ignored("ingester.lifecycler.observe_period", "tokens are not observed after generation"),
    ignored(
        "ingester.lifecycler.readiness_check_ring_health",
        "readiness checks this instance only",
    ),
    only_if(
        "ingester.lifecycler.ring.zone_awareness_enabled",
        Expect::Bool(false),
        "zone awareness is off, as here",
        "zone-aware replication is not implemented",
    ),
    only_if(
        "ingester.lifecycler.ring.excluded_zones",
        Expect::Str(""),
        "no zones excluded",
        "zone-aware replication is not implemented",
    ),
    // --- ruler ---
    only_if(
        "ruler.enable_api",
        Expect::Bool(true),
        "the ruler API is always served",
        "the ruler API is always served here and cannot be turned off",
    ),
    only_if(
        "ruler.enable_sharding",
        Expect::Bool(false),
        "every ruler evaluates every group, as here",
        "sharding rule groups across rulers is not implemented",
    ),
];

/// What [`translate`] did, for the log once logging is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warn: bool,
    pub message: String,
}

/// Rewrites a Cortex config file's tree (`path` names it in errors) into ours.
pub fn translate(path: &str, yaml: Value) -> Result<(Value, Vec<Note>), ConfigError> {
    let mut out = Value::Object(Map::new());
    let mut notes = Vec::new();
    let Value::Object(top) = yaml else {
        // Not a mapping: the strict merge reports it.
        return Ok((yaml, notes));
    };
    // The storage engine first: a blocks config is refused for that, not for whatever
    // blocks-only key comes earlier in the file.
    if let Some(engine) = top.get("storage").and_then(|s| s.get("engine")) {
        apply(
            path,
            "storage.engine",
            engine.clone(),
            rule_for("storage.engine"),
            &mut Value::Null,
            &mut Vec::new(),
        )?;
    }
    walk(path, "", top, None, &mut out, &mut notes)?;
    Ok((out, notes))
}

fn rule_for(path: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.cortex == path)
}

fn has_deeper_rule(path: &str) -> bool {
    RULES
        .iter()
        .any(|r| r.cortex.len() > path.len() && r.cortex.starts_with(path) && r.cortex.as_bytes()[path.len()] == b'.')
}

fn walk(
    file: &str,
    at: &str,
    map: Map<String, Value>,
    inherited: Option<&'static Rule>,
    out: &mut Value,
    notes: &mut Vec<Note>,
) -> Result<(), ConfigError> {
    for (k, v) in map {
        let here = if at.is_empty() { k } else { format!("{at}.{k}") };
        let rule = rule_for(&here).or(inherited);
        match v {
            Value::Object(inner) if has_deeper_rule(&here) => walk(file, &here, inner, rule, out, notes)?,
            v => apply(file, &here, v, rule, out, notes)?,
        }
    }
    Ok(())
}

fn apply(
    file: &str,
    here: &str,
    v: Value,
    rule: Option<&'static Rule>,
    out: &mut Value,
    notes: &mut Vec<Note>,
) -> Result<(), ConfigError> {
    let Some(rule) = rule else {
        return set(file, out, here, v);
    };
    match rule.action {
        Action::Moved { to, note } => {
            let target = format!("{to}{}", &here[rule.cortex.len()..]);
            if !note.is_empty() {
                notes.push(Note {
                    warn: false,
                    message: format!("Cortex config field {here} read as {target}: {note}"),
                });
            }
            set(file, out, &target, v)
        }
        Action::Ignored { why } => {
            notes.push(Note {
                warn: true,
                message: format!("Cortex config field {here} accepted and ignored: {why}"),
            });
            Ok(())
        }
        Action::OnlyIf { ok, why, refused } => {
            if here != rule.cortex || !ok.matches(&v) {
                return Err(ConfigError::Unsupported {
                    path: file.to_string(),
                    field: here.to_string(),
                    value: render(&v),
                    reason: refused.to_string(),
                });
            }
            notes.push(Note {
                warn: true,
                message: format!("Cortex config field {here}: {} accepted and ignored: {why}", render(&v)),
            });
            Ok(())
        }
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Sets `path` in `out`, merging objects; the same leaf given twice (a Cortex spelling and
/// ours) is an error rather than a silent choice.
fn set(file: &str, out: &mut Value, path: &str, v: Value) -> Result<(), ConfigError> {
    let twice = || ConfigError::Invalid(format!("config file {file}: {path} is set twice (under two spellings)"));
    let mut cur = out;
    let parts: Vec<&str> = path.split('.').collect();
    for k in &parts[..parts.len() - 1] {
        let Value::Object(m) = cur else { return Err(twice()) };
        cur = m.entry(k.to_string()).or_insert_with(|| Value::Object(Map::new()));
    }
    let Value::Object(m) = cur else { return Err(twice()) };
    let last = parts[parts.len() - 1].to_string();
    match (m.get_mut(&last), v) {
        (None, v) => {
            m.insert(last, v);
            Ok(())
        }
        (Some(Value::Object(have)), Value::Object(more)) => {
            for (k, v) in more {
                let sub = format!("{path}.{k}");
                if have.contains_key(&k) {
                    return Err(ConfigError::Invalid(format!(
                        "config file {file}: {sub} is set twice (under two spellings)"
                    )));
                }
                have.insert(k, v);
            }
            Ok(())
        }
        _ => Err(twice()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tr(v: Value) -> Result<(Value, Vec<Note>), ConfigError> {
        translate("c.yaml", v)
    }

    #[test]
    fn moves_ignores_and_refuses() {
        let (out, notes) = tr(json!({
            "auth_enabled": false,
            "distributor": {"shard_by_all_labels": true, "pool": {"health_check_ingesters": true}},
            "storage": {"boltdb": {"directory": "/d/i"}, "filesystem": {"directory": "/d/c"},
                        "delete_store": {"store": "boltdb"}, "engine": "chunks"},
            "purger": {"object_store_type": "filesystem", "enable": false},
            "ingester_client": {"grpc_client_config": {"max_recv_msg_size": 1, "grpc_compression": "gzip"}},
            "ruler_storage": {"backend": "local", "local": {"directory": "/r"}},
        }))
        .unwrap();
        assert_eq!(
            out,
            json!({
                "auth_enabled": false,
                "distributor": {"shard_by_all_labels": true, "health_check_ingesters": true},
                "storage": {"boltdb_directory": "/d/i", "filesystem_directory": "/d/c"},
                "ruler": {"storage": {"backend": "local", "local_directory": "/r"}},
            })
        );
        let text: Vec<&str> = notes.iter().map(|n| n.message.as_str()).collect();
        for want in [
            "storage.boltdb.directory read as storage.boltdb_directory",
            "storage.delete_store accepted and ignored",
            "purger.object_store_type accepted and ignored",
            "purger.enable: false accepted and ignored",
            "ingester_client.grpc_client_config.max_recv_msg_size accepted and ignored",
            "ingester_client.grpc_client_config.grpc_compression accepted and ignored",
            "storage.engine: \"chunks\" accepted",
        ] {
            assert!(text.iter().any(|t| t.contains(want)), "{want} not in {text:#?}");
        }
        assert!(notes.iter().filter(|n| n.message.contains("ignored")).all(|n| n.warn));
    }

    #[test]
    fn behaviour_we_lack_is_refused_naming_the_field() {
        for (yaml, field, value) in [
            (json!({"purger": {"enable": true}}), "purger.enable", "true"),
            (json!({"storage": {"engine": "blocks"}}), "storage.engine", "\"blocks\""),
            (
                json!({"ruler": {"enable_sharding": true}}),
                "ruler.enable_sharding",
                "true",
            ),
            (json!({"ruler": {"enable_api": false}}), "ruler.enable_api", "false"),
            (
                json!({"ingester_client": {"grpc_client_config": {"tls_enabled": true}}}),
                "ingester_client.grpc_client_config.tls_enabled",
                "true",
            ),
            (
                json!({"runtime_config": {"file": "/o.yaml"}}),
                "runtime_config.file",
                "\"/o.yaml\"",
            ),
            (
                json!({"tenant_federation": {"enabled": "true"}}),
                "tenant_federation.enabled",
                "\"true\"",
            ),
        ] {
            let e = tr(yaml).unwrap_err();
            let s = e.to_string();
            assert!(
                s.starts_with(&format!("config file c.yaml: {field}: {value} is not supported: ")),
                "{s}"
            );
        }
    }

    #[test]
    fn two_spellings_of_one_key_are_an_error() {
        let e = tr(json!({"storage": {"boltdb": {"directory": "/a"}, "boltdb_directory": "/b"}})).unwrap_err();
        assert!(e.to_string().contains("storage.boltdb_directory is set twice"), "{e}");
    }

    #[test]
    fn every_rule_target_and_untouched_key_exists_in_our_tree() {
        let tree = serde_json::to_value(crate::Config::default()).unwrap();
        for r in RULES {
            if let Action::Moved { to, .. } = r.action {
                let found = to.split('.').try_fold(&tree, |v, k| v.get(k));
                assert!(found.is_some(), "{} moves to missing {to}", r.cortex);
            }
        }
    }
}
