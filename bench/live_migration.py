#!/usr/bin/env python3
"""Benchmark: Kova's live migration primitive (agents/virt/migration.py)
beside libvirt's own ``virsh migrate --live --copy-storage-all``, between the
same two libvirt hosts on the same guest, in one run.

    .venv/bin/python bench/live_migration.py               # 3 moves each, idle + dirtying
    .venv/bin/python bench/live_migration.py --rounds 5 --dirty-mib 0
    .venv/bin/python bench/live_migration.py --rounds 5 --variants  # + two Kova variants

It starts the two-host bed (kova/dev/twohost.py: two libvirtds in their own
network namespaces joined by a veth pair), boots one guest of Kova's test
image (256 MiB, a 64 MiB qcow2 overlay) on host a and moves it back and
forth; the moves alternate (each tool as often a->b as b->a) between

* **Kova**: ``live_migrate()`` with its defaults (peer-to-peer, the disk
  copied over NBD, auto-converge, progress polled every 0.5 s);
* **virsh**: ``virsh migrate --live --p2p --copy-storage-all --persistent
  --undefinesource --migrate-disks vda`` with the same destination XML
  (the disk and console paths of the other host) and the same migration URI.

With ``--variants`` two more take turns with them: Kova without
auto-converge (``kova-noac``) and Kova without progress polls during the
move (``kova-nopoll``: one poll interval longer than any move), to tell
what those cost.  For each Kova move the time outside libvirt's migration
call (Kova's own steps: the domain XML read for the path rewrite, the second
connection, the final statistics, the source's undefine;
``MigrationProgress.steps_ms``) is printed too.

Both get the same preparation (an empty qcow2 of the disk's virtual size at
the destination, not timed).  Total time is the wall time of the call;
downtime is what libvirt's completed job statistics report (for virsh:
``virsh domjobinfo --completed`` on the destination).  Then the guest starts
a loop that rewrites a file of ``--dirty-mib`` MiB from /dev/urandom in its
RAM and the same rounds run again.  Prints a Markdown table for
docs/benchmarks.md, with the machine's load average.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import libvirt  # noqa: E402

from kova.agents.virt import migration as mig  # noqa: E402
from kova.dev import bedguest as bg  # noqa: E402
from kova.dev.image import ensure_test_image  # noqa: E402
from kova.dev.libvirt import ensure_libvirtd  # noqa: E402
from kova.dev.twohost import BedHost, TwoHosts  # noqa: E402


def files(host: BedHost, name: str) -> tuple[Path, Path]:
    d = host.instance_dir / name
    return d / "disk.qcow2", d / "console.log"


#: Kova's variants (``--variants``): option changes to its defaults.
VARIANTS = {"kova": {}, "kova-noac": {"auto_converge": False},
            "kova-nopoll": {"poll_interval": 3600.0}}


def prepare(name: str, dom: libvirt.virDomain, src: BedHost,
            dst: BedHost) -> mig.LiveMigrationOptions:
    src_disk, src_log = files(src, name)
    dst_disk, dst_log = files(dst, name)
    dst_disk.parent.mkdir(parents=True, exist_ok=True)
    dst_disk.unlink(missing_ok=True)
    (_path, size), = mig.disk_sizes(dom, ["vda"]).values()
    mig.create_destination_disk(str(dst_disk), size)
    path_map = {str(src_disk): str(dst_disk), str(src_log): str(dst_log)}
    return mig.LiveMigrationOptions(migrate_uri=dst.migrate_uri, path_map=path_map)


def kova_move(name: str, src: BedHost, dst: BedHost,
              variant: str = "kova") -> tuple[float, float, float]:
    """Total time (s), downtime (ms) and the time outside libvirt's
    migration call (ms)."""
    conn = libvirt.open(src.uri)
    try:
        dom = conn.lookupByName(name)
        opts = prepare(name, dom, src, dst)
        for key, value in VARIANTS[variant].items():
            setattr(opts, key, value)
        t0 = time.monotonic()
        result = mig.live_migrate(dom, dst.tcp_uri, opts)
        total = time.monotonic() - t0
    finally:
        conn.close()
    own = total * 1000 - result.steps_ms.get("migration call", 0)
    return total, float(result.downtime_ms or 0), own


def virsh_move(name: str, src: BedHost, dst: BedHost, tmp: Path) -> tuple[float, float, float]:
    conn = libvirt.open(src.uri)
    try:
        dom = conn.lookupByName(name)
        opts = prepare(name, dom, src, dst)
        live = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE)
        persist = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_MIGRATABLE
                              | libvirt.VIR_DOMAIN_XML_SECURE)
    finally:
        conn.close()
    xml, pxml = tmp / f"{name}.xml", tmp / f"{name}.persist.xml"
    xml.write_text(mig.rewrite_paths(live, opts.path_map))
    pxml.write_text(mig.rewrite_paths(persist, opts.path_map))
    t0 = time.monotonic()
    subprocess.run(["virsh", "-c", src.uri, "migrate", "--live", "--p2p", "--copy-storage-all",
                    "--persistent", "--undefinesource", "--migrate-disks", "vda",
                    "--xml", str(xml), "--persistent-xml", str(pxml),
                    "--migrateuri", dst.migrate_uri, name, dst.tcp_uri],
                   check=True, capture_output=True, text=True)
    total = time.monotonic() - t0
    info = subprocess.run(["virsh", "-c", dst.uri, "domjobinfo", name, "--completed"],
                          check=True, capture_output=True, text=True).stdout
    m = re.search(r"Total downtime:\s+(\d+)", info)
    return total, float(m.group(1)) if m else float("nan"), float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="moves per tool and guest state")
    ap.add_argument("--dirty-mib", type=int, default=32,
                    help="MiB the dirtying loop rewrites (0: idle guest only)")
    ap.add_argument("--variants", action="store_true",
                    help="also Kova without auto-converge and without progress polls")
    args = ap.parse_args()
    # SIGTERM ends the run through the finally below (the bed is torn down).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ensure_libvirtd()
    image = ensure_test_image()
    tmp = Path(tempfile.mkdtemp(prefix="kova-bench-lm-"))
    bed = TwoHosts.start(tmp / "bed")
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    tools = ["kova", "virsh"] + (["kova-noac", "kova-nopoll"] if args.variants else [])
    try:
        name = f"kova-bench-{uuid.uuid4().hex[:6]}"
        disk = bg.make_disk(image, files(bed.a, name)[0])
        conn = libvirt.open(bed.a.uri)
        dom = conn.defineXML(bg.guest_xml(name, disk, files(bed.a, name)[1]))
        dom.create()
        bg.wait_for_file(files(bed.a, name)[1], "KOVA-SHELL", 300)
        console = bg.SerialConsole(bg.pty_path(dom))
        conn.close()
        here = bed.a
        states = ["idle"] + ([f"dirtying {args.dirty_mib} MiB"] if args.dirty_mib else [])
        for state in states:
            if state != "idle":
                console.type(bg.DIRTY_CMD.format(mib=args.dirty_mib))
                time.sleep(5)
            # Pairs of moves, the order swapped every other pair, so that each
            # tool moves the guest a->b as often as b->a.
            order = [t for r in range(args.rounds)
                     for t in (tools if r % 2 == 0 else tools[::-1])]
            for tool in order:
                there = bed.b if here is bed.a else bed.a
                console.close()
                if tool == "virsh":
                    figures = virsh_move(name, here, there, tmp)
                else:
                    figures = kova_move(name, here, there, tool)
                here = there
                c = libvirt.open(here.uri)
                console = bg.SerialConsole(bg.pty_path(c.lookupByName(name)))
                c.close()
                results.setdefault((state, tool), []).append(figures)
                print(f"{state:>22} {tool:>11} {here.name}: total {figures[0]:.2f} s, "
                      f"downtime {figures[1]:.0f} ms, outside the migration call "
                      f"{figures[2]:.0f} ms", file=sys.stderr)
        console.close()
    finally:
        bed.stop()
    load = os.getloadavg()
    print(f"\nload average before teardown: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"({os.cpu_count()} CPUs)\n")
    print("| guest | tool | moves | total time, median (min-max) | downtime, median (min-max) "
          "| outside libvirt's call, median (max) |")
    print("|---|---|---|---|---|---|")
    med: dict[tuple[str, str], tuple[float, float]] = {}
    for (state, tool), rows in results.items():
        tot = [r[0] for r in rows]
        down = [r[1] for r in rows]
        own = [r[2] for r in rows]
        med[(state, tool)] = (statistics.median(tot), statistics.median(down))
        outside = ("-" if tool == "virsh" else
                   f"{statistics.median(own):.0f} ms ({max(own):.0f})")
        print(f"| {state} | {tool} | {len(rows)} | {statistics.median(tot):.2f} s "
              f"({min(tot):.2f}-{max(tot):.2f}) | {statistics.median(down):.0f} ms "
              f"({min(down):.0f}-{max(down):.0f}) | {outside} |")
    print()
    for state in dict.fromkeys(s for s, _ in results):
        k, v = med.get((state, "kova")), med.get((state, "virsh"))
        if k and v:
            print(f"{state}: Kova / virsh total-time ratio {k[0] / v[0]:.2f}, "
                  f"downtime ratio {k[1] / v[1]:.2f}" if v[1] else
                  f"{state}: Kova / virsh total-time ratio {k[0] / v[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
