// The `net/websockets` API (also `net/v4/websockets`), and Dirigible's SDK module `@aerokit/sdk/net`
// (also `sdk/net`): the `Websockets` class of static methods, the `@Websocket` decorator and the
// `decorators` namespace, over the internals the files before it set up.
"use strict";

((internals) => {
  const { context, formatValue } = internals;
  const {
    op_ws_client_create,
    op_ws_client_state,
    op_ws_clients_list,
    op_ws_client_by_handler,
    op_ws_connections_list,
    op_ws_send_text,
    op_ws_send_binary,
    op_ws_close,
    op_ws_broadcast_text,
    op_ws_broadcast_binary,
    op_ws_publish_text,
    op_ws_publish_binary,
    op_ws_nodes,
    op_ws_all_connections,
  } = internals.ops;
  const { toWire, checkClose, connectionFor } = internals;

  function checkId(id, what) {
    if (!Number.isInteger(id) || id < 1) {
      throw new TypeError(`${what}: expected a connection id (a positive whole number), got ${describe(id)}`);
    }
    return id;
  }

  function describe(value) {
    return typeof value === "string" ? JSON.stringify(value) : `${typeof value} ${formatValue(value)}`;
  }

  const OPTION_TYPES = {
    headers: "object",
    protocols: "string or array",
    dataType: "string",
    tls: "object",
    connectTimeoutMs: "number",
    compression: "boolean",
    engine: "string",
  };

  // Validated here, since the engine may coerce a wrong type silently on its way to an op.
  function optionsJson(options) {
    if (options === undefined || options === null || typeof options === "string") return "";
    if (typeof options !== "object" || Array.isArray(options)) {
      throw new TypeError(`createWebsocket: the third argument must be an engine name or an options object, got ${describe(options)}`);
    }
    for (const [key, value] of Object.entries(options)) {
      const expected = OPTION_TYPES[key];
      if (expected === undefined) {
        throw new TypeError(`createWebsocket: unknown option "${key}"; known options: ${Object.keys(OPTION_TYPES).join(", ")}`);
      }
      if (value === undefined) continue;
      const ok = expected === "string or array"
        ? typeof value === "string" || (Array.isArray(value) && value.every((v) => typeof v === "string"))
        : expected === "object"
          ? typeof value === "object" && value !== null && !Array.isArray(value)
          : typeof value === expected;
      if (!ok) throw new TypeError(`createWebsocket: option "${key}" must be ${expected === "object" ? "an object" : `a ${expected}`}, got ${describe(value)}`);
    }
    if (options.dataType !== undefined && !internals.DATA_TYPES.includes(options.dataType)) {
      throw new TypeError(`createWebsocket: dataType must be one of ${internals.DATA_TYPES.join(", ")}, got ${describe(options.dataType)}`);
    }
    if (options.connectTimeoutMs !== undefined && !(Number.isInteger(options.connectTimeoutMs) && options.connectTimeoutMs > 0)) {
      throw new RangeError(`createWebsocket: connectTimeoutMs must be a positive whole number of milliseconds, got ${options.connectTimeoutMs}`);
    }
    if (options.headers !== undefined) {
      for (const [name, value] of Object.entries(options.headers)) {
        const ok = typeof value === "string" || (Array.isArray(value) && value.every((v) => typeof v === "string"));
        if (!ok) throw new TypeError(`createWebsocket: header "${name}" must be a string or an array of strings, got ${describe(value)}`);
      }
    }
    if (options.tls !== undefined) {
      for (const [key, value] of Object.entries(options.tls)) {
        if (key === "ca" && typeof value !== "string") throw new TypeError(`createWebsocket: tls.ca must be PEM text or a file path, got ${describe(value)}`);
        else if (key === "insecure" && typeof value !== "boolean") throw new TypeError(`createWebsocket: tls.insecure must be true or false, got ${describe(value)}`);
        else if (key !== "ca" && key !== "insecure") throw new TypeError(`createWebsocket: unknown tls option "${key}"; known: ca, insecure`);
      }
    }
    return JSON.stringify(options);
  }

  const api = {
    // Dirigible's event-context functions: meaningful inside a handler's event, null/false outside.
    getMessage: context.getMessage,
    getError: context.getError,
    getMethod: context.getMethod,
    isOnOpen: context.isOnOpen,
    isOnMessage: context.isOnMessage,
    isOnError: context.isOnError,
    isOnClose: context.isOnClose,

    // Server-side control of inbound connections (WEBDEV's and B4X's), from any isolate.
    getConnections(endpoint) {
      if (endpoint !== undefined && typeof endpoint !== "string") {
        throw new TypeError(`getConnections: the endpoint must be a string, got ${describe(endpoint)}`);
      }
      return op_ws_connections_list(endpoint ?? "")
        .map((info) => connectionFor(info.id))
        .filter((conn) => conn !== null);
    },
    // Across nodes (serve --broker): every live node's connections, as plain records
    // ({id, node, endpoint, remoteAddress, openedAt, data, topics}); the promise settles within
    // waitMs with the nodes that answered and names those that did not, and never rejects because
    // a node is slow.
    getAllConnections(endpoint, options) {
      if (endpoint !== undefined && endpoint !== null && typeof endpoint !== "string") {
        throw new TypeError(`getAllConnections: the endpoint must be a string, got ${describe(endpoint)}`);
      }
      if (options !== undefined && (typeof options !== "object" || options === null || Array.isArray(options))) {
        throw new TypeError(`getAllConnections: options must be an object ({ waitMs, limit }), got ${describe(options)}`);
      }
      for (const key of Object.keys(options ?? {})) {
        if (key !== "waitMs" && key !== "limit") {
          throw new TypeError(`getAllConnections: unknown option "${key}"; known options: waitMs, limit`);
        }
      }
      const waitMs = options?.waitMs ?? 1000;
      const limit = options?.limit ?? 10000;
      if (!Number.isInteger(waitMs) || waitMs < 1 || waitMs > 30000) {
        throw new RangeError(`getAllConnections: waitMs must be a whole number of milliseconds from 1 to 30000, got ${describe(waitMs)}`);
      }
      if (!Number.isInteger(limit) || limit < 0) {
        throw new RangeError(`getAllConnections: limit must be a whole number of connections per node, got ${describe(limit)}`);
      }
      return op_ws_all_connections(endpoint ?? "", limit, waitMs).then((presence) => {
        for (const info of presence.connections) {
          info.data = info.data === null ? undefined : JSON.parse(info.data);
        }
        return presence;
      });
    },
    // The live nodes ({id, name, address, connections, self}), this one first.
    getNodes() {
      return op_ws_nodes();
    },
    getConnection(id) {
      return Number.isInteger(id) ? connectionFor(id) : null;
    },
    send(connectionId, data) {
      const wire = toWire(data, "send");
      checkId(connectionId, "send");
      if (typeof wire === "string") op_ws_send_text(connectionId, wire);
      else op_ws_send_binary(connectionId, wire);
    },
    disconnect(connectionId, code, reason) {
      checkId(connectionId, "disconnect");
      const [c, r] = checkClose(code, reason);
      op_ws_close(connectionId, c, r);
    },
    broadcast(endpoint, data, options) {
      if (typeof endpoint !== "string" || endpoint === "") {
        throw new TypeError(`broadcast: the endpoint must be a non-empty string, got ${describe(endpoint)}`);
      }
      const except = (options?.except ?? []).map((c) => (typeof c === "object" && c !== null ? c.id : c));
      except.forEach((id) => checkId(id, "broadcast: except"));
      const wire = toWire(data, "broadcast");
      return typeof wire === "string"
        ? op_ws_broadcast_text(endpoint, wire, except)
        : op_ws_broadcast_binary(endpoint, wire, except);
    },
    publish(topic, data) {
      if (typeof topic !== "string" || topic === "") {
        throw new TypeError(`publish: the topic must be a non-empty string, got ${describe(topic)}`);
      }
      const wire = toWire(data, "publish");
      return typeof wire === "string" ? op_ws_publish_text(topic, wire) : op_ws_publish_binary(topic, wire);
    },

    // Outbound clients (Dirigible's createWebsocket, with 4D's and B4X's options).
    createWebsocket(uri, handler, engineOrOptions) {
      if (typeof uri !== "string" || uri.trim() === "") {
        throw new TypeError(`createWebsocket: uri must be a ws:// or wss:// URL string, got ${describe(uri)}`);
      }
      if (typeof handler !== "string" || handler.trim() === "") {
        throw new TypeError(
          `createWebsocket: handler must be a module path from the workspace root such as "my-project/ws-handler", got ${describe(handler)}`,
        );
      }
      const id = op_ws_client_create(uri, handler, optionsJson(engineOrOptions));
      return internals.clientFor(id);
    },
    getClients() {
      return op_ws_clients_list();
    },
    getClient(id) {
      if (typeof id !== "number") return null;
      return op_ws_client_state(id)[0] === "Closed" ? null : internals.clientFor(id);
    },
    getClientByHandler(handler) {
      if (typeof handler !== "string") return null;
      const id = op_ws_client_by_handler(handler);
      return id === null ? null : internals.clientFor(id);
    },
  };

  // Dirigible's `Websockets` (v10 and later) is a class of static methods, and its CommonJS form
  // (`require("net/websockets")`) is the class itself; the classic functions are the same
  // methods. They do not use `this`, so `const { getMethod } = Websockets` works too.
  class Websockets {
    constructor() {
      throw new TypeError("Websockets is a class of static methods: call Websockets.getMethod() and the like, without new");
    }
  }
  for (const [name, fn] of Object.entries(api)) {
    Object.defineProperty(Websockets, name, { value: fn, enumerable: true });
  }
  Object.freeze(Websockets);

  // Where `@Websocket` records its options on the class, under the key Dirigible's decorator
  // uses (a registered symbol here, so that code outside this file can read it).
  const WEBSOCKET_METADATA = Symbol.for("websocket:metadata");

  // Dirigible's TC39 class decorator: `@Websocket({ name, endpoint })` on a class in a file whose
  // name ends in `websocket.ts` declares an endpoint (the workspace scan reads it from the text;
  // the endpoint's handler is the file's exported onOpen/onMessage/onError/onClose). At run time
  // it records its options on the class.
  function Websocket(options) {
    if (typeof options !== "object" || options === null) {
      throw new TypeError(`@Websocket: expected options { name, endpoint }, got ${describe(options)}`);
    }
    for (const field of ["name", "endpoint"]) {
      if (typeof options[field] !== "string") {
        throw new TypeError(`@Websocket: options.${field} must be a string, got ${describe(options[field])}`);
      }
    }
    const metadata = Object.freeze({ name: options.name, endpoint: options.endpoint });
    return function websocketDecorator(target, context) {
      if (context !== undefined && context?.kind !== "class") {
        throw new TypeError(`@Websocket can only decorate a class, not a ${context?.kind ?? describe(context)}`);
      }
      if (typeof target !== "function") {
        throw new TypeError(`@Websocket can only decorate a class, got ${describe(target)}`);
      }
      Object.defineProperty(target, WEBSOCKET_METADATA, {
        value: metadata,
        writable: false,
        configurable: false,
        enumerable: true,
      });
    };
  }

  const decorators = Object.freeze({ Websocket });
  const sdkNet = Object.freeze({ Websockets, websockets: Websockets, Websocket, decorators });
  internals.websockets = Websockets;
  internals.sdkNet = sdkNet;
  // Every name of every built-in module, from the one list on the Rust side (workspace/modules.rs).
  const modules = { websockets: Websockets, "sdk/net": sdkNet };
  for (const [name, module] of internals.ops.op_sb_builtin_modules()) {
    internals.builtinModules.set(name, modules[module]);
  }
})(globalThis.__switchboardBootstrap);
