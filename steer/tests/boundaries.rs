//! The crate boundaries ARCHITECTURE.md promises, checked on the dependency graph and the source
//! tree: the coordinator links no worker code, the worker no database, the shared crates
//! neither; bollard, ort and sqlx are each imported only by the module that owns them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("steer/ is inside the workspace").to_path_buf()
}

/// The crates `package` links in a normal (non-dev, non-build) build, from `cargo tree`.
fn normal_dependencies(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["tree", "--offline", "--locked", "-p", package, "-e", "normal", "--prefix", "none"])
        .args(["--format", "{p}"])
        .output()
        .expect("running cargo tree");
    assert!(out.status.success(), "cargo tree -p {package} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .expect("cargo tree prints UTF-8")
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn assert_links_none(package: &str, forbidden: &[&str]) {
    let deps = normal_dependencies(package);
    assert!(deps.contains(package), "cargo tree listed no `{package}`: {deps:?}");
    let found: Vec<&&str> = forbidden.iter().filter(|f| deps.contains(**f)).collect();
    assert!(found.is_empty(), "`{package}` must not link {found:?} (see ARCHITECTURE.md, Crates)");
}

#[test]
fn the_coordinator_links_no_docker_client_onnx_runtime_tokenizer_or_worker() {
    assert_links_none("orchestrator", &["bollard", "ort", "tokenizers", "worker", "api-client"]);
}

#[test]
fn the_worker_links_no_database_driver_or_coordinator() {
    assert_links_none("worker", &["sqlx", "orchestrator", "statrs", "parquet"]);
}

#[test]
fn the_shared_crates_link_neither_side() {
    let either_side = ["sqlx", "bollard", "ort", "tokenizers", "orchestrator", "worker", "axum"];
    // Pure data and the template rendering: no HTTP client and no runtime either.
    let pure = [&either_side[..], &["reqwest", "tokio"]].concat();
    assert_links_none("protocol", &pure);
    assert_links_none("api-client", &either_side);
}

/// Files under `dir` (recursively) whose code names `needle`, outside `allowed` (prefixes
/// relative to the workspace root).
fn files_naming(dir: &str, needle: &str, allowed: &[&str]) -> Vec<String> {
    let root = workspace_root();
    let mut found = Vec::new();
    let mut stack = vec![root.join(dir)];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&root).expect("under the root").to_string_lossy().into_owned();
            if allowed.iter().any(|a| relative.starts_with(a)) {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source is UTF-8");
            if text.lines().any(|l| !l.trim_start().starts_with("//") && names(l, needle)) {
                found.push(relative);
            }
        }
    }
    found.sort();
    found
}

/// Whether `line` names `path` as a path of its own (`ort::x`, not `report::x`).
fn names(line: &str, path: &str) -> bool {
    line.match_indices(path)
        .any(|(at, _)| line[..at].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '_')))
}

#[test]
fn only_the_sandbox_imports_bollard_and_only_the_critic_imports_ort() {
    assert_eq!(files_naming("worker/src", "bollard::", &["worker/src/sandbox/"]), Vec::<String>::new());
    assert_eq!(files_naming("worker/src", "ort::", &["worker/src/critic/onnx/"]), Vec::<String>::new());
}

#[test]
fn only_the_coordinator_and_the_benchmarks_speak_sql() {
    // The benchmarks seed scratch databases and time bare statements as the queue's ceiling.
    assert_eq!(files_naming("worker/src", "sqlx::", &[]), Vec::<String>::new());
    assert_eq!(files_naming("steer/src", "sqlx::query", &["steer/src/bench/"]), Vec::<String>::new());
    assert_eq!(files_naming("orchestrator/src/api", "sqlx::query", &[]), Vec::<String>::new());
}
