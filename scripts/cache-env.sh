# Sourced by the provisioning scripts: one cache folder outside the clone, so
# downloads and builds survive the fresh clone that CI makes on every run.
CACHE_DIR="${GATEWAY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/inference-gateway}"
mkdir -p "$CACHE_DIR"
export CACHE_DIR

# The Python virtual environment, keyed by everything that decides its contents,
# so a change of dependencies gets a new one and an unchanged set is reused.
python_venv_dir() {
  local here key
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  key="$(cat "$here/model-service/pyproject.toml" "$here/tests/requirements.txt" \
    <(python3 --version) | sha256sum | cut -c1-16)"
  echo "$CACHE_DIR/venv-$key"
}
