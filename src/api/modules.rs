//! `require()` for CommonJS handler code: resolution and reading, inside the workspace only.

use deno_core::op2;
use deno_core::OpState;

use super::IsolateContext;
use crate::isolate::modules::{ModuleError, ModuleKind};

/// Returns `[displayPath, url, source, kind]` of the module `specifier` as required from `referrer`.
#[op2]
#[serde]
pub fn op_sb_read_module(
    state: &mut OpState,
    #[string] specifier: String,
    #[string] referrer: String,
) -> Result<(String, String, String, &'static str), ModuleError> {
    let resolver = &state.borrow::<IsolateContext>().resolver;
    let module = resolver.resolve_file(&specifier, &referrer)?;
    let source = resolver.read(&module)?;
    let kind = ModuleKind::of(&module.path, &source);
    Ok((
        resolver.display(&module.path),
        module.url.to_string(),
        source,
        kind.as_str(),
    ))
}

/// Records which optional exports (`onUpgrade`, `onTick`, ...) the handler's new code has.
#[op2(fast)]
pub fn op_sb_handler_exports(state: &mut OpState, #[string] names: &str) {
    let names: Vec<&str> = names.split(',').collect();
    state
        .borrow::<IsolateContext>()
        .features
        .set_exports(&names);
}
