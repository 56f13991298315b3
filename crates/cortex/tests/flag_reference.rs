//! docs/configuration.md is the flag table rendered: a flag added to (or
//! removed from) the code without `make docs` fails here.

use std::path::Path;

#[test]
fn configuration_reference_lists_every_flag() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let want = cortex::flag_reference::markdown();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    let missing: Vec<String> = cortex::config::flags()
        .iter()
        .map(|f| format!("`-{}`", f.name))
        .filter(|name| !have.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks {} flag(s): {}; run `make docs`",
        missing.len(),
        missing.join(", ")
    );
    assert!(
        have == want,
        "docs/configuration.md is stale (defaults or help changed); run `make docs`"
    );
    println!("docs/configuration.md: {} flags", cortex::config::flags().len());
}
