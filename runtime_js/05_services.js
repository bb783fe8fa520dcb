// The handler's lifecycle exports (onStart, onTick, onStop) and onUpgrade: each answers the Rust
// side through an op, once it has finished (an async one when its promise settles).
"use strict";

((internals) => {
  const { describeError, errorMessage, isThenable } = internals;
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
    if (isThenable(result)) {
      Promise.resolve(result).then(undefined, failed).finally(done);
    } else {
      done();
    }
  }

  // ----------------------------------------------------------- onUpgrade
  // onUpgrade(request) accepts only explicitly: `true`, or an object (it becomes conn.data).
  // Anything else refuses with 403 (so `return sessions.get(token)` lets no one in by accident);
  // throwing refuses with 401 (or the error's `status`, 400-499) and the error's message. It may be
  // async.
  function decideUpgrade(handler, token, requestJson) {
    const answer = (decision) => op_ws_upgrade_decide(token, JSON.stringify(decision));
    const refuseWith = (error) => {
      let status = 401;
      let reason = "";
      try {
        if (Number.isInteger(error?.status) && error.status >= 400 && error.status <= 499) status = error.status;
        reason = error instanceof Error ? String(error.message) : String(error);
      } catch (_) {
        reason = "";
      }
      answer({ decision: "refuse", status, reason: reason || "refused by onUpgrade" });
    };
    const settle = (value) => {
      if (value === true) {
        answer({ decision: "accept", data: null });
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
        answer({ decision: "refuse", status: 403, reason: "refused by onUpgrade" });
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
    if (isThenable(result)) {
      Promise.resolve(result).then(settle, refuseWith);
    } else {
      settle(result);
    }
  }

  Object.assign(internals, { runService, decideUpgrade });
})(globalThis.__switchboardBootstrap);
