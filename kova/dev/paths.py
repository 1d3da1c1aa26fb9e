"""Where the local stack keeps its cache and its state.

``KOVA_CACHE`` (default ``~/.cache/kova``) holds slow builds that are reused
across runs: the Go-built control plane binaries, the Go module and build
caches and the bootable test image.  ``KOVA_STATE`` (default
``~/.local/state/kova``) holds the running local stack started by
``kova dev up``: data directories, logs, kubeconfig and pid files.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    return Path(os.environ.get("KOVA_CACHE", Path.home() / ".cache" / "kova"))


def bin_dir() -> Path:
    return cache_dir() / "bin"


def state_dir() -> Path:
    return Path(os.environ.get("KOVA_STATE", Path.home() / ".local" / "state" / "kova"))


def hack_dir() -> Path:
    """The repository's ``hack/`` scripts (only present in a source checkout)."""
    return REPO_ROOT / "hack"


def kubectl() -> str:
    """The Go-built kubectl v1.36 when cached, else whatever is on PATH."""
    exe = bin_dir() / "kubectl"
    return str(exe) if exe.exists() else "kubectl"


def run_hack(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``hack/<script>`` with bash; return the last non-empty line it
    printed (the scripts print their result -- a URL, a path -- last).
    A failure raises RuntimeError with the script's output."""
    path = hack_dir() / script
    proc = subprocess.run(["bash", str(path), *args], check=False, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{path} failed with exit code {proc.returncode}:\n{proc.stderr}{proc.stdout}"
        )
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else ""
