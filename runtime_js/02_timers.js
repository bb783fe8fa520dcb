// Browser-style timers over the engine's, each belonging to the generation of handler code that
// created it (a reload cancels the old generation's timers).
"use strict";

((internals) => {
  const { core, describeError } = internals;
  const { op_sb_log } = internals.ops;

  // Errors thrown by a timer callback are logged here: left to the event loop they would stop it.
  function guarded(callback, what) {
    return (...args) => {
      try {
        callback(...args);
      } catch (error) {
        op_sb_log("error", `${what} callback threw: ${describeError(error)}`);
      }
    };
  }
  function checkCallback(callback, name) {
    if (typeof callback !== "function") {
      throw new TypeError(`${name}: the first argument must be a function, got ${typeof callback}`);
    }
  }
  // Browser-style numeric ids, mapped to the engine's timer objects. Each timer belongs to the
  // generation of handler code that created it; a reload cancels the old generation's timers.
  const timers = new Map();
  let nextTimerId = 1;
  function addTimer(callback, delay, args, repeat, name) {
    checkCallback(callback, name);
    const id = nextTimerId++;
    const run = guarded(callback, name);
    const timer = core.createTimer(() => {
      if (!repeat) timers.delete(id);
      run(...args);
    }, delay, undefined, repeat, true);
    timers.set(id, { timer, generation: internals.generations.loading });
    return id;
  }
  function setTimeout(callback, delay, ...args) {
    return addTimer(callback, delay, args, false, "setTimeout");
  }
  function setInterval(callback, delay, ...args) {
    return addTimer(callback, delay, args, true, "setInterval");
  }
  function clearTimer(id) {
    const entry = timers.get(id);
    if (entry !== undefined) {
      timers.delete(id);
      core.cancelTimer(entry.timer);
    }
  }
  function cancelTimers(which) {
    for (const [id, entry] of timers) {
      if (which(entry.generation)) clearTimer(id);
    }
  }

  Object.assign(internals, { setTimeout, setInterval, clearTimer, cancelTimers });
})(globalThis.__switchboardBootstrap);
