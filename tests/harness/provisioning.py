"""Where the bed's programs come from: the repository's provisioning scripts,
which build or download them once into a cache outside the clone."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """The cache outside the clone, as scripts/cache-env.sh defines it."""
    script = REPO_ROOT / "scripts" / "cache-env.sh"
    output = subprocess.run(
        ["bash", "-c", f'source "{script}" && echo "$CACHE_DIR"'], check=True, capture_output=True, text=True
    ).stdout
    return Path(output.strip())


def provisioned(script: str) -> Path:
    """Run `scripts/<script>` (idempotent, cached) and return the path it prints last."""
    output = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / script)], check=True, capture_output=True, text=True
    ).stdout
    return Path(output.strip().splitlines()[-1])
