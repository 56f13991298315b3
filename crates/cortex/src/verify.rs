//! `-config.verify`: parse the flags and `-config.file`, validate what can be
//! validated without the network (roles, AWS URLs, schema config file,
//! table-manager retention), print the effective config as YAML and exit 0 without starting.
//! The k8s manifests are checked with it, so they cannot drift from the code.

use server::config::ConfigError;

use crate::config::Config;

/// The flag's name (one or two dashes, optional `=true|false`).
pub const FLAG: &str = "config.verify";

/// Its `-help` entry (the flag is handled before the flag table is read).
pub const USAGE: &str = "  -config.verify\n    \tParse and validate the flags and config file, print the effective config (YAML) and exit 0 without starting. (default false)\n";

/// Removes `-config.verify[=bool]` from `args`; returns whether it was set.
pub fn take_flag(args: Vec<String>) -> Result<(bool, Vec<String>), ConfigError> {
    let mut verify = false;
    let mut rest = Vec::with_capacity(args.len());
    for a in args {
        let body = a.strip_prefix("--").or_else(|| a.strip_prefix('-'));
        let Some((name, value)) = body.map(|b| b.split_once('=').unwrap_or((b, "true"))) else {
            rest.push(a);
            continue;
        };
        if name != FLAG {
            rest.push(a);
            continue;
        }
        verify = value.parse().map_err(|_| ConfigError::BadFlagValue {
            flag: FLAG.into(),
            value: value.into(),
            reason: "expected true or false".into(),
        })?;
    }
    Ok((verify, rest))
}

/// The checks `start` would otherwise fail on, short of binding ports and
/// dialling the ring KV and the store; returns the effective config as YAML.
pub fn verify(cfg: &Config) -> Result<String, ConfigError> {
    let roles = cfg.roles()?;
    let invalid = |what: &str, e: &dyn std::fmt::Display| ConfigError::Invalid(format!("{what}: {e}"));
    let aws = &cfg.storage.aws;
    for (what, url) in [("-dynamodb.url", &aws.dynamodb.dynamodb_url), ("-s3.url", &aws.s3.s3)] {
        if !url.is_empty() {
            storage::aws::parse_url(url.expose()).map_err(|e| invalid(what, &e))?;
        }
    }
    if roles
        .iter()
        .any(|r| matches!(*r, "ingester" | "querier" | "table-manager"))
    {
        let schema = cfg.storage.schema().map_err(|e| invalid("schema config", &e))?;
        if roles.contains(&"table-manager") {
            cfg.table_manager
                .validate(&schema)
                .map_err(|e| invalid("table-manager", &e))?;
        }
    }
    Ok(server::config::to_yaml(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_flag_is_taken_out_in_every_spelling() {
        for spelling in ["-config.verify", "--config.verify", "-config.verify=true"] {
            let (v, rest) = take_flag(args(&["-target=querier", spelling, "-log.level=info"])).unwrap();
            assert!(v, "{spelling}");
            assert_eq!(rest, args(&["-target=querier", "-log.level=info"]));
        }
        let (v, rest) = take_flag(args(&["-config.verify=false", "-config.file", "x.yaml"])).unwrap();
        assert!(!v);
        assert_eq!(rest, args(&["-config.file", "x.yaml"]));
        let e = take_flag(args(&["-config.verify=yes"])).unwrap_err();
        assert!(e.to_string().contains("expected true or false"), "{e}");
    }

    #[test]
    fn verify_prints_the_effective_config_and_rejects_what_start_would() {
        let cfg = crate::config::load(Config::for_role("ingester"), &args(&["-ingester.lifecycler.ID=ing-7"])).unwrap();
        let yaml = verify(&cfg).unwrap();
        assert!(yaml.contains("target: ingester"), "{yaml}");
        assert!(yaml.contains("ing-7"), "{yaml}");

        let missing = crate::config::load(
            Config::for_role("querier"),
            &args(&["-schema-config-file=/nonexistent/schema.yaml"]),
        )
        .unwrap();
        let e = verify(&missing).unwrap_err();
        assert!(e.to_string().contains("schema config"), "{e}");

        // 25h is no multiple of 24h: the table-manager refuses it at start, so verify does too.
        let bad = crate::config::load(
            Config::for_role("table-manager"),
            &args(&["-table-manager.retention-period=25h"]),
        )
        .unwrap();
        assert!(verify(&bad).is_err());

        let url = crate::config::load(Config::for_role("distributor"), &args(&["-s3.url=cortex-chunks"])).unwrap();
        let e = verify(&url).unwrap_err();
        assert!(e.to_string().contains("-s3.url"), "{e}");
    }
}
