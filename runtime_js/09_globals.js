// Last: the reload steps (generations of handler code), the globals handler code sees, and the
// end of the boot: the internals and Deno.core leave the global object, and what the Rust side
// calls (engine.rs `Internals`) is this script's value.
"use strict";

((globalThis, internals) => {
  const { core, generations, cancelTimers, describeError } = internals;
  const { op_sb_log } = internals.ops;

  // What a reload replaces, kept until the new code has loaded.
  let previous = null;
  Object.assign(internals, {
    // A reload: fresh module state for the new code; the old stays until it has loaded.
    beginGeneration(next) {
      previous = { moduleCache: internals.takeModuleCache(), handler: internals.getHandler() };
      generations.loading = next;
    },
    commitGeneration(next) {
      cancelTimers((g) => g < next);
      generations.serving = next;
      previous = null;
    },
    abortGeneration(failed) {
      cancelTimers((g) => g === failed);
      if (previous !== null) {
        internals.restoreModuleCache(previous.moduleCache);
        internals.setHandler(previous.handler);
      }
      generations.loading = generations.serving;
      previous = null;
    },
    // After the heap limit: the serving code, its module state and its timers go at once, so
    // their memory can be collected before new code loads.
    discardGeneration() {
      cancelTimers(() => true);
      internals.takeModuleCache();
      internals.setHandler({});
    },
  });

  const globals = {
    console: internals.console,
    setTimeout: internals.setTimeout,
    setInterval: internals.setInterval,
    clearTimeout: internals.clearTimer,
    clearInterval: internals.clearTimer,
    TextEncoder: internals.TextEncoder,
    TextDecoder: internals.TextDecoder,
    structuredClone: internals.structuredClone,
  };
  for (const [name, value] of Object.entries(globals)) {
    Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
  }
  Object.defineProperty(globalThis, "global", { value: globalThis, writable: true, configurable: true });
  // Unhandled rejections are logged rather than stopping the isolate's event loop.
  core.setUnhandledPromiseRejectionHandler((promise, reason) => {
    op_sb_log("error", `unhandled promise rejection: ${describeError(reason)}`);
    return true;
  });

  // A handler has no other thread to wake it: waiting would block its thread (and the sockets it
  // drives) beyond the reach of the event time limit.
  Object.defineProperty(Atomics, "wait", {
    value: function wait() {
      throw new TypeError("Atomics.wait is not available to handlers: nothing could wake the handler's thread; use Atomics.waitAsync or a timer");
    },
    writable: false,
    configurable: false,
  });

  // What the built-in modules' code reaches (loader.rs): the public API, and require() for an ES
  // module importing a CommonJS one. Nothing else of the runtime is on the global object.
  Object.defineProperty(globalThis, "__switchboard", {
    value: Object.freeze({
      websockets: internals.websockets,
      sdkNet: internals.sdkNet,
      requireFromEsm: internals.requireFromEsm,
    }),
    writable: false,
    enumerable: false,
    configurable: false,
  });
  delete globalThis.__switchboardBootstrap;
  // deno_core leaves its own bootstrap data (core, internals, primordials) on the global object
  // for its embedders' bootstrap code, which is done now.
  delete globalThis.__bootstrap;
  // deno_core also keeps a copy of that data for extension scripts loaded later (none are here),
  // and the copy held every primordial alive: ~800 functions and names, of which deno_core's own
  // code captured the hundred or so it uses. An empty copy lets the rest go; the Rust side
  // collects them when the boot is done (vendor/README.md, deno_core-lean-boot.patch).
  core.ops.op_set_captured_bootstrap({ __proto__: null });
  delete globalThis.Deno;

  return Object.freeze({
    dispatch: internals.dispatch,
    dispatchMessage: internals.dispatchMessage,
    recover: internals.recover,
    setHandler: internals.setHandler,
    requireMain: internals.requireMain,
    beginGeneration: internals.beginGeneration,
    commitGeneration: internals.commitGeneration,
    abortGeneration: internals.abortGeneration,
    discardGeneration: internals.discardGeneration,
  });
})(globalThis, globalThis.__switchboardBootstrap);
