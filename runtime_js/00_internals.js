// The runtime's internals, shared by the files that follow while the isolate boots (each adds
// what it provides, in the order engine.rs runs them), and the tables whose one source is the
// Rust side. 09_globals.js takes them off the global object again: handler code never sees them,
// nor Deno.core (whose ops are not all safe to call with any argument).
"use strict";

((globalThis) => {
  const core = globalThis.Deno.core;
  const internals = {
    core,
    ops: core.ops,
    // The event kinds the Rust side calls the dispatcher with (event.rs `EventKind`).
    kinds: core.ops.op_sb_event_kinds(),
    // The generation of handler code that is serving, and the one loading (a reload is a new
    // generation; timers belong to the generation that created them).
    generations: { serving: 0, loading: 0 },
  };
  Object.defineProperty(globalThis, "__switchboardBootstrap", { value: internals, configurable: true });
})(globalThis);
