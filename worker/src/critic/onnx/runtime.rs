//! The ONNX Runtime shared library: where it is, and loading it once per process.
//!
//! `ort` is built with `load-dynamic`: nothing is linked or downloaded at build time, and the
//! library (`libonnxruntime.so`, from the `onnxruntime` wheel on PyPI; `scripts/ensure-ort`
//! fetches it) is opened at run time with `ort::init_from`, which fails cleanly. (ort's implicit
//! load at the first API call panics instead, so no ort API is used before [`environment`].)

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::OnnxError;

/// The ONNX Runtime version `scripts/ensure-ort` fetches by default (the `ort` crate is built
/// against the 1.31 API: older libraries are refused when loaded).
pub const ORT_VERSION: &str = "1.31.1";

const HOW_TO_GET_IT: &str = "get it with `export ORT_DYLIB_PATH=$(scripts/ensure-ort)` \
                             (from the onnxruntime wheel on PyPI)";

/// Where the runtime library is: `ORT_DYLIB_PATH`, else `libonnxruntime.so` next to the
/// executable, else the cache directory of `scripts/ensure-ort`
/// (`${STEER_CACHE_DIR:-$HOME/.cache/steerbench}/onnxruntime-<version>/`). A library that is not
/// there is an error saying how to get it.
pub fn runtime_library() -> Result<PathBuf, OnnxError> {
    let exe = std::env::current_exe().ok();
    find(&|key| std::env::var_os(key), exe.as_deref().and_then(Path::parent))
}

/// [`runtime_library`] with the environment and the executable's directory passed in.
pub(super) fn find(
    env: &dyn Fn(&str) -> Option<OsString>,
    exe_dir: Option<&Path>,
) -> Result<PathBuf, OnnxError> {
    if let Some(path) = env("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(OnnxError::Runtime(format!(
                "ORT_DYLIB_PATH is {}, which does not exist; {HOW_TO_GET_IT}",
                path.display()
            )))
        };
    }
    let mut looked = Vec::new();
    if let Some(dir) = exe_dir {
        let path = dir.join("libonnxruntime.so");
        if path.is_file() {
            return Ok(path);
        }
        looked.push(path);
    }
    let cache =
        match (env("STEER_CACHE_DIR").filter(|p| !p.is_empty()), env("HOME").filter(|p| !p.is_empty())) {
            (Some(dir), _) => Some(PathBuf::from(dir)),
            (None, Some(home)) => Some(PathBuf::from(home).join(".cache").join("steerbench")),
            (None, None) => None,
        };
    if let Some(cache) = cache {
        let path = cache.join(format!("onnxruntime-{ORT_VERSION}")).join("libonnxruntime.so");
        if path.is_file() {
            return Ok(path);
        }
        looked.push(path);
    }
    let looked: Vec<String> = looked.iter().map(|p| p.display().to_string()).collect();
    Err(OnnxError::Runtime(format!(
        "the ONNX Runtime library was not found (ORT_DYLIB_PATH is unset; looked at {}); {HOW_TO_GET_IT}",
        looked.join(", ")
    )))
}

/// The process's ONNX Runtime environment, loading the library at `library` the first time.
/// A process holds one library: asking for another afterwards is an error.
pub(super) fn environment(library: &Path) -> Result<ort::environment::Environment, OnnxError> {
    static LOADED: Mutex<Option<(PathBuf, ort::environment::Environment)>> = Mutex::new(None);
    if !library.is_file() {
        return Err(OnnxError::Runtime(format!(
            "the ONNX Runtime library {} does not exist; {HOW_TO_GET_IT}",
            library.display()
        )));
    }
    let canonical = library.canonicalize().unwrap_or_else(|_| library.to_path_buf());
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((path, env)) = loaded.as_ref() {
        return if *path == canonical {
            Ok(env.clone())
        } else {
            Err(OnnxError::Runtime(format!(
                "this process already loaded ONNX Runtime from {}; it cannot also load {}",
                path.display(),
                library.display()
            )))
        };
    }
    let env = ort::init_from(&canonical)
        .map_err(|e| OnnxError::Runtime(format!("cannot load {}: {e}; {HOW_TO_GET_IT}", library.display())))?
        .with_name("steerbench")
        .build()
        .map_err(|e| {
            OnnxError::Runtime(format!("cannot start ONNX Runtime from {}: {e}", library.display()))
        })?;
    tracing::info!(library = %canonical.display(), "loaded ONNX Runtime");
    *loaded = Some((canonical, env.clone()));
    Ok(env)
}
