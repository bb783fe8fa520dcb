// console (logged through the Rust side with the handler's path), and the value formatting,
// error descriptions and checks the other files use; none of them throws, whatever the value.
"use strict";

((internals) => {
  const { op_sb_log, op_sb_error_location } = internals.ops;

  // Describing a value must never throw, whatever the value is (a revoked Proxy, an object whose
  // getters throw): every description falls back to a plainer one, down to a fixed text.
  const UNDESCRIBABLE = "[a value that cannot be described]";
  function tag(value) {
    try {
      return Object.prototype.toString.call(value);
    } catch (_) {
      return UNDESCRIBABLE;
    }
  }

  function formatValue(value, seen) {
    try {
      if (typeof value === "string") return value;
      if (typeof value === "function") return `[Function ${value.name || "(anonymous)"}]`;
      if (typeof value === "symbol" || typeof value === "bigint") return String(value);
      if (value === null || typeof value !== "object") return String(value);
      if (value instanceof Error) return errorText(value, true);
      if (value instanceof Uint8Array) return `Uint8Array(${value.length}) [${Array.from(value.subarray(0, 32)).join(", ")}${value.length > 32 ? ", ..." : ""}]`;
      seen = seen || new WeakSet();
      return JSON.stringify(value, (key, v) => {
        if (typeof v === "bigint") return `${v}n`;
        if (typeof v === "object" && v !== null) {
          if (seen.has(v)) return "[Circular]";
          seen.add(v);
        }
        return v;
      }) ?? tag(value);
    } catch (_) {
      return tag(value);
    }
  }

  // An error as `name: message` (and its stack, if asked for and it has one); any other value
  // formatted. Never throws.
  function errorText(error, withStack) {
    let isError;
    try {
      isError = error instanceof Error;
    } catch (_) {
      return tag(error);
    }
    if (!isError) return formatValue(error);
    if (withStack) {
      try {
        const stack = error.stack;
        if (typeof stack === "string" && stack !== "") return stack;
      } catch (_) {
        // The stack getter threw: name and message will do.
      }
    }
    try {
      return `${error.name}: ${error.message}`;
    } catch (_) {
      return tag(error);
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

  // Whether a handler's return value is a promise (or a thenable) to wait for. A value whose
  // `then` cannot even be read is not one: it is then treated as a reply, and fails as such.
  function isThenable(value) {
    try {
      return value !== null && typeof value === "object" && typeof value.then === "function";
    } catch (_) {
      return false;
    }
  }

  // For the log: with the stack.
  function describeError(error) {
    return errorText(error, true);
  }
  // For onError: name and message, and where in the workspace it was thrown (`p/h.ts:5:11`, in
  // the TypeScript text for TypeScript), when its stack says.
  function errorMessage(error) {
    const text = errorText(error, false);
    try {
      if (!(error instanceof Error)) return text;
      const stack = error.stack;
      const location = typeof stack === "string" ? op_sb_error_location(stack) : null;
      return location ? `${text} (at ${location})` : text;
    } catch (_) {
      return text;
    }
  }

  Object.assign(internals, { console, formatValue, describeError, errorMessage, isThenable });
})(globalThis.__switchboardBootstrap);
