// Switchboard's browser library, served at /switchboard/client.js.
//
//   const sb = Switchboard.connect("chat");          // an endpoint of this server, by name
//   sb.on("open", () => ...);                         // also "close", "reconnecting", "message"
//   sb.on("ServerTime", (time) => ...);               // events the server pushes with conn.emit
//   sb.emit("Chat_Send", { text: "hi" });             // runs the handler's export Chat_Send
//   sb.send("plain text");                            // runs the handler's onMessage
//
// It reconnects with exponential backoff (0.5 s doubling up to 10 s, with jitter) until
// close() is called; what is sent while disconnected waits (up to 1,000 messages) and goes out,
// in order, once connected again.
(function (global) {
  "use strict";

  function endpointUrl(nameOrUrl) {
    if (/^wss?:\/\//.test(nameOrUrl)) return nameOrUrl;
    const scheme = global.location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${global.location.host}/websockets/v4/service/${encodeURIComponent(nameOrUrl)}`;
  }

  class Connection {
    constructor(nameOrUrl, options = {}) {
      this.url = endpointUrl(nameOrUrl);
      this.minDelay = options.minDelay ?? 500;
      this.maxDelay = options.maxDelay ?? 10000;
      this.maxQueued = options.maxQueued ?? 1000;
      this.listeners = new Map();
      this.queue = [];
      this.attempt = 0;
      this.closedByUser = false;
      this.socket = null;
      this.open();
    }

    get connected() {
      return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
    }

    on(event, listener) {
      if (!this.listeners.has(event)) this.listeners.set(event, []);
      this.listeners.get(event).push(listener);
      return this;
    }

    off(event, listener) {
      const list = this.listeners.get(event);
      if (list) this.listeners.set(event, list.filter((l) => l !== listener));
      return this;
    }

    fire(event, ...args) {
      for (const listener of this.listeners.get(event) ?? []) {
        try {
          listener(...args);
        } catch (error) {
          console.error(`Switchboard: a "${event}" listener threw`, error);
        }
      }
    }

    send(data) {
      if (this.connected) {
        this.socket.send(data);
      } else if (this.queue.length < this.maxQueued) {
        this.queue.push(data);
      } else {
        throw new Error(`Switchboard: not connected to ${this.url} and ${this.maxQueued} messages already wait`);
      }
    }

    emit(event, params) {
      this.send(JSON.stringify({ type: "event", event, params: params ?? {} }));
    }

    close(code = 1000, reason = "") {
      this.closedByUser = true;
      clearTimeout(this.retry);
      if (this.socket) this.socket.close(code, reason);
    }

    open() {
      const socket = new WebSocket(this.url);
      socket.binaryType = "arraybuffer";
      this.socket = socket;
      socket.onopen = () => {
        this.attempt = 0;
        const waiting = this.queue.splice(0);
        for (const data of waiting) socket.send(data);
        this.fire("open");
      };
      socket.onmessage = (message) => {
        const data = message.data;
        if (typeof data === "string" && data.startsWith("{") && data.includes('"event"')) {
          try {
            const parsed = JSON.parse(data);
            if (parsed && parsed.type === "event" && typeof parsed.event === "string") {
              const params = Array.isArray(parsed.params) ? parsed.params : [parsed.params];
              this.fire(parsed.event, ...params);
              return;
            }
          } catch (_) {
            // Not an event: an ordinary message.
          }
        }
        this.fire("message", data);
      };
      socket.onclose = (event) => {
        this.fire("close", { code: event.code, reason: event.reason, wasClean: event.wasClean });
        if (this.closedByUser) return;
        const delay = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt) * (0.75 + Math.random() / 2);
        this.attempt += 1;
        this.fire("reconnecting", { attempt: this.attempt, delay: Math.round(delay) });
        this.retry = setTimeout(() => this.open(), delay);
      };
      socket.onerror = () => {
        // onclose follows and schedules the reconnection.
      };
    }
  }

  global.Switchboard = {
    connect(nameOrUrl, options) {
      return new Connection(nameOrUrl, options);
    },
  };
})(globalThis);
