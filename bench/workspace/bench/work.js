// A hot endpoint's handler: real work per message (FNV-1a over the message, 4 rounds: about 25 µs
// on QuickJS), then the message back, so that the load generator's checked pass can verify it.
// bench/run.py --instances serves it with "instances"; Bun runs the same file (bun-server.ts work).
function work(message) {
  let hash = 0x811c9dc5;
  for (let round = 0; round < 4; round++) {
    for (let i = 0; i < message.length; i++) {
      hash ^= message.charCodeAt(i);
      hash = Math.imul(hash, 0x01000193);
    }
  }
  return hash;
}
exports.work = work;
exports.onMessage = (m) => (work(m) === 0.5 ? "" : m);
