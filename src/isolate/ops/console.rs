//! `console.*` in handler code, logged through `tracing` with the handler's path (and kept in the
//! log book for the web console).

use std::sync::Arc;

use deno_core::op2;
use deno_core::OpState;

use super::context::IsolateContext;
use super::modules::COMMONJS_PREFIX;
use crate::workspace::modules::ModuleKind;
use crate::workspace::typescript::is_typescript;

#[op2(fast)]
pub fn op_sb_log(state: &mut OpState, #[string] level: &str, #[string] text: &str) {
    let context = state.borrow::<IsolateContext>();
    let handler = context.handler.as_str();
    // Stack traces name modules by `file:` URL; the log names them as users know them.
    let relative;
    let text = if text.contains("file://") {
        relative = context.modules.relative_urls(text);
        relative.as_str()
    } else {
        text
    };
    // A copy for the web console's live log of this handler.
    context
        .services
        .stats
        .logs
        .record(&Arc::from(handler), level, text);
    match level {
        "error" => tracing::error!(target: "handler", "{handler}: {text}"),
        "warn" => tracing::warn!(target: "handler", "{handler}: {text}"),
        "debug" => tracing::debug!(target: "handler", "{handler}: {text}"),
        "trace" => tracing::trace!(target: "handler", "{handler}: {text}"),
        _ => tracing::info!(target: "handler", "{handler}: {text}"),
    }
}

/// Where an error's stack says it was thrown in the workspace (`p/h.ts:5:11`, source-mapped for
/// TypeScript), for the message `onError` hears.
#[op2]
#[string]
pub fn op_sb_error_location(state: &mut OpState, #[string] stack: &str) -> Option<String> {
    let modules = &state.borrow::<IsolateContext>().modules;
    let location = modules.first_location(stack)?;
    // A CommonJS module's first line starts with the wrapper's head: its columns are shifted.
    let mut parts = location.rsplitn(3, ':');
    let (column, line, path) = (parts.next()?, parts.next()?, parts.next()?);
    let file = modules.paths().root().join(path);
    let is_commonjs = line == "1"
        && !is_typescript(&file)
        && std::fs::read_to_string(&file)
            .is_ok_and(|source| ModuleKind::of(&file, &source) == ModuleKind::CommonJs);
    if !is_commonjs {
        return Some(location);
    }
    let column = column.parse::<usize>().ok()?;
    let column = column.saturating_sub(COMMONJS_PREFIX.len()).max(1);
    Some(format!("{path}:1:{column}"))
}

/// Counts a handler event that threw or rejected, for `/metrics`.
#[op2(fast)]
pub fn op_sb_count_error(state: &mut OpState) {
    let context = state.borrow::<IsolateContext>();
    context
        .services
        .stats
        .handler(&context.handler)
        .errors
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}
