// The handler of endpoint "{{endpoint}}" (declared in {{endpoint}}.websocket), made by
// `switchboard new`. Every export is optional; save the file and `serve` reloads it at once.
// The API: https://www.dirigible.io/ (net/websockets) and this repository's README.
const websockets = require("net/websockets");

let messages = 0; // module state lives as long as this code is unchanged

// A client connected. conn.id is unique; conn.data is what onUpgrade returned.
exports.onOpen = (conn) => {
  console.log(`${conn} opened from ${conn.remoteAddress}`);
  conn.send(JSON.stringify({ type: "welcome", id: conn.id }));
};

// A message arrived (a string for text, a Uint8Array for binary). What it returns is the reply.
exports.onMessage = (message, conn) => {
  messages++;
  if (typeof message !== "string") return message; // binary comes back as it came
  if (message === "everyone") {
    websockets.broadcast("{{endpoint}}", `${conn} says hello to everyone`);
    return "broadcast sent";
  }
  return `{{endpoint}} got "${message}" (message ${messages} since the handler loaded)`;
};

// Something went wrong with a connection, or one of these functions threw: the text says what.
exports.onError = (error, conn) => {
  console.error(`${conn}: ${error}`);
};

// A connection closed, once (code and reason as the peer or the server gave them).
exports.onClose = (conn, info) => {
  console.log(`${conn} closed with ${info.code} ${info.reason}`);
};

// The endpoint is served (at start, and after each reload), and stops being served.
exports.onStart = (endpoint) => console.log(`${endpoint} is served`);
exports.onStop = (endpoint) => console.log(`${endpoint} stops`);

// Before each upgrade: return true (or an object, which becomes conn.data) to accept; anything
// else refuses. Uncomment to check a token, for example:
// exports.onUpgrade = (request) => request.query.token === "let-me-in";
