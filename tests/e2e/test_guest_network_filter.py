"""Probes of a guest's network boundary, on a real QEMU guest: the agent
(a process, ``--network`` on the NAT network of
``hack/start-libvirt-network.sh``) puts the ``kova-guest`` nwfilter on the
NIC, and packets that break its rules are dropped by the kernel.

One guest, typed at through its serial console (libvirt's console stream);
what it sends is judged from the host:

* the NIC's ``<filterref>`` names kova-guest with the guest's MAC, libvirt
  holds a binding for the tap, and the bridge's ebtables chains carry the
  block list (link-local, the gateway, the API server's address, the extra
  ``--guest-blocked-network``);
* anti-spoofing: a TCP server in the guest answers a peer on the bridge (a
  network namespace of the test with a veth port) on its leased address;
  the same guest answering from an address it gave itself, or from a MAC it
  set itself, is not heard;
* blocked addresses: the guest reaches libvirt's DNS server on the gateway
  (tcp 53, opened), but not a TCP server of the host on that same gateway
  address (the node's own address, blocked), which sees no connection.

Not exercised here: a guest reaching 169.254.169.254 (nothing answers there
on this machine, so a drop would look like silence either way: the rule is
checked in ebtables instead), and the API server / Placement addresses of a
real cluster (here loopback, which guests cannot reach anyway).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

from tests.e2e.test_boot_burst import AgentProcess, _console
from tests.e2e.test_boot_network import _subnet
from tests.fixtures.agents import remove_domain, wait_for
from tests.helpers import BOOT_TIMEOUT

GUEST_PORT = 8080
EXTRA_BLOCKED = "203.0.113.0/24"


class Console:
    """Commands typed into the guest's shell; answers read from its log."""

    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain, log: Path) -> None:
        self.stream = conn.newStream(0)
        dom.openConsole(None, self.stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        self.log = log
        self.n = 0

    def type(self, line: str) -> None:
        self.stream.send((line + "\r").encode())

    def ok(self, command: str, timeout: float = 30) -> bool:
        """Whether ``command`` exits 0 in the guest."""
        self.n += 1
        tag = f"KOVA-PROBE-{self.n}"
        self.type(f"echo {tag}=$({command} >/dev/null 2>&1 && echo yes || echo no)")
        found = wait_for(lambda: re.search(rf"{tag}=(yes|no)\b", _console(self.log)),
                         timeout, 0.2, f"the guest's answer to {command!r}")
        return found.group(1) == "yes"

    def close(self) -> None:
        try:
            self.stream.abort()
        except libvirt.libvirtError:
            pass


class Peer:
    """A machine on the guests' network that is not the node: a network
    namespace of this test with a veth port on the network's bridge (the
    node's own addresses are blocked for guests, their answers included)."""

    def __init__(self, bridge: str, address: str, prefix: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns, self.outer, inner = f"kova-nf-{tag}", f"knf{tag}a", f"knf{tag}b"
        for cmd in (["ip", "netns", "add", self.ns],
                    ["ip", "link", "add", self.outer, "type", "veth", "peer", "name", inner],
                    ["ip", "link", "set", inner, "netns", self.ns],
                    ["ip", "link", "set", self.outer, "master", bridge, "up"],
                    ["ip", "-n", self.ns, "addr", "add", f"{address}/{prefix}", "dev", inner],
                    ["ip", "-n", self.ns, "link", "set", inner, "up"]):
            subprocess.run(cmd, check=True, capture_output=True)

    def connects(self, address: str, port: int) -> bool:
        """A TCP connection from the peer to ``address:port`` is answered
        (the peer's ARP entry for it is asked afresh)."""
        subprocess.run(["ip", "-n", self.ns, "neigh", "flush", "to", address],
                       check=False, capture_output=True)
        return subprocess.run(
            ["ip", "netns", "exec", self.ns, "busybox", "nc", "-w", "3", address, str(port)],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=20).returncode == 0

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.outer], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], check=False, capture_output=True)


def _until(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


class Listener:
    """A TCP server of the host on ``address``: counts connections."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((address, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.done.set()
        self.sock.close()


def _ebtables_rules() -> str:
    return "\n".join(subprocess.run(["ebtables", "-t", "nat", "-L", "--Lx"],
                                    capture_output=True, text=True).stdout.splitlines())


def test_guest_nic_filter_drops_spoofing_and_blocked_addresses(
    harness, libvirt_test_network, libvirt_qemu_conn, test_image, tmp_path
):
    conn = libvirt_qemu_conn
    net = conn.networkLookupByName(libvirt_test_network)
    subnet = _subnet(net)
    net_xml = ET.fromstring(net.XMLDesc(0))
    gateway, bridge = net_xml.find("ip").get("address"), net_xml.find("bridge").get("name")

    harness.image("kova-test-nf-" + uuid.uuid4().hex[:6], test_image)
    agent_log = tmp_path / "agent.log"
    agent = AgentProcess(harness, tmp_path / "instances", agent_log,
                         "--network", libvirt_test_network,
                         "--guest-blocked-network", EXTRA_BLOCKED)
    name = f"{harness.ns}.nf"
    console = listener = peer = None
    try:
        obj = harness.instance("nf", harness.images[-1], hostname="kova-nf-guest",
                               resources={"vcpus": 1, "memoryMiB": 256, "diskGiB": 1})
        uid = obj["metadata"]["uid"]
        harness.wait_phase("nf", "Running", timeout=60)

        # ---- the filter on the NIC, its binding, its rules in the kernel
        dom = conn.lookupByUUIDString(uid)
        nic = ET.fromstring(dom.XMLDesc(0)).find("devices/interface")
        mac = nic.find("mac").get("address")
        tap = nic.find("target").get("dev")
        assert mac.startswith("0e:"), mac
        ref = nic.find("filterref")
        assert ref is not None and ref.get("filter") == "kova-guest"
        params = {p.get("name"): p.get("value") for p in ref.findall("parameter")}
        assert params == {"MAC": mac, "CTRL_IP_LEARNING": "dhcp"}
        bindings = {b.portDev(): b.filterName() for b in conn.listAllNWFilterBindings()}
        assert bindings.get(tap) == "kova-guest", bindings
        block = conn.nwfilterLookupByName("kova-guest-block").XMLDesc(0)
        for net_, mask in (("169.254.0.0", "16"), (gateway, "32"), ("127.0.0.1", "32"),
                           ("203.0.113.0", "24")):
            assert f'dstipaddr="{net_}" dstipmask="{mask}"' in block.replace("'", '"'), net_
        # ---- the guest's address (DHCP passed the filter) and its shell
        got = wait_for(lambda: (o := harness.get("nf")) and (o.get("status") or {}).get(
            "addresses") and o, BOOT_TIMEOUT, 0.5, "status.addresses")
        address = got["status"]["addresses"][0]["address"]
        # With the lease seen, libvirt has instantiated the full rule set
        # (until then only DHCP passes).
        rules = wait_for(lambda: (r := _ebtables_rules()) and "169.254.0.0" in r and r,
                         30, 0.5, "the block list in ebtables")
        assert f"libvirt-I-{tap}" in rules, rules[-2000:]
        assert re.search(r"--ip-dst 169\.254\.0\.0/16 -j DROP", rules)
        assert re.search(rf"--ip-dst {re.escape(gateway)}(/32)? -j DROP", rules)

        log = Path(got["status"]["console"]["logPath"])
        wait_for(lambda: "KOVA-SHELL: ttyS0" in _console(log), BOOT_TIMEOUT, 0.2, "the shell")
        console = Console(conn, dom, log)
        console.type(f"httpd -p {GUEST_PORT} -h /")

        # ---- anti-spoofing, seen from a peer on the bridge
        spoof, peer_address = (str(subnet.network_address + i) for i in (252, 253))
        assert ipaddress.ip_address(spoof) in subnet
        peer = Peer(bridge, peer_address, subnet.prefixlen)
        _connects = peer.connects
        assert _until(lambda: _connects(address, GUEST_PORT)), \
            "the guest's server does not answer on its leased address"
        console.type(f"ip addr add {spoof}/{subnet.prefixlen} dev eth0")
        assert console.ok(f"ip -4 addr show dev eth0 | grep -q {spoof}")
        assert not _connects(spoof, GUEST_PORT), "an address the guest gave itself answered"
        assert _connects(address, GUEST_PORT), "the leased address stopped answering"
        console.type(f"ip addr del {spoof}/{subnet.prefixlen} dev eth0")

        console.type("ip link set eth0 address 0e:00:00:00:00:01")
        assert console.ok("ip link show eth0 | grep -q 0e:00:00:00:00:01")
        assert not _connects(address, GUEST_PORT), "the guest answered from a MAC it set"
        console.type(f"ip link set eth0 address {mac}")
        assert _until(lambda: _connects(address, GUEST_PORT)), \
            "the guest does not answer again with its own MAC"

        # ---- blocked: the node's own address; open: DNS on that address
        listener = Listener(gateway)
        assert console.ok(f"nc -w 3 {gateway} 53 </dev/null"), \
            "the guest cannot reach DNS on the gateway"
        assert not console.ok(f"nc -w 3 {gateway} {listener.port} </dev/null")
        assert listener.accepted == 0
        assert not console.ok(f"ping -c 1 -W 2 {gateway}")
        print(f"\nguest {address} (MAC {mac}, tap {tap}): spoofed IP and MAC not heard, "
              f"node address {gateway}:{listener.port} not reached, DNS on it reached")
    finally:
        if console is not None:
            console.close()
        if listener is not None:
            listener.close()
        if peer is not None:
            peer.close()
        agent.stop()
        remove_domain(conn, name)
        print(agent_log.read_text()[-3000:])
