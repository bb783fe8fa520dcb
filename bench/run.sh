#!/usr/bin/env bash
# Runs the benchmark suite and writes bench/results/ (RESULTS.md, charts, results.json).
# Builds the release binaries, installs the peers (Node's ws, Deno and Bun from the npm
# registry, into bench/.peers) and matplotlib when missing, then runs bench/run.py.
#   bench/run.sh               the full suite (about 12 minutes on 2 cores, after the build; --repeat 5: 17)
#   bench/run.sh --smoke       seconds: dev build, Switchboard and the Rust echo only, no files
#   bench/run.sh --cluster     broadcast to 1,000 conns over two nodes through Redis, against
#                              Socket.IO with its Redis adapter and one node (needs redis-server)
#   bench/run.sh --compression permessage-deflate: JSON echo, broadcast and idle connections,
#                              against Bun and Node's ws with compression on
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"
command -v taskset >/dev/null || { echo "bench: taskset (util-linux) is needed" >&2; exit 1; }
if [[ "${1:-}" == "--smoke" ]]; then
  cargo build --bins
  exec python3 bench/run.py "$@"
fi
cargo build --release --bins
if command -v npm >/dev/null; then
  if [[ ! -d bench/.peers/node_modules/ws || ! -d bench/.peers/node_modules/deno || ! -d bench/.peers/node_modules/bun \
        || ! -d bench/.peers/node_modules/@socket.io/redis-adapter ]]; then
    echo "bench: installing ws, deno, bun, socket.io, @socket.io/redis-adapter and redis from the npm registry into bench/.peers" >&2
    mkdir -p bench/.peers
    (cd bench/.peers && npm install --no-audit --no-fund ws@8 deno bun socket.io@4 @socket.io/redis-adapter@8 redis@4 >/dev/null) \
      || echo "bench: the peers could not all be installed; the run says which are missing" >&2
  fi
else
  echo "bench: npm is missing: Node, Deno and Bun will be skipped" >&2
fi
python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install --quiet matplotlib \
  || python3 -m pip install --quiet --break-system-packages matplotlib
exec python3 bench/run.py "$@"
