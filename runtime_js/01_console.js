// console (logged through the Rust side with the handler's path), and the value formatting and
// error descriptions the other files use.
"use strict";

((internals) => {
  const { op_sb_log } = internals.ops;

  function formatValue(value, seen) {
    if (typeof value === "string") return value;
    if (value instanceof Error) return value.stack || `${value.name}: ${value.message}`;
    if (typeof value === "function") return `[Function ${value.name || "(anonymous)"}]`;
    if (typeof value === "symbol" || typeof value === "bigint") return String(value);
    if (value === null || typeof value !== "object") return String(value);
    if (value instanceof Uint8Array) return `Uint8Array(${value.length}) [${Array.from(value.subarray(0, 32)).join(", ")}${value.length > 32 ? ", ..." : ""}]`;
    try {
      seen = seen || new WeakSet();
      return JSON.stringify(value, (key, v) => {
        if (typeof v === "bigint") return `${v}n`;
        if (typeof v === "object" && v !== null) {
          if (seen.has(v)) return "[Circular]";
          seen.add(v);
        }
        return v;
      });
    } catch (_) {
      return Object.prototype.toString.call(value);
    }
  }
  function formatArgs(args) {
    return args.map((a) => formatValue(a)).join(" ");
  }
  const console = {
    log: (...args) => op_sb_log("info", formatArgs(args)),
    info: (...args) => op_sb_log("info", formatArgs(args)),
    debug: (...args) => op_sb_log("debug", formatArgs(args)),
    trace: (...args) => op_sb_log("trace", formatArgs(args) + "\n" + (new Error().stack || "")),
    warn: (...args) => op_sb_log("warn", formatArgs(args)),
    error: (...args) => op_sb_log("error", formatArgs(args)),
  };

  function describeError(error) {
    if (error instanceof Error) return error.stack || `${error.name}: ${error.message}`;
    return formatValue(error);
  }
  function errorMessage(error) {
    if (error instanceof Error) return `${error.name}: ${error.message}`;
    return formatValue(error);
  }

  Object.assign(internals, { console, formatValue, describeError, errorMessage });
})(globalThis.__switchboard);
