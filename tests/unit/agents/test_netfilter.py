"""The guest NIC filter's XML (kova.agents.virt.netfilter): the default
block list, the allow-list and the gateway's DHCP/DNS services, in the
order libvirt evaluates them (the real rules are exercised on a QEMU guest
in tests/e2e/test_guest_network_filter.py)."""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET

from kova.agents.virt import netfilter as nf


def _rules(p: nf.FilterPolicy) -> list[tuple[str, int, dict]]:
    root = ET.fromstring(nf.block_filter_xml(p, "node-1"))
    assert root.get("name") == nf.filter_names("node-1")[1] and root.get("chain") == "ipv4-kova"
    assert int(root.get("priority")) == nf.BLOCK_CHAIN_PRIORITY
    return [(r.get("action"), int(r.get("priority")), dict(r.find("ip").attrib))
            for r in root.findall("rule")]


def test_default_policy_blocks_link_local_and_given_addresses():
    p = nf.policy(["10.96.0.0/12", "fd00::/8"], [], ["10.0.0.5", "127.0.0.1", "10.0.0.5"])
    assert [str(n) for n in p.blocked] == [
        "169.254.0.0/16", "10.0.0.5/32", "127.0.0.1/32", "10.96.0.0/12"]  # v4 only, once
    assert p.services == () and p.allowed == ()
    rules = _rules(p)
    assert all(r[0] == "drop" and r[1] == 500 for r in rules)
    assert rules[0][2] == {"dstipaddr": "169.254.0.0", "dstipmask": "16"}


def test_allowed_networks_and_gateway_services_return_before_the_drops():
    p = nf.policy([], ["169.254.169.254/32"], ["192.168.5.1"], gateway="192.168.5.1")
    rules = _rules(p)
    returns = [r for r in rules if r[0] == "return"]
    drops = [r for r in rules if r[0] == "drop"]
    assert max(r[1] for r in returns) < min(r[1] for r in drops)
    assert returns[0][2] == {"dstipaddr": "169.254.169.254", "dstipmask": "32"}
    assert {(r[2]["protocol"], r[2]["dstportstart"]) for r in returns[1:]} == {
        ("udp", "67"), ("udp", "53"), ("tcp", "53")}
    assert all(r[2]["dstipaddr"] == "192.168.5.1" for r in returns[1:])


def test_guest_filter_references_clean_traffic_then_the_block_chain():
    guest, block = nf.filter_names("node-1")
    assert guest.startswith("kova-guest-") and block.startswith("kova-guest-block-")
    assert nf.filter_names("node-2")[0] != guest  # agents sharing a libvirtd
    root = ET.fromstring(nf.guest_filter_xml("node-1"))
    assert root.get("name") == guest and root.get("chain") == "root"
    assert [r.get("filter") for r in root.findall("filterref")] == [nf.STOCK_FILTER, block]
    # stable UUIDs: a redefinition replaces the filter, never adds a second
    assert root.findtext("uuid") == ET.fromstring(nf.guest_filter_xml("node-1")).findtext("uuid")


def test_filterref_params():
    assert nf.filterref_params("0e:00:00:00:00:01", dhcp=True) == (
        ("MAC", "0e:00:00:00:00:01"), ("CTRL_IP_LEARNING", "dhcp"))
    assert nf.filterref_params("0e:00:00:00:00:01", dhcp=False) == (
        ("MAC", "0e:00:00:00:00:01"),)


def test_node_addresses_are_this_machines():
    addrs = nf.node_addresses()
    assert "127.0.0.1" in addrs
    assert all(isinstance(ipaddress.ip_address(a), ipaddress.IPv4Address) for a in addrs)


def test_namespace_filter_passes_the_subnet_only_to_its_guests():
    p = nf.policy([], ["192.168.5.253/32"], ["192.168.5.1"], gateway="192.168.5.1")
    subnet = ipaddress.ip_network("192.168.5.0/24")
    root_xml, chain_xml, _arp_xml = nf.namespace_filter_xml(
        "team-a", "node-1", subnet, ["0e:00:00:00:00:02", "0e:00:00:00:00:01", "0e:00:00:00:00:01"], p)
    name, peers = nf.namespace_filter_names("team-a", "node-1")
    assert name != nf.namespace_filter_names("team-b", "node-1")[0]
    assert name != nf.namespace_filter_names("team-a", "node-2")[0]
    root = ET.fromstring(root_xml)
    assert root.get("name") == name and root.get("chain") == "root"
    assert [r.get("filter") for r in root.findall("filterref")] == [
        nf.filter_names("node-1")[0], peers, nf.namespace_arp_filter_name("team-a", "node-1")]
    chain = ET.fromstring(chain_xml)
    assert chain.get("name") == peers and chain.get("chain") == "ipv4-kns"
    # evaluated before the block chain, which ends in clean-traffic's accept
    assert int(chain.get("priority")) < nf.BLOCK_CHAIN_PRIORITY
    rules = [(r.get("action"), int(r.get("priority")), dict(r.find("ip").attrib))
             for r in chain.findall("rule")]
    assert rules == [
        ("return", 100, {"dstipaddr": "192.168.5.253", "dstipmask": "32"}),
        ("return", 150, {"dstipaddr": "192.168.5.1"}),
        ("return", 200, {"dstmacaddr": "0e:00:00:00:00:01"}),
        ("return", 200, {"dstmacaddr": "0e:00:00:00:00:02"}),
        ("drop", 500, {"dstipaddr": "192.168.5.0", "dstipmask": "24"}),
    ]


def test_namespace_arp_chain_lets_only_its_guests_gateway_and_allowed_answer():
    p = nf.policy([], ["192.168.5.253/32"], ["192.168.5.1"], gateway="192.168.5.1")
    *_, arp_xml = nf.namespace_filter_xml(
        "team-a", "node-1", ipaddress.ip_network("192.168.5.0/24"),
        ["0e:00:00:00:00:02", "0e:00:00:00:00:01"], p)
    chain = ET.fromstring(arp_xml)
    assert chain.get("name") == nf.namespace_arp_filter_name("team-a", "node-1")
    assert chain.get("name") != nf.namespace_arp_filter_name("team-b", "node-1")
    assert chain.get("chain") == "arp-kns"
    # jumped to before clean-traffic's ARP chains and its "accept ARP" rule (-500)
    assert int(chain.get("priority")) < -520
    rules = [(r.get("action"), r.get("direction"), int(r.get("priority")),
              dict(r.find("arp").attrib) if r.find("arp") is not None else None)
             for r in chain.findall("rule")]
    assert rules == [
        ("return", "in", 100, {"arpsrcipaddr": "192.168.5.253", "arpsrcipmask": "32"}),
        ("return", "in", 150, {"arpsrcipaddr": "192.168.5.1"}),
        ("return", "in", 200, {"srcmacaddr": "0e:00:00:00:00:01"}),
        ("return", "in", 200, {"srcmacaddr": "0e:00:00:00:00:02"}),
        ("drop", "in", 500, None),
    ]


def test_node_addresses_from_the_kernels_local_routes(tmp_path):
    fib = tmp_path / "fib_trie"
    fib.write_text("""Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.1.2.3
        /32 host LOCAL
     |-- 10.1.2.255
        /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.1.2.3
        /32 host LOCAL
     |-- 127.0.0.1
        /32 host LOCAL
""")
    assert nf.node_addresses(fib) == ["10.1.2.3", "127.0.0.1"]
    assert nf.node_addresses(tmp_path / "missing") == []
