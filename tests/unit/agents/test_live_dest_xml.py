"""The destination's domain XML of a live migration: the NIC's filter is
the destination's, the host in Kova's metadata the destination."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from kova.agents.instance import live
from kova.crds import names

XML = f"""<domain type='kvm'>
  <name>kova-u-1</name>
  <metadata><kova:instance xmlns:kova='{names.DOMAIN_XMLNS}'><kova:host>a</kova:host>
  </kova:instance></metadata>
  <devices>
    <interface type='network'>
      <mac address='52:54:00:AB:CD:EF'/>
      <source network='kova-test'/>
      <filterref filter='kova-ns-source'>
        <parameter name='MAC' value='52:54:00:ab:cd:ef'/>
        <parameter name='CTRL_IP_LEARNING' value='dhcp'/>
      </filterref>
    </interface>
  </devices>
</domain>"""


def test_nic_filter_rewritten_to_the_destinations_and_parameters_kept() -> None:
    assert live.nic_filters(XML) == ["kova-ns-source"]
    assert live.guest_mac(XML) == "52:54:00:ab:cd:ef"
    out = live.LiveMigrator._dest_xml(XML, {"destHost": "b", "destNicFilter": "kova-ns-dest"})
    assert live.nic_filters(out) == ["kova-ns-dest"]
    ref = ET.fromstring(out).find("./devices/interface/filterref")
    assert {p.get("name"): p.get("value") for p in ref} == {
        "MAC": "52:54:00:ab:cd:ef", "CTRL_IP_LEARNING": "dhcp"}
    assert [e.text for e in ET.fromstring(out).iter(f"{{{names.DOMAIN_XMLNS}}}host")] == ["b"]


def test_a_guest_without_nic_has_no_filter_and_no_mac() -> None:
    bare = "<domain><name>x</name><devices/></domain>"
    assert live.nic_filters(bare) == [] and live.guest_mac(bare) is None
    assert live.nic_filters(live.LiveMigrator._dest_xml(
        f"<domain><metadata><kova:instance xmlns:kova='{names.DOMAIN_XMLNS}'>"
        "<kova:host>a</kova:host></kova:instance></metadata><devices/></domain>",
        {"destHost": "b"})) == []
