// The handler's lifecycle exports (onStart, onTick, onStop) and onUpgrade: each answers the Rust
// side through an op, once it has finished (an async one when its promise settles).
"use strict";

((internals) => {
  const { describeError, errorMessage } = internals;
  const { op_sb_log, op_sb_count_error, op_sb_service_done, op_ws_upgrade_decide } = internals.ops;

  // ------------------------------------------------- onStart, onTick, onStop
  // Runs the export `name` of `handler` for `endpoint`; tells the runtime when it has finished (an async one
  // when its promise settles), so that ticks never overlap.
  function runService(handler, token, name, endpoint) {
    const done = () => op_sb_service_done(token);
    const fn = handler[name];
    if (typeof fn !== "function") return done();
    const failed = (error) => {
      op_sb_count_error();
      op_sb_log("error", `${name} failed for endpoint ${endpoint}: ${describeError(error)}`);
    };
    let result;
    try {
      result = fn.call(handler, endpoint);
    } catch (error) {
      failed(error);
      return done();
    }
    if (result !== null && typeof result === "object" && typeof result.then === "function") {
      result.then(undefined, failed).finally(done);
    } else {
      done();
    }
  }

  // ----------------------------------------------------------- onUpgrade
  // onUpgrade(request) may return false (refuse: 403), throw (refuse: 401, or the error's
  // `status`, with its message), or return anything else (accept; an object becomes conn.data).
  // It may be async.
  function decideUpgrade(handler, token, requestJson) {
    const answer = (decision) => op_ws_upgrade_decide(token, JSON.stringify(decision));
    const refuseWith = (error) => {
      const status = Number.isInteger(error?.status) && error.status >= 400 && error.status <= 499 ? error.status : 401;
      const reason = error instanceof Error ? error.message : String(error);
      answer({ decision: "refuse", status, reason: reason || "refused by onUpgrade" });
    };
    const settle = (value) => {
      if (value === false) {
        answer({ decision: "refuse", status: 403, reason: "refused by onUpgrade" });
      } else if (value !== null && typeof value === "object") {
        let data;
        try {
          data = JSON.stringify(value);
        } catch (error) {
          op_sb_log("error", `onUpgrade's result cannot become conn.data: ${errorMessage(error)}`);
          return answer({ decision: "refuse", status: 500, reason: "onUpgrade returned data that is not JSON" });
        }
        answer({ decision: "accept", data });
      } else {
        answer({ decision: "accept", data: null });
      }
    };
    const fn = handler.onUpgrade;
    if (typeof fn !== "function") return settle(true);
    let result;
    try {
      result = fn.call(handler, JSON.parse(requestJson));
    } catch (error) {
      return refuseWith(error);
    }
    if (result !== null && typeof result === "object" && typeof result.then === "function") {
      result.then(settle, refuseWith);
    } else {
      settle(result);
    }
  }

  Object.assign(internals, { runService, decideUpgrade });
})(globalThis.__switchboard);
