// Whatever onMessage returns is sent back to the sender: a string as a text frame,
// a Uint8Array as a binary frame.
exports.onMessage = function (message) {
  return message;
};
