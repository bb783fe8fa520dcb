// The event dispatcher the Rust side calls directly for every event (dispatch.rs), in arrival
// order: it finds the socket, runs the handler's export, keeps each socket's events in order
// while an async handler runs, and returns the reply. Also Dirigible's event context functions
// (getMethod, getMessage, ...), and the handler's current exports.
"use strict";

((internals) => {
  // `var`, not `const` or `let`, for what dispatchMessage reads for every message: QuickJS checks
  // a let or const binding for its temporal dead zone at every read, from a closure too, and the
  // checks cost 200-400 instructions a message (bench/README.md, thirteenth pass). Only
  // currentKind, currentData and the handler's three are ever assigned again.
  var {
    core,
    formatValue,
    describeError,
    errorMessage,
    isThenable,
    toWire,
    SEND,
    FORGET,
    LABEL,
    connections,
    DELIVERY,
    BUSY,
    CLOSED,
    FINISH_WHEN_IDLE,
    ERROR_REPORTED,
    waiting,
    Connection,
    clientFor,
    WebsocketClient,
    runService,
    decideUpgrade,
  } = internals;
  const { op_sb_log, op_sb_count_error, op_ws_connection_endpoint, op_sb_handler_exports, op_sb_request_answer } =
    internals.ops;

  // --------------------------------------------------------- event context
  const METHODS = ["onopen", "onmessage", "onerror", "onclose"];
  const EXPORTS = ["onOpen", "onMessage", "onError", "onClose"];
  var { OPEN, MESSAGE, ERROR, CLOSE, CLIENT_OPEN: CLIENT_KINDS, UPGRADE, SERVICE, REQUEST } = internals.kinds;
  // The event being handled (null outside events): kind and message/error text. Two variables,
  // not an object, so that no object is made per event.
  var currentKind = null;
  var currentData = null;
  // The handler's exports (replaced by setHandler).
  var handler = {};
  // Whether the handler exports an event function (a name with an underscore, B4X's convention).
  // Without one, no message is a named event, and JSON messages skip the search for "event"
  // (a scan of the whole text that took a fifth of the server's time on 1 KiB JSON echoes).
  var hasEventExports = false;
  // Whether the handler's onMessage was, when its code loaded, a data property of its exports
  // (every ES module export; a CommonJS export assigned as usual): reading it twice is then
  // unobservable, and dispatch calls it as a method, `handler.onMessage(a, socket)`, which on
  // QuickJS costs about 480 instructions less per message than `fn.call(handler, a, socket)`
  // (bench/README.md, eleventh pass). An accessor (a getter on CommonJS exports) keeps being
  // read exactly once per message.
  var onMessageIsData = false;

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
    if (kind === MESSAGE && hasEventExports) {
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
    if (typeof fn !== "function") return kind === MESSAGE ? noOnMessage(socket) : undefined;
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

  // A message for code without onMessage is dropped, and the log says so once per load of the
  // code (a file caught half-written by a reload is one way to get there).
  let warnedNoOnMessage = false;
  function noOnMessage(socket) {
    if (warnedNoOnMessage) return undefined;
    warnedNoOnMessage = true;
    op_sb_log("warn", `a message on ${socket[LABEL]} was dropped: the handler exports no onMessage (later ones are dropped too, without a word, until its code changes)`);
    return undefined;
  }

  // A STOMP session's message (Dirigible's SEND /ws/stomp/{endpoint} with {from, text}):
  // onMessage(text, from), where `from` is the sender's nickname. Its return value (or the text of
  // what it threw) is answered to the session, which sends it to the sender's reply queue.
  let warnedNoOnMessageForStomp = false;
  function runRequest(token, text, from, unreadable, endpoint) {
    if (unreadable) return runRequestError(token, text, endpoint);
    const fn = handler.onMessage;
    if (typeof fn !== "function") {
      if (!warnedNoOnMessageForStomp) {
        warnedNoOnMessageForStomp = true;
        op_sb_log("warn", `a STOMP message to ${endpoint} was dropped: the handler exports no onMessage`);
      }
      op_sb_request_answer(token, true, undefined);
      return undefined;
    }
    const previousKind = currentKind;
    const previousData = currentData;
    currentKind = MESSAGE;
    currentData = text;
    let result;
    try {
      result = fn.call(handler, text, from);
    } catch (error) {
      requestFailed(token, endpoint, from, error);
      return undefined;
    } finally {
      currentKind = previousKind;
      currentData = previousData;
    }
    if (isThenable(result)) {
      Promise.resolve(result).then(
        (value) => answerRequest(token, endpoint, value),
        (error) => requestFailed(token, endpoint, from, error),
      );
    } else {
      answerRequest(token, endpoint, result);
    }
    return undefined;
  }

  // A STOMP message that could not be read: onError(reason), with no connection to pass.
  function runRequestError(token, reason, endpoint) {
    const fn = handler.onError;
    if (typeof fn === "function") {
      const previousKind = currentKind;
      const previousData = currentData;
      currentKind = ERROR;
      currentData = reason;
      try {
        const result = fn.call(handler, reason);
        if (isThenable(result)) Promise.resolve(result).catch((error) => requestFailed(token, endpoint, "", error));
      } catch (error) {
        op_sb_count_error();
        op_sb_log("error", `onError failed on a STOMP message to ${endpoint}: ${describeError(error)}`);
      } finally {
        currentKind = previousKind;
        currentData = previousData;
      }
    }
    op_sb_request_answer(token, true, undefined);
    return undefined;
  }

  function answerRequest(token, endpoint, value) {
    if (value === undefined || value === null) return op_sb_request_answer(token, true, undefined);
    let text;
    try {
      const wire = toWire(value, "onMessage's return value");
      text = typeof wire === "string" ? wire : core.decode(wire);
    } catch (error) {
      op_sb_log("error", `onMessage's return value for a STOMP message to ${endpoint}: ${describeError(error)}`);
      return op_sb_request_answer(token, false, errorMessage(error));
    }
    op_sb_request_answer(token, true, text);
  }

  function requestFailed(token, endpoint, from, error) {
    op_sb_count_error();
    op_sb_log("error", `onMessage failed on a STOMP message to ${endpoint} from ${formatValue(from)}: ${describeError(error)}`);
    op_sb_request_answer(token, false, errorMessage(error));
  }

  function reportFailure(socket, kind, error) {
    op_sb_count_error();
    op_sb_log("error", `${EXPORTS[kind]} failed on ${socket[LABEL]}: ${describeError(error)}`);
    if (kind !== ERROR && kind !== CLOSE && (socket[DELIVERY] & CLOSED) === 0) {
      runEvent(socket, ERROR, errorMessage(error));
    }
  }

  // Runs one event; returns the reply for the Rust side to send, or undefined.
  function runEvent(socket, kind, a, b, c) {
    const isClient = kind !== OPEN && kind !== CLOSE && socket instanceof WebsocketClient;
    if (kind === ERROR && isClient) {
      // 4D's order: at most one onError per client.
      if ((socket[DELIVERY] & ERROR_REPORTED) !== 0) {
        op_sb_log("warn", `${socket[LABEL]}: further error not passed to onError: ${a}`);
        return undefined;
      }
      socket[DELIVERY] |= ERROR_REPORTED;
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
    if (isThenable(result)) {
      socket[DELIVERY] |= BUSY;
      Promise.resolve(result).then(
        (value) => {
          if (kind === MESSAGE) replyLater(socket, value);
        },
        (error) => reportFailure(socket, kind, error),
      ).finally(() => {
        socket[DELIVERY] &= ~BUSY;
        drainQueue(socket);
        if ((socket[DELIVERY] & (BUSY | FINISH_WHEN_IDLE)) === FINISH_WHEN_IDLE) finish(socket);
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
    if (value === undefined || value === null || (socket[DELIVERY] & CLOSED) !== 0) return;
    try {
      socket[SEND](toWire(value, "onMessage's resolved value"));
    } catch (error) {
      reportFailure(socket, MESSAGE, error);
    }
  }

  function drainQueue(socket) {
    const queue = waiting.get(socket);
    if (queue === undefined) return;
    while ((socket[DELIVERY] & BUSY) === 0 && queue.length > 0) {
      const [kind, a, b, c] = queue.shift();
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
    if (queue.length === 0) waiting.delete(socket);
  }

  // A socket is forgotten once its onClose, sync or async, has finished.
  function afterEvent(socket, kind) {
    if (kind !== CLOSE) return;
    if ((socket[DELIVERY] & BUSY) !== 0) socket[DELIVERY] |= FINISH_WHEN_IDLE;
    else finish(socket);
  }

  function finish(socket) {
    socket[DELIVERY] |= CLOSED;
    waiting.delete(socket);
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

  // Called by the Rust side for every message on an inbound connection (text or bytes), in
  // arrival order with the other events; the return value is the reply. The common case in as
  // few steps as the interpreter allows: a known connection not waiting on an async handler,
  // and not a named event. Anything else goes through dispatch(). Two arguments, not
  // dispatch's six, and onMessage run here rather than through runEvent or a function of its
  // own: QuickJS interprets every call, and each one less is measurable per message
  // (bench/README.md).
  function dispatchMessage(id, a) {
    var socket = connections.get(id);
    if (socket === undefined || (socket[DELIVERY] & BUSY) !== 0 || (hasEventExports && typeof a === "string" && a.charCodeAt(0) === 123)) {
      return dispatch(MESSAGE, id, a);
    }
    var fn = handler.onMessage;
    if (typeof fn !== "function") return noOnMessage(socket);
    var previousKind = currentKind;
    var previousData = currentData;
    currentKind = MESSAGE;
    currentData = a;
    var result;
    try {
      result = onMessageIsData ? handler.onMessage(a, socket) : fn.call(handler, a, socket);
    } catch (error) {
      reportFailure(socket, MESSAGE, error);
      return undefined;
    } finally {
      currentKind = previousKind;
      currentData = previousData;
    }
    // A text reply, or bytes that are not a thenable, the common cases, need nothing else of
    // settle() (toWire() would return either as it is). `instanceof` runs a Proxy's traps,
    // which may throw: then settle() reports it, as for any other reply. (isThenable() written
    // out: one interpreted call less per binary reply.)
    if (typeof result === "string") return result;
    try {
      if (result instanceof Uint8Array && typeof result.then !== "function") return result;
    } catch (_) {}
    return settle(socket, MESSAGE, result);
  }

  // Called by the Rust side for every other event, in arrival order. The return value is the
  // reply.
  function dispatch(kind, id, a, b, c, endpointOfClosed) {
    if (kind === UPGRADE) return decideUpgrade(handler, id, a);
    if (kind === SERVICE) return runService(handler, id, a, b);
    if (kind === REQUEST) return runRequest(id, a, b, c, endpointOfClosed);
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
    if ((socket[DELIVERY] & BUSY) !== 0) {
      const queue = waiting.get(socket);
      if (queue === undefined) waiting.set(socket, [[kind, a, b, c]]);
      else queue.push([kind, a, b, c]);
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
        if ((socket[DELIVERY] & BUSY) !== 0) {
          socket[DELIVERY] &= ~BUSY;
          drainQueue(socket);
        }
      }
      return;
    }
    dispatch(kind, id, message);
  }

  // The handler's exports: an ES module's namespace, or a CommonJS module's `module.exports`.
  function setHandler(exports) {
    warnedNoOnMessage = false;
    warnedNoOnMessageForStomp = false;
    handler = exports !== null && typeof exports === "object" ? exports : {};
    if (typeof exports === "function") handler = exports;
    const names = [];
    for (const name in handler) if (typeof handler[name] === "function") names.push(name);
    hasEventExports = names.some((name) => EVENT_NAME.test(name) && name.includes("_") && !RESERVED_EXPORTS.has(name));
    onMessageIsData = false;
    try {
      const own = Object.getOwnPropertyDescriptor(handler, "onMessage");
      onMessageIsData = own !== undefined && "value" in own;
    } catch (_) {}
    op_sb_handler_exports(names.join(","));
  }

  Object.assign(internals, { dispatch, dispatchMessage, recover, context, setHandler, getHandler: () => handler });
})(globalThis.__switchboardBootstrap);
