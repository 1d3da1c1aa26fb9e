"""Run a command under resource limits:
``python -m kova.prlimit --as BYTES --cpu SECONDS -- COMMAND [ARGS...]``.

The limits are set in this small process, which then replaces itself with
the command (``execvp``), so they hold for the command and nothing else --
the way OpenStack's oslo.concurrency runs ``qemu-img info`` on untrusted
images.  A multi-threaded parent (the compute agent) cannot safely set them
between fork and exec itself (``preexec_fn`` may deadlock with threads).

A command that exceeds its CPU time is killed by SIGXCPU/SIGKILL; one that
exceeds its address space fails its allocation (qemu-img then exits with an
error).  Both are failures of the command, seen by the caller.
"""

from __future__ import annotations

import os
import resource
import sys

#: Nova's limits for ``qemu-img info`` (nova/virt/images.py QEMU_IMG_LIMITS).
QEMU_IMG_ADDRESS_SPACE = 1 << 30
QEMU_IMG_CPU_SECONDS = 30


def command(argv: list[str], *, address_space: int = QEMU_IMG_ADDRESS_SPACE,
            cpu_seconds: int = QEMU_IMG_CPU_SECONDS) -> list[str]:
    """``argv`` wrapped so that it runs under the limits."""
    return [sys.executable, "-m", "kova.prlimit", "--as", str(address_space),
            "--cpu", str(cpu_seconds), "--", *argv]


def main(args: list[str]) -> int:
    limits: dict[int, int] = {}
    while args and args[0] != "--":
        flag, given = args[0], args[1]
        limit = {"--as": resource.RLIMIT_AS, "--cpu": resource.RLIMIT_CPU}[flag]
        limits[limit] = int(given)
        args = args[2:]
    argv = args[1:]
    if not argv:
        print("usage: python -m kova.prlimit [--as BYTES] [--cpu SECONDS] -- COMMAND...",
              file=sys.stderr)
        return 2
    for limit, amount in limits.items():
        resource.setrlimit(limit, (amount, amount))
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"{argv[0]}: {exc.strerror}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
