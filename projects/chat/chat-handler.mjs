// A chat room. Module state lives as long as the module: `members` holds every open connection
// of the endpoint, so a message can be passed to all of them.
import { websockets } from "sdk/net";

const members = new Map();

function broadcast(event) {
  const text = JSON.stringify(event);
  for (const conn of members.values()) {
    conn.send(text);
  }
}

export function onOpen(conn) {
  members.set(conn.id, conn);
  broadcast({ type: "joined", from: conn.id, members: members.size });
}

export function onMessage(message, conn) {
  if (typeof message !== "string" || message.trim() === "") {
    return;
  }
  console.log(`${websockets.getMethod()} from ${conn.id}: ${message}`);
  broadcast({ type: "message", from: conn.id, text: message.slice(0, 2000) });
}

export function onClose(conn) {
  members.delete(conn.id);
  broadcast({ type: "left", from: conn.id, members: members.size });
}
