// Last: the reload steps (generations of handler code), and the globals handler code sees.
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
})(globalThis, globalThis.__switchboard);
