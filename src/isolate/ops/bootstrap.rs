//! What the runtime's JavaScript asks for once, when an isolate starts: tables whose one source is
//! the Rust side, so the two cannot drift apart.

use deno_core::op2;

use crate::event::EventKind;
use crate::workspace::modules::BUILTIN_MODULES;

/// The event kinds the dispatcher is called with, by name.
#[op2]
#[serde]
pub fn op_sb_event_kinds() -> std::collections::BTreeMap<&'static str, u8> {
    EventKind::ALL
        .iter()
        .map(|(name, kind)| (*name, *kind as u8))
        .collect()
}

/// `[name, module]` for every name a built-in module is imported with.
#[op2]
#[serde]
pub fn op_sb_builtin_modules() -> Vec<(&'static str, &'static str)> {
    BUILTIN_MODULES
        .iter()
        .map(|(name, module)| (*name, module.key()))
        .collect()
}
