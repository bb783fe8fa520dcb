const websockets = require("net/websockets");
exports.onMessage = (m) => {
  websockets.broadcast("broadcast", m);
};
