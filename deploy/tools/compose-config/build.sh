#!/usr/bin/env bash
# Builds the compose-config checker (the Compose loader `docker compose config`
# runs, for machines without the Compose plugin) once per source version, into
# the cache outside the clone. Prints the binary's path last.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${GATEWAY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/inference-gateway}"
key="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-16)"
binary="$cache/compose-config-$key/compose-config"

if [[ ! -x "$binary" ]]; then
  echo "compose-config: building from $here (first run only)" >&2
  mkdir -p "$(dirname "$binary")"
  # The checksum database is not reachable from these machines; go.sum pins the
  # module hashes instead.
  (cd "$here" && GOSUMDB=off GOFLAGS="-mod=readonly -buildvcs=false" go build -o "$binary.tmp" .) >&2
  mv "$binary.tmp" "$binary"
fi
echo "$binary"
