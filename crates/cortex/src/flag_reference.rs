//! `docs/configuration.md`, generated from the flag table so the reference
//! cannot miss a flag: `crates/cortex/tests/flag_reference.rs` fails when the
//! file differs from [`markdown`] (`make docs` rewrites it).

use serde_json::Value;

use crate::config::{flags, Config};

/// The whole reference page.
pub fn markdown() -> String {
    let role = serde_json::to_value(Config::default()).unwrap_or(Value::Null);
    let embedded = serde_json::to_value(Config::embedded()).unwrap_or(Value::Null);
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from the flag table (crates/cortex/src/config.rs) by `make docs`; \
         crates/cortex/tests/flag_reference.rs fails when this file is stale. Do not edit by hand. -->\n\n\
         Every setting is a Cortex-style flag (`-name=value`, one or two dashes) and the same setting in the\n\
         YAML file given with `-config.file` (the dotted path below; flags override the file). `-help` prints\n\
         this list; `-config.verify` parses and validates a command line, prints the effective config and exits.\n\n\
         Defaults: the single-role binaries (`distributor`, `ingester`, `querier`, `table-manager`) start from\n\
         Cortex's defaults; the all-in-one `cortex` starts from embedded ones where the last column says so.\n\n",
    );
    let mut sections: Vec<(&str, Vec<_>)> = vec![];
    for f in flags() {
        let section = f.path.split_once('.').map_or("general", |(s, _)| s);
        match sections.iter_mut().find(|(s, _)| *s == section) {
            Some((_, list)) => list.push(f),
            None => sections.push((section, vec![f])),
        }
    }
    for (section, mut list) in sections {
        list.sort_by_key(|f| f.name);
        out.push_str(&format!("## `{section}`\n\n"));
        out.push_str("| Flag | YAML path | Default | All-in-one default | Description |\n");
        out.push_str("|---|---|---|---|---|\n");
        for f in list {
            // The ring ID defaults to the hostname: rendered, the page would differ per machine.
            let (d, e) = if f.path == "ingester.lifecycler.id" {
                ("the hostname".to_string(), String::new())
            } else {
                (default_at(&role, f.path), default_at(&embedded, f.path))
            };
            let e = if e == d { String::new() } else { e };
            out.push_str(&format!(
                "| `-{}` | `{}` | {} | {} | {} |\n",
                f.name,
                f.path,
                d,
                e,
                f.help.replace('|', "\\|")
            ));
        }
        out.push('\n');
    }
    out
}

fn path_value<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(tree, |v, k| v.get(k))
}

fn default_at(tree: &Value, path: &str) -> String {
    let text = match path_value(tree, path) {
        None | Some(Value::Null) => return String::new(),
        Some(Value::String(s)) if s.is_empty() => return "`\"\"`".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map_or(x.to_string(), String::from))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    };
    format!("`{}`", text.replace('|', "\\|"))
}
