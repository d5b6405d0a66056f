#!/usr/bin/env bash
# Installs the benchmark's load generator, wrk, from Debian's packages unless it is there.
# Prints the path of the executable last.
set -euo pipefail

if ! command -v wrk >/dev/null; then
  echo "bench: installing wrk from Debian's packages" >&2
  apt_get=(apt-get)
  if [[ "$(id -u)" != 0 ]]; then
    apt_get=(sudo apt-get)
  fi
  "${apt_get[@]}" update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq wrk >&2
fi
command -v wrk
