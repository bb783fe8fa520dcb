//! `console.*` in handler code, logged through `tracing` with the handler's path.

use deno_core::op2;
use deno_core::OpState;

use super::context::IsolateContext;

#[op2(fast)]
pub fn op_sb_log(state: &mut OpState, #[string] level: &str, #[string] text: &str) {
    let handler = state.borrow::<IsolateContext>().handler.as_str();
    match level {
        "error" => tracing::error!(target: "handler", "{handler}: {text}"),
        "warn" => tracing::warn!(target: "handler", "{handler}: {text}"),
        "debug" => tracing::debug!(target: "handler", "{handler}: {text}"),
        "trace" => tracing::trace!(target: "handler", "{handler}: {text}"),
        _ => tracing::info!(target: "handler", "{handler}: {text}"),
    }
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
