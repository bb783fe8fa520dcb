// Node.js + ws: echo, or broadcast every message to all clients. Usage: node node-server.cjs PORT [broadcast]
// (CommonJS, so that NODE_PATH finds ws in bench/.peers.)
const { WebSocketServer } = require("ws");

const port = Number(process.argv[2]);
const broadcast = process.argv[3] === "broadcast";
const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });
wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => {
    if (broadcast) {
      for (const client of wss.clients) client.send(data, { binary: isBinary });
    } else {
      ws.send(data, { binary: isBinary });
    }
  });
});
wss.on("listening", () => console.log(`listening on ${port}`));
