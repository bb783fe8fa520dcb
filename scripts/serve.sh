#!/usr/bin/env bash
# Installs what is missing, builds Switchboard and serves the sample workspace (projects/).
# Extra arguments go to `switchboard serve`, e.g. scripts/serve.sh --listen 0.0.0.0:8080
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"
exec cargo run --release --bin switchboard -- serve projects "$@"
