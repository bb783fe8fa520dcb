// A handler that builds a new value: the load generator's payloads are lower-case ASCII and
// digits, so the reply equals the message (it is still checked) but is a new string.
exports.onMessage = (m) => m.toLowerCase();
