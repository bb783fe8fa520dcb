// Switchboard's per-isolate bootstrap: the globals handler code expects (console, timers,
// TextEncoder/TextDecoder, structuredClone), CommonJS `require`, and the event dispatcher that
// the Rust side calls directly for every connection event.
"use strict";

((globalThis) => {
  const core = globalThis.Deno.core;
  const ops = core.ops;
  const {
    op_sb_log,
    op_sb_count_error,
    op_sb_read_module,
    op_ws_send_text,
    op_ws_send_binary,
    op_ws_close,
    op_ws_connection_endpoint,
    op_ws_upgrade_decide,
    op_sb_handler_exports,
    op_sb_service_done,
    op_ws_connection_info,
    op_ws_subscribe,
    op_ws_unsubscribe,
    op_ws_client_info,
    op_ws_client_state,
    op_ws_client_send_text,
    op_ws_client_send_binary,
    op_ws_client_close,
    op_ws_client_forget,
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
  // Browser-style numeric ids, mapped to the engine's timer objects. Each timer belongs to the
  // generation of handler code that created it; a reload cancels the old generation's timers.
  const timers = new Map();
  let nextTimerId = 1;
  let generation = 0;
  let loadingGeneration = 0;
  function addTimer(callback, delay, args, repeat, name) {
    checkCallback(callback, name);
    const id = nextTimerId++;
    const run = guarded(callback, name);
    const timer = core.createTimer(() => {
      if (!repeat) timers.delete(id);
      run(...args);
    }, delay, undefined, repeat, true);
    timers.set(id, { timer, generation: loadingGeneration });
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

  // ------------------------------------------------- connections and clients
  // Both kinds of socket share the delivery machinery below through these symbols.
  const SEND = Symbol("send");
  const FORGET = Symbol("forget");
  const LABEL = Symbol("label");

  // Per-socket delivery state: events that arrive while an async handler for the same socket
  // is still running wait in `queue`, so each socket's events run in arrival order.
  function deliveryState() {
    return { queue: null, busy: false, closed: false, finishWhenIdle: false, errorReported: false };
  }

  const connections = new Map();

  class Connection {
    #id;
    #endpoint;
    constructor(id, endpoint, data) {
      this.#id = id;
      this.#endpoint = endpoint;
      // What the endpoint's onUpgrade attached (for example the authenticated user).
      this.data = data === undefined ? {} : data;
      this.delivery = deliveryState();
      Object.defineProperty(this, "delivery", { enumerable: false });
    }
    get id() {
      return this.#id;
    }
    get endpoint() {
      return this.#endpoint;
    }
    send(data) {
      this[SEND](toWire(data, "send"));
    }
    close(code, reason) {
      const [c, r] = checkClose(code, reason);
      op_ws_close(this.#id, c, r);
    }
    // B4X's RunFunction: the client's handler for `event` runs with `params`.
    emit(event, ...params) {
      if (typeof event !== "string" || event === "") {
        throw new TypeError(`emit: the event name must be a non-empty string, got ${formatValue(event)}`);
      }
      this[SEND](JSON.stringify({ type: "event", event, params }));
    }
    subscribe(topic) {
      op_ws_subscribe(this.#id, checkTopic(topic, "subscribe"));
    }
    unsubscribe(topic) {
      op_ws_unsubscribe(this.#id, checkTopic(topic, "unsubscribe"));
    }
    get topics() {
      return op_ws_connection_info(this.#id)?.topics ?? [];
    }
    get remoteAddress() {
      return this.#info().remoteAddress;
    }
    get openedAt() {
      return this.#info().openedAt;
    }
    #info() {
      if (this.infoCache === undefined) {
        const info = op_ws_connection_info(this.#id);
        const cache = { remoteAddress: info?.remoteAddress ?? null, openedAt: info ? new Date(info.openedAt) : null };
        Object.defineProperty(this, "infoCache", { value: cache, enumerable: false });
      }
      return this.infoCache;
    }
    toJSON() {
      return { id: this.#id, endpoint: this.#endpoint, data: this.data };
    }
    [SEND](wire) {
      if (typeof wire === "string") op_ws_send_text(this.#id, wire);
      else op_ws_send_binary(this.#id, wire);
    }
    [FORGET]() {
      connections.delete(this.#id);
    }
    get [LABEL]() {
      return `connection ${this.#id} (${this.#endpoint})`;
    }
  }
  Object.defineProperty(Connection.prototype, Symbol.toStringTag, { value: "Connection" });

  function checkTopic(topic, what) {
    if (typeof topic !== "string" || topic === "") {
      throw new TypeError(`${what}: the topic must be a non-empty string, got ${formatValue(topic)}`);
    }
    return topic;
  }

  // The isolate's object for connection `id`: its own if it has seen the connection, else a new
  // one (from getConnections in another handler's isolate). Null when it is not open.
  function connectionFor(id) {
    const known = connections.get(id);
    if (known !== undefined) return known;
    const info = op_ws_connection_info(id);
    if (info === null) return null;
    return new Connection(id, info.endpoint, info.data === null ? undefined : JSON.parse(info.data));
  }

  const clients = new Map();
  const DATA_TYPES = ["text", "blob", "object"];

  // A client created by createWebsocket. It holds only the client's id: the socket belongs to
  // the runtime, so the same client can be used from any isolate.
  class WebsocketClient {
    #id;
    #uri;
    #handler;
    #dataType;
    constructor(info) {
      this.#id = info.id;
      this.#uri = info.uri;
      this.#handler = info.handler;
      this.#dataType = info.dataType;
      this.delivery = deliveryState();
      Object.defineProperty(this, "delivery", { enumerable: false });
    }
    get id() {
      return this.#id;
    }
    get uri() {
      return this.#uri;
    }
    get url() {
      return this.#uri;
    }
    get handler() {
      return this.#handler;
    }
    get dataType() {
      return this.#dataType;
    }
    get status() {
      return op_ws_client_state(this.#id)[0];
    }
    get protocol() {
      return op_ws_client_state(this.#id)[1] ?? "";
    }
    send(data) {
      this[SEND](toWire(data, "send"));
    }
    close(code, reason) {
      const [c, r] = checkClose(code, reason);
      op_ws_client_close(this.#id, c, r);
    }
    terminate(code, reason) {
      this.close(code, reason);
    }
    toJSON() {
      return { id: this.#id, uri: this.#uri, handler: this.#handler, status: this.status };
    }
    [SEND](wire) {
      if (typeof wire === "string") op_ws_client_send_text(this.#id, wire);
      else op_ws_client_send_binary(this.#id, wire);
    }
    [FORGET]() {
      clients.delete(this.#id);
      op_ws_client_forget(this.#id);
    }
    get [LABEL]() {
      return `client ${this.#id} (${this.#uri})`;
    }
  }
  Object.defineProperty(WebsocketClient.prototype, Symbol.toStringTag, { value: "WebsocketClient" });

  // The isolate's object for client `id`, made on first use.
  function clientFor(id) {
    let client = clients.get(id);
    if (client === undefined) {
      const info = op_ws_client_info(id);
      if (info === null) return null;
      client = new WebsocketClient(info);
      clients.set(id, client);
    }
    return client;
  }

  // --------------------------------------------------------- event context
  const METHODS = ["onopen", "onmessage", "onerror", "onclose"];
  const EXPORTS = ["onOpen", "onMessage", "onError", "onClose"];
  const OPEN = 0, MESSAGE = 1, ERROR = 2, CLOSE = 3, CLIENT_KINDS = 4, UPGRADE = 8, SERVICE = 9;
  // The event being handled (null outside events): kind and message/error text. Two variables,
  // not an object, so that no object is made per event.
  let currentKind = null;
  let currentData = null;
  let handler = {};

  const context = {
    getMessage: () => (currentKind === MESSAGE ? currentData : null),
    getError: () => (currentKind === ERROR ? currentData : null),
    getMethod: () => (currentKind === null ? null : METHODS[currentKind]),
    isOnOpen: () => currentKind === OPEN,
    isOnMessage: () => currentKind === MESSAGE,
    isOnError: () => currentKind === ERROR,
    isOnClose: () => currentKind === CLOSE,
  };

  // ---------------------------------------------------------- dispatching
  const RESERVED_EXPORTS = new Set([...EXPORTS, "onUpgrade", "onStart", "onTick", "onStop"]);
  const EVENT_NAME = /^[A-Za-z_$][\w$]*$/;

  // A message `{"type":"event","event":"Device_Message","params":...}` names an export to run
  // instead of onMessage (B4X's events). Returns null for an ordinary message.
  function namedEvent(message) {
    if (typeof message !== "string" || message.charCodeAt(0) !== 123 || !message.includes('"event"')) return null;
    let parsed;
    try {
      parsed = JSON.parse(message);
    } catch (_) {
      return null;
    }
    if (parsed === null || parsed.type !== "event" || typeof parsed.event !== "string") return null;
    return parsed;
  }

  function invoke(socket, kind, a, b, c) {
    let fn = handler[EXPORTS[kind]];
    let args = null;
    if (kind === MESSAGE) {
      const event = namedEvent(a);
      if (event !== null) {
        const name = event.event;
        const callable = EVENT_NAME.test(name) && name.includes("_") && !RESERVED_EXPORTS.has(name);
        fn = callable ? handler[name] : undefined;
        if (typeof fn !== "function") {
          throw new Error(`unknown event "${name}": the handler exports no event function of that name (event names contain an underscore)`);
        }
        args = [event.params, socket];
      }
    }
    if (typeof fn !== "function") return undefined;
    const previousKind = currentKind;
    const previousData = currentData;
    currentKind = kind;
    currentData = kind === MESSAGE || kind === ERROR ? a : null;
    try {
      if (args !== null) return fn.apply(handler, args);
      switch (kind) {
        case OPEN:
          return fn.call(handler, socket);
        case MESSAGE:
        case ERROR:
          return fn.call(handler, a, socket);
        default:
          return fn.call(handler, socket, { code: a, reason: b, wasClean: c });
      }
    } finally {
      currentKind = previousKind;
      currentData = previousData;
    }
  }

  function onMessage(socket, message) {
    const fn = handler.onMessage;
    if (typeof fn !== "function") return undefined;
    const previousKind = currentKind;
    const previousData = currentData;
    currentKind = MESSAGE;
    currentData = message;
    let result;
    try {
      result = fn.call(handler, message, socket);
    } catch (error) {
      reportFailure(socket, MESSAGE, error);
      return undefined;
    } finally {
      currentKind = previousKind;
      currentData = previousData;
    }
    return settle(socket, MESSAGE, result);
  }

  function reportFailure(socket, kind, error) {
    op_sb_count_error();
    op_sb_log("error", `${EXPORTS[kind]} failed on ${socket[LABEL]}: ${describeError(error)}`);
    if (kind !== ERROR && kind !== CLOSE && !socket.delivery.closed) {
      runEvent(socket, ERROR, errorMessage(error));
    }
  }

  // Runs one event; returns the reply for the Rust side to send, or undefined.
  function runEvent(socket, kind, a, b, c) {
    const delivery = socket.delivery;
    const isClient = kind !== OPEN && kind !== CLOSE && socket instanceof WebsocketClient;
    if (kind === ERROR && isClient) {
      // 4D's order: at most one onError per client.
      if (delivery.errorReported) {
        op_sb_log("warn", `${socket[LABEL]}: further error not passed to onError: ${a}`);
        return undefined;
      }
      delivery.errorReported = true;
    }
    if (kind === MESSAGE && isClient) {
      a = clientMessage(socket, a);
      if (a === undefined) return undefined;
    }
    let result;
    try {
      result = invoke(socket, kind, a, b, c);
    } catch (error) {
      reportFailure(socket, kind, error);
      return undefined;
    }
    return settle(socket, kind, result);
  }

  // What a handler's return value means: a reply (onMessage), or a promise that holds the
  // socket's next events until it settles.
  function settle(socket, kind, result) {
    if (kind === MESSAGE && typeof result === "string") return result;
    const delivery = socket.delivery;
    if (result !== null && typeof result === "object" && typeof result.then === "function") {
      delivery.busy = true;
      result.then(
        (value) => {
          if (kind === MESSAGE) replyLater(socket, value);
        },
        (error) => reportFailure(socket, kind, error),
      ).finally(() => {
        delivery.busy = false;
        drainQueue(socket);
        if (!delivery.busy && delivery.finishWhenIdle) finish(socket);
      });
      return undefined;
    }
    if (kind !== MESSAGE || result === undefined || result === null) return undefined;
    try {
      return toWire(result, "onMessage's return value");
    } catch (error) {
      reportFailure(socket, kind, error);
      return undefined;
    }
  }

  function replyLater(socket, value) {
    if (value === undefined || value === null || socket.delivery.closed) return;
    try {
      socket[SEND](toWire(value, "onMessage's resolved value"));
    } catch (error) {
      reportFailure(socket, MESSAGE, error);
    }
  }

  function drainQueue(socket) {
    const delivery = socket.delivery;
    while (!delivery.busy && delivery.queue && delivery.queue.length > 0) {
      const [kind, a, b, c] = delivery.queue.shift();
      const reply = runEvent(socket, kind, a, b, c);
      if (reply !== undefined) {
        try {
          socket[SEND](reply);
        } catch (error) {
          op_sb_log("warn", `reply to ${socket[LABEL]} not sent: ${errorMessage(error)}`);
        }
      }
      afterEvent(socket, kind);
    }
  }

  // A socket is forgotten once its onClose, sync or async, has finished.
  function afterEvent(socket, kind) {
    if (kind !== CLOSE) return;
    if (socket.delivery.busy) socket.delivery.finishWhenIdle = true;
    else finish(socket);
  }

  function finish(socket) {
    socket.delivery.closed = true;
    socket[FORGET]();
  }

  // A client's message as its dataType asks; undefined when it cannot be converted.
  function clientMessage(client, message) {
    if (typeof message !== "string") return message;
    if (client.dataType === "blob") return core.encode(message);
    if (client.dataType !== "object") return message;
    try {
      return JSON.parse(message);
    } catch (error) {
      const preview = message.length > 60 ? `${message.slice(0, 60)}...` : message;
      runEvent(client, ERROR, `message is not JSON (dataType "object"): ${error.message}: ${JSON.stringify(preview)}`);
      return undefined;
    }
  }

  // Called by the Rust side for every event, in arrival order. The return value is the reply.
  function dispatch(kind, id, a, b, c, endpointOfClosed) {
    if (kind === MESSAGE) {
      // The common case, in fewer calls: a message for a known connection that is not waiting
      // on an async handler and is not a named event.
      const socket = connections.get(id);
      if (socket !== undefined && !socket.delivery.busy && (typeof a !== "string" || a.charCodeAt(0) !== 123)) {
        return onMessage(socket, a);
      }
    }
    if (kind === UPGRADE) return decideUpgrade(id, a);
    if (kind === SERVICE) return runService(id, a, b);
    let socket;
    if (kind >= CLIENT_KINDS) {
      kind -= CLIENT_KINDS;
      socket = clientFor(id);
      if (socket === null) {
        op_sb_log("warn", `event ${METHODS[kind]} for unknown client ${id} dropped`);
        return undefined;
      }
    } else {
      socket = connections.get(id);
      if (kind === OPEN) {
        socket = new Connection(id, a, b === undefined ? undefined : JSON.parse(b));
        connections.set(id, socket);
      } else if (socket === undefined) {
        // Opened before this module was (re)loaded: adopted from its next event on.
        const endpoint = kind === CLOSE ? endpointOfClosed : op_ws_connection_endpoint(id);
        if (endpoint === null || endpoint === undefined) return undefined;
        socket = new Connection(id, endpoint);
        connections.set(id, socket);
      }
    }
    if (socket.delivery.busy) {
      (socket.delivery.queue ||= []).push([kind, a, b, c]);
      return undefined;
    }
    const reply = runEvent(socket, kind, a, b, c);
    afterEvent(socket, kind);
    return reply;
  }

  // After the runtime terminated runaway JavaScript: nothing of the interrupted call finished,
  // not even its finally blocks. With a socket given, its onError hears why; without one (a timer
  // or a promise callback was interrupted), sockets waiting on an interrupted async handler are
  // released so that their next events run.
  function recover(kind, id, message) {
    currentKind = null;
    currentData = null;
    if (kind === undefined) {
      for (const socket of [...connections.values(), ...clients.values()]) {
        if (socket.delivery.busy) {
          socket.delivery.busy = false;
          drainQueue(socket);
        }
      }
      return;
    }
    dispatch(kind, id, message);
  }

  // ------------------------------------------------- onStart, onTick, onStop
  // Runs the export `name` for `endpoint`; tells the runtime when it has finished (an async one
  // when its promise settles), so that ticks never overlap.
  function runService(token, name, endpoint) {
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
  function decideUpgrade(token, requestJson) {
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

  // ------------------------------------------------------------- CommonJS
  const builtinModules = new Map();
  let moduleCache = new Map();
  // What a reload replaces, kept until the new code has loaded.
  let previousGeneration = null;

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
    recover,
    context,
    connections,
    Connection,
    WebsocketClient,
    clientFor,
    connectionFor,
    DATA_TYPES,
    toWire,
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
    // A reload: fresh module state for the new code; the old stays until it has loaded.
    beginGeneration(next) {
      previousGeneration = { moduleCache, handler };
      moduleCache = new Map();
      loadingGeneration = next;
    },
    commitGeneration(next) {
      cancelTimers((g) => g < next);
      generation = next;
      previousGeneration = null;
    },
    abortGeneration(failed) {
      cancelTimers((g) => g === failed);
      if (previousGeneration !== null) {
        moduleCache = previousGeneration.moduleCache;
        internals.setHandler(previousGeneration.handler);
      }
      loadingGeneration = generation;
      previousGeneration = null;
    },
    setHandler(exports) {
      handler = exports !== null && typeof exports === "object" ? exports : {};
      if (typeof exports === "function") handler = exports;
      const names = [];
      for (const name in handler) if (typeof handler[name] === "function") names.push(name);
      op_sb_handler_exports(names.join(","));
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
