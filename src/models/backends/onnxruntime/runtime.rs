//! The ONNX Runtime library, loaded once per process from a path the operator chooses. A missing
//! or unusable library leaves every ONNX model unavailable, with the reason; the daemon serves on.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

/// The library's file name beside the binary, where `scripts/setup` and `scripts/install` put it.
const LIBRARY_FILE: &str = "libonnxruntime.so";

struct Runtime {
    environment: Environment,
    /// Intra-op threads for models that do not set their own.
    default_threads: usize,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The library to load when neither the flag nor the config names one: `ORT_DYLIB_PATH`, else
/// `libonnxruntime.so` beside the running binary.
pub fn default_library() -> PathBuf {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join(LIBRARY_FILE)))
            .unwrap_or_else(|| PathBuf::from(LIBRARY_FILE)),
    }
}

/// Loads the library once, before any model loads; later calls return the first outcome.
/// `default_threads` is the intra-op thread count of sessions whose config sets none.
pub fn init(library: &Path, default_threads: usize) -> Result<(), String> {
    let outcome = RUNTIME.get_or_init(|| {
        // ort reads the path relative to the binary when it exists there; make it absolute here
        // so the message names the file really tried.
        let library = std::path::absolute(library).unwrap_or_else(|_| library.to_path_buf());
        if !library.is_file() {
            return Err(format!("{}: no such file", library.display()));
        }
        let builder = ort::init_from(&library).map_err(|e| {
            let reason = dlopen_failure(&library).unwrap_or_else(|| e.to_string());
            format!("{}: {reason}", library.display())
        })?;
        let environment = builder
            .with_name("tensord")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("{}: {e}", library.display()))?;
        Ok(Runtime {
            environment,
            default_threads,
        })
    });
    outcome.as_ref().map(|_| ()).map_err(Clone::clone)
}

/// Why the dynamic loader refuses `library`, if it does (ort reports only "dlopen failed").
/// Called after ort's own load failed, so a library that does open is left open, not unloaded.
fn dlopen_failure(library: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(library.as_os_str().as_bytes()).ok()?;
    // SAFETY: dlopen takes a NUL-terminated path; dlerror's text is read before any other dl call.
    unsafe {
        if !libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL).is_null() {
            return None;
        }
        let error = libc::dlerror();
        (!error.is_null()).then(|| {
            std::ffi::CStr::from_ptr(error)
                .to_string_lossy()
                .into_owned()
        })
    }
}

/// The environment sessions are built in, and the default intra-op thread count; gated on a
/// successful `init`, since any `ort` call without one would try other paths and panic.
pub(super) fn environment() -> Result<(&'static Environment, usize), String> {
    match RUNTIME.get() {
        Some(Ok(runtime)) => Ok((&runtime.environment, runtime.default_threads)),
        Some(Err(e)) => Err(format!(
            "ONNX Runtime is not available ({e}); point --onnxruntime-lib (or ORT_DYLIB_PATH) at \
             {LIBRARY_FILE} from the onnxruntime wheel"
        )),
        None => Err(format!(
            "ONNX Runtime was not loaded; point --onnxruntime-lib (or ORT_DYLIB_PATH) at {LIBRARY_FILE}"
        )),
    }
}
