//! Making a `JsRuntime` for a handler: the engine initialised once per process, our extension
//! (the ops) and the runtime's JavaScript (`runtime_js/`, in order) in every isolate.

use std::rc::Rc;
use std::sync::{Arc, Once};

use deno_core::{v8, JsRuntime, RuntimeOptions};

use super::loader::WorkspaceModuleLoader;
use super::ops::{switchboard_api, HandlerFeatures, IsolateContext, Services};
use crate::workspace::modules::ModuleFiles;

/// The engine handler code runs on, for logs.
#[cfg(not(feature = "v8"))]
pub const ENGINE_NAME: &str = "QuickJS-ng via deno_core";
/// The engine handler code runs on, for logs.
#[cfg(feature = "v8")]
pub const ENGINE_NAME: &str = "V8 via deno_core";

/// The runtime's JavaScript, run in this order in every isolate: each file builds on the ones
/// before it (see `runtime_js/README.md`).
pub const RUNTIME_JS: &[(&str, &str)] = &[
    (
        "switchboard:00_internals.js",
        include_str!("../../runtime_js/00_internals.js"),
    ),
    (
        "switchboard:01_console.js",
        include_str!("../../runtime_js/01_console.js"),
    ),
    (
        "switchboard:02_timers.js",
        include_str!("../../runtime_js/02_timers.js"),
    ),
    (
        "switchboard:03_text.js",
        include_str!("../../runtime_js/03_text.js"),
    ),
    (
        "switchboard:04_sockets.js",
        include_str!("../../runtime_js/04_sockets.js"),
    ),
    (
        "switchboard:05_services.js",
        include_str!("../../runtime_js/05_services.js"),
    ),
    (
        "switchboard:06_dispatch.js",
        include_str!("../../runtime_js/06_dispatch.js"),
    ),
    (
        "switchboard:07_commonjs.js",
        include_str!("../../runtime_js/07_commonjs.js"),
    ),
    (
        "switchboard:08_websockets.js",
        include_str!("../../runtime_js/08_websockets.js"),
    ),
    (
        "switchboard:09_globals.js",
        include_str!("../../runtime_js/09_globals.js"),
    ),
];

/// Initialises the engine once per process, before any isolate is created.
pub fn init_engine() {
    static INIT: Once = Once::new();
    INIT.call_once(|| JsRuntime::init_platform(None));
}

/// What a new handler runtime is made of.
pub struct RuntimeParts {
    /// The handler module, as shown in logs.
    pub handler: String,
    /// The workspace's module files, recording what this isolate reads.
    pub modules: ModuleFiles,
    /// What the ops reach.
    pub services: Services,
    /// Where the handler's optional exports are recorded.
    pub features: Arc<HandlerFeatures>,
    /// The heap limit, if any.
    pub heap_limit: Option<usize>,
}

/// A `JsRuntime` with our ops and the runtime's JavaScript, ready for a handler module.
pub fn new_runtime(parts: RuntimeParts) -> JsRuntime {
    init_engine();
    let mut runtime = JsRuntime::new(RuntimeOptions {
        create_params: parts
            .heap_limit
            .map(|max| v8::CreateParams::default().heap_limits(0, max)),
        module_loader: Some(Rc::new(WorkspaceModuleLoader {
            modules: parts.modules.clone(),
        })),
        extensions: vec![switchboard_api::init(IsolateContext {
            handler: parts.handler,
            modules: parts.modules,
            services: parts.services,
            features: parts.features,
        })],
        ..Default::default()
    });
    for (name, source) in RUNTIME_JS {
        if let Err(error) = runtime.execute_script(*name, *source) {
            // The runtime's JavaScript is ours: a failure here is a bug, reported with the
            // engine's words.
            tracing::error!("{name} failed: {error}");
        }
    }
    runtime
}

/// `globalThis.__switchboard[name]` as a function handle.
pub fn internal_function(
    runtime: &mut JsRuntime,
    name: &str,
) -> Result<v8::Global<v8::Function>, String> {
    let value = runtime
        .execute_script(
            "switchboard:internals",
            format!("globalThis.__switchboard.{name}"),
        )
        .map_err(|e| e.to_string())?;
    deno_core::scope!(scope, runtime);
    let local = v8::Local::new(scope, &value);
    let function = v8::Local::<v8::Function>::try_from(local)
        .map_err(|_| format!("__switchboard.{name} is not a function"))?;
    Ok(v8::Global::new(scope, function))
}

/// Calls `__switchboard[name](argument)`.
pub fn call_internal(runtime: &mut JsRuntime, name: &str, argument: u64) -> Result<(), String> {
    let script = format!("globalThis.__switchboard.{name}({argument});");
    runtime
        .execute_script("switchboard:internal", script)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// After a handler's heap was freed: collects garbage and gives the memory back to the system.
pub fn release_freed_memory(runtime: &mut JsRuntime) {
    runtime.v8_isolate().low_memory_notification();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim takes any pad value and only returns free memory of its
        // own heaps to the system; it touches no memory it has handed out (this block is
        // compiled only for glibc targets, where the symbol exists).
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RUNTIME_JS;
    use crate::isolate::error_text::COMMONJS_PREFIX;

    #[test]
    fn the_commonjs_prefix_matches_the_runtime_javascript() {
        let (_, commonjs) = RUNTIME_JS
            .iter()
            .find(|(name, _)| name.ends_with("_commonjs.js"))
            .expect("the CommonJS file is run");
        assert!(commonjs.contains(&format!("`{COMMONJS_PREFIX}${{body}}")));
    }

    #[test]
    fn every_runtime_file_is_run_in_the_order_of_its_number() {
        let names: Vec<&str> = RUNTIME_JS.iter().map(|(name, _)| *name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/runtime_js"))
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".js") && name.as_bytes()[0].is_ascii_digit())
            .count();
        assert_eq!(
            on_disk,
            names.len(),
            "a numbered runtime_js file is not run"
        );
    }
}
