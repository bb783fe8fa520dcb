// Endpoint "{{endpoint}}", declared by the @Websocket class below (no descriptor needed), made by
// `switchboard new --ts`. This module's exported functions handle it; save and `serve` reloads.
// switchboard.d.ts (beside this file) gives an editor the API's types.
import { Websocket, Websockets, type CloseInfo, type Connection, type Message } from "@aerokit/sdk/net";

@Websocket({
  name: "{{project}}/{{class}}",
  endpoint: "{{endpoint}}",
  description: "{{endpoint}}: made by switchboard new --ts",
})
export class {{class}} {}

let messages = 0; // module state lives as long as this code is unchanged

// A client connected.
export function onOpen(conn: Connection): void {
  console.log(`${conn} opened from ${conn.remoteAddress}`);
  conn.send(JSON.stringify({ type: "welcome", id: conn.id }));
}

// A message arrived (a string for text, a Uint8Array for binary). What it returns is the reply.
export function onMessage(message: Message, conn: Connection): Message {
  messages++;
  if (typeof message !== "string") return message;
  if (message === "everyone") {
    Websockets.broadcast("{{endpoint}}", `${conn} says hello to everyone`);
    return "broadcast sent";
  }
  return `{{endpoint}} got "${message}" (message ${messages} since the handler loaded)`;
}

// Something went wrong with a connection, or one of these functions threw.
export function onError(error: string, conn: Connection): void {
  console.error(`${conn}: ${error}`);
}

// A connection closed, once.
export function onClose(conn: Connection, info: CloseInfo): void {
  console.log(`${conn} closed with ${info.code} ${info.reason}`);
}

// The endpoint is served (at start, and after each reload), and stops being served.
export function onStart(endpoint: string): void {
  console.log(`${endpoint} is served`);
}

export function onStop(endpoint: string): void {
  console.log(`${endpoint} stops`);
}
