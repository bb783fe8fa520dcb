// Switchboard's per-isolate bootstrap: the globals handler code expects (console, timers,
// TextEncoder/TextDecoder, structuredClone), CommonJS `require`, and the event dispatcher that
// the Rust side calls directly for every connection event.
"use strict";

((globalThis) => {
  const core = globalThis.Deno.core;
  const ops = core.ops;
  const {
    op_sb_log,
    op_sb_read_module,
    op_ws_send_text,
    op_ws_send_binary,
    op_ws_close,
  } = ops;

  // ---------------------------------------------------------------- console
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

  // ----------------------------------------------------------------- timers
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
  // Browser-style numeric ids, mapped to the engine's timer objects.
  const timers = new Map();
  let nextTimerId = 1;
  function setTimeout(callback, delay, ...args) {
    checkCallback(callback, "setTimeout");
    const id = nextTimerId++;
    const run = guarded(callback, "setTimeout");
    timers.set(id, core.createTimer(() => {
      timers.delete(id);
      run(...args);
    }, delay, undefined, false, true));
    return id;
  }
  function setInterval(callback, delay, ...args) {
    checkCallback(callback, "setInterval");
    const id = nextTimerId++;
    const run = guarded(callback, "setInterval");
    timers.set(id, core.createTimer(() => run(...args), delay, undefined, true, true));
    return id;
  }
  function clearTimer(id) {
    const timer = timers.get(id);
    if (timer !== undefined) {
      timers.delete(id);
      core.cancelTimer(timer);
    }
  }

  // ------------------------------------------------------- text and cloning
  class TextEncoder {
    get encoding() {
      return "utf-8";
    }
    encode(input = "") {
      return core.encode(String(input));
    }
    encodeInto(input, dest) {
      const bytes = core.encode(String(input));
      const written = Math.min(bytes.length, dest.length);
      dest.set(bytes.subarray(0, written));
      return { read: input.length, written };
    }
  }
  class TextDecoder {
    #fatal;
    constructor(label = "utf-8", options = {}) {
      const normalized = String(label).trim().toLowerCase();
      if (normalized !== "utf-8" && normalized !== "utf8") {
        throw new RangeError(`TextDecoder: only utf-8 is supported, got "${label}"`);
      }
      this.#fatal = !!options.fatal;
    }
    get encoding() {
      return "utf-8";
    }
    get fatal() {
      return this.#fatal;
    }
    decode(input) {
      if (input === undefined) return "";
      let view;
      if (input instanceof ArrayBuffer) view = new Uint8Array(input);
      else if (ArrayBuffer.isView(input)) view = new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
      else throw new TypeError("TextDecoder.decode: expected an ArrayBuffer or a typed array");
      const text = core.decode(view);
      if (this.#fatal && text.includes("\uFFFD") && !isValidUtf8(view)) {
        throw new TypeError("TextDecoder.decode: the input is not valid UTF-8");
      }
      return text;
    }
  }
  function isValidUtf8(bytes) {
    let i = 0;
    while (i < bytes.length) {
      const b = bytes[i];
      const extra = b < 0x80 ? 0 : (b & 0xe0) === 0xc0 ? 1 : (b & 0xf0) === 0xe0 ? 2 : (b & 0xf8) === 0xf0 ? 3 : -1;
      if (extra < 0 || i + extra >= bytes.length + (extra === 0 ? 1 : 0)) return false;
      for (let k = 1; k <= extra; k++) if ((bytes[i + k] & 0xc0) !== 0x80) return false;
      i += extra + 1;
    }
    return true;
  }
  function structuredClone(value) {
    return core.structuredClone(value);
  }

  // --------------------------------------------------------------- wire data
  // What `send` and a handler's return value accept, turned into what the ops take.
  function toWire(data, what) {
    if (typeof data === "string") return data;
    if (data instanceof Uint8Array) return data;
    if (data instanceof ArrayBuffer) return new Uint8Array(data);
    if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (data === undefined || typeof data === "function" || typeof data === "symbol") {
      throw new TypeError(`${what}: cannot send ${typeof data}; send a string, a Uint8Array/ArrayBuffer or a JSON-serialisable value`);
    }
    return JSON.stringify(data);
  }
  function sendWire(id, wire) {
    if (typeof wire === "string") op_ws_send_text(id, wire);
    else op_ws_send_binary(id, wire);
  }
  function checkClose(code, reason) {
    if (code === undefined) code = 1000;
    if (!Number.isInteger(code) || !(code === 1000 || (code >= 3000 && code <= 4999))) {
      throw new RangeError(`close: code must be 1000 or 3000-4999, got ${formatValue(code)}`);
    }
    reason = reason === undefined || reason === null ? "" : String(reason);
    const bytes = core.encode(reason).length;
    if (bytes > 123) {
      throw new RangeError(`close: reason must be at most 123 bytes of UTF-8, got ${bytes}`);
    }
    return [code, reason];
  }

  // ------------------------------------------------------------ connections
  const connections = new Map();

  class Connection {
    #id;
    #endpoint;
    constructor(id, endpoint) {
      this.#id = id;
      this.#endpoint = endpoint;
      // Events that arrived while an async handler for this connection was still running.
      this.queue = null;
      this.busy = false;
      this.closed = false;
      this.finishWhenIdle = false;
    }
    get id() {
      return this.#id;
    }
    get endpoint() {
      return this.#endpoint;
    }
    send(data) {
      sendWire(this.#id, toWire(data, "send"));
    }
    close(code, reason) {
      const [c, r] = checkClose(code, reason);
      op_ws_close(this.#id, c, r);
    }
    toJSON() {
      return { id: this.#id, endpoint: this.#endpoint };
    }
  }
  Object.defineProperty(Connection.prototype, Symbol.toStringTag, { value: "Connection" });

  // --------------------------------------------------------- event context
  const METHODS = ["onopen", "onmessage", "onerror", "onclose"];
  const EXPORTS = ["onOpen", "onMessage", "onError", "onClose"];
  const OPEN = 0, MESSAGE = 1, ERROR = 2, CLOSE = 3;
  let current = null;
  let handler = {};

  const context = {
    getMessage: () => (current && current.kind === MESSAGE ? current.data : null),
    getError: () => (current && current.kind === ERROR ? current.data : null),
    getMethod: () => (current ? METHODS[current.kind] : null),
    isOnOpen: () => !!current && current.kind === OPEN,
    isOnMessage: () => !!current && current.kind === MESSAGE,
    isOnError: () => !!current && current.kind === ERROR,
    isOnClose: () => !!current && current.kind === CLOSE,
  };

  // ---------------------------------------------------------- dispatching
  function invoke(conn, kind, a, b, c) {
    const name = EXPORTS[kind];
    const fn = handler[name];
    if (typeof fn !== "function") return undefined;
    const event = { kind, data: kind === MESSAGE || kind === ERROR ? a : null };
    const previous = current;
    current = event;
    try {
      switch (kind) {
        case OPEN:
          return fn.call(handler, conn);
        case MESSAGE:
          return fn.call(handler, a, conn);
        case ERROR:
          return fn.call(handler, a, conn);
        default:
          return fn.call(handler, conn, { code: a, reason: b, wasClean: c });
      }
    } finally {
      current = previous;
    }
  }

  function reportFailure(conn, kind, error) {
    op_sb_log("error", `${EXPORTS[kind]} failed on connection ${conn.id} (${conn.endpoint}): ${describeError(error)}`);
    if (kind !== ERROR && kind !== CLOSE && !conn.closed) {
      runEvent(conn, ERROR, errorMessage(error));
    }
  }

  // Runs one event; returns the reply for the Rust side to send, or undefined.
  function runEvent(conn, kind, a, b, c) {
    let result;
    try {
      result = invoke(conn, kind, a, b, c);
    } catch (error) {
      reportFailure(conn, kind, error);
      return undefined;
    }
    if (result !== null && typeof result === "object" && typeof result.then === "function") {
      conn.busy = true;
      result.then(
        (value) => {
          if (kind === MESSAGE) replyLater(conn, value);
        },
        (error) => reportFailure(conn, kind, error),
      ).finally(() => {
        conn.busy = false;
        drainQueue(conn);
        if (!conn.busy && conn.finishWhenIdle) finish(conn);
      });
      return undefined;
    }
    if (kind !== MESSAGE || result === undefined || result === null) return undefined;
    try {
      return toWire(result, "onMessage's return value");
    } catch (error) {
      reportFailure(conn, kind, error);
      return undefined;
    }
  }

  function replyLater(conn, value) {
    if (value === undefined || value === null || conn.closed) return;
    try {
      sendWire(conn.id, toWire(value, "onMessage's resolved value"));
    } catch (error) {
      reportFailure(conn, MESSAGE, error);
    }
  }

  function drainQueue(conn) {
    while (!conn.busy && conn.queue && conn.queue.length > 0) {
      const [kind, a, b, c] = conn.queue.shift();
      const reply = runEvent(conn, kind, a, b, c);
      if (reply !== undefined) {
        try {
          sendWire(conn.id, reply);
        } catch (error) {
          op_sb_log("warn", `reply to connection ${conn.id} not sent: ${errorMessage(error)}`);
        }
      }
      afterEvent(conn, kind);
    }
  }

  // A connection is forgotten once its onClose, sync or async, has finished.
  function afterEvent(conn, kind) {
    if (kind !== CLOSE) return;
    if (conn.busy) conn.finishWhenIdle = true;
    else finish(conn);
  }

  function finish(conn) {
    conn.closed = true;
    connections.delete(conn.id);
  }

  // Called by the Rust side for every event, in arrival order. The return value is the reply.
  function dispatch(kind, id, a, b, c) {
    let conn = connections.get(id);
    if (kind === OPEN) {
      conn = new Connection(id, a);
      connections.set(id, conn);
    } else if (conn === undefined) {
      return undefined;
    }
    if (conn.busy) {
      (conn.queue ||= []).push([kind, a, b, c]);
      return undefined;
    }
    const reply = runEvent(conn, kind, a, b, c);
    afterEvent(conn, kind);
    return reply;
  }

  // ------------------------------------------------------------- CommonJS
  const builtinModules = new Map();
  const moduleCache = new Map();

  // The wrapper shares the module's first line, so every reported line number is the file's own.
  function compileCommonJs(source, url) {
    const body = source.startsWith("#!") ? "//" + source.slice(2) : source;
    const wrapped = `(function (exports, require, module, __filename, __dirname) {${body}\n})`;
    const [fn, error] = core.evalContext(wrapped, url);
    if (error) throw error.thrown;
    return fn;
  }

  function makeRequire(referrer) {
    const require = (specifier) => {
      if (typeof specifier !== "string") {
        throw new TypeError(`require: the module name must be a string, got ${typeof specifier}`);
      }
      const builtin = builtinModules.get(specifier);
      if (builtin !== undefined) return builtin;
      const [path, url, source, kind] = op_sb_read_module(specifier, referrer);
      return loadCommonJs(path, url, source, kind);
    };
    return require;
  }

  function loadCommonJs(path, url, source, kind) {
    const cached = moduleCache.get(path);
    if (cached !== undefined) return cached.exports;
    if (kind === "json") {
      const module = { exports: JSON.parse(source) };
      moduleCache.set(path, module);
      return module.exports;
    }
    if (kind === "esm") {
      throw new Error(`${path} is an ES module (it uses import/export): load it with import, not require()`);
    }
    const fn = compileCommonJs(source, url);
    const module = { exports: {}, id: path, filename: path, loaded: false };
    moduleCache.set(path, module);
    const dirname = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : ".";
    try {
      fn.call(module.exports, module.exports, makeRequire(url), module, path, dirname);
    } catch (e) {
      moduleCache.delete(path);
      throw e;
    }
    module.loaded = true;
    return module.exports;
  }

  // ----------------------------------------------------------------- wiring
  const internals = {
    dispatch,
    context,
    connections,
    Connection,
    toWire,
    sendWire,
    checkClose,
    formatValue,
    errorMessage,
    builtinModules,
    compileCommonJs,
    // Loads the handler's main module when it is CommonJS; returns its exports.
    requireMain(specifier) {
      const [path, url, source, kind] = op_sb_read_module(specifier, "");
      return loadCommonJs(path, url, source, kind);
    },
    // Loads a CommonJS module for an ES module that imports it (default export).
    requireFromEsm(specifier) {
      return makeRequire("")(specifier);
    },
    setHandler(exports) {
      handler = exports !== null && typeof exports === "object" ? exports : {};
      if (typeof exports === "function") handler = exports;
    },
  };
  Object.defineProperty(globalThis, "__switchboard", { value: internals, enumerable: false });

  const globals = {
    console,
    setTimeout,
    setInterval,
    clearTimeout: clearTimer,
    clearInterval: clearTimer,
    TextEncoder,
    TextDecoder,
    structuredClone,
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
})(globalThis);
