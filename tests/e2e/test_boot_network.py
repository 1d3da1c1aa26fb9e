"""A guest on a real libvirt network: the agent (a process, ``--network``) boots
the test image on ``qemu:///system`` with a NIC on the NAT network of
``hack/start-libvirt-network.sh``; libvirt's dnsmasq leases the guest an
address and the agent reports it in ``status.addresses`` (and so in the
``IP`` printer column).

Nothing here is hard-coded: the subnet is read from the network's XML, the
MAC from the domain's XML, the address from libvirt's DHCP lease table
(virNetworkGetDHCPLeases) and from what the guest itself printed when its
DHCP client got the lease."""

from __future__ import annotations

import ipaddress
import re
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt  # noqa: E402  (libvirt-python: the "libvirt" extra, always installed)

from kova.agents.virt.domain import mac_for
from tests.e2e.test_boot_burst import AgentProcess, _console
from tests.fixtures.agents import remove_domain, wait_for
from tests.helpers import BOOT_TIMEOUT


def _subnet(net: libvirt.virNetwork) -> ipaddress.IPv4Network:
    ip = ET.fromstring(net.XMLDesc(0)).find("ip")
    assert ip is not None, "the network has no <ip> element"
    prefix = ip.get("prefix") or ip.get("netmask")
    return ipaddress.ip_interface(f"{ip.get('address')}/{prefix}").network


def _ipv4_leases(net: libvirt.virNetwork, mac: str) -> list[dict]:
    return [lease for lease in net.DHCPLeases(mac)
            if lease["type"] == libvirt.VIR_IP_ADDR_TYPE_IPV4]


def _printer_column(kubectl, ns: str, name: str, column: str) -> str:
    """The cell ``kubectl get`` shows under ``column`` (its columns are aligned;
    empty cells -- Flavor here -- make a plain split unusable)."""
    header, row = kubectl("get", "instances.kova.dev", name, "-n", ns).stdout.splitlines()[:2]
    starts = [(m.group(), m.start()) for m in re.finditer(r"\S+", header)]
    names = [n for n, _ in starts]
    assert column in names, f"no {column} column in {header!r}"
    i = names.index(column)
    end = starts[i + 1][1] if i + 1 < len(starts) else len(row)
    return row[starts[i][1]:end].strip()


def test_guest_address_from_libvirt_dhcp_lease_in_status(
    harness, libvirt_test_network, libvirt_qemu_conn, test_image, kubectl, tmp_path
):
    net = libvirt_qemu_conn.networkLookupByName(libvirt_test_network)
    assert net.isActive()
    subnet = _subnet(net)
    gateway = ipaddress.ip_address(ET.fromstring(net.XMLDesc(0)).find("ip").get("address"))

    instance_dir = tmp_path / "instances"
    agent_log = tmp_path / "agent.log"
    harness.image("kova-test-net-" + uuid.uuid4().hex[:6], test_image)
    image = harness.images[-1]
    agent = AgentProcess(harness, instance_dir, agent_log, "--network", libvirt_test_network)
    name = f"{harness.ns}.net"
    try:
        t0 = time.monotonic()
        obj = harness.instance("net", image, hostname="kova-net-guest",
                               resources={"vcpus": 1, "memoryMiB": 256, "diskGiB": 1})
        uid = obj["metadata"]["uid"]
        harness.wait_phase("net", "Running", timeout=60)

        # The domain's NIC is on that network, with the MAC the agent derives
        # from the uid (the one the seed's network-config names).
        dom = libvirt_qemu_conn.lookupByUUIDString(uid)
        nics = ET.fromstring(dom.XMLDesc(0)).findall("devices/interface")
        assert len(nics) == 1
        assert nics[0].get("type") == "network"
        assert nics[0].find("source").get("network") == libvirt_test_network
        mac = nics[0].find("mac").get("address").lower()
        assert mac == mac_for(uid)
        tap = nics[0].find("target").get("dev")

        # Wait for the agent to report an address; then compare with libvirt's
        # lease table and with what the guest says it got.
        got = wait_for(lambda: (o := harness.get("net")) and (o.get("status") or {}).get(
            "addresses") and o, BOOT_TIMEOUT, 0.5, "status.addresses")
        t_address = time.monotonic() - t0
        leases = _ipv4_leases(net, mac)
        assert len(leases) == 1, leases
        lease = leases[0]
        leased = ipaddress.ip_address(lease["ipaddr"])
        assert leased in subnet and leased != gateway, (lease, subnet)
        assert lease["mac"].lower() == mac
        assert lease["hostname"] == "kova-net-guest"  # sent by the guest's DHCP client
        assert got["status"]["addresses"] == [
            {"address": lease["ipaddr"], "family": "IPv4", "interface": tap, "mac": mac}
        ]
        console = Path(got["status"]["console"]["logPath"])
        text = wait_for(lambda: (t := _console(console)) and "KOVA-DHCP:" in t and t,
                        BOOT_TIMEOUT, 0.2, "KOVA-DHCP on the console")
        assert f"KOVA-NETWORK-CONFIG: eth0 {mac} dhcp4=yes" in text
        assert f"KOVA-DHCP: eth0 {lease['ipaddr']}/{lease['prefix']}" in text

        # `kubectl get instances` shows it in the IP column.
        assert _printer_column(kubectl, harness.ns, "net", "IP") == lease["ipaddr"]
        print(f"\napply -> address in status {t_address:.1f}s: {lease['ipaddr']} "
              f"(network {libvirt_test_network}, {subnet}, MAC {mac})")

        # Stopped: no address any more (the lease outlives the guest in
        # dnsmasq, the status must not).
        harness.patch("net", {"spec": {"runStrategy": "Halted"}})
        got = harness.wait_phase("net", "Stopped", timeout=60)
        assert got["status"]["addresses"] == []
        assert _printer_column(kubectl, harness.ns, "net", "IP") == ""

        harness.delete("net")
        wait_for(lambda: harness.get("net") is None, 30, 0.2, "instance deleted")
    finally:
        agent.stop()
        remove_domain(libvirt_qemu_conn, name)
        print(agent_log.read_text()[-4000:])
