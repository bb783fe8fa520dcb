// Deno.serve + Deno.upgradeWebSocket: echo, or broadcast.
// Usage: deno run -A deno-server.ts PORT [broadcast] [lower]
// With lower, text messages are answered with m.toLowerCase() (a new string), as in every runtime.
const port = Number(Deno.args[0]);
const broadcast = Deno.args.includes("broadcast");
const lower = Deno.args.includes("lower");
const sockets = new Set<WebSocket>();
Deno.serve({ hostname: "127.0.0.1", port, onListen: () => console.log(`listening on ${port}`) }, (request) => {
  const { socket, response } = Deno.upgradeWebSocket(request);
  socket.onopen = () => sockets.add(socket);
  socket.onclose = () => sockets.delete(socket);
  socket.onmessage = (event) => {
    if (broadcast) {
      for (const peer of sockets) peer.send(event.data);
    } else {
      socket.send(lower && typeof event.data === "string" ? event.data.toLowerCase() : event.data);
    }
  };
  return response;
});
