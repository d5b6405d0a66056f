#!/usr/bin/env bash
# Builds the test bed's OpenTelemetry Collector with the official builder, once
# per manifest version: the binary is cached outside the clone, keyed by the
# manifest's hash, and reused on every later run. Prints the binary's path last.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/cache-env.sh
source "$here/scripts/cache-env.sh"

builder_version=v0.156.0
manifest="$here/deploy/collector/builder-manifest.yaml"
key="$(sha256sum "$manifest" | cut -c1-16)"
out_dir="$CACHE_DIR/otelcol-$key"
binary="$out_dir/otelcol-testbed"

# One builder at a time; a run that waited finds the binary made by the other.
exec 9>"$out_dir.lock"
flock 9

if [[ -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi

builder_dir="$CACHE_DIR/ocb-$builder_version"
if [[ ! -x "$builder_dir/builder" ]]; then
  echo "collector: installing the collector builder $builder_version" >&2
  GOBIN="$builder_dir" go install "go.opentelemetry.io/collector/cmd/builder@$builder_version"
fi

# The checksum database is not reachable from these machines (its lookups 404
# through the module proxy), so module checksums are taken from the proxy alone.
export GOSUMDB=off
echo "collector: building from $manifest (first run only; a few minutes)" >&2
work="$(mktemp -d "$CACHE_DIR/otelcol-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
sed "s#^\(\s*output_path:\).*#\1 $work/src#" "$manifest" > "$work/manifest.yaml"
"$builder_dir/builder" --config "$work/manifest.yaml" >&2
mkdir -p "$out_dir.tmp"
cp "$work/src/otelcol-testbed" "$out_dir.tmp/"
rm -rf "$out_dir"
mv "$out_dir.tmp" "$out_dir"
echo "$binary"
