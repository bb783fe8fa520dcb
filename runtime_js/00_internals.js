// The runtime's internals object, shared by the files that follow (each adds what it provides,
// in the order engine.rs runs them), and the tables whose one source is the Rust side.
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
  Object.defineProperty(globalThis, "__switchboard", { value: internals, enumerable: false });
})(globalThis);
