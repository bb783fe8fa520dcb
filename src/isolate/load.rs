//! Loading a handler module into a runtime: an ES module graph through the module loader, or a
//! CommonJS (or JSON) module through the runtime's `require`.

use std::future::{poll_fn, Future};
use std::path::Path;
use std::task::Poll;

use deno_core::{v8, JsRuntime, ModuleSpecifier};

use super::engine::{call, poll_event_loop, Arg, Internals};
use super::error_text::{js_load_error, load_error};
use super::ops::start_pending_clients;
use crate::event::HandlerLoadError;
use crate::workspace::modules::{ModuleError, ModuleFiles, ModuleKind};

/// The handler module to load.
pub struct HandlerModule<'a> {
    /// As shown in logs and errors.
    pub handler: &'a str,
    /// Its canonical file.
    pub file: &'a Path,
    /// The workspace's module files, recording what is read.
    pub modules: &'a ModuleFiles,
}

impl HandlerModule<'_> {
    fn unreadable(&self, reason: impl ToString) -> HandlerLoadError {
        HandlerLoadError::Unreadable {
            file: self.handler.to_string(),
            reason: reason.to_string(),
        }
    }

    /// The module's URL, as the engine names it.
    fn url(&self) -> Result<ModuleSpecifier, HandlerLoadError> {
        ModuleSpecifier::from_file_path(self.file).map_err(|()| self.unreadable("not a valid path"))
    }
}

/// A TypeScript syntax error as a load error: `file.ts:line:column`, and the parser's words.
fn syntax_error(module: &HandlerModule<'_>, error: ModuleError) -> HandlerLoadError {
    match error {
        ModuleError::Syntax {
            path,
            line,
            column,
            message,
        } => HandlerLoadError::Code {
            file: module.handler.to_string(),
            location: Some(format!("{path}:{line}:{column}")),
            message: format!("SyntaxError: {message}"),
        },
        other => module.unreadable(other),
    }
}

/// Loads the handler's code as generation `generation` and runs its top level (an ES module's
/// async top level included, while the runtime's event loop turns), then hands its exports to the
/// dispatcher. The first generation is the main module; later ones get URLs of their own, so a
/// reload instantiates every module of the graph afresh.
pub async fn evaluate(
    runtime: &mut JsRuntime,
    internals: &Internals,
    module: &HandlerModule<'_>,
    generation: u64,
) -> Result<(), HandlerLoadError> {
    // Read through the record of module files, so that a handler that cannot be read now is
    // reloaded once it can.
    let code = module.modules.read_code(module.file).map_err(|e| match e {
        ModuleError::Unreadable { reason, .. } => module.unreadable(reason),
        ModuleError::Syntax { .. } => syntax_error(module, e),
        other => module.unreadable(other),
    })?;
    let mut url = module.url()?;
    // A TypeScript syntax error is reported with its place in the TypeScript text, whatever the
    // engine made of the loader's refusal (if the failure is that error, not one a handler caught).
    let syntax = |text: String| {
        module
            .modules
            .take_syntax_error()
            .filter(|e| matches!(e, ModuleError::Syntax { message, .. } if text.contains(message.as_str())))
            .map(|e| syntax_error(module, e))
    };
    let failed = |error: &deno_core::error::CoreError| {
        syntax(error.to_string())
            .unwrap_or_else(|| load_error(module.handler, error, module.modules))
    };
    let js_failed = |error: &deno_core::error::JsError| {
        syntax(error.exception_message.clone())
            .unwrap_or_else(|| js_load_error(module.handler, error, module.modules))
    };
    module.modules.take_syntax_error();
    match code.kind {
        ModuleKind::EsModule => {
            let id = if generation == 1 {
                runtime.load_main_es_module(&url).await
            } else {
                url.set_query(Some(&format!("generation={generation}")));
                runtime.load_side_es_module(&url).await
            }
            .map_err(|e| failed(&e))?;
            let mut evaluation = Box::pin(runtime.mod_evaluate(id));
            poll_fn(|cx| {
                if let Poll::Ready(result) = evaluation.as_mut().poll(cx) {
                    return Poll::Ready(result);
                }
                let polled = poll_event_loop(runtime, cx);
                start_pending_clients(&mut runtime.op_state().borrow_mut());
                if let Poll::Ready(Err(error)) = polled {
                    return Poll::Ready(Err(error));
                }
                evaluation.as_mut().poll(cx)
            })
            .await
            .map_err(|e| failed(&e))?;
            let namespace = runtime.get_module_namespace(id).map_err(|e| failed(&e))?;
            let exports: v8::Global<v8::Value> = {
                deno_core::scope!(scope, runtime);
                let namespace: v8::Local<v8::Value> = v8::Local::new(scope, &namespace).into();
                v8::Global::new(scope, namespace)
            };
            call(runtime, &internals.set_handler, &[Arg::Value(&exports)])
                .map_err(|e| js_failed(&e))?;
        }
        ModuleKind::CommonJs | ModuleKind::Json => {
            let loaded = |runtime: &mut JsRuntime| {
                let exports = call(runtime, &internals.require_main, &[Arg::Text(url.as_str())])?;
                call(runtime, &internals.set_handler, &[Arg::Value(&exports)])
            };
            loaded(runtime).map_err(|e| js_failed(&e))?;
        }
    }
    Ok(())
}
