// Socket.IO 4 on Node.js: every "broadcast" event is emitted to every socket of every node as a
// "message" event, through @socket.io/redis-adapter when a Redis URL is given.
// Usage: node socketio-server.cjs PORT [REDIS_URL]
// (CommonJS, so that NODE_PATH finds the packages in bench/.peers.)
const { createServer } = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
const redisUrl = process.argv[3];

async function main() {
  const httpServer = createServer();
  // WebSocket only, no long-polling upgrade dance and no compression: as every other server here.
  const io = new Server(httpServer, { transports: ["websocket"], serveClient: false, perMessageDeflate: false });
  if (redisUrl) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pub = createClient({ url: redisUrl });
    const sub = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub));
  }
  io.on("connection", (socket) => {
    socket.on("broadcast", (message) => io.emit("message", message));
  });
  httpServer.listen(port, "127.0.0.1", () => console.log(`listening on ${port}`));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
