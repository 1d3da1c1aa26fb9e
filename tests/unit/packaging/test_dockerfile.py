"""The Dockerfile, checked without a Docker engine (none on these machines):
hadolint, and a parse of its stages against what the image must be."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile; continuation lines joined."""
    lines, buf = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        buf += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            lines.append(buf.strip())
            buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.IGNORECASE)
            assert m, line
            base = re.sub(r"\$\{(\w+)\}", lambda v: args[v.group(1)], m.group(1))
            stages.append(Stage(base=base, name=m.group(2)))
        elif not stages and keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


ARGS, STAGES = parse(DOCKERFILE.read_text())
BUILDER, RUNTIME = STAGES[0], STAGES[-1]


def _apt_installs(stage: Stage) -> list[tuple[str, list[str]]]:
    out = []
    for run in stage.all("RUN"):
        m = re.search(r"apt-get install ([^&]+)", run)
        if m:
            out.append((run, [w for w in m.group(1).split() if not w.startswith("-")]))
    return out


def test_multi_stage_builder_and_runtime() -> None:
    assert len(STAGES) == 2
    assert (BUILDER.name, RUNTIME.name) == ("builder", "runtime")


def test_base_images_pinned_by_tag_never_latest() -> None:
    assert "latest" not in DOCKERFILE.read_text()
    for stage in STAGES:
        image, _, tag = stage.base.partition(":")
        assert tag and tag != "latest", stage.base
        assert not image.startswith("$"), stage.base
    # the image's Python and Debian are the ones Kova is tested with
    assert RUNTIME.base == BUILDER.base == "python:3.11-slim-bookworm"


def test_runtime_runs_as_a_non_root_user() -> None:
    users = RUNTIME.all("USER")
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, users[-1]  # numeric: runAsNonRoot can verify it
    assert "--uid 10001" in " ".join(RUNTIME.all("RUN"))


def test_entrypoint_is_kova_under_tini_and_no_healthcheck() -> None:
    (entry,) = RUNTIME.all("ENTRYPOINT")
    assert json.loads(entry) == ["/usr/bin/tini", "--", "kova"]
    assert json.loads(RUNTIME.all("CMD")[-1]) == ["--help"]
    assert "HEALTHCHECK" not in [kw for s in STAGES for kw, _ in s.instructions]


def test_apt_installs_are_minimal_and_clean() -> None:
    for stage in STAGES:
        for run, _packages in _apt_installs(stage):
            assert "apt-get update" in run and "--no-install-recommends" in run, run
            assert "rm -rf /var/lib/apt/lists/*" in run, run
    (_, build_pkgs), = _apt_installs(BUILDER)
    assert {"gcc", "libvirt-dev", "pkg-config"} <= set(build_pkgs)
    (_, run_pkgs), = _apt_installs(RUNTIME)
    assert {"libvirt0", "qemu-utils", "tini"} <= set(run_pkgs)
    assert not {"gcc", "libvirt-dev", "pkg-config", "build-essential"} & set(run_pkgs)


def test_runtime_gets_only_the_wheels_from_the_builder() -> None:
    """Nothing from the build context reaches the final image: the wheels are
    bind-mounted from the builder for the one pip install."""
    assert not RUNTIME.all("COPY") and not RUNTIME.all("ADD")
    mounts = [run for run in RUNTIME.all("RUN") if "--mount" in run]
    (mount,) = mounts
    assert "--mount=type=bind,from=builder,source=/wheels,target=/wheels" in mount
    assert "--no-index --find-links /wheels 'kova[libvirt]'" in mount
    assert "pip wheel --wheel-dir /wheels '.[libvirt]'" in " ".join(BUILDER.all("RUN"))



def _package_dirs() -> set[str]:
    text = (REPO / "setup.py").read_text()
    block = text.split("PACKAGE_DIRS = {", 1)[1].split("}", 1)[0]
    return set(re.findall(r':\s*"([^"]+)"', block))


def test_builder_copies_what_the_wheel_needs_and_dockerignore_agrees() -> None:
    copied = set()
    for arg in BUILDER.all("COPY"):
        words = shlex.split(arg)
        assert not any(w.startswith("--from") for w in words)
        copied |= {w.rstrip("/") for w in words[:-1]}
    need = _package_dirs() | {"pyproject.toml", "setup.py", "README.md"}
    assert need == copied
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*"
    assert {f"!{p}" for p in need} <= set(ignore)


def test_hadolint_finds_nothing() -> None:
    proc = subprocess.run(["bash", str(REPO / "hack" / "install-helm-tools.sh"), "hadolint"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    hadolint = Path(proc.stdout.strip().splitlines()[-1]) / "hadolint"
    lint = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
    # the ignored rule is DL3008 (apt versions) only, on the two apt RUNs
    ignores = re.findall(r"# hadolint ignore=(\S+)", DOCKERFILE.read_text())
    assert ignores == ["DL3008", "DL3008"]
