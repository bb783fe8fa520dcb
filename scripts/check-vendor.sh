#!/usr/bin/env bash
# Proves that vendor/v8x is exactly the published v8x crate plus the patches listed below:
# downloads the crate from crates.io, checks its SHA-256 (the one the crates.io index records),
# applies the patches to it and compares the two trees file by file. Run by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

name=v8x
version=149.4.0-rc.4
sha256=3701ffb3692a24808503d17f758b0a3f688d2c451779247982566b5941033e63
# In the order they are applied; vendor/README.md says what each one changes and why.
patches=(vendor/v8x-string-fast-paths.patch vendor/v8x-quickjs-callsite-double-free.patch)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
curl --proto '=https' --tlsv1.2 -sSfL --retry 3 -o "$work/$name.crate" \
  "https://static.crates.io/crates/$name/$name-$version.crate"
echo "$sha256  $work/$name.crate" | sha256sum --check --quiet - \
  || { echo "check-vendor: $name-$version.crate does not have the expected SHA-256" >&2; exit 1; }
tar -xzf "$work/$name.crate" -C "$work"
for each in "${patches[@]}"; do
  patch --quiet -d "$work/$name-$version" -p1 < "$each"
done
# .cargo-ok is written by cargo when it unpacks a crate; it is not part of the crate.
if ! diff -r --exclude=.cargo-ok "$work/$name-$version" "vendor/$name" > "$work/diff"; then
  echo "check-vendor: vendor/$name is not $name $version plus ${patches[*]}:" >&2
  head -50 "$work/diff" >&2
  exit 1
fi
echo "vendor/$name is $name $version from crates.io plus ${patches[*]}"
