// What handlers hold of sockets: Connection (an inbound connection) and WebsocketClient (an
// outbound client), each only an id over the ops; what `send` accepts; close codes. Both kinds
// carry the per-socket delivery state the dispatcher keeps events in order with.
"use strict";

((internals) => {
  const { core, formatValue } = internals;
  const {
    op_ws_send_text,
    op_ws_send_binary,
    op_ws_close,
    op_ws_connection_info,
    op_ws_subscribe,
    op_ws_unsubscribe,
    op_ws_client_info,
    op_ws_client_state,
    op_ws_client_send_text,
    op_ws_client_send_binary,
    op_ws_client_close,
    op_ws_client_forget,
  } = internals.ops;

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

  // Per-socket delivery state: flags in one small integer under a symbol key (no object per
  // socket: an idle connection is that much smaller; a symbol key stays out of `Object.keys` and
  // JSON). BUSY while an async handler for the socket runs, when its next events wait in
  // `waiting` so that each socket's events run in arrival order; FINISH_WHEN_IDLE when its
  // onClose came meanwhile; CLOSED once it is forgotten; ERROR_REPORTED after a client's first
  // onError.
  const DELIVERY = Symbol("delivery");
  const BUSY = 1;
  const CLOSED = 2;
  const FINISH_WHEN_IDLE = 4;
  const ERROR_REPORTED = 8;
  // The events waiting for a busy socket, by socket: only sockets with events waiting have one.
  const waiting = new Map();

  const connections = new Map();

  class Connection {
    #id;
    #endpoint;
    // What the endpoint's onUpgrade attached (for example the authenticated user); an empty
    // object is made on first use, not for every connection.
    #data;
    constructor(id, endpoint, data) {
      this.#id = id;
      this.#endpoint = endpoint;
      this.#data = data;
      this[DELIVERY] = 0;
    }
    get id() {
      return this.#id;
    }
    get endpoint() {
      return this.#endpoint;
    }
    get data() {
      if (this.#data === undefined) this.#data = {};
      return this.#data;
    }
    set data(value) {
      this.#data = value;
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
    // Dirigible's handlers get a sender's name as `onMessage`'s second argument and put it in
    // text (`from: ${from}`); a connection says which it is.
    toString() {
      return this[LABEL];
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
      this[DELIVERY] = 0;
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
    toString() {
      return this[LABEL];
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

  Object.assign(internals, {
    toWire,
    checkClose,
    SEND,
    FORGET,
    LABEL,
    DELIVERY,
    BUSY,
    CLOSED,
    FINISH_WHEN_IDLE,
    ERROR_REPORTED,
    waiting,
    connections,
    Connection,
    connectionFor,
    clients,
    DATA_TYPES,
    WebsocketClient,
    clientFor,
  });
})(globalThis.__switchboardBootstrap);
