"""The two-host test bed: two libvirt hosts that are separate to each other."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import libvirt

from kova.dev.twohost import TwoHosts

# A guest with no disk: QEMU runs (SeaBIOS finds nothing to boot), enough to
# show that tearing the bed down ends its QEMU processes.
DISKLESS = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>
<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os></domain>"""


def _host_uuid(conn: libvirt.virConnect) -> str:
    caps = conn.getCapabilities()
    return caps.split("<uuid>", 1)[1].split("</uuid>", 1)[0]


def test_two_libvirt_hosts_answer_with_their_own_identity(two_hosts: TwoHosts) -> None:
    seen = {}
    for host in two_hosts.hosts:
        conn = libvirt.open(host.uri)
        try:
            assert conn.getType() == "QEMU"
            seen[host.name] = (_host_uuid(conn), conn.getHostname())
        finally:
            conn.close()
        assert seen[host.name] == (host.host_uuid, host.name)
        assert host.instance_dir.is_dir()
    assert seen[two_hosts.a.name][0] != seen[two_hosts.b.name][0]


def test_each_host_reaches_the_other_over_tcp(two_hosts: TwoHosts) -> None:
    # libvirt's peer-to-peer migration connects exactly like this: from the
    # source host's namespace to qemu+tcp://<destination address>/system.
    for src, dst in ((two_hosts.a, two_hosts.b), (two_hosts.b, two_hosts.a)):
        out = src.run(["virsh", "-c", dst.tcp_uri, "hostname"], check=True).stdout.strip()
        assert out == dst.name
    # Each namespace carries its own address only.
    res = two_hosts.a.run(["ip", "-o", "-4", "addr", "show"], check=True)
    assert two_hosts.a.address in res.stdout and two_hosts.b.address not in res.stdout


def test_stop_removes_namespaces_daemons_and_guests(libvirtd: str, tmp_path: Path) -> None:
    bed = TwoHosts.start(tmp_path / "bed")
    try:
        pids = [host._pidfile("libvirtd") for host in bed.hosts]
        assert all(pids)
        conn = libvirt.open(bed.a.uri)
        dom = conn.defineXML(DISKLESS.format(name=f"kova-bed-{uuid.uuid4().hex[:8]}"))
        dom.create()
        pids.append(int((bed.a.root / "run" / "qemu" / f"{dom.name()}.pid").read_text()))
        conn.close()
    finally:
        bed.stop()
    bed.stop()  # idempotent
    names = subprocess.run(["ip", "netns", "list"], text=True, capture_output=True, check=True).stdout
    for host in bed.hosts:
        assert host.netns not in names
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
