// Node.js + ws: echo, or broadcast every message to all clients.
// Usage: node node-server.cjs PORT [broadcast] [deflate] [lower]
// With lower, text messages are answered with m.toLowerCase() (a new string), as in every runtime.
// With deflate, ws's perMessageDeflate is on with its defaults (context takeover, messages of
// 1 KiB and more compressed). (CommonJS, so that NODE_PATH finds ws in bench/.peers.)
const { WebSocketServer } = require("ws");

const port = Number(process.argv[2]);
const broadcast = process.argv.includes("broadcast");
const deflate = process.argv.includes("deflate");
const lower = process.argv.includes("lower");
const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: deflate });
wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => {
    if (broadcast) {
      for (const client of wss.clients) client.send(data, { binary: isBinary });
    } else if (lower && !isBinary) {
      ws.send(data.toString().toLowerCase());
    } else {
      ws.send(data, { binary: isBinary });
    }
  });
});
wss.on("listening", () => console.log(`listening on ${port}`));
