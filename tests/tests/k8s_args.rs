//! The k8s manifests cannot drift from the code: every container of ours in
//! `k8s/` is run with exactly its `command` and `args` plus `-config.verify`
//! (parse, validate, print the effective config, exit 0). The ConfigMaps it
//! mounts are written to a scratch directory first, so the schema config file
//! the args name is the one the manifests ship.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Roles whose manifests are written ahead of their code, against Cortex's
/// flag names (spec §7, §8). Skipped, and said so; remove a role as it lands.
const PENDING_ROLES: &[(&str, &str)] = &[];

/// Flags the manifests already pass for work that has not landed; stripped
/// from the args (and printed). Remove a flag as it lands.
const PENDING_FLAGS: &[(&str, &str)] = &[("-runtime-config.file", "issue 13: live runtime overrides")];

/// The image our containers run (docker/Dockerfile).
const OUR_IMAGE: &str = "cortex-rs:";

struct Container {
    file: String,
    role: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    /// mountPath → files (relative path → content) of a ConfigMap volume.
    config_mounts: Vec<(String, Vec<(String, String)>)>,
}

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s")
}

fn manifests() -> Vec<(String, Value)> {
    let mut out = vec![];
    let mut files: Vec<_> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        out.extend(docs.into_iter().filter(|d| !d.is_null()).map(|d| (name.clone(), d)));
    }
    out
}

fn our_containers() -> Vec<Container> {
    let docs = manifests();
    let config_maps: BTreeMap<String, &Value> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "ConfigMap")
        .map(|(_, d)| (d["metadata"]["name"].as_str().unwrap().to_string(), &d["data"]))
        .collect();
    let mut out = vec![];
    for (file, d) in &docs {
        let pod = &d["spec"]["template"]["spec"];
        let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
        for c in pod["containers"].as_array().into_iter().flatten() {
            if !c["image"].as_str().unwrap_or("").starts_with(OUR_IMAGE) {
                continue;
            }
            let command = c["command"]
                .as_array()
                .expect("our containers name their binary in `command`");
            assert_eq!(command.len(), 1, "{file}: command is the role's binary alone");
            let env = c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let value = match (&e["value"], e["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
                        (Value::String(v), _) => v.clone(),
                        (_, Some("status.podIP")) => "127.0.0.1".into(),
                        (_, Some(other)) => format!("placeholder-{other}"),
                        _ => panic!("{file}: env {e} has neither a value nor a fieldRef"),
                    };
                    (e["name"].as_str().unwrap().to_string(), value)
                })
                .collect();
            let mut config_mounts = vec![];
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let claims = d["spec"]["volumeClaimTemplates"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let Some(v) = volumes.iter().find(|v| v["name"] == m["name"]) else {
                    let claimed = claims.iter().any(|t| t["metadata"]["name"] == m["name"]);
                    assert!(claimed, "{file}: mount {} of an undeclared volume", m["name"]);
                    continue;
                };
                let Some(cm) = v["configMap"]["name"].as_str() else {
                    continue;
                };
                let data = config_maps
                    .get(cm)
                    .unwrap_or_else(|| panic!("{file}: ConfigMap {cm} is not in k8s/"));
                let files = match v["configMap"]["items"].as_array() {
                    Some(items) => items
                        .iter()
                        .map(|i| {
                            let key = i["key"].as_str().unwrap();
                            (
                                i["path"].as_str().unwrap().to_string(),
                                data[key].as_str().unwrap().to_string(),
                            )
                        })
                        .collect(),
                    None => data
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                        .collect(),
                };
                config_mounts.push((m["mountPath"].as_str().unwrap().to_string(), files));
            }
            out.push(Container {
                file: file.clone(),
                role: command[0].as_str().unwrap().to_string(),
                args: c["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a.as_str().expect("args are strings").to_string())
                    .collect(),
                env,
                config_mounts,
            });
        }
    }
    out
}

/// `$(VAR)` as the kubelet expands it from the container's env.
fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut s = arg.to_string();
    for (k, v) in env {
        s = s.replace(&format!("$({k})"), v);
    }
    assert!(!s.contains("$("), "unexpanded variable in {arg:?}");
    s
}

fn verify(role: &str, args: &[String]) -> std::process::Output {
    Command::new(e2e::our_binary(role))
        .args(args)
        .arg("-config.verify")
        .output()
        .unwrap()
}

#[test]
fn every_k8s_args_list_is_accepted_by_its_binary() {
    let containers = our_containers();
    let scratch = tempfile::tempdir().unwrap();
    let mut checked = vec![];
    for c in &containers {
        if let Some((_, why)) = PENDING_ROLES.iter().find(|(r, _)| *r == c.role) {
            println!("SKIPPED role {} ({}): {why}", c.role, c.file);
            continue;
        }
        // The ConfigMaps, where the pod would see them (under the scratch directory).
        let root = scratch.path().join(&c.role);
        let mut mounts: Vec<&(String, Vec<(String, String)>)> = c.config_mounts.iter().collect();
        mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        for (mount, files) in &mounts {
            for (rel, content) in files {
                let p = root.join(mount.trim_start_matches('/')).join(rel);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, content).unwrap();
            }
        }
        let mut args = vec![];
        for a in &c.args {
            if let Some((flag, why)) = PENDING_FLAGS.iter().find(|(f, _)| a.starts_with(&format!("{f}="))) {
                println!("SKIPPED flag {flag} of {} ({}): {why}", c.role, c.file);
                continue;
            }
            let mut a = expand(a, &c.env);
            if let Some((mount, _)) = mounts.iter().find(|(m, _)| a.contains(&format!("={m}/"))) {
                a = a.replace(&format!("={mount}/"), &format!("={}{mount}/", root.display()));
            }
            args.push(a);
        }
        let out = verify(&c.role, &args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} ({}) rejects its k8s args {args:?}:\n{}",
            c.role,
            c.file,
            String::from_utf8_lossy(&out.stderr)
        );
        // The effective config is the manifests': every pod listens on 8080/9095.
        assert!(stdout.contains("http_listen_port: 8080"), "{}: {stdout}", c.role);
        assert!(stdout.contains(&format!("target: {}", c.role)), "{}: {stdout}", c.role);
        println!("ok: {} ({}) accepts its {} args", c.role, c.file, args.len());
        checked.push(c.role.clone());
    }
    checked.sort();
    checked.dedup();
    assert_eq!(
        checked,
        [
            "distributor",
            "ingester",
            "querier",
            "query-frontend",
            "ruler",
            "table-manager"
        ],
        "every role that exists has a manifest"
    );

    // The allow-lists say what is still missing: an entry that now works is reported.
    for (role, _) in PENDING_ROLES {
        let p = std::env::var("CORTEX_BIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(role);
        if p.is_file() {
            println!("NOTE: {role} now exists: remove it from PENDING_ROLES");
        }
    }
    for (flag, _) in PENDING_FLAGS {
        if verify("cortex", &[format!("{flag}=x")]).status.success() {
            println!("NOTE: {flag} is now accepted: remove it from PENDING_FLAGS");
        }
    }
}

#[test]
fn config_verify_rejects_what_start_would() {
    let out = verify("distributor", &["-distributor.replication-factr=3".to_string()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("flag provided but not defined: -distributor.replication-factr"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = verify(
        "table-manager",
        &["-schema-config-file=/nonexistent/schema.yaml".to_string()],
    );
    assert!(!out.status.success(), "a missing schema config file is an error");
}
