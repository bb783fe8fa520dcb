// Deno.serve + Deno.upgradeWebSocket: echo, or broadcast. Usage: deno run -A deno-server.ts PORT [broadcast]
const port = Number(Deno.args[0]);
const broadcast = Deno.args[1] === "broadcast";
const sockets = new Set<WebSocket>();
Deno.serve({ hostname: "127.0.0.1", port, onListen: () => console.log(`listening on ${port}`) }, (request) => {
  const { socket, response } = Deno.upgradeWebSocket(request);
  socket.onopen = () => sockets.add(socket);
  socket.onclose = () => sockets.delete(socket);
  socket.onmessage = (event) => {
    if (broadcast) {
      for (const peer of sockets) peer.send(event.data);
    } else {
      socket.send(event.data);
    }
  };
  return response;
});
