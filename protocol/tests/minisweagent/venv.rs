//! mini-swe-agent in throwaway venvs, for the tests that compare with its own code: installed
//! pinned under `~/.cache/steerbench/minisweagent-<version>` (`STEER_CACHE_DIR` moves them) the
//! first time. Without Python or pip a test says why and passes, unless `CI` is set.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Skips (or fails under CI) with a reason.
pub fn cannot_run(reason: &str) {
    if ci() {
        panic!("CI is set and the mini-swe-agent comparison cannot run: {reason}");
    }
    eprintln!("SKIPPED: the mini-swe-agent comparison cannot run: {reason}");
}

pub fn cache_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("STEER_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    Path::new(&home).join(".cache").join("steerbench")
}

/// The venv's Python with mini-swe-agent `version`, installed if missing.
pub fn venv(version: &str) -> Result<PathBuf, String> {
    let dir = cache_dir().join(format!("minisweagent-{version}"));
    let python = dir.join("bin").join("python");
    let installed = |python: &Path| {
        Command::new(python)
            .args([
                "-c",
                &format!("import minisweagent, yaml; assert minisweagent.__version__ == '{version}'"),
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if installed(&python) {
        return Ok(python);
    }
    std::fs::create_dir_all(cache_dir())
        .map_err(|e| format!("cannot create {}: {e}", cache_dir().display()))?;
    let made = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&dir)
        .output()
        .map_err(|e| format!("python3 is not available ({e})"))?;
    if !made.status.success() {
        return Err(format!("python3 -m venv failed: {}", String::from_utf8_lossy(&made.stderr)));
    }
    let pip = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("mini-swe-agent=={version}"))
        .output()
        .map_err(|e| format!("pip is not available ({e})"))?;
    if !pip.status.success() || !installed(&python) {
        return Err(format!(
            "pip install mini-swe-agent=={version} failed: {}",
            String::from_utf8_lossy(&pip.stderr).lines().last().unwrap_or("")
        ));
    }
    Ok(python)
}

/// Where the venv's mini-swe-agent package is.
pub fn package_dir(python: &Path) -> PathBuf {
    let out = python_command(python)
        .args(["-c", "import minisweagent, pathlib; print(pathlib.Path(minisweagent.__file__).parent)"])
        .output()
        .expect("the venv's python runs");
    // (mini-swe-agent prints banners when imported: the path is the last line.)
    PathBuf::from(String::from_utf8(out.stdout).unwrap().lines().last().unwrap_or("").trim())
}

/// A command running the venv's Python with mini-swe-agent kept quiet and to itself: no
/// banners, its global configuration in a scratch directory (not the user's), and LiteLLM's
/// price list from the package (it would fetch it from the internet).
pub fn python_command(python: &Path) -> Command {
    let mut command = Command::new(python);
    command
        .env("MSWEA_SILENT_STARTUP", "1")
        .env("MSWEA_GLOBAL_CONFIG_DIR", std::env::temp_dir().join("steer-minisweagent-config"))
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True");
    command
}
