// Bun.serve websocket handlers: echo, or broadcast with server.publish.
// Usage: bun bun-server.ts PORT [broadcast] [deflate] [lower] [work] [reuse]
// With lower, text messages are answered with m.toLowerCase() (a new string), as in every runtime.
// With work, every message goes through the same handler file Switchboard runs
// (bench/workspace/bench/work.js: hashing, then the message back).
// With deflate, perMessageDeflate is on and every send and publish asks for compression (Bun
// compresses only the messages sent with `compress` true). With reuse, the port is opened with
// reusePort, so that several processes can share it (the kernel spreads connections).
const port = Number(process.argv[2]);
const broadcast = process.argv.includes("broadcast");
const deflate = process.argv.includes("deflate");
const lower = process.argv.includes("lower");
const work = process.argv.includes("work") ? require("../workspace/bench/work.js").onMessage : null;
const reusePort = process.argv.includes("reuse");
const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  reusePort,
  fetch(request, server) {
    if (server.upgrade(request)) return;
    return new Response("WebSocket only", { status: 400 });
  },
  websocket: {
    perMessageDeflate: deflate,
    open(ws) {
      if (broadcast) ws.subscribe("all");
    },
    message(ws, message) {
      if (broadcast) server.publish("all", message, deflate);
      else if (work) ws.send(work(message), deflate);
      else ws.send(lower && typeof message === "string" ? message.toLowerCase() : message, deflate);
    },
  },
});
console.log(`listening on ${server.port}`);
