#!/usr/bin/env python3
"""Benchmark: ``kubectl kova console`` against ``virsh console`` on the node,
side by side on the same guest in one run.

    .venv/bin/python bench/console.py                 # 5 rounds, 3000 lines
    .venv/bin/python bench/console.py --rounds 10 --lines 10000

It starts a throwaway local stack (control plane, Placement, operator, one
agent with its own libvirtd, Kova's API component registered as the
APIService; kova.dev.stack), boots one Instance of the test image and waits
for its shell, then alternates the two clients, each in a pty (pexpect):

* **attach**: from starting the command to the guest's prompt on the screen
  (Enter typed as soon as the client says it is connected) -- for ``kubectl
  kova console`` that is kubectl, the plugin's start-up, the API server, the
  API component, the agent and the libvirt console stream; for ``virsh
  console --force`` on the node, libvirt alone (the floor);
* **throughput**: the guest prints ``--lines`` lines of 64 characters
  (``yes ... | head``) and a marker; bytes that reached the client per second
  from the Enter to the marker.

The guest's serial port under software emulation bounds both; the difference
is Kova's path. Results are printed as a Markdown table for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LINE = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-"  # 63 + newline
PROMPT = "vm:/# "


def spawn(argv: list[str], env: dict[str, str]):
    import pexpect

    return pexpect.spawn(argv[0], argv[1:], env=env, timeout=120, maxread=1 << 20,
                         searchwindowsize=4096)


#: What each client prints once its console is connected (input typed
#: before that is discarded when it puts the terminal into raw mode).
CONNECTED = {"kubectl": "Ctrl\\+\\] detaches", "virsh": "Escape character is"}


def attach(argv: list[str], env: dict[str, str]) -> tuple[float, object]:
    t0 = time.perf_counter()
    child = spawn(argv, env)
    child.expect(CONNECTED["virsh" if argv[0] == "virsh" else "kubectl"])
    child.send("\r")
    child.expect(PROMPT)
    return time.perf_counter() - t0, child


def throughput(child, lines: int) -> tuple[float, int]:
    command = f"yes {LINE} | head -n {lines}; echo END-$((40+2))\r"
    child.expect(r".*", timeout=0.1)  # drain
    t0 = time.perf_counter()
    child.send(command)
    child.expect("END-42", timeout=max(120, lines / 20))
    seconds = time.perf_counter() - t0
    received = len(child.before) + len(child.after)
    return seconds, received


def detach(child) -> None:
    import pexpect

    child.sendcontrol("]")
    try:
        child.expect(pexpect.EOF, timeout=20)
    finally:
        child.close(force=True)


def run_stack(workdir: Path):
    from kova.dev.controlplane import ControlPlane
    from kova.dev.crds import apply_crds
    from kova.dev.image import ensure_test_image
    from kova.dev.libvirt import ensure_libvirtd
    from kova.dev.stack import Stack

    cp = ControlPlane(workdir=workdir / "controlplane")
    cp.start(progress=lambda m: print(m, file=sys.stderr))
    apply_crds(cp.kubeconfig, progress=lambda m: None)
    ensure_libvirtd()
    image = ensure_test_image()
    stack = Stack(root=workdir / "stack", api=True)
    host = f"bench-{uuid.uuid4().hex[:5]}"
    stack.start(cp, [host], progress=lambda m: print(m, file=sys.stderr))
    stack.wait_hosts_up()
    return cp, stack, image


def apply_and_wait_for_shell(kubectl: list[str], manifests: str, marker: str = "KOVA-SHELL",
                             timeout: float = 300) -> tuple[dict, Path]:
    """``kubectl apply`` the manifests, then wait until the Instance ``vm``
    of namespace default writes ``marker`` (its shell is up) to its console
    log; the Instance and that log."""
    subprocess.run([*kubectl, "apply", "-f", "-"], check=True, text=True,
                   capture_output=True, input=manifests)
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run([*kubectl, "get", "inst", "vm", "-o", "json"], text=True,
                             capture_output=True)
        inst = json.loads(out.stdout) if out.returncode == 0 else {}
        log = ((inst.get("status") or {}).get("console") or {}).get("logPath")
        if log and Path(log).exists() and marker in Path(log).read_text(errors="replace"):
            return inst, Path(log)
        if time.monotonic() > deadline:
            raise SystemExit(f"the guest did not reach its shell in {timeout:.0f} s")
        time.sleep(1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--lines", type=int, default=3000)
    args = ap.parse_args()

    from kova.crds.names import API_VERSION
    from kova.dev import paths

    work = Path(tempfile.mkdtemp(prefix="kova-bench-console-"))
    cp, stack, image = run_stack(work)
    kubectl = [paths.kubectl(), "--kubeconfig", str(cp.kubeconfig)]
    try:
        inst, _log = apply_and_wait_for_shell(kubectl, f"""
apiVersion: {API_VERSION}
kind: Image
metadata: {{name: bench-console}}
spec: {{source: {{hostPath: {image.resolve()}}}, format: qcow2}}
---
apiVersion: {API_VERSION}
kind: Instance
metadata: {{name: vm, namespace: default}}
spec:
  resources: {{vcpus: 1, memoryMiB: 192, diskGiB: 1}}
  imageRef: {{name: bench-console}}
""")
        host = inst["status"]["host"]
        env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig),
               "PATH": f"{Path(sys.executable).parent}:{paths.bin_dir()}:{os.environ['PATH']}"}
        clients = {
            "kubectl kova console": [paths.kubectl(), "kova", "console", "vm"],
            "virsh console (floor)": ["virsh", "-c", stack.libvirt_uris[host], "console",
                                      "--force", "default.vm"],
        }
        results: dict[str, dict[str, list[float]]] = {
            name: {"attach": [], "throughput": []} for name in clients}
        for r in range(args.rounds):
            for name, argv in clients.items():
                seconds, child = attach(argv, env)
                took, received = throughput(child, args.lines)
                detach(child)
                results[name]["attach"].append(seconds)
                results[name]["throughput"].append(received / took / 1024)
                print(f"round {r + 1} {name}: attach {seconds:.2f} s, "
                      f"{received / took / 1024:.1f} KiB/s ({received} bytes in {took:.2f} s)",
                      file=sys.stderr)
        print(f"\n{args.rounds} rounds, {args.lines} lines of 64 bytes per throughput run; "
              f"load average {os.getloadavg()[0]:.1f}\n")
        print("| client | attach to prompt, median (min-max) | throughput KiB/s, median "
              "(min-max) |")
        print("|---|---|---|")
        for name, res in results.items():
            a, t = res["attach"], res["throughput"]
            print(f"| {name} | {statistics.median(a):.2f} s ({min(a):.2f}-{max(a):.2f}) | "
                  f"{statistics.median(t):.1f} ({min(t):.1f}-{max(t):.1f}) |")
    finally:
        subprocess.run([*kubectl, "delete", "inst", "vm", "--wait=true", "--timeout=120s"],
                       capture_output=True)
        subprocess.run([*kubectl, "delete", "image", "bench-console"], capture_output=True)
        stack.stop()
        cp.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
