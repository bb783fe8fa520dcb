// The TypeScript echo: the same work as echo.js, written as TypeScript users write it (an ES
// module with types), to show that transpiling on load costs nothing per message.
import type { Message } from "net/websockets";

export function onMessage(message: Message): Message {
  return message;
}
