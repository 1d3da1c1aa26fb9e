#!/usr/bin/env python3
"""Benchmark: ``kubectl kova image upload`` into Kova's image store beside
its floor on the same machine, in the same run.

    .venv/bin/python bench/image_upload.py                 # test image + 1 GiB disk
    .venv/bin/python bench/image_upload.py --size-mib 256 --runs 3

It starts a throwaway control plane, installs the CRDs, runs ``kova images
serve`` (HTTPS, as a process) and uploads, through the plugin's code, each
file with a fresh Image name:

* Kova's test image (qcow2, stored as it is);
* a disk of ``--size-mib`` random data as raw (stored as it is);
* the same disk as vmdk (converted to qcow2 by the store).

The floor for each is what the upload has to do at the least on this
machine: ``qemu-img convert`` to qcow2 (for the vmdk) plus a plain copy of the
file with fsync (``cp`` + ``sync``), measured right before the upload.  The
upload's time includes TLS, the TokenReview and SubjectAccessReview, the
sha256, the store's checks (header, ``qemu-img info`` under limits), the
rename and the Image's creation.  Around each upload it also reads the CPU
seconds of the store's process (``/proc/<pid>/stat``; the qemu-img it starts
not counted) and of this process (the plugin's code: reading the file, TLS),
given per 512 MiB.  Prints a Markdown table with the ratio upload / floor for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

MiB = 1 << 20


def _fsync_copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "rb") as fh:
        os.fsync(fh.fileno())


def floor(path: Path, fmt: str, work: Path) -> float:
    t0 = time.perf_counter()
    src = path
    if fmt not in ("qcow2", "raw"):
        src = work / "floor.qcow2"
        subprocess.run(["qemu-img", "convert", "-q", "-f", fmt, "-O", "qcow2", str(path),
                        str(src)], check=True)
    _fsync_copy(src, work / "floor.copy")
    elapsed = time.perf_counter() - t0
    for p in (work / "floor.qcow2", work / "floor.copy"):
        p.unlink(missing_ok=True)
    return elapsed


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds of this process so far (the plugin's code runs in it)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def steps(answer: dict) -> str:
    """The store's seconds per step of an upload (from its answer)."""
    return ", ".join(f"{k.removesuffix('Seconds')} {v:.2f}"
                     for k, v in (answer.get("seconds") or {}).items())


def start_store(work: Path, kubeconfig: Path) -> tuple[subprocess.Popen, str, Path]:
    """``kova images serve`` (HTTPS, no size limit) as a process, once healthy:
    the process, its URL and its CA file."""
    from kova.dev.controlplane import free_port
    from kova.dev.pki import issue_server_cert

    certs = issue_server_cert(work / "pki", "images", ["127.0.0.1"])
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kova.cli", "images", "serve", "--dir", str(work / "store"),
         "--kubeconfig", str(kubeconfig), "--bind-address", "127.0.0.1", "--port", str(port),
         "--tls-cert-file", str(certs["crt"]), "--tls-key-file", str(certs["key"]),
         "--max-bytes", "0", "--log-level", os.environ.get("KOVA_BENCH_STORE_LOG", "warning")])
    url = f"https://127.0.0.1:{port}"
    verify = ssl.create_default_context(cafile=str(certs["ca_crt"]))
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz", verify=verify).status_code == 200:
                return proc, url, Path(certs["ca_crt"])
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    from kova.dev.controlplane import ControlPlane
    from kova.dev.crds import apply_crds
    from kova.dev.image import ensure_test_image
    from kova.plugin.client import Cluster
    from kova.plugin.images import upload

    work = Path(tempfile.mkdtemp(prefix="image-upload-bench-",
                                 dir=os.environ.get("KOVA_BENCH_DIR")))
    cp = ControlPlane(workdir=work / "cp").start()
    store_proc = None
    try:
        apply_crds(cp.kubeconfig)
        store_proc, url, ca = start_store(work, cp.kubeconfig)
        files: list[tuple[str, Path, str]] = [("test image", ensure_test_image(), "qcow2")]
        disk = work / "disk.raw"
        with open(disk, "wb") as out:
            for _ in range(args.size_mib):
                out.write(os.urandom(MiB))
        vmdk = work / "disk.vmdk"
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", str(disk),
                        str(vmdk)], check=True)
        files += [(f"{args.size_mib} MiB disk", disk, "raw"),
                  (f"{args.size_mib} MiB disk", vmdk, "vmdk")]
        cluster = Cluster(str(cp.kubeconfig))
        rows = []
        for label, path, fmt in files:
            ups, floors, store_cpu, plugin_cpu = [], [], [], []
            per_512 = 512 * MiB / path.stat().st_size
            for run in range(args.runs):
                floors.append(floor(path, fmt, work))
                name = f"bench-{fmt}-{path.stat().st_size}-{run}"
                cpu0, own0 = process_cpu(store_proc.pid), own_cpu()
                t0 = time.perf_counter()
                got = upload(cluster, path, name, fmt, url, str(ca),
                             stream=open(os.devnull, "w"))
                ups.append(time.perf_counter() - t0)
                store_cpu.append((process_cpu(store_proc.pid) - cpu0) * per_512)
                plugin_cpu.append((own_cpu() - own0) * per_512)
                print(f"{label} ({fmt}) run {run + 1}: upload {ups[-1]:.2f}s, floor "
                      f"{floors[-1]:.2f}s, load {os.getloadavg()[0]:.1f}; CPU s per 512 MiB: "
                      f"store {store_cpu[-1]:.2f} (qemu-img's children not counted), plugin "
                      f"{plugin_cpu[-1]:.2f}; the store's seconds: {steps(got)}",
                      file=sys.stderr)
            up, fl = statistics.median(ups), statistics.median(floors)
            size = path.stat().st_size / MiB
            rows.append((label, fmt, size, up, size / up, fl, up / fl,
                         statistics.median(store_cpu), statistics.median(plugin_cpu)))
        cluster.close()
        print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}, "
              f"{os.cpu_count()} cores, median of {args.runs} runs\n")
        print("| file | format | MiB | upload s | MiB/s | floor s (convert + copy) | "
              "upload / floor | CPU s per 512 MiB: store / plugin |")
        print("|---|---|---:|---:|---:|---:|---:|---|")
        for label, fmt, size, up, rate, fl, ratio, scpu, pcpu in rows:
            # A small file's CPU time is fixed costs (reviews, checks): not per byte.
            cpu = f"{scpu:.2f} / {pcpu:.2f}" if size >= 64 else "--"
            print(f"| {label} | {fmt} | {size:.1f} | {up:.2f} | {rate:.0f} | {fl:.2f} | "
                  f"{ratio:.2f} | {cpu} |")
        print(json.dumps({"rows": rows}), file=sys.stderr)
    finally:
        if store_proc is not None:
            store_proc.terminate()
            store_proc.wait(15)
        cp.destroy()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
