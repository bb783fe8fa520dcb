// A chat room. Connections belong to the server, so the handler keeps no list of its own:
// websockets.broadcast reaches every connection of the endpoint, from any isolate.
import { websockets } from "sdk/net";

const room = "chat";

function members() {
  return websockets.getConnections(room).length;
}

export function onOpen(conn) {
  websockets.broadcast(room, { type: "joined", from: conn.id, members: members() });
}

// The page sends {"type":"event","event":"Chat_Send","params":{"text":...}} (client.js's emit).
export function Chat_Send(params, conn) {
  const text = typeof params?.text === "string" ? params.text.trim().slice(0, 2000) : "";
  if (text !== "") {
    websockets.broadcast(room, { type: "message", from: conn.id, text });
  }
}

// Plain text from any WebSocket client works too.
export function onMessage(message, conn) {
  if (typeof message === "string") {
    Chat_Send({ text: message }, conn);
  }
}

export function onClose(conn) {
  websockets.broadcast(room, { type: "left", from: conn.id, members: members() });
}

// The periodic global service ("service" in chat.websocket): push the server's time to everyone,
// as an event the page handles with sb.on("Chat_Time", ...).
export function onTick() {
  const now = new Date().toISOString();
  for (const conn of websockets.getConnections(room)) {
    conn.emit("Chat_Time", now);
  }
}
