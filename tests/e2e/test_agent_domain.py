"""Domain XML generation (pure) and its round trip through test:///default."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from kova.agents.virt.domain import (
    MAC_ATTEMPTS,
    DomainMetadata,
    DomainSpecError,
    build_domain_xml,
    choose_mac,
    domain_name,
    mac_for,
    parse_domain_devices,
    parse_domain_metadata,
)
from kova.crds import names as contract


def _root(spec) -> ET.Element:
    return ET.fromstring(build_domain_xml(spec))


def test_basic_shape(make_spec):
    spec = make_spec(vcpus=2, memory_mib=512)
    root = _root(spec)
    assert root.get("type") == "qemu"
    assert root.findtext("name") == f"ns.{spec.meta.name}"
    assert root.findtext("uuid") == spec.meta.uid
    assert root.find("memory").text == "512" and root.find("memory").get("unit") == "MiB"
    assert root.findtext("vcpu") == "2"
    assert root.find("os/type").get("machine") == "pc"
    assert root.findtext("on_poweroff") == "destroy"
    assert root.findtext("on_crash") == "destroy"
    # qemu (TCG): no <cpu> element, the default model.
    assert root.find("cpu") is None


def test_root_disk_is_virtio_qcow2(make_spec):
    spec = make_spec()
    disk = [d for d in _root(spec).findall("devices/disk") if d.get("device") == "disk"][0]
    assert disk.find("target").get("bus") == "virtio"
    assert disk.find("target").get("dev") == "vda"
    assert disk.find("driver").get("type") == "qcow2"
    assert disk.find("source").get("file") == spec.disk_path


def test_seed_cdrom_ide_on_pc_sata_on_q35(make_spec):
    for machine, bus in (("pc", "ide"), ("pc-i440fx-7.2", "ide"), ("q35", "sata")):
        spec = make_spec(machine=machine)
        cds = [d for d in _root(spec).findall("devices/disk") if d.get("device") == "cdrom"]
        assert len(cds) == 1
        assert cds[0].find("target").get("bus") == bus
        assert cds[0].find("readonly") is not None
        assert cds[0].find("source").get("file") == spec.seed_path


def test_no_seed_no_cdrom(make_spec):
    spec = make_spec(seed_path=None)
    assert not [d for d in _root(spec).findall("devices/disk") if d.get("device") == "cdrom"]


def test_kvm_uses_host_model(make_spec):
    root = _root(make_spec(domain_type="kvm"))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-model"


def test_custom_cpu_model(make_spec):
    root = _root(make_spec(cpu_mode="custom", cpu_model="Haswell"))
    assert root.find("cpu").get("mode") == "custom"
    assert root.findtext("cpu/model") == "Haswell"


def test_host_passthrough(make_spec):
    assert _root(make_spec(cpu_mode="host-passthrough")).find("cpu").get("mode") == "host-passthrough"


@pytest.mark.parametrize(
    "kw",
    [
        {"domain_type": "xen"},
        {"vcpus": 0},
        {"memory_mib": 8},
        {"network": "a", "bridge": "b"},
        {"cpu_mode": "custom"},
        {"disk_format": "vmdk"},
        {"vcpu_scheduler": "fifo"},
    ],
)
def test_invalid_specs(make_spec, kw):
    with pytest.raises(DomainSpecError):
        build_domain_xml(make_spec(**kw))


def test_vcpu_scheduler_default_leaves_cputune_out(make_spec):
    assert _root(make_spec()).find("cputune") is None


@pytest.mark.parametrize("scheduler", ["batch", "idle"])
@pytest.mark.parametrize(("vcpus", "mask"), [(1, "0"), (4, "0-3")])
def test_vcpu_scheduler_covers_every_vcpu(make_spec, scheduler, vcpus, mask):
    scheds = _root(make_spec(vcpus=vcpus, vcpu_scheduler=scheduler)).findall("cputune/vcpusched")
    assert [(s.get("vcpus"), s.get("scheduler")) for s in scheds] == [(mask, scheduler)]


def test_invalid_vcpu_scheduler_names_the_field(make_spec):
    with pytest.raises(DomainSpecError, match="vcpu scheduler"):
        build_domain_xml(make_spec(vcpu_scheduler="rr"))


def test_invalid_name(make_spec):
    with pytest.raises(DomainSpecError):
        build_domain_xml(make_spec(name="a.b"))


def test_serial_console_logs_to_file(make_spec):
    spec = make_spec()
    root = _root(spec)
    serial = root.find("devices/serial")
    assert serial.get("type") == "pty"
    assert serial.find("log").get("file") == spec.console_log
    assert serial.find("log").get("append") == "on"
    assert root.find("devices/console/target").get("type") == "serial"


def test_no_nic_without_network(make_spec):
    assert _root(make_spec()).find("devices/interface") is None


def test_nic_on_network_with_stable_mac(make_spec):
    spec = make_spec(network="kova-isolated")
    nic = _root(spec).find("devices/interface")
    assert nic.get("type") == "network"
    assert nic.find("source").get("network") == "kova-isolated"
    assert nic.find("model").get("type") == "virtio"
    assert nic.find("mac").get("address") == mac_for(spec.meta.uid)


def test_nic_on_bridge(make_spec):
    nic = _root(make_spec(bridge="br0", mac="52:54:00:01:02:03")).find("devices/interface")
    assert nic.get("type") == "bridge"
    assert nic.find("source").get("bridge") == "br0"
    assert nic.find("mac").get("address") == "52:54:00:01:02:03"


def test_mac_is_deterministic_and_local():
    a, b = mac_for("uid-1"), mac_for("uid-2")
    assert a == mac_for("uid-1") and a != b
    assert a.startswith("0e:") and len(a) == 17
    first = int(a[:2], 16)
    assert first & 0b10 and not first & 0b01  # locally administered, unicast
    assert mac_for("uid-1", 1) not in (a, b)


def test_choose_mac_keeps_a_domains_own_and_skips_taken_ones():
    a0, a1, a2 = (mac_for("uid-a", i) for i in range(3))
    assert choose_mac("uid-a", {}) == a0
    # its domain already has a MAC (an older 52:54:00 one): kept
    assert choose_mac("uid-a", {"52:54:00:aa:bb:cc": "uid-a", a0: "other"}) == \
        "52:54:00:aa:bb:cc"
    # another domain on the host has the derived MAC: the next derivation
    assert choose_mac("uid-a", {a0: "other"}) == a1
    assert choose_mac("uid-a", {a0: "x", a1: "y"}) == a2
    taken = {mac_for("uid-a", i): f"d{i}" for i in range(MAC_ATTEMPTS)}
    with pytest.raises(DomainSpecError, match="no free MAC"):
        choose_mac("uid-a", taken)


def test_nic_filterref_with_parameters(make_spec):
    spec = make_spec(network="kova-isolated", mac="0e:01:02:03:04:05", nwfilter="kova-guest",
                     nwfilter_params=(("MAC", "0e:01:02:03:04:05"),
                                      ("CTRL_IP_LEARNING", "dhcp")))
    ref = _root(spec).find("devices/interface/filterref")
    assert ref.get("filter") == "kova-guest"
    assert [(p.get("name"), p.get("value")) for p in ref.findall("parameter")] == [
        ("MAC", "0e:01:02:03:04:05"), ("CTRL_IP_LEARNING", "dhcp")]
    assert _root(make_spec(network="n")).find("devices/interface/filterref") is None


def test_uefi_firmware(make_spec):
    os_el = _root(make_spec(firmware="uefi", nvram_path="/i/u/nvram.fd")).find("os")
    assert os_el.get("firmware") == "efi"
    assert os_el.findtext("nvram") == "/i/u/nvram.fd"
    assert os_el.find("firmware/feature").attrib == {"enabled": "no", "name": "secure-boot"}
    bios = _root(make_spec()).find("os")
    assert bios.get("firmware") is None and bios.find("nvram") is None
    assert bios.find("firmware") is None


def test_nvram_without_uefi_is_refused(make_spec):
    with pytest.raises(DomainSpecError, match="UEFI"):
        build_domain_xml(make_spec(nvram_path="/i/u/nvram.fd"))


def test_metadata_round_trip(make_spec):
    meta = DomainMetadata(uid="1234", namespace="ns", name="vm", host="h", image="img",
                          generation=7, created="2026-01-01T00:00:00Z", restart_token="t1",
                          run_strategy="Always")
    spec = make_spec(meta=meta)
    assert parse_domain_metadata(build_domain_xml(spec)) == meta


def test_metadata_ignores_foreign_domains():
    assert parse_domain_metadata("<domain type='qemu'><name>x</name></domain>") is None
    assert parse_domain_metadata("not xml") is None
    assert parse_domain_metadata(
        "<domain><metadata><other xmlns='urn:x'><uid>1</uid></other></metadata></domain>"
    ) is None


def test_metadata_uses_kova_namespace(make_spec):
    xml = build_domain_xml(make_spec())
    assert contract.DOMAIN_XMLNS in xml


def test_devices_parsed_back(make_spec):
    spec = make_spec(network="n")
    devs = parse_domain_devices(build_domain_xml(spec))
    assert devs.disks == (spec.disk_path, spec.seed_path)
    assert devs.console_logs == (spec.console_log,)
    assert devs.macs == (mac_for(spec.meta.uid),)


def test_domain_name():
    assert domain_name("default", "web-1") == "default.web-1"


def test_defines_on_test_driver(libvirt_conn, make_spec):
    spec = make_spec(network=None)
    dom = libvirt_conn.defineXML(build_domain_xml(spec))
    try:
        assert dom.UUIDString() == spec.meta.uid
        assert parse_domain_metadata(dom.XMLDesc(0)) == spec.meta
    finally:
        dom.undefine()


def test_idle_vcpu_scheduler_on_a_real_guest(libvirt_qemu_conn, make_spec, test_image, tmp_path):
    """libvirt puts the running QEMU's vCPU thread in SCHED_IDLE (the host kernel
    says so, not the XML)."""
    import json
    import os

    import libvirt_qemu

    from tests.fixtures.libvirt import make_overlay

    spec = make_spec(vcpus=1, vcpu_scheduler="idle", seed_path=None, disk_cache="writeback")
    disk = tmp_path / spec.meta.uid / "disk.qcow2"
    disk.parent.mkdir(parents=True)
    make_overlay(test_image, disk)
    dom = libvirt_qemu_conn.defineXML(build_domain_xml(spec))
    try:
        dom.create()
        reply = json.loads(libvirt_qemu.qemuMonitorCommand(
            dom, '{"execute": "query-cpus-fast"}', 0))
        tids = [cpu["thread-id"] for cpu in reply["return"]]
        assert len(tids) == 1
        assert [os.sched_getscheduler(t) for t in tids] == [os.SCHED_IDLE]
        # The emulator's main thread keeps the normal class.
        assert os.sched_getscheduler(int(
            open(f"/run/libvirt/qemu/{spec.domain_name}.pid").read())) == os.SCHED_OTHER
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()


def test_vnc_display_listens_nowhere(make_spec) -> None:
    """The VGA display's VNC server has no listen address at all: only
    libvirt (virDomainOpenGraphicsFD) reaches it; --no-vnc leaves it out."""
    import xml.etree.ElementTree as ET

    from kova.agents.virt.domain import build_domain_xml

    root = ET.fromstring(build_domain_xml(make_spec()))
    (graphics,) = root.findall("devices/graphics")
    assert graphics.get("type") == "vnc" and graphics.get("listen") is None
    assert graphics.get("port") is None and graphics.get("autoport") is None
    assert [dict(el.attrib) for el in graphics] == [{"type": "none"}]
    assert root.find("devices/video/model").get("type") == "vga"
    plain = ET.fromstring(build_domain_xml(make_spec(vnc=False)))
    assert plain.find("devices/graphics") is None and plain.find("devices/video") is None


def test_root_disk_bus_and_seed_cdrom_do_not_collide(make_spec):
    root = _root(make_spec(disk_bus="sata", machine="q35"))
    disk, cd = root.findall("devices/disk")
    assert disk.find("target").attrib == {"dev": "sda", "bus": "sata"}
    assert cd.find("target").attrib == {"dev": "sdb", "bus": "sata"}
    root = _root(make_spec(disk_bus="scsi"))
    assert len(root.findall("devices/controller[@type='scsi']")) == 1
    disk, cd = root.findall("devices/disk")
    assert disk.find("target").attrib == {"dev": "sda", "bus": "scsi"}
    assert cd.find("target").attrib == {"dev": "hdc", "bus": "ide"}
    assert _root(make_spec()).find("devices/controller") is None


def test_nic_model(make_spec):
    root = _root(make_spec(network="default", nic_model="e1000"))
    assert root.find("devices/interface/model").get("type") == "e1000"


@pytest.mark.parametrize("kw", [{"disk_bus": "ide"}, {"nic_model": "ne2k"}])
def test_unknown_bus_or_model_is_refused(make_spec, kw):
    with pytest.raises(DomainSpecError):
        build_domain_xml(make_spec(**kw))


def test_windows_guest_clock_and_hyperv(make_spec):
    win = _root(make_spec(os_type="windows", domain_type="kvm"))
    assert win.find("clock").get("offset") == "localtime"
    assert {e.tag for e in win.find("features/hyperv")} == {"relaxed", "vapic", "spinlocks"}
    tcg = _root(make_spec(os_type="windows"))
    assert tcg.find("clock").get("offset") == "localtime"
    assert tcg.find("features/hyperv") is None
    linux = _root(make_spec(domain_type="kvm"))
    assert linux.find("clock").get("offset") == "utc" and linux.find("features/hyperv") is None


def test_iso_cdrom_boots_first_then_the_root_disk(make_spec):
    for machine, bus, seed_dev, iso_dev in (("pc", "ide", "hdc", "hda"),
                                            ("q35", "sata", "sda", "sdb")):
        root = _root(make_spec(machine=machine, cdrom_path="/cache/abc.iso"))
        assert root.find("os/boot") is None  # per-device boot order instead
        disks = root.findall("devices/disk")
        by_source = {d.find("source").get("file"): d for d in disks}
        iso = by_source["/cache/abc.iso"]
        assert iso.get("device") == "cdrom" and iso.find("readonly") is not None
        assert iso.find("target").get("bus") == bus and iso.find("target").get("dev") == iso_dev
        assert iso.find("boot").get("order") == "1"
        root_disk = next(d for d in disks if d.get("device") == "disk")
        assert root_disk.find("boot").get("order") == "2"
        seed = next(d for d in disks if d.get("device") == "cdrom" and d is not iso)
        assert seed.find("target").get("dev") == seed_dev and seed.find("boot") is None
    # Without an ISO nothing changes: the <os> boot device, no per-device order.
    plain = _root(make_spec())
    assert plain.find("os/boot").get("dev") == "hd"
    assert plain.find("devices/disk/boot") is None
