#!/usr/bin/env bash
# Creates (once per dependency set) the Python virtual environment that runs the
# model service and the cross-service tests, then installs the model service
# from this clone in development mode. Prints the environment's path last.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/cache-env.sh
source "$here/scripts/cache-env.sh"
venv="$(python_venv_dir)"

# One creator at a time: two runs (two clones, or make and a developer) must not
# build the same environment over each other.
exec 9>"$venv.lock"
flock 9

if [[ ! -f "$venv/.complete" ]]; then
  echo "python: creating $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip >&2
  "$venv/bin/pip" install --quiet -r "$here/tests/requirements.txt" -e "$here/model-service[dev]" >&2
  touch "$venv/.complete"
fi
# The editable install points at one clone; CI makes a new clone every run, so
# re-point it when it points elsewhere (no dependencies are resolved).
if [[ "$(cat "$venv/.source" 2>/dev/null)" != "$here" ]]; then
  "$venv/bin/pip" install --quiet --no-deps -e "$here/model-service" >&2
  echo "$here" > "$venv/.source"
fi
echo "$venv"
