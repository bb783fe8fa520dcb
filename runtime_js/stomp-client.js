// Switchboard's STOMP client for browser pages: the `Client` of @stomp/stompjs (version 7), as
// far as Dirigible's pages use it, so that they load with nothing else installed. Served at
// /webjars/stomp__stompjs/esm6/index.js (where Dirigible serves the real library) and at
// /switchboard/stomp.js. Our own small module: a page that needs more of @stomp/stompjs can load
// the real one from its own folder instead.
//
//   import { Client } from "/webjars/stomp__stompjs/esm6/index.js";
//   const client = new Client({ brokerURL: `ws://${location.host}/stomp`, onConnect(frame) {...} });
//   client.activate();
//   client.subscribe("/user/queue/reply/my-endpoint", (message) => JSON.parse(message.body));
//   client.publish({ destination: "/ws/stomp/my-endpoint", body: JSON.stringify({ from, text }) });
//   await client.deactivate();   // DISCONNECT, waits for its RECEIPT, then closes

export const ActivationState = Object.freeze({ ACTIVE: 0, DEACTIVATING: 1, INACTIVE: 2 });
export const StompSocketState = Object.freeze({ CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
export const Versions = Object.freeze({
  V1_0: "1.0",
  V1_1: "1.1",
  V1_2: "1.2",
  default: { supportedVersions: () => "1.2,1.1,1.0", protocolVersions: () => ["v12.stomp", "v11.stomp", "v10.stomp"] },
});

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const noop = () => {};

// Header escapes of STOMP 1.1 and 1.2 (never in CONNECT/CONNECTED).
function escape(text) {
  return String(text).replace(/\\/g, "\\\\").replace(/\r/g, "\\r").replace(/\n/g, "\\n").replace(/:/g, "\\c");
}
function unescape(text) {
  return text.replace(/\\(.)/g, (_, c) => ({ r: "\r", n: "\n", c: ":", "\\": "\\" })[c] ?? c);
}

function encodeFrame(command, headers, body) {
  const escaped = command !== "CONNECT" && command !== "STOMP";
  let head = `${command}\n`;
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || value === null) continue;
    head += escaped ? `${escape(name)}:${escape(value)}\n` : `${name}:${value}\n`;
  }
  const bytes = typeof body === "string" ? encoder.encode(body) : body || new Uint8Array(0);
  if (bytes.length > 0 && !("content-length" in headers)) head += `content-length:${bytes.length}\n`;
  head += "\n";
  if (typeof body === "string" || !body) return `${head}${body || ""}\0`;
  const out = new Uint8Array(encoder.encode(head).length + bytes.length + 1);
  const headBytes = encoder.encode(head);
  out.set(headBytes, 0);
  out.set(bytes, headBytes.length);
  return out;
}

// Reads frames out of whatever the socket delivers (several frames, heart-beats, or pieces).
class FrameParser {
  constructor(onFrame) {
    this.onFrame = onFrame;
    this.buffer = new Uint8Array(0);
  }
  push(data) {
    const bytes = typeof data === "string" ? encoder.encode(data) : new Uint8Array(data);
    const joined = new Uint8Array(this.buffer.length + bytes.length);
    joined.set(this.buffer, 0);
    joined.set(bytes, this.buffer.length);
    this.buffer = joined;
    while (this.next()) {}
  }
  next() {
    let start = 0;
    while (start < this.buffer.length && (this.buffer[start] === 10 || this.buffer[start] === 13)) start++;
    if (start > 0) this.buffer = this.buffer.subarray(start);
    const blank = this.findBlankLine();
    if (blank === null) return false;
    const [headEnd, bodyStart] = blank;
    const lines = decoder.decode(this.buffer.subarray(0, headEnd)).split("\n").map((l) => l.replace(/\r$/, ""));
    const command = lines.shift();
    const headers = {};
    for (const line of lines) {
      const colon = line.indexOf(":");
      if (colon < 0) continue;
      const name = command === "CONNECTED" ? line.slice(0, colon) : unescape(line.slice(0, colon));
      const value = command === "CONNECTED" ? line.slice(colon + 1) : unescape(line.slice(colon + 1));
      if (!(name in headers)) headers[name] = value;
    }
    let bodyEnd;
    if ("content-length" in headers) {
      bodyEnd = bodyStart + parseInt(headers["content-length"], 10);
      if (this.buffer.length < bodyEnd + 1) return false;
    } else {
      bodyEnd = this.buffer.indexOf(0, bodyStart);
      if (bodyEnd < 0) return false;
    }
    const binaryBody = this.buffer.slice(bodyStart, bodyEnd);
    this.buffer = this.buffer.subarray(bodyEnd + 1);
    this.onFrame({ command, headers, binaryBody });
    return true;
  }
  findBlankLine() {
    for (let i = 0; i < this.buffer.length; i++) {
      if (this.buffer[i] !== 10) continue;
      if (this.buffer[i + 1] === 10) return [i, i + 2];
      if (this.buffer[i + 1] === 13 && this.buffer[i + 2] === 10) return [i, i + 3];
    }
    return null;
  }
}

function frameObject(raw, client) {
  const frame = {
    command: raw.command,
    headers: raw.headers,
    binaryBody: raw.binaryBody,
    isBinaryBody: false,
    get body() {
      return decoder.decode(raw.binaryBody);
    },
    toString() {
      return `${raw.command} ${JSON.stringify(raw.headers)}`;
    },
  };
  if (raw.command === "MESSAGE") {
    const id = raw.headers.ack ?? raw.headers["message-id"];
    frame.ack = (headers = {}) => client.ack(id, raw.headers.subscription, headers);
    frame.nack = (headers = {}) => client.nack(id, raw.headers.subscription, headers);
  }
  return frame;
}

export class Client {
  constructor(config = {}) {
    this.brokerURL = undefined;
    this.webSocketFactory = undefined;
    this.connectHeaders = {};
    this.disconnectHeaders = {};
    this.reconnectDelay = 5000;
    this.heartbeatIncoming = 10000;
    this.heartbeatOutgoing = 10000;
    this.connectionTimeout = 0;
    this.debug = noop;
    this.beforeConnect = noop;
    this.onConnect = noop;
    this.onDisconnect = noop;
    this.onStompError = noop;
    this.onWebSocketClose = noop;
    this.onWebSocketError = noop;
    this.onUnhandledMessage = noop;
    this.onUnhandledReceipt = noop;
    this.onUnhandledFrame = noop;
    this.onHeartbeatLost = noop;
    this.onChangeState = noop;
    this.state = ActivationState.INACTIVE;
    this._connected = false;
    this._socket = null;
    this._subscriptions = new Map();
    this._receipts = new Map();
    this._counter = 0;
    this._reconnectTimer = null;
    this._pinger = null;
    Object.assign(this, config);
  }

  configure(config) {
    Object.assign(this, config);
  }

  get connected() {
    return this._connected;
  }

  get active() {
    return this.state === ActivationState.ACTIVE;
  }

  get webSocket() {
    return this._socket;
  }

  _setState(state) {
    this.state = state;
    this.onChangeState(state);
  }

  activate() {
    if (this.state === ActivationState.ACTIVE) return;
    this._setState(ActivationState.ACTIVE);
    this._connect();
  }

  async _connect() {
    await this.beforeConnect(this);
    if (!this.active) return;
    const socket = this.webSocketFactory
      ? this.webSocketFactory()
      : new WebSocket(this.brokerURL, Versions.default.protocolVersions());
    socket.binaryType = "arraybuffer";
    this._socket = socket;
    const parser = new FrameParser((raw) => this._received(raw));
    socket.onopen = () => {
      this._send("CONNECT", {
        "accept-version": Versions.default.supportedVersions(),
        "heart-beat": `${this.heartbeatOutgoing},${this.heartbeatIncoming}`,
        host: this.connectHeaders.host ?? (typeof location === "undefined" ? "localhost" : location.hostname),
        ...this.connectHeaders,
      });
    };
    socket.onmessage = (event) => parser.push(event.data);
    socket.onerror = (event) => this.onWebSocketError(event);
    socket.onclose = (event) => this._closed(socket, event);
  }

  _received(raw) {
    const frame = frameObject(raw, this);
    this.debug(`<<< ${frame}`);
    switch (frame.command) {
      case "CONNECTED": {
        this._connected = true;
        this._heartBeats(frame.headers["heart-beat"]);
        this.onConnect(frame);
        return;
      }
      case "MESSAGE": {
        const callback = this._subscriptions.get(frame.headers.subscription);
        return callback ? callback(frame) : this.onUnhandledMessage(frame);
      }
      case "RECEIPT": {
        const waiting = this._receipts.get(frame.headers["receipt-id"]);
        if (!waiting) return this.onUnhandledReceipt(frame);
        this._receipts.delete(frame.headers["receipt-id"]);
        return waiting(frame);
      }
      case "ERROR":
        return this.onStompError(frame);
      default:
        return this.onUnhandledFrame(frame);
    }
  }

  // Outgoing heart-beats when the broker asks for them (Dirigible's and Switchboard's do not).
  _heartBeats(header) {
    const [, brokerWants] = String(header || "0,0").split(",").map((n) => parseInt(n, 10) || 0);
    if (this.heartbeatOutgoing > 0 && brokerWants > 0) {
      const every = Math.max(this.heartbeatOutgoing, brokerWants);
      this._pinger = setInterval(() => {
        if (this._socket && this._socket.readyState === StompSocketState.OPEN) this._socket.send("\n");
      }, every);
    }
  }

  _closed(socket, event) {
    if (socket !== this._socket) return;
    clearInterval(this._pinger);
    this._pinger = null;
    const wasConnected = this._connected;
    this._connected = false;
    this._socket = null;
    this._subscriptions.clear();
    this.onWebSocketClose(event);
    if (wasConnected) this.onDisconnect({ command: "DISCONNECT", headers: {}, body: "" });
    if (this.active && this.reconnectDelay > 0) {
      this._reconnectTimer = setTimeout(() => this._connect(), this.reconnectDelay);
    }
  }

  _send(command, headers, body) {
    if (!this._socket || this._socket.readyState !== StompSocketState.OPEN) {
      throw new TypeError("There is no underlying STOMP connection");
    }
    this.debug(`>>> ${command} ${JSON.stringify(headers)}`);
    this._socket.send(encodeFrame(command, headers, body));
  }

  // DISCONNECT with a receipt; the socket closes when the RECEIPT arrives (or after 5 s).
  async deactivate(options = {}) {
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    if (this.state === ActivationState.INACTIVE) return;
    this._setState(ActivationState.DEACTIVATING);
    const socket = this._socket;
    if (socket && this._connected && !options.force) {
      const receipt = `close-${++this._counter}`;
      const received = new Promise((resolve) => {
        this._receipts.set(receipt, resolve);
        setTimeout(resolve, 5000);
      });
      try {
        this._send("DISCONNECT", { ...this.disconnectHeaders, receipt });
        await received;
      } catch (_) {
        // The socket closed meanwhile.
      }
    }
    if (socket && socket.readyState !== StompSocketState.CLOSED) {
      const closed = new Promise((resolve) => socket.addEventListener("close", resolve, { once: true }));
      socket.close();
      await closed;
    }
    this._setState(ActivationState.INACTIVE);
  }

  forceDisconnect() {
    if (this._socket) this._socket.close();
  }

  publish({ destination, headers = {}, body = "", binaryBody }) {
    this._send("SEND", { ...headers, destination }, binaryBody ?? body);
  }

  subscribe(destination, callback, headers = {}) {
    const id = headers.id ?? `sub-${this._counter++}`;
    this._subscriptions.set(id, callback);
    this._send("SUBSCRIBE", { ...headers, id, destination });
    return { id, unsubscribe: (more = {}) => this.unsubscribe(id, more) };
  }

  unsubscribe(id, headers = {}) {
    this._subscriptions.delete(id);
    this._send("UNSUBSCRIBE", { ...headers, id });
  }

  watchForReceipt(receiptId, callback) {
    this._receipts.set(receiptId, callback);
  }

  begin(transactionId) {
    const transaction = transactionId ?? `tx-${this._counter++}`;
    this._send("BEGIN", { transaction });
    return {
      id: transaction,
      commit: () => this._send("COMMIT", { transaction }),
      abort: () => this._send("ABORT", { transaction }),
    };
  }

  ack(messageId, subscriptionId, headers = {}) {
    this._send("ACK", { ...headers, id: messageId, "message-id": messageId, subscription: subscriptionId });
  }

  nack(messageId, subscriptionId, headers = {}) {
    this._send("NACK", { ...headers, id: messageId, "message-id": messageId, subscription: subscriptionId });
  }
}
