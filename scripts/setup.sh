#!/usr/bin/env bash
# Installs what building and testing Switchboard needs, when it is missing (Debian/Ubuntu).
#   scripts/setup.sh          build tools: cmake and simde headers (QuickJS engine), a C compiler
#   scripts/setup.sh --test   also Chromium (browser tests), Python's websockets (interop tests),
#                             kosoku (Autobahn conformance cases), curl (CI's vendor check), and
#                             Node with the packages of tests/node (the TypeScript compiler),
#                             redis-server and redis-cli (the scale-out tests start their own)
set -euo pipefail

want_test=false
[[ "${1:-}" == "--test" ]] && want_test=true

as_root() {
  if [[ "$(id -u)" == 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "setup: need root (or sudo) to run: $*" >&2; exit 1
  fi
}

missing=()
command -v cmake >/dev/null || missing+=(cmake)
[[ -f /usr/include/simde/simde-common.h ]] || missing+=(libsimde-dev)
command -v cc >/dev/null || missing+=(build-essential)
command -v pkg-config >/dev/null || missing+=(pkg-config)
if $want_test; then
  command -v "${CHROMIUM:-/usr/bin/chromium}" >/dev/null || missing+=(chromium)
  command -v curl >/dev/null || missing+=(curl ca-certificates)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-cli >/dev/null || missing+=(redis-tools)
fi
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    echo "setup: cargo is in ~/.cargo/bin; add it to PATH (source ~/.cargo/env)" >&2
  else
    echo "setup: installing the Rust toolchain with rustup" >&2
    command -v curl >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl ca-certificates >/dev/null
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
  fi
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi

pip_install() {
  python3 -m pip install --quiet "$@" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "$@"
}
if $want_test; then
  if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
    echo "setup: installing python3 and pip" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip >/dev/null
  fi
  if ! python3 -c "import websockets" 2>/dev/null; then
    echo "setup: installing Python's websockets (interop tests)" >&2
    pip_install websockets
  fi
  if ! python3 -c "import kosoku" 2>/dev/null; then
    echo "setup: installing kosoku (the Autobahn|Testsuite conformance cases)" >&2
    pip_install kosoku
  fi
fi

if $want_test; then
  # The tests' Node packages, as locked; installed again whenever the lock file changes.
  node_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/node"
  if ! cmp -s "$node_dir/package-lock.json" "$node_dir/node_modules/.installed-lock.json"; then
    echo "setup: installing the tests' Node packages (tests/node)" >&2
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$node_dir/package-lock.json" "$node_dir/node_modules/.installed-lock.json"
  fi
fi
