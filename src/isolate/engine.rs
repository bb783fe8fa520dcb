//! Making a `JsRuntime` for a handler: the engine initialised once per process, our extension
//! (the ops) and the runtime's JavaScript (`runtime_js/`, in order) in every isolate.

use std::rc::Rc;
use std::sync::{Arc, Once};

use deno_core::error::{CoreError, CoreErrorKind, JsError};
use deno_core::{v8, JsRuntime, PollEventLoopOptions, RuntimeOptions};

use super::loader::WorkspaceModuleLoader;
use super::ops::{switchboard_api, HandlerFeatures, IsolateContext, Services};
use crate::memory::give_back_free_memory;
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
    /// Which of the handler's instances the runtime is (0 for the first).
    pub instance: usize,
    /// The workspace's module files, recording what this isolate reads.
    pub modules: ModuleFiles,
    /// What the ops reach.
    pub services: Services,
    /// Where the handler's optional exports are recorded.
    pub features: Arc<HandlerFeatures>,
    /// The heap limit, if any.
    pub heap_limit: Option<usize>,
}

/// The runtime's private entry points, as function handles: the value of the last runtime_js
/// file, which takes them (and `Deno.core`) off the global object, so handler code reaches none
/// of them.
pub struct Internals {
    /// `dispatch(kind, id, a, b, c, endpoint)`, called for every event but the next.
    pub dispatch: v8::Global<v8::Function>,
    /// `dispatchMessage(id, message)`, called for every message on an inbound connection.
    pub dispatch_message: v8::Global<v8::Function>,
    /// `recover(kind, id, message)`, called after a termination.
    pub recover: v8::Global<v8::Function>,
    /// `setHandler(exports)`: the handler's new exports.
    pub set_handler: v8::Global<v8::Function>,
    /// `requireMain(url)`: loads a CommonJS (or JSON) handler module; returns its exports.
    pub require_main: v8::Global<v8::Function>,
    /// `beginGeneration(n)`, `commitGeneration(n)`, `abortGeneration(n)`, `discardGeneration()`:
    /// the steps of a reload.
    pub generation_steps: [v8::Global<v8::Function>; 4],
}

/// A step of a (re)load of the handler's code.
#[derive(Debug, Clone, Copy)]
pub enum GenerationStep {
    /// New code is about to load: fresh module state, the old kept aside.
    Begin,
    /// It loaded: the old code's timers are cancelled.
    Commit,
    /// It failed: the old code and state are back.
    Abort,
    /// The code serving is dropped, with its state and timers, before new code loads (after
    /// the heap limit).
    Discard,
}

/// An argument of a call into the runtime's JavaScript.
pub enum Arg<'a> {
    /// A string.
    Text(&'a str),
    /// A number.
    Number(f64),
    /// A value the runtime already holds.
    Value(&'a v8::Global<v8::Value>),
}

/// A `JsRuntime` with our ops and the runtime's JavaScript, ready for a handler module, and the
/// runtime's entry points. A failure is a bug of ours, described with the engine's words.
pub fn new_runtime(parts: RuntimeParts) -> Result<(JsRuntime, Internals), String> {
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
            instance: parts.instance,
            modules: parts.modules,
            services: parts.services,
            features: parts.features,
        })],
        ..Default::default()
    });
    let mut last = None;
    for (name, source) in RUNTIME_JS {
        let value = runtime
            .execute_script(*name, *source)
            .map_err(|error| format!("{name} failed: {error}"))?;
        last = Some(value);
    }
    let entry_points = last.ok_or("no runtime JavaScript")?;
    // What the boot let go of (deno_core's unused primordials, released by 09_globals.js) is held
    // in reference cycles, which only a collection frees: one now, before the isolate settles.
    runtime.v8_isolate().low_memory_notification();
    let internals = {
        deno_core::scope!(scope, &mut runtime);
        let object = v8::Local::new(scope, &entry_points);
        let object = v8::Local::<v8::Object>::try_from(object)
            .map_err(|_| "the runtime's JavaScript returned no entry points".to_string())?;
        let function = |name: &str| -> Result<v8::Global<v8::Function>, String> {
            let key = v8::String::new(scope, name).ok_or("cannot make a string")?;
            let value = object
                .get(scope, key.into())
                .ok_or_else(|| format!("entry point {name} is missing"))?;
            let function = v8::Local::<v8::Function>::try_from(value)
                .map_err(|_| format!("entry point {name} is not a function"))?;
            Ok(v8::Global::new(scope, function))
        };
        Internals {
            dispatch: function("dispatch")?,
            dispatch_message: function("dispatchMessage")?,
            recover: function("recover")?,
            set_handler: function("setHandler")?,
            require_main: function("requireMain")?,
            generation_steps: [
                function("beginGeneration")?,
                function("commitGeneration")?,
                function("abortGeneration")?,
                function("discardGeneration")?,
            ],
        }
    };
    Ok((runtime, internals))
}

impl Internals {
    /// The function of a reload step.
    pub fn generation_step(&self, step: GenerationStep) -> &v8::Global<v8::Function> {
        &self.generation_steps[step as usize]
    }
}

/// Calls one of the runtime's functions; an exception it throws comes back as the engine's error
/// (with its stack, for `file:line:column`).
pub fn call(
    runtime: &mut JsRuntime,
    function: &v8::Global<v8::Function>,
    args: &[Arg<'_>],
) -> Result<v8::Global<v8::Value>, Box<JsError>> {
    deno_core::scope!(scope, runtime);
    v8::tc_scope!(let scope, scope);
    let function = v8::Local::new(scope, function);
    let mut locals = Vec::with_capacity(args.len());
    for arg in args {
        let local: v8::Local<v8::Value> = match arg {
            Arg::Text(text) => match v8::String::new(scope, text) {
                Some(string) => string.into(),
                None => v8::undefined(scope).into(),
            },
            Arg::Number(number) => v8::Number::new(scope, *number).into(),
            Arg::Value(value) => v8::Local::new(scope, *value),
        };
        locals.push(local);
    }
    let undefined = v8::undefined(scope).into();
    match function.call(scope, undefined, &locals) {
        Some(value) => Ok(v8::Global::new(scope, value)),
        None => {
            let exception = scope
                .exception()
                .unwrap_or_else(|| v8::undefined(scope).into());
            // Describing the exception allocates in the engine, which can fail when the heap is
            // exhausted (deno_core then panics): that is reported as an error, not a panic.
            let described = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                JsError::from_v8_exception(scope, exception)
            }));
            Err(described.unwrap_or_else(|_| {
                undescribed_error("the engine could not describe the error (out of memory?)")
            }))
        }
    }
}

/// One turn of the runtime's event loop (timers, promise callbacks, ops), with a panic of
/// deno_core caught: when a handler's heap is exhausted, deno_core can panic while describing the
/// error that stopped it (it cannot allocate the description). That error then comes back as one
/// the engine could not describe, instead of ending the isolate's thread.
pub fn poll_event_loop(
    runtime: &mut JsRuntime,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Result<(), CoreError>> {
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.poll_event_loop(cx, PollEventLoopOptions::default())
    }));
    polled.unwrap_or_else(|_| {
        let error = undescribed_error("the engine could not describe an error (out of memory?)");
        std::task::Poll::Ready(Err(CoreError(Box::new(CoreErrorKind::Js(error)))))
    })
}

/// A JavaScript error the engine could not describe.
fn undescribed_error(message: &str) -> Box<JsError> {
    Box::new(JsError {
        name: Some("Error".into()),
        message: Some(message.into()),
        stack: None,
        cause: None,
        exception_message: format!("Error: {message}"),
        frames: Vec::new(),
        source_line: None,
        source_line_frame_index: None,
        aggregated: None,
        additional_properties: Vec::new(),
        stack_is_custom: false,
    })
}

/// After a handler's heap was freed: collects garbage and gives the memory back to the system.
pub fn release_freed_memory(runtime: &mut JsRuntime) {
    // The QuickJS adapter lets go of what a terminated run left behind only when the next script
    // runs (a function call is not enough): without this empty script, the 64 MiB that a
    // terminated handler had allocated stayed reachable through the collection below
    // (tests/integration/hardening.rs, a_heap_hungry_handler_is_terminated_and_memory_returns).
    let _ = runtime.execute_script("switchboard:release", "undefined");
    runtime.v8_isolate().low_memory_notification();
    give_back_free_memory();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolate::error_text::COMMONJS_PREFIX;
    use crate::isolate::ops::{NoClientHandlers, Services};
    use crate::workspace::WorkspacePaths;

    /// Every op of ours, called thousands of times with arguments of every kind, straight through
    /// `Deno.core.ops` (which handler code cannot reach): each call returns or throws a
    /// JavaScript error. An op that panicked would abort this test process (the engine's callbacks
    /// cannot unwind).
    #[test]
    fn no_op_of_ours_panics_on_any_argument() {
        let workspace = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(workspace.path().join("p")).unwrap();
        std::fs::write(workspace.path().join("p/h.js"), "exports.x = 1;").unwrap();
        let paths = WorkspacePaths::new(workspace.path()).unwrap();
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = tokio.enter();
        init_engine();
        let modules = ModuleFiles::new(paths);
        let mut runtime = JsRuntime::new(RuntimeOptions {
            module_loader: Some(Rc::new(WorkspaceModuleLoader {
                modules: modules.clone(),
            })),
            extensions: vec![switchboard_api::init(IsolateContext {
                handler: "p/h.js".into(),
                instance: 0,
                modules,
                services: Services {
                    connections: Default::default(),
                    clients: Default::default(),
                    client_handlers: std::sync::Weak::<NoClientHandlers>::new(),
                    limits: Default::default(),
                    stats: Default::default(),
                },
                features: Default::default(),
            })],
            ..Default::default()
        });
        let fuzz = r#"
            const ops = globalThis.Deno.core.ops;
            const names = Object.keys(ops).filter((n) => n.startsWith("op_sb_") || n.startsWith("op_ws_"));
            let seed = 0x9e3779b9;
            const random = (n) => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return (seed >>> 0) % n; };
            const { proxy: revoked, revoke } = Proxy.revocable({}, {}); revoke();
            const pool = () => [
              undefined, null, true, 0, -1, 1, 7, 1.5, NaN, Infinity, -Infinity, 2 ** 53, -(2 ** 63), 2 ** 64, -0,
              "", "x", "\uD800", "p/h", "./h", "../x", "ws://127.0.0.1:1/", "{\"decision\":\"accept\"}", "a".repeat(100000),
              {}, [], [1, 2], ["x", {}], { headers: 1 }, new Uint8Array(5), new ArrayBuffer(3), new Float32Array(2),
              Symbol("s"), 5n, () => 1, revoked, new Proxy({}, { get() { throw new Error("trap"); } }), new Date(), /x/,
            ];
            let calls = 0;
            for (let round = 0; round < 300; round++) {
              for (const name of names) {
                if (name === "op_sb_log") continue;
                const values = pool();
                const args = Array.from({ length: random(6) }, () => values[random(values.length)]);
                calls++;
                try { ops[name](...args); } catch (_) {}
              }
            }
            `${names.length} ops, ${calls} calls`;
        "#;
        let outcome = runtime.execute_script("fuzz", fuzz).unwrap();
        deno_core::scope!(scope, &mut runtime);
        let outcome = v8::Local::new(scope, &outcome).to_rust_string_lossy(scope);
        assert!(outcome.starts_with("33 ops"), "{outcome}");
    }

    /// The names deno_core's own scripts take from its primordials: each `const { ... } =
    /// ...primordials;` and each `primordials.Name` read (comments left out).
    fn primordials_taken_by(script: &str) -> Vec<String> {
        let code: String = script
            .lines()
            .map(|line| line.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let mut names = Vec::new();
        let mut rest = code.as_str();
        while let Some(start) = rest.find("const {") {
            let after = &rest[start + "const {".len()..];
            let Some(close) = after.find('}') else { break };
            let tail = after[close + 1..].split(';').next().unwrap_or("");
            if tail.trim_start().starts_with('=') && tail.trim_end().ends_with("primordials") {
                names.extend(
                    after[..close]
                        .split(',')
                        .map(|part| part.split(':').next().unwrap_or("").trim().to_string())
                        .filter(|name| !name.is_empty()),
                );
            }
            rest = &after[close..];
        }
        for (at, _) in code.match_indices("primordials.") {
            let after = &code[at + "primordials.".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '$')
                .collect();
            let next = after[name.len()..].trim_start();
            let assigned = next.starts_with('=') && !next.starts_with("==");
            if !name.is_empty() && !assigned {
                names.push(name);
            }
        }
        names
    }

    /// The vendored deno_core makes only the primordials its own scripts take
    /// (`deno_core-lean-boot.patch`): every name any of them takes exists after its boot.
    #[test]
    fn primordials_kept_cover_every_consumer() {
        let scripts = [
            include_str!("../../vendor/deno_core/00_primordials.js"),
            include_str!("../../vendor/deno_core/00_infra.js"),
            include_str!("../../vendor/deno_core/01_core.js"),
            include_str!("../../vendor/deno_core/02_timers.js"),
        ];
        let mut names: Vec<String> = scripts
            .iter()
            .flat_map(|s| primordials_taken_by(s))
            .collect();
        names.sort();
        names.dedup();
        assert!(names.len() > 50, "the scan found only {names:?}");
        init_engine();
        let mut runtime = JsRuntime::new(RuntimeOptions::default());
        let check = format!(
            "JSON.stringify({}.filter((name) => globalThis.__bootstrap.primordials[name] === undefined))",
            serde_json::to_string(&names).unwrap()
        );
        let missing = runtime.execute_script("check", check).unwrap();
        deno_core::scope!(scope, &mut runtime);
        let missing = v8::Local::new(scope, &missing).to_rust_string_lossy(scope);
        assert_eq!(missing, "[]", "taken from primordials but not made");
    }

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
