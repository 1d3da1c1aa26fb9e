"""A two-host test bed for moving Instances between libvirt hosts on one machine.

``TwoHosts.start(root)`` makes two network namespaces joined by a veth pair
(``10.77.0.1/24`` on host ``a``, ``10.77.0.2/24`` on host ``b``; the addresses
exist only inside those namespaces) and starts in each a libvirtd of its own
(``hack/start-libvirt-netns-host.sh``): its own host UUID, hostname, sockets,
run/lib/log directories, qemu.conf, network filters (``/etc/libvirt/nwfilter``
starts empty: the agent defines libvirt's stock filters it needs) and
instance directory (``ROOT/<name>/instances``); :meth:`BedHost.start_network`
gives it a guest network.  To each other the two are separate libvirt
hosts: libvirt's peer-to-peer migration runs from one to the other over
``qemu+tcp://10.77.0.N/system`` and QEMU's migration and NBD streams over the
same addresses.  That TCP transport has ``auth_tcp = "none"``: acceptable on
the bed's private namespace addresses, never on a real network.

From the machine's own namespaces each host is reached on a unix socket
(:attr:`BedHost.uri`); :meth:`BedHost.run` runs a command inside the host's
network namespace (for example a process that must reach the other host's
address, as an agent's disk copy does).

``stop()`` destroys every domain of the two libvirtds (they are the bed's
own: the machine's ``qemu:///system`` is never touched), stops the daemons,
kills whatever still runs in the two namespaces (their QEMU processes
included) and deletes the namespaces; it is safe to call after a partial
start and more than once.  Needs root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from kova.dev.paths import run_hack

SUBNET = "10.77.0"
PREFIX = 24
#: The guests' libvirt network each host may start (:meth:`BedHost.start_network`):
#: the same name, bridge and subnet on both hosts, as on nodes of one cluster.
NETWORK = "kova-bed"
NETWORK_BRIDGE = "kovabedbr0"
GUEST_SUBNET = "10.78.0"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, text=True, capture_output=True)


@dataclass
class BedHost:
    """One libvirt host of the bed."""

    name: str
    netns: str
    address: str
    host_uuid: str
    root: Path
    uri: str = ""

    @property
    def instance_dir(self) -> Path:
        return self.root / "instances"

    @property
    def tcp_uri(self) -> str:
        """The URI another host of the bed uses to reach this libvirtd."""
        return f"qemu+tcp://{self.address}/system"

    @property
    def migrate_uri(self) -> str:
        """Where QEMU's migration stream to this host goes."""
        return f"tcp://{self.address}"

    def run(self, argv: list[str], check: bool = False,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside this host's network namespace (output captured)."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], check=check,
                              timeout=timeout, text=True, capture_output=True)

    def start_network(self) -> str:
        """Start (once) this host's guest network ``kova-bed``: a transient
        libvirt network without forwarding, its bridge inside the host's
        namespace and libvirt's dnsmasq handing out 10.78.0.10-250 there
        (the agents' ``--network``; guests of one host do not reach the
        other's).  Its name."""
        import libvirt

        conn = libvirt.open(self.uri)
        try:
            try:
                net = conn.networkLookupByName(NETWORK)
            except libvirt.libvirtError:
                conn.networkCreateXML(f"""<network>
  <name>{NETWORK}</name>
  <bridge name='{NETWORK_BRIDGE}' stp='off' delay='0'/>
  <ip address='{GUEST_SUBNET}.1' netmask='255.255.255.0'>
    <dhcp><range start='{GUEST_SUBNET}.10' end='{GUEST_SUBNET}.250'/></dhcp>
  </ip>
</network>""")
            else:
                if not net.isActive():
                    net.create()
        finally:
            conn.close()
        return NETWORK

    def start_libvirtd(self) -> None:
        """Start this host's libvirtd (again, after :meth:`kill_libvirtd`)."""
        self.uri = run_hack("start-libvirt-netns-host.sh", self.name, str(self.root.parent),
                            self.netns, self.address, self.host_uuid)

    def kill_libvirtd(self) -> None:
        """Stop this host's libvirtd abruptly (SIGKILL), as a crash would;
        its guests and virtlogd keep running."""
        pid = self._pidfile("libvirtd")
        if pid:
            _kill(pid, signal.SIGKILL)

    def _pidfile(self, daemon: str) -> int | None:
        try:
            pid = int((self.root / f"{daemon}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return None
        return pid if comm == daemon else None


@dataclass
class TwoHosts:
    """Two libvirt hosts ``a`` and ``b``, each in its own network namespace."""

    root: Path
    tag: str
    a: BedHost
    b: BedHost
    veth: str
    _stopped: bool = field(default=False, repr=False)

    @property
    def hosts(self) -> tuple[BedHost, BedHost]:
        return (self.a, self.b)

    @classmethod
    def start(cls, root: Path, tag: str | None = None) -> TwoHosts:
        """Make the namespaces and the link, start both libvirtds."""
        tag = tag or f"{os.getpid() % 100000}{uuid.uuid4().hex[:3]}"
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        hosts = [
            BedHost(name=f"kova-bed-{n}", netns=f"kova-bed-{tag}-{n}", address=f"{SUBNET}.{i}",
                    host_uuid=str(uuid.uuid4()), root=root / f"kova-bed-{n}")
            for i, n in ((1, "a"), (2, "b"))
        ]
        bed = cls(root=root, tag=tag, a=hosts[0], b=hosts[1], veth=f"kb{tag}"[:12])
        try:
            bed._link()
            for host in bed.hosts:
                host.start_libvirtd()
        except BaseException:
            bed.stop()
            raise
        return bed

    def _link(self) -> None:
        a, b = self.a, self.b
        for host in self.hosts:
            _ip("netns", "add", host.netns)
            _ip("-n", host.netns, "link", "set", "lo", "up")
        _ip("link", "add", f"{self.veth}a", "netns", a.netns, "type", "veth",
            "peer", "name", f"{self.veth}b", "netns", b.netns)
        for host, end in ((a, "a"), (b, "b")):
            _ip("-n", host.netns, "addr", "add", f"{host.address}/{PREFIX}",
                "dev", f"{self.veth}{end}")
            _ip("-n", host.netns, "link", "set", f"{self.veth}{end}", "up")

    def stop(self) -> None:
        """Tear everything down (idempotent, tolerant of a partial start)."""
        if self._stopped:
            return
        self._stopped = True
        for host in self.hosts:
            _destroy_domains(host)
        for host in self.hosts:
            for daemon in ("libvirtd", "virtlogd"):
                pid = host._pidfile(daemon)
                if pid:
                    _kill(pid, signal.SIGTERM)
        for host in self.hosts:
            _kill_namespace(host.netns)
            _ip("netns", "del", host.netns, check=False)


def _destroy_domains(host: BedHost) -> None:
    if not host.uri:
        return
    import libvirt

    try:
        conn = libvirt.open(host.uri)
    except libvirt.libvirtError:
        return
    try:
        for dom in conn.listAllDomains():
            try:
                if dom.isActive():
                    dom.destroy()
            except libvirt.libvirtError:
                pass
            try:  # a UEFI guest's variable store goes too (libvirt refuses otherwise)
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError:
                pass
    finally:
        conn.close()


def _kill(pid: int, sig: int, wait: float = 5.0) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _kill_namespace(netns: str) -> None:
    """Kill every process still in the bed's namespace ``netns`` (all of them
    were started by the bed: its daemons and their QEMU processes)."""
    out = _ip("netns", "pids", netns, check=False).stdout.split()
    for pid in out:
        if pid.isdigit() and int(pid) != os.getpid():
            _kill(int(pid), signal.SIGTERM, wait=2.0)
