#!/usr/bin/env bash
# Counts the server's user-space instructions per message under callgrind: deterministic where
# msg/s on a shared machine drifts by 10 % between runs, so a change of a few per cent shows
# (within about 2 %: how many events one wake-up brings varies a little from run to run).
# Kernel time is not counted (callgrind sees user space only); use perf for that (README.md).
#
#   bench/instructions.sh [BINARY] [HANDLER] [LOADGEN OPTIONS...]
#   bench/instructions.sh target/release/switchboard lower --size 64 --upper
#   bench/instructions.sh target/release/switchboard echo --size 20 --binary
#
# Needs valgrind (`apt-get install valgrind`) and release binaries (`cargo build --release
# --bins`). Instrumentation is switched on only for the measured 8 s (after a 2 s warm-up at
# 20 connections: the server runs about 50 times slower under callgrind), so start-up is not
# counted; the profile is left in target/callgrind.out.* for `callgrind_annotate`.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/release/switchboard}
handler=${2:-lower}
shift $(( $# < 2 ? $# : 2 ))
[ $# -gt 0 ] || set -- --size 64 --upper
command -v valgrind > /dev/null || { echo "instructions.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
loadgen=target/release/switchboard-loadgen
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
out=target/callgrind.out.$handler
rm -f "$out" "$out".*
RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
  "$binary" serve bench/workspace --listen 127.0.0.1:"$port" --no-watch > /dev/null 2> target/callgrind.log &
server=$!
trap 'kill $server 2> /dev/null || true' EXIT
for _ in $(seq 600); do
  (echo > /dev/tcp/127.0.0.1/"$port") 2> /dev/null && break
  sleep 0.2
done
url=ws://127.0.0.1:$port/websockets/v4/service/$handler
"$loadgen" --url "$url" --connections 20 --duration 3 --warmup 2 --lean "$@" > /dev/null
callgrind_control --instr=on "$server" > /dev/null 2>&1
"$loadgen" --url "$url" --connections 20 --duration 8 --warmup 0 --lean "$@" > target/callgrind.json
callgrind_control --dump "$server" > /dev/null 2>&1
callgrind_control --instr=off "$server" > /dev/null 2>&1
kill "$server"
wait "$server" 2> /dev/null || true
messages=$(python3 -c 'import json; print(json.load(open("target/callgrind.json"))["messages"])')
total=$(callgrind_annotate "$out".1 2> /dev/null | awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }')
echo "$handler $*: $messages messages, $total instructions, $(( total / messages )) per message ($out.1)"
