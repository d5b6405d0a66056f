"""Both Dockerfiles: multi-stage, pinned base images, a non-root runtime user, a
HEALTHCHECK, and only sources that exist in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import DEPLOY_DIR, REPO_ROOT

DOCKERFILES = {
    "gateway": DEPLOY_DIR / "gateway.Dockerfile",
    "model-service": DEPLOY_DIR / "model-service.Dockerfile",
}
FLOATING_TAGS = {"latest", "stable", "slim", "alpine", "edge", "nightly", "testing", "unstable", "sid"}
# A Debian codename names one major release (bookworm = 12), like `12-slim`; the
# runtime base must be the release the build stage links against.
DEBIAN_RELEASES = ("bookworm", "trixie")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    parsed = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        parsed.append((keyword.upper(), rest.strip()))
    return parsed


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_is_multi_stage_with_pinned_bases(name: str) -> None:
    bases = [rest.split()[0] for keyword, rest in instructions(DOCKERFILES[name]) if keyword == "FROM"]
    stage_names = {rest.split()[-1] for keyword, rest in instructions(DOCKERFILES[name]) if " AS " in rest.upper()}

    assert len(bases) >= 2, f"{name}: one stage only"
    runtime_release = {release for release in DEBIAN_RELEASES if release in bases[-1]}
    for base in bases[:-1]:
        if any(release in base for release in DEBIAN_RELEASES):
            assert {r for r in DEBIAN_RELEASES if r in base} == runtime_release, f"{name}: {base} vs {bases[-1]}"
    for base in bases:
        if base in stage_names:
            continue
        image, _, tag = base.rpartition(":")
        assert image, f"{name}: {base} names no image"
        assert tag, f"{name}: {base} has no tag"
        pinned = re.match(r"\d", tag) or tag.startswith(DEBIAN_RELEASES)
        assert tag not in FLOATING_TAGS, f"{name}: {base} moves"
        assert pinned, f"{name}: {base} is not pinned to a version"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_runtime_stage_runs_as_non_root_with_a_healthcheck(name: str) -> None:
    runtime = stages(DOCKERFILES[name])[-1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    healthchecks = [rest for keyword, rest in runtime if keyword == "HEALTHCHECK"]

    assert users, f"{name}: the runtime stage sets no USER"
    assert users[-1].split(":")[0] not in ("0", "root"), f"{name}: runs as root"
    assert healthchecks, f"{name}: no HEALTHCHECK"
    assert "CMD" in healthchecks[-1], f"{name}: HEALTHCHECK runs nothing"
    assert "NONE" not in healthchecks[-1], f"{name}: HEALTHCHECK NONE"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_runtime_stage_carries_no_build_toolchain(name: str) -> None:
    runtime = stages(DOCKERFILES[name])[-1]
    base = runtime[0][1].split()[0]

    assert not base.startswith("rust:"), f"{name}: runtime on the Rust toolchain image"
    copies_from_build = [rest for keyword, rest in runtime if keyword == "COPY" and "--from=" in rest]
    assert copies_from_build, f"{name}: the runtime stage copies nothing from the build stage"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_build_context_sources_exist(name: str) -> None:
    for keyword, rest in instructions(DOCKERFILES[name]):
        if keyword != "COPY" or "--from=" in rest:
            continue
        sources = [arg for arg in rest.split() if not arg.startswith("--")][:-1]
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"{name}: COPY {source} is not in the repository"
        ignore = DOCKERFILES[name].with_name(DOCKERFILES[name].name + ".dockerignore")
        assert ignore.is_file(), f"{name}: no {ignore.name}: the whole repository would be the context"
