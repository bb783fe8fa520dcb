exports.onMessage = (m) => m;
