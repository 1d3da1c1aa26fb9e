"""The network filter on every guest NIC (libvirt nwfilter).

Every interface the agent defines carries ``<filterref filter='kova-guest-H'>``
(H: a hash of the agent's host name, so that agents sharing a libvirtd do not
rewrite each other's) with the guest's MAC address; it is two filters the agent defines
on libvirtd at start (:func:`ensure_filters`, idempotent: same names, same
UUIDs, redefined with the agent's current settings):

* libvirt's stock ``clean-traffic`` (package libvirt-daemon-config-nwfilter):
  the guest sends only from its own MAC and its own IPv4 address (learned
  from its DHCP lease on a libvirt network, ``CTRL_IP_LEARNING=dhcp``; from
  its first packet on a host bridge), ARP only for those, and no other L2
  protocol than IPv4 and ARP (so no IPv6, no STP, no VLAN tags);
* ``kova-guest-block``, an ``ipv4`` chain evaluated after the anti-spoofing
  chain and before clean-traffic accepts outgoing IPv4: packets *from* the
  guest to a blocked network are dropped.  Blocked by default: link-local
  (169.254.0.0/16, cloud metadata addresses), every address of the node
  (kubelet, the agent's own ports, the libvirt network's gateway), the API
  server's and Placement's addresses, and the networks of
  ``--guest-blocked-network`` (the cluster's pod and service networks, the
  control plane).  ``--guest-allowed-network`` opens a network again; the
  gateway of the guests' libvirt network stays open for DHCP (udp 67) and
  DNS (udp/tcp 53) only, served there by libvirt's dnsmasq.

On a libvirt network (``--network``), a NIC references its namespace's
filter instead (:func:`namespace_filter_xml`): kova-guest plus two chains.
In the ``ipv4`` one a packet to the network's subnet passes only to the MAC
of a guest of the same namespace on this host, to the gateway or to an
allowed network; in the ``arp`` one, ARP reaches the guest only from a guest
of its namespace (by Ethernet source MAC), from the gateway or from an
allowed network (by ARP sender address).  So guests of different namespaces
neither reach each other nor resolve each other's addresses: a guest's ARP
request never arrives at another namespace's guest, which therefore never
answers, and an unsolicited ARP reply or announcement from another
namespace's guest is dropped before the guest sees it.

On a host bridge (``--bridge``) Kova does not separate namespaces: the NIC
carries kova-guest (anti-spoofing and the block list) only; separating
tenants there is the provider network's job (docs/security.md).

Pure XML builders plus :func:`ensure_filters` and
:func:`ensure_namespace_filter` (the libvirt calls)."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import logging
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

#: Prefixes of the filter names; each agent's filters carry a hash of its
#: host name (several agents may share a libvirtd: tests, development).
GUEST_FILTER = "kova-guest"
BLOCK_FILTER = "kova-guest-block"
STOCK_FILTER = "clean-traffic"
#: Between clean-traffic's anti-spoofing chain (ipv4-ip, -710) and its
#: "accept outgoing IPv4" root rule (-650).
BLOCK_CHAIN_PRIORITY = -680
LINK_LOCAL = ipaddress.ip_network("169.254.0.0/16")
_UUID_NS = uuid.UUID("6b6f7661-2d6e-7766-696c-746572000000")

Network = ipaddress.IPv4Network


@dataclasses.dataclass(frozen=True)
class Service:
    """A port on a blocked address guests may still reach (DHCP, DNS)."""

    address: str
    protocol: str  # udp or tcp
    port: int


@dataclasses.dataclass(frozen=True)
class FilterPolicy:
    """What guests may not reach: the networks blocked and those opened."""

    blocked: tuple[Network, ...]
    allowed: tuple[Network, ...] = ()
    services: tuple[Service, ...] = ()


def _v4(networks: Iterable[object]) -> list[Network]:
    out: list[Network] = []
    for n in networks:
        net = ipaddress.ip_network(str(n), strict=False)
        if isinstance(net, ipaddress.IPv4Network) and net not in out:
            out.append(net)
    return out


def node_addresses(fib_trie: Path = Path("/proc/net/fib_trie")) -> list[str]:
    """The IPv4 addresses local to this network namespace, loopback
    included: the kernel's local routes (``/32 host LOCAL`` under an
    address in ``/proc/net/fib_trie``), no tool needed."""
    try:
        lines = fib_trie.read_text().splitlines()
    except OSError as exc:
        log.warning("cannot list the node's addresses for the guest filter: %s", exc)
        return []
    out: list[str] = []
    for prev, line in zip(lines, lines[1:]):
        if line.strip() == "/32 host LOCAL" and "|--" in prev:
            address = prev.split("|--", 1)[1].strip()
            if address not in out:
                out.append(address)
    return out


def url_addresses(urls: Iterable[str | None]) -> list[str]:
    """The IPv4 addresses the hosts of ``urls`` resolve to (API server, Placement)."""
    import socket

    out: list[str] = []
    for url in urls:
        host = urlsplit(url).hostname if url else None
        if not host:
            continue
        try:
            infos = socket.getaddrinfo(host, None, socket.AF_INET)
        except OSError as exc:
            log.warning("cannot resolve %s for the guest filter: %s", host, exc)
            continue
        out.extend(str(i[4][0]) for i in infos)
    return out


def policy(extra_blocked: Iterable[object], allowed: Iterable[object],
           addresses: Iterable[str], gateway: str | None = None) -> FilterPolicy:
    """The default policy: link-local, ``addresses`` (the node's, the API
    server's, Placement's) as /32s and ``extra_blocked``; ``allowed`` open;
    the guest network's ``gateway`` open for DHCP and DNS."""
    blocked = _v4([LINK_LOCAL, *(f"{a}/32" for a in addresses), *extra_blocked])
    services: tuple[Service, ...] = ()
    if gateway:
        services = (Service(gateway, "udp", 67), Service(gateway, "udp", 53),
                    Service(gateway, "tcp", 53))
    return FilterPolicy(tuple(blocked), tuple(_v4(allowed)), services)


def _filter(name: str, chain: str, priority: int | None = None) -> ET.Element:
    attrs = {"name": name, "chain": chain}
    if priority is not None:
        attrs["priority"] = str(priority)
    el = ET.Element("filter", attrs)
    ET.SubElement(el, "uuid").text = str(uuid.uuid5(_UUID_NS, name))
    return el


def _rule(parent: ET.Element, action: str, priority: int, **ip: str) -> None:
    rule = ET.SubElement(parent, "rule", {"action": action, "direction": "out",
                                         "priority": str(priority)})
    ET.SubElement(rule, "ip", ip)


def _short(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def filter_names(host: str) -> tuple[str, str]:
    """(the guest filter, its block chain) of the agent of ``host``."""
    h = _short(host, 8)
    return f"{GUEST_FILTER}-{h}", f"{BLOCK_FILTER}-{h}"


def block_filter_xml(p: FilterPolicy, host: str) -> str:
    """``kova-guest-block-<host hash>``: allowed networks and services
    return (go on to clean-traffic's accept), blocked networks drop."""
    f = _filter(filter_names(host)[1], "ipv4-kova", BLOCK_CHAIN_PRIORITY)
    for net in p.allowed:
        _rule(f, "return", 100, dstipaddr=str(net.network_address), dstipmask=str(net.prefixlen))
    for s in p.services:
        _rule(f, "return", 200, dstipaddr=s.address, protocol=s.protocol,
              dstportstart=str(s.port), dstportend=str(s.port))
    for net in p.blocked:
        _rule(f, "drop", 500, dstipaddr=str(net.network_address), dstipmask=str(net.prefixlen))
    ET.indent(f)
    return ET.tostring(f, encoding="unicode")


def guest_filter_xml(host: str) -> str:
    """``kova-guest-<host hash>``: clean-traffic, then the block chain."""
    guest, block = filter_names(host)
    f = _filter(guest, "root")
    ET.SubElement(f, "filterref", {"filter": STOCK_FILTER})
    ET.SubElement(f, "filterref", {"filter": block})
    ET.indent(f)
    return ET.tostring(f, encoding="unicode")


def namespace_filter_names(namespace: str, host: str) -> tuple[str, str]:
    """(the NIC's filter, its peers chain) of a Kubernetes namespace on the
    agent of ``host``."""
    h = f"{_short(host, 8)}-{_short(namespace, 12)}"
    return f"kova-ns-{h}", f"kova-ns-{h}-peers"


def namespace_arp_filter_name(namespace: str, host: str) -> str:
    """The ARP chain of a Kubernetes namespace on the agent of ``host``."""
    return namespace_filter_names(namespace, host)[1] + "-arp"


#: Before clean-traffic's ARP chains (arp-mac -520, arp-ip -510) and its
#: "accept ARP both ways" root rule (-500).
ARP_CHAIN_PRIORITY = -530


def _arp_rule(parent: ET.Element, action: str, priority: int, **arp: str) -> None:
    rule = ET.SubElement(parent, "rule", {"action": action, "direction": "in",
                                         "priority": str(priority)})
    ET.SubElement(rule, "arp", arp)


def namespace_arp_xml(namespace: str, host: str, peer_macs: Iterable[str],
                      p: FilterPolicy) -> str:
    """The ARP chain of a namespace's guests: ARP *to* the guest returns (on
    to clean-traffic's accept) only from the MAC of a guest of the same
    namespace, from a sender address of an allowed network or of the
    gateway (its services' addresses); any other ARP to the guest drops."""
    chain = _filter(namespace_arp_filter_name(namespace, host), "arp-kns", ARP_CHAIN_PRIORITY)
    for net in p.allowed:
        _arp_rule(chain, "return", 100, arpsrcipaddr=str(net.network_address),
                  arpsrcipmask=str(net.prefixlen))
    for address in sorted({s.address for s in p.services}):
        _arp_rule(chain, "return", 150, arpsrcipaddr=address)
    for mac in sorted(set(peer_macs)):
        _arp_rule(chain, "return", 200, srcmacaddr=mac)
    ET.SubElement(chain, "rule", {"action": "drop", "direction": "in", "priority": "500"})
    ET.indent(chain)
    return ET.tostring(chain, encoding="unicode")


def namespace_filter_xml(namespace: str, host: str, subnet: Network,
                         peer_macs: Iterable[str], p: FilterPolicy) -> tuple[str, str, str]:
    """The three filters of a namespace's guests on the node's guest network
    ``subnet``: the NIC's (kova-guest plus the two chains); the peers chain,
    in which a packet to an address of ``subnet`` passes only to the MAC of
    a guest of the same namespace (``peer_macs``), to the gateway (its
    services are kova-guest-block's) or to an allowed network; and the ARP
    chain (:func:`namespace_arp_xml`)."""
    name, peers = namespace_filter_names(namespace, host)
    peer_macs = sorted(set(peer_macs))
    root = _filter(name, "root")
    ET.SubElement(root, "filterref", {"filter": filter_names(host)[0]})
    ET.SubElement(root, "filterref", {"filter": peers})
    ET.SubElement(root, "filterref", {"filter": namespace_arp_filter_name(namespace, host)})
    chain = _filter(peers, "ipv4-kns", BLOCK_CHAIN_PRIORITY - 5)
    for net in p.allowed:
        _rule(chain, "return", 100, dstipaddr=str(net.network_address),
              dstipmask=str(net.prefixlen))
    for address in sorted({s.address for s in p.services}):
        _rule(chain, "return", 150, dstipaddr=address)
    for mac in peer_macs:
        _rule(chain, "return", 200, dstmacaddr=mac)
    _rule(chain, "drop", 500, dstipaddr=str(subnet.network_address),
          dstipmask=str(subnet.prefixlen))
    ET.indent(root)
    ET.indent(chain)
    return (ET.tostring(root, encoding="unicode"), ET.tostring(chain, encoding="unicode"),
            namespace_arp_xml(namespace, host, peer_macs, p))


def ensure_namespace_filter(conn, namespace: str, host: str, subnet: Network,
                            peer_macs: Iterable[str], p: FilterPolicy) -> str:
    """Define (or redefine: libvirt re-applies it to the running guests'
    NICs) the filters of ``namespace``; the NIC's filter name."""
    root, chain, arp = namespace_filter_xml(namespace, host, subnet, peer_macs, p)
    conn.nwfilterDefineXML(chain)
    conn.nwfilterDefineXML(arp)
    conn.nwfilterDefineXML(root)
    return namespace_filter_names(namespace, host)[0]


def filterref_params(mac: str, dhcp: bool) -> tuple[tuple[str, str], ...]:
    """The parameters of a NIC's ``<filterref>``: its MAC and how libvirt
    learns its IP address (from the DHCP lease on a libvirt network)."""
    params = [("MAC", mac)]
    if dhcp:
        params.append(("CTRL_IP_LEARNING", "dhcp"))
    return tuple(params)


class FilterError(RuntimeError):
    """The guest filter cannot be defined (libvirt's stock filters missing)."""


#: Where libvirt-daemon-config-nwfilter puts libvirt's stock filters.
STOCK_DIR = Path("/etc/libvirt/nwfilter")


def _define_stock(conn, directory: Path) -> int:
    """Define libvirt's stock filters from their package's files (a libvirtd
    started before the package was installed, or one with a filter directory
    of its own, has not read them).  Kova's filters saved there by the
    node's libvirtd are not copied: each agent defines its own."""
    import libvirt

    defined = 0
    for path in sorted(directory.glob("*.xml")):
        if path.name.startswith("kova-"):
            continue
        try:
            conn.nwfilterDefineXML(path.read_text())
            defined += 1
        except (OSError, libvirt.libvirtError) as exc:
            log.warning("defining the stock network filter %s failed: %s", path, exc)
    return defined


def ensure_filters(conn, p: FilterPolicy, host: str, stock_dir: Path = STOCK_DIR) -> str:
    """Define (or redefine) the guest filter of the agent of ``host`` and
    its block chain on the libvirt connection ``conn`` (libvirt's stock
    filters too if libvirtd has not loaded them); the guest filter's name."""
    import libvirt

    try:
        conn.nwfilterLookupByName(STOCK_FILTER)
    except libvirt.libvirtError as exc:
        if not (stock_dir / f"{STOCK_FILTER}.xml").is_file():
            raise FilterError(
                f"libvirt has no {STOCK_FILTER!r} network filter ({exc}) and "
                f"{stock_dir} has none: install libvirt-daemon-config-nwfilter on the "
                "node") from None
        log.info("libvirtd has no %s filter: defined %d stock filters from %s",
                 STOCK_FILTER, _define_stock(conn, stock_dir), stock_dir)
    conn.nwfilterDefineXML(block_filter_xml(p, host))
    conn.nwfilterDefineXML(guest_filter_xml(host))
    guest = filter_names(host)[0]
    log.info("guest network filter %s: %d blocked networks, %d allowed, %d services",
             guest, len(p.blocked), len(p.allowed), len(p.services))
    return guest


@dataclasses.dataclass(frozen=True)
class GuestNetwork:
    """The IPv4 side of a libvirt network: gateway, subnet, DHCP."""

    gateway: str | None = None
    subnet: Network | None = None
    dhcp: bool = False


def guest_network(conn, network: str) -> GuestNetwork:
    """Gateway, subnet and DHCP of the libvirt network ``network``."""
    root = ET.fromstring(conn.networkLookupByName(network).XMLDesc(0))
    for ip in root.findall("ip"):
        address = ip.get("address")
        if ip.get("family", "ipv4") == "ipv4" and address:
            prefix = ip.get("prefix") or ip.get("netmask") or "24"
            subnet = ipaddress.ip_interface(f"{address}/{prefix}").network
            assert isinstance(subnet, ipaddress.IPv4Network)
            return GuestNetwork(address, subnet, ip.find("dhcp") is not None)
    return GuestNetwork()
