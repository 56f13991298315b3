//! The one config tree of every binary: sections per role, Cortex's flag
//! names, and the defaults of each binary.

use serde::{Deserialize, Serialize};
use server::config::{ConfigError, Flag};

use crate::cortex_yaml;
use server::http::{ServerConfig, SERVER_FLAGS};

/// Roles `-target=all` runs.
pub const ALL_ROLES: &[&str] = &[
    "distributor",
    "ingester",
    "querier",
    "query-frontend",
    "table-manager",
    "ruler",
];

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Comma-separated roles to run, or `all`.
    pub target: String,
    pub auth_enabled: bool,
    pub server: ServerConfig,
    pub distributor: distributor::Config,
    pub limits: distributor::Limits,
    pub ingester: ingester::Config,
    pub querier: querier::Config,
    pub storage: storage::StorageConfig,
    pub table_manager: storage::table_manager::TableManagerConfig,
    pub frontend: query_frontend::FrontendConfig,
    pub query_range: query_frontend::QueryRangeConfig,
    pub frontend_worker: query_frontend::WorkerConfig,
    pub ruler: ruler::Config,
}

impl Default for Config {
    /// Cortex's own defaults: what the single-role binaries start from.
    fn default() -> Self {
        Config {
            target: "all".into(),
            auth_enabled: true,
            server: ServerConfig::default(),
            distributor: distributor::Config::default(),
            limits: distributor::Limits::default(),
            ingester: ingester::Config::default(),
            querier: querier::Config::default(),
            storage: storage::StorageConfig::default(),
            table_manager: storage::table_manager::TableManagerConfig::default(),
            frontend: query_frontend::FrontendConfig::default(),
            query_range: query_frontend::QueryRangeConfig::default(),
            frontend_worker: query_frontend::WorkerConfig::default(),
            ruler: ruler::Config::default(),
        }
    }
}

impl Config {
    /// The all-in-one's embedded defaults (design §5): auth off (tenant `fake`),
    /// in-memory ring, replication factor 1, ready at once.
    pub fn embedded() -> Self {
        let mut c = Config {
            auth_enabled: false,
            ..Config::default()
        };
        let lc = &mut c.ingester.lifecycler;
        lc.ring.kvstore.store = "inmemory".into();
        lc.ring.replication_factor = 1;
        lc.min_ready_duration = model::GoDuration::secs(0);
        lc.final_sleep = model::GoDuration::secs(0);
        lc.num_tokens = 512;
        // Durable by default (design §5): every acknowledged sample survives a crash.
        c.ingester.walconfig.wal_enabled = true;
        c.ingester.walconfig.wal_dir = "./data/wal".into();
        // Reads go through the frontend: split by day, results in an in-process FIFO cache.
        c.query_range.split_queries_by_interval = model::GoDuration::secs(24 * 3600);
        c.query_range.cache_results = true;
        c.query_range.results_cache.cache.enable_fifocache = true;
        c
    }

    /// A single-role binary's defaults: Cortex's, with the target fixed.
    pub fn for_role(role: &str) -> Self {
        Config {
            target: role.into(),
            ..Config::default()
        }
    }

    /// The roles to run, in start order, validated.
    pub fn roles(&self) -> Result<Vec<&'static str>, ConfigError> {
        let mut out: Vec<&'static str> = vec![];
        for t in self.target.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if t == "all" {
                out.extend(ALL_ROLES);
                continue;
            }
            let role = ALL_ROLES.iter().find(|r| **r == t).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "unknown target {t:?}: valid targets are all, {}",
                    ALL_ROLES.join(", ")
                ))
            })?;
            out.push(role);
        }
        if out.is_empty() {
            return Err(ConfigError::Invalid("-target is empty".into()));
        }
        // Start order: ingesters before the roles that look them up in the ring.
        out.sort_by_key(|r| ALL_ROLES.iter().position(|a| a == r));
        out.dedup();
        Ok(out)
    }
}

/// Every flag of every section, paths made absolute.
pub fn flags() -> Vec<Flag> {
    let mut out = vec![
        Flag::new(
            "target",
            "target",
            "Comma-separated list of roles to run: all, distributor, ingester, querier, query-frontend, table-manager, ruler.",
        ),
        Flag::new(
            "auth.enabled",
            "auth_enabled",
            "Require X-Scope-OrgID on every request; when false every request belongs to tenant \"fake\".",
        ),
    ];
    let ingester_flags = ingester::Config::flags();
    let sections: &[(&str, &[Flag])] = &[
        ("server", SERVER_FLAGS),
        ("distributor", distributor::FLAGS),
        ("limits", distributor::LIMITS_FLAGS),
        ("ingester", &ingester_flags),
        ("querier", querier::FLAGS),
        ("storage", storage::config::FLAGS),
        ("table_manager", storage::table_manager::FLAGS),
        ("frontend", query_frontend::config::FRONTEND_FLAGS),
        ("query_range", query_frontend::config::QUERY_RANGE_FLAGS),
        ("frontend_worker", query_frontend::config::WORKER_FLAGS),
        ("ruler", ruler::FLAGS),
    ];
    for (section, flags) in sections {
        for f in *flags {
            // Leaked once at start-up: the flag table lives for the whole process.
            let path: &'static str = Box::leak(format!("{section}.{}", f.path).into_boxed_str());
            out.push(Flag { path, ..*f });
        }
    }
    out
}

/// Parses flags and `-config.file` over `base`.
pub fn load(base: Config, args: &[String]) -> Result<Config, ConfigError> {
    load_with_notes(base, args).map(|(c, _)| c)
}

/// [`load`], reading the file as a Cortex v1.x config ([`crate::cortex_yaml`]); also returns
/// what the translation moved or ignored, to be logged once logging is set up.
pub fn load_with_notes(base: Config, args: &[String]) -> Result<(Config, Vec<cortex_yaml::Note>), ConfigError> {
    let notes = std::cell::RefCell::new(Vec::new());
    let translate = |path: &str, yaml| {
        let (out, n) = cortex_yaml::translate(path, yaml)?;
        notes.borrow_mut().extend(n);
        Ok(out)
    };
    let mut c: Config = server::config::load_translated(base, args, &flags(), &translate)?;
    let mut notes = notes.into_inner();
    c.roles()?;
    if c.frontend_worker.match_max_concurrent {
        c.frontend_worker.parallelism = c.querier.max_concurrent;
    }
    if !c.storage.schema.configs.is_empty() && !c.storage.schema_config_file.is_empty() {
        notes.push(cortex_yaml::Note {
            warn: true,
            message: format!(
                "-schema-config-file={} is ignored: the config file has an inline schema, which wins (as in Cortex)",
                c.storage.schema_config_file
            ),
        });
    }
    Ok((c, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_names_are_unique_and_paths_resolve() {
        let fs = flags();
        let mut names: Vec<_> = fs.iter().map(|f| f.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate flag names");
        // Every path must exist in the default tree, or the flag could never apply.
        let tree = serde_json::to_value(Config::default()).unwrap();
        for f in &fs {
            let found = f.path.split('.').try_fold(&tree, |v, k| v.get(k));
            assert!(found.is_some(), "flag -{} points at missing path {}", f.name, f.path);
        }
    }

    #[test]
    fn cortex_flags_set_nested_fields() {
        let args: Vec<String> = [
            "-target=ingester,distributor",
            "-ring.store=etcd",
            "-etcd.endpoints=127.0.0.1:2379",
            "-distributor.replication-factor=3",
            "-ingester.lifecycler.ID=ing-1",
            "-server.http-listen-port=8001",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = load(Config::embedded(), &args).unwrap();
        assert_eq!(c.roles().unwrap(), vec!["distributor", "ingester"]);
        assert_eq!(c.ingester.lifecycler.ring.kvstore.store, "etcd");
        assert_eq!(c.ingester.lifecycler.ring.replication_factor, 3);
        assert_eq!(c.ingester.lifecycler.id, "ing-1");
        assert_eq!(c.server.http_listen_port, 8001);
        assert!(!c.auth_enabled, "embedded default keeps auth off");
    }

    #[test]
    fn bad_target_is_rejected() {
        let e = load(Config::embedded(), &["-target=compactor".to_string()]).unwrap_err();
        assert!(e.to_string().contains("unknown target \"compactor\""), "{e}");
    }
}
