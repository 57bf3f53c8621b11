//! `bulwark-sys` is the one crate allowed `unsafe`, so it is the one crate that talks to the
//! kernel through libc or rustix: a second syscall layer would be a second place to audit.

use std::path::Path;

const LOW_LEVEL: &[&str] = &["libc", "rustix"];

/// The dependency tables of a manifest, target-specific ones included.
fn dependency_tables(manifest: &toml::Table) -> Vec<(String, &toml::Table)> {
    const KINDS: &[&str] = &["dependencies", "dev-dependencies", "build-dependencies"];
    let mut out = Vec::new();
    for kind in KINDS {
        if let Some(t) = manifest.get(*kind).and_then(|v| v.as_table()) {
            out.push((kind.to_string(), t));
        }
    }
    if let Some(targets) = manifest.get("target").and_then(|v| v.as_table()) {
        for (cfg, t) in targets {
            for kind in KINDS {
                if let Some(t) = t.get(*kind).and_then(|v| v.as_table()) {
                    out.push((format!("target.{cfg}.{kind}"), t));
                }
            }
        }
    }
    out
}

/// The crate a dependency entry names: its key, or `package = "..."` when renamed.
fn crate_name<'a>(key: &'a str, spec: &'a toml::Value) -> &'a str {
    spec.get("package").and_then(|p| p.as_str()).unwrap_or(key)
}

#[test]
fn no_crate_but_bulwark_sys_declares_libc_or_rustix() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offenders = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let manifest_path = entry.unwrap().path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest_path) else {
            continue;
        };
        let manifest: toml::Table = text
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", manifest_path.display()));
        let name = manifest["package"]["name"].as_str().unwrap().to_string();
        seen += 1;
        if name == "bulwark-sys" {
            continue;
        }
        for (kind, table) in dependency_tables(&manifest) {
            for (key, spec) in table {
                let dep = crate_name(key, spec);
                if LOW_LEVEL.contains(&dep) {
                    offenders.push(format!("{name} ({kind}): {dep}"));
                }
            }
        }
    }
    assert!(
        seen > 5,
        "found only {seen} manifests under {}",
        crates.display()
    );
    assert!(
        offenders.is_empty(),
        "only bulwark-sys may declare libc or rustix, but: {offenders:?}; \
         add a safe wrapper for the call to bulwark-sys (crates/sys) and use it instead"
    );
}

/// Every manifest of the workspace (the crates, the benchmark tools) takes each dependency
/// from `[workspace.dependencies]` (`NAME.workspace = true`), so that a version, a feature
/// default or a path is declared once for the whole workspace.
#[test]
fn every_crate_takes_its_dependencies_from_the_workspace_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut manifests = Vec::new();
    for folder in ["crates", "bench"] {
        for entry in std::fs::read_dir(root.join(folder)).unwrap() {
            let path = entry.unwrap().path().join("Cargo.toml");
            if path.is_file() {
                manifests.push(path);
            }
        }
    }
    assert!(manifests.len() > 20, "found only {manifests:?}");
    let mut offenders = Vec::new();
    for path in &manifests {
        let manifest: toml::Table = std::fs::read_to_string(path)
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (kind, table) in dependency_tables(&manifest) {
            for (key, spec) in table {
                if spec.get("workspace").and_then(|w| w.as_bool()) != Some(true) {
                    offenders.push(format!("{} ({kind}): {key} = {spec}", path.display()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "declare these once in the root Cargo.toml's [workspace.dependencies] and use \
         `NAME.workspace = true`: {offenders:#?}"
    );
}
