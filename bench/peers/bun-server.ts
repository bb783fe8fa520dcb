// Bun.serve websocket handlers: echo, or broadcast with server.publish. Usage: bun bun-server.ts PORT [broadcast]
const port = Number(process.argv[2]);
const broadcast = process.argv[3] === "broadcast";
const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch(request, server) {
    if (server.upgrade(request)) return;
    return new Response("WebSocket only", { status: 400 });
  },
  websocket: {
    perMessageDeflate: false,
    open(ws) {
      if (broadcast) ws.subscribe("all");
    },
    message(ws, message) {
      if (broadcast) server.publish("all", message);
      else ws.send(message);
    },
  },
});
console.log(`listening on ${server.port}`);
