#!/usr/bin/env bash
# Proves that each crate in vendor/ is exactly the published crate plus the patches listed below:
# downloads the crate from crates.io, checks its SHA-256 (the one the crates.io index records, as
# Cargo.lock did before the crate was vendored), applies the patches to it and compares the two
# trees file by file. Run by CI (.ci/run). vendor/README.md says what each patch changes and why.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# check NAME VERSION SHA256 PATCH...: patches in the order they are applied.
check() {
  local name=$1 version=$2 sha256=$3
  shift 3
  curl --proto '=https' --tlsv1.2 -sSfL --retry 3 -o "$work/$name.crate" \
    "https://static.crates.io/crates/$name/$name-$version.crate"
  echo "$sha256  $work/$name.crate" | sha256sum --check --quiet - \
    || { echo "check-vendor: $name-$version.crate does not have the expected SHA-256" >&2; exit 1; }
  tar -xzf "$work/$name.crate" -C "$work"
  for each in "$@"; do
    patch --quiet -d "$work/$name-$version" -p1 < "$each"
  done
  # .cargo-ok is written by cargo when it unpacks a crate; it is not part of the crate.
  if ! diff -r --exclude=.cargo-ok "$work/$name-$version" "vendor/$name" > "$work/diff"; then
    echo "check-vendor: vendor/$name is not $name $version plus $*:" >&2
    head -50 "$work/diff" >&2
    exit 1
  fi
  echo "vendor/$name is $name $version from crates.io plus $*"
}

check v8x 149.4.0-rc.4 3701ffb3692a24808503d17f758b0a3f688d2c451779247982566b5941033e63 \
  vendor/v8x-string-fast-paths.patch vendor/v8x-quickjs-callsite-double-free.patch \
  vendor/v8x-isolate-footprint.patch vendor/v8x-quickjs-map-hash.patch \
  vendor/v8x-isolate-teardown.patch vendor/v8x-lean-templates.patch \
  vendor/v8x-snapshot-registry-on-demand.patch vendor/v8x-terminate-promptly.patch \
  vendor/v8x-embedder-scripts-without-debug.patch vendor/v8x-boot-scripts-compiled-once.patch \
  vendor/v8x-intl-stub-dates-as-themselves.patch vendor/v8x-quickjs-ascii-case.patch \
  vendor/v8x-string-lone-surrogates.patch vendor/v8x-strict-equals-without-scan.patch \
  vendor/v8x-handle-slot-pool.patch vendor/v8x-quickjs-atom-string-equality.patch \
  vendor/v8x-backing-store-registries-when-registered.patch \
  vendor/v8x-quickjs-instanceof-without-call.patch vendor/v8x-typed-array-from-buffer.patch \
  vendor/v8x-quickjs-case-eight-bytes-at-a-time.patch vendor/v8x-call-arguments-on-stack.patch \
  vendor/v8x-string-view-borrows-ascii.patch vendor/v8x-quickjs-inline-frees.patch \
  vendor/v8x-string-from-str-unchecked.patch
check deno_core 0.413.0 7ad7d5294f640fd99db08c455e2453c9860b1fa728b76fbdacf0eed3e308d48a \
  vendor/deno_core-lean-boot.patch
check tungstenite 0.28.0 8628dcc84e5a09eb3d8423d6cb682965dea9133204e8fb3efee74c2a0c259442 \
  vendor/tungstenite-compressed-messages.patch vendor/tungstenite-idle-read-buffer.patch \
  vendor/tungstenite-pong-waits-in-place.patch
