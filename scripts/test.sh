#!/usr/bin/env bash
# Installs what is missing (build tools, Chromium, Python's websockets) and runs every test.
# Extra arguments go to `cargo test`, e.g. scripts/test.sh core::
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
[[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"
exec cargo test --all-targets "$@"
