//! ARCHITECTURE.md's module tables match the tree: every module of every crate (the files and
//! folders under `src/`, and the files one folder down) is named there in backticks, so a new
//! module cannot land without its line in the map.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("steer/ is inside the workspace").to_path_buf()
}

/// Module names under `dir`: `name.rs` files as `name`, folders as `name/` (one level down too).
fn modules(dir: &Path, depth: usize, out: &mut Vec<String>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).expect("UTF-8 names").to_string();
        if path.is_dir() {
            if name == "tests" {
                continue;
            }
            out.push(format!("{name}/"));
            if depth == 0 {
                modules(&path, 1, out);
            }
        } else if let Some(stem) = name.strip_suffix(".rs") {
            if !matches!(stem, "lib" | "main" | "mod" | "tests") {
                out.push(stem.to_string());
            }
        }
    }
}

#[test]
fn every_module_is_on_the_map() {
    let root = workspace_root();
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut missing = Vec::new();
    for krate in ["protocol", "api-client", "orchestrator", "worker", "steer"] {
        let mut found = Vec::new();
        modules(&root.join(krate).join("src"), 0, &mut found);
        for module in found {
            let stem = module.trim_end_matches('/');
            let named = [format!("`{stem}`"), format!("`{stem}.rs`"), format!("`{stem}/`")]
                .iter()
                .any(|form| map.contains(form.as_str()));
            if !named {
                missing.push(format!("{krate}: {module}"));
            }
        }
    }
    assert!(missing.is_empty(), "modules ARCHITECTURE.md does not name:\n{}", missing.join("\n"));
}
