"""Libvirt domain XML for an Instance: pure functions, no libvirt calls.

:func:`build_domain_xml` turns a :class:`DomainSpec` into the XML the driver
defines; :func:`parse_domain_metadata` reads back the ``<metadata>`` element
the agent stores in every domain it creates, so that a restarted agent can
tell its domains (and which Instance each belongs to) from anything else
defined on the host.

Choices (the reasons are in ``docs/agent.md``):

* the domain UUID is the Instance's ``metadata.uid``; its name is
  ``<namespace>.<name>`` (both DNS labels, so the dot is unambiguous);
* the root disk is a qcow2 overlay on virtio (or SATA/SCSI, as the Image's
  ``diskBus`` says), the NoCloud seed a read-only CD-ROM (IDE on the ``pc``
  machine, SATA on ``q35``); an ISO image to boot from is one more read-only
  CD-ROM, first in the per-device boot order, the root disk second; once
  ejected (``kubectl kova eject``) the drive stays, empty, and the root disk
  is first (:mod:`~kova.agents.virt.cdrom` does it to a defined domain);
* the serial console is a pty whose output virtlogd also appends to a log
  file, so ``virsh console`` works and the log survives restarts;
* no NIC unless a libvirt network or bridge is configured: the MAC address is
  derived from the uid, so it is stable across redefinitions, in Kova's
  locally administered range ``0e:xx:xx:xx:xx:xx``; the NIC carries the
  agent's network filter (:mod:`kova.agents.virt.netfilter`);
* a VGA display with a VNC server that listens on no address at all
  (``<listen type='none'/>``): the agent reaches it through libvirt
  (``virDomainOpenGraphicsFD``) for ``kubectl kova vnc``, nothing else can.
"""

from __future__ import annotations

import dataclasses
import hashlib
import xml.etree.ElementTree as ET
from typing import Literal

from kova.crds import names

ET.register_namespace(names.DOMAIN_XMLNS_PREFIX, names.DOMAIN_XMLNS)

DomainType = Literal["qemu", "kvm"]
CpuMode = Literal["none", "host-model", "host-passthrough", "custom"]
#: Linux scheduling class of the guest's vCPU threads (libvirt ``vcpusched``);
#: "default" leaves them in the normal class (no ``<cputune>``).
VcpuScheduler = Literal["default", "batch", "idle"]
VCPU_SCHEDULERS: tuple[str, ...] = ("default", "batch", "idle")
DiskBus = Literal["virtio", "sata", "scsi"]
NicModel = Literal["virtio", "e1000", "rtl8139"]

_NS = "{" + names.DOMAIN_XMLNS + "}"


class DomainSpecError(ValueError):
    """The requested domain cannot be expressed (bad combination of options)."""


@dataclasses.dataclass(frozen=True)
class DomainMetadata:
    """What the agent records in a domain about its Instance."""

    uid: str
    namespace: str
    name: str
    host: str = ""
    image: str = ""
    generation: int = 0
    created: str = ""
    #: The last value of the restart annotation the agent acted on.
    restart_token: str = ""
    #: The run strategy the agent last applied (a change from Halted starts
    #: the domain).
    run_strategy: str = ""
    #: Fingerprint of the spec fields that apply at a start (user data, SSH
    #: keys, host name) as last written into the seed (kova.agents.instance.restart_fields).
    applied_spec: str = ""


@dataclasses.dataclass(frozen=True)
class DomainSpec:
    """Everything needed to write one domain's XML."""

    meta: DomainMetadata
    vcpus: int
    memory_mib: int
    disk_path: str
    console_log: str
    seed_path: str | None = None
    #: An ISO image the guest boots from (an Image of format iso): a
    #: read-only CD-ROM first in the boot order, the root disk (then blank)
    #: second, as Nova's libvirt driver does for an iso image.
    cdrom_path: str | None = None
    #: The ISO's CD-ROM was ejected (status.cdrom.ejected): the drive is
    #: there, empty (no ``<source>``), and the root disk boots first.
    cdrom_ejected: bool = False
    domain_type: DomainType = "qemu"
    arch: str = "x86_64"
    machine: str = "pc"
    firmware: Literal["bios", "uefi"] = "bios"
    #: The UEFI variable store of this domain (uefi only): libvirt copies
    #: the firmware's template there at the first start; it goes with the
    #: Instance's directory.
    nvram_path: str | None = None
    cpu_mode: CpuMode | None = None  # None: host-model on kvm, none on qemu
    cpu_model: str | None = None  # with cpu_mode custom
    disk_cache: str = "none"
    disk_format: str = "qcow2"
    #: A libvirt network name, or None.
    network: str | None = None
    #: A host bridge name (alternative to network), or None.
    bridge: str | None = None
    mac: str | None = None
    #: A libvirt nwfilter on the NIC (``<filterref>``) and its parameters.
    nwfilter: str | None = None
    nwfilter_params: tuple[tuple[str, str], ...] = ()
    #: Expose a virtio-serial channel for the QEMU guest agent.
    guest_agent: bool = True
    emulator: str | None = None
    #: "batch" or "idle" puts the vCPU threads in SCHED_BATCH / SCHED_IDLE
    #: (``<cputune><vcpusched>``), so that running guests yield the host CPUs
    #: to libvirtd, QEMU start-up and the agent.
    vcpu_scheduler: VcpuScheduler = "default"
    #: A VGA display whose VNC server listens nowhere (reached through libvirt).
    vnc: bool = True
    #: The guest's OS family (Image properties.osType): a Windows guest keeps
    #: its clock in local time and, on KVM, gets the Hyper-V enlightenments.
    os_type: Literal["linux", "windows"] = "linux"
    #: The root disk's bus (Image properties.diskBus): virtio, sata or scsi.
    disk_bus: DiskBus = "virtio"
    #: The NIC model (Image properties.nicModel): virtio, e1000 or rtl8139.
    nic_model: NicModel = "virtio"
    #: Dedicated CPUs: the host CPU of each vCPU (``<vcpupin>``), or empty.
    pinned_cpus: tuple[int, ...] = ()
    #: The host's shared CPUs (a libvirt cpuset) when some are dedicated:
    #: where a floating guest's vCPUs and a pinned guest's emulator threads
    #: run; None: anywhere.
    shared_cpuset: str | None = None

    @property
    def domain_name(self) -> str:
        return domain_name(self.meta.namespace, self.meta.name)


def domain_name(namespace: str, name: str) -> str:
    """The libvirt domain name of an Instance."""
    return f"{namespace}.{name}"


#: First octet of every MAC address Kova derives: locally administered
#: (bit 1 set), unicast (bit 0 clear); the other 40 bits come from the uid.
MAC_PREFIX = 0x0E
#: How many derivations :func:`choose_mac` tries before giving up.
MAC_ATTEMPTS = 16


def mac_for(uid: str, attempt: int = 0) -> str:
    """A stable, locally administered MAC address for an Instance:
    ``0e:`` and 40 bits of SHA-256 of its uid (and of ``attempt``, the
    number of collisions on the host that came before; see docs/security.md
    for the probability of a collision on one L2 segment)."""
    key = uid if attempt == 0 else f"{uid}#{attempt}"
    digest = hashlib.sha256(key.encode()).digest()
    return ":".join(f"{b:02x}" for b in (MAC_PREFIX, *digest[:5]))


def choose_mac(uid: str, in_use: dict[str, str]) -> str:
    """The MAC for ``uid`` given the host's MACs in use (MAC -> domain uuid):
    its own if it has one, else the first derivation no other domain uses."""
    for mac, owner in in_use.items():
        if owner == uid:
            return mac
    for attempt in range(MAC_ATTEMPTS):
        mac = mac_for(uid, attempt)
        if mac not in in_use:
            return mac
    raise DomainSpecError(f"no free MAC address for {uid} after {MAC_ATTEMPTS} attempts")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _validate(spec: DomainSpec) -> None:
    if spec.domain_type not in ("qemu", "kvm"):
        raise DomainSpecError(f"domain type must be qemu or kvm, not {spec.domain_type!r}")
    if spec.vcpus < 1:
        raise DomainSpecError("vcpus must be at least 1")
    if spec.memory_mib < 16:
        raise DomainSpecError("memory must be at least 16 MiB")
    if spec.network and spec.bridge:
        raise DomainSpecError("network and bridge are exclusive")
    if spec.cpu_mode == "custom" and not spec.cpu_model:
        raise DomainSpecError("cpu mode custom needs a cpu model")
    if spec.vcpu_scheduler not in VCPU_SCHEDULERS:
        raise DomainSpecError(
            f"vcpu scheduler must be one of {', '.join(VCPU_SCHEDULERS)}, "
            f"not {spec.vcpu_scheduler!r}")
    if spec.pinned_cpus and len(spec.pinned_cpus) != spec.vcpus:
        raise DomainSpecError(f"{len(spec.pinned_cpus)} pinned CPUs for {spec.vcpus} vCPUs")
    if len(set(spec.pinned_cpus)) != len(spec.pinned_cpus):
        raise DomainSpecError("two vCPUs pinned to one host CPU")
    if spec.nvram_path and spec.firmware != "uefi":
        raise DomainSpecError("an NVRAM file is for UEFI firmware only")
    if spec.disk_bus not in ("virtio", "sata", "scsi"):
        raise DomainSpecError(f"disk bus must be virtio, sata or scsi, not {spec.disk_bus!r}")
    if spec.nic_model not in ("virtio", "e1000", "rtl8139"):
        raise DomainSpecError(
            f"NIC model must be virtio, e1000 or rtl8139, not {spec.nic_model!r}")
    if spec.disk_format not in ("qcow2", "raw"):
        raise DomainSpecError(f"disk format must be qcow2 or raw, not {spec.disk_format!r}")
    for what in (spec.meta.namespace, spec.meta.name):
        if not what or "/" in what or "." in what:
            raise DomainSpecError(f"invalid namespace or name {what!r}")


def _cdrom_bus(machine: str, arch: str) -> tuple[str, str]:
    """(bus, target device) for the seed CD-ROM on this machine type."""
    if arch != "x86_64" and arch != "i686":
        return "scsi", "sda"  # virt machines: virtio-scsi controller added below
    if "q35" in machine:
        return "sata", "sda"
    return "ide", "hdc"


def build_domain_xml(spec: DomainSpec) -> str:
    """The libvirt domain XML for ``spec`` (a string, ready for defineXML)."""
    _validate(spec)
    dom = ET.Element("domain", {"type": spec.domain_type})
    _sub(dom, "name", spec.domain_name)
    _sub(dom, "uuid", spec.meta.uid)
    _sub(dom, "title", f"Kova instance {spec.meta.namespace}/{spec.meta.name}")
    dom.append(metadata_element(spec.meta))
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "currentMemory", str(spec.memory_mib), unit="MiB")
    vcpu_attrs = {"placement": "static"}
    if spec.shared_cpuset and not spec.pinned_cpus:
        vcpu_attrs["cpuset"] = spec.shared_cpuset
    _sub(dom, "vcpu", str(spec.vcpus), **vcpu_attrs)
    _cputune(dom, spec)
    _machine(dom, spec)
    # The agent, not libvirt, decides whether a stopped guest comes back.
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    _devices(_sub(dom, "devices"), spec)
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


def _cputune(dom: ET.Element, spec: DomainSpec) -> None:
    """Pinning (each vCPU on its dedicated CPU, the emulator threads on the
    shared ones) and the vCPU threads' scheduling class."""
    if not spec.pinned_cpus and spec.vcpu_scheduler == "default":
        return
    cputune = _sub(dom, "cputune")
    for vcpu, cpu in enumerate(spec.pinned_cpus):
        _sub(cputune, "vcpupin", vcpu=str(vcpu), cpuset=str(cpu))
    if spec.pinned_cpus and spec.shared_cpuset:
        _sub(cputune, "emulatorpin", cpuset=spec.shared_cpuset)
    if spec.vcpu_scheduler != "default":
        vcpus = "0" if spec.vcpus == 1 else f"0-{spec.vcpus - 1}"
        _sub(cputune, "vcpusched", vcpus=vcpus, scheduler=spec.vcpu_scheduler)


def _machine(dom: ET.Element, spec: DomainSpec) -> None:
    """Firmware, features, CPU model and clock."""
    os_attrs = {"firmware": "efi"} if spec.firmware == "uefi" else {}
    os_el = _sub(dom, "os", **os_attrs)
    _sub(os_el, "type", "hvm", arch=spec.arch, machine=spec.machine)
    if spec.firmware == "uefi":
        # libvirt picks the OVMF build from the firmware descriptors
        # (/usr/share/qemu/firmware); secure boot would need SMM and enrolled
        # keys, so a plain OVMF is asked for.
        fw = _sub(os_el, "firmware")
        _sub(fw, "feature", enabled="no", name="secure-boot")
        if spec.nvram_path:
            _sub(os_el, "nvram", spec.nvram_path)
    if not (spec.cdrom_path or spec.cdrom_ejected):
        # else per-device <boot order> (libvirt takes one or the other)
        _sub(os_el, "boot", dev="hd")

    features = _sub(dom, "features")
    _sub(features, "acpi")
    if spec.arch in ("x86_64", "i686"):
        _sub(features, "apic")
    else:
        _sub(features, "gic", version="3")
    windows = spec.os_type == "windows"
    if windows and spec.domain_type == "kvm":
        hyperv = _sub(features, "hyperv", mode="custom")
        _sub(hyperv, "relaxed", state="on")
        _sub(hyperv, "vapic", state="on")
        _sub(hyperv, "spinlocks", state="on", retries="8191")

    cpu_mode = spec.cpu_mode or ("host-model" if spec.domain_type == "kvm" else "none")
    if cpu_mode == "host-model":
        _sub(dom, "cpu", mode="host-model", check="partial")
    elif cpu_mode == "host-passthrough":
        _sub(dom, "cpu", mode="host-passthrough", check="none")
    elif cpu_mode == "custom":
        cpu = _sub(dom, "cpu", mode="custom", match="exact", check="partial")
        _sub(cpu, "model", spec.cpu_model, fallback="allow")

    clock = _sub(dom, "clock", offset="localtime" if windows else "utc")
    if spec.arch in ("x86_64", "i686"):
        _sub(clock, "timer", name="rtc", tickpolicy="catchup")
        _sub(clock, "timer", name="pit", tickpolicy="delay")
        _sub(clock, "timer", name="hpet", present="no")


def _devices(devices: ET.Element, spec: DomainSpec) -> None:
    """Root disk, seed CD-ROM, NIC, serial console and the virtio extras."""
    if spec.emulator:
        _sub(devices, "emulator", spec.emulator)

    cd_bus, cd_dev = _cdrom_bus(spec.machine, spec.arch)
    iso_drive = bool(spec.cdrom_path) or spec.cdrom_ejected
    if spec.disk_bus == "scsi" or ((spec.seed_path or iso_drive) and cd_bus == "scsi"):
        _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type=spec.disk_format, cache=spec.disk_cache,
         discard="unmap")
    _sub(disk, "source", file=spec.disk_path)
    root_dev = "vda" if spec.disk_bus == "virtio" else "sda"
    _sub(disk, "target", dev=root_dev, bus=spec.disk_bus)
    _sub(disk, "serial", spec.meta.uid.replace("-", "")[:20])
    if iso_drive:
        _sub(disk, "boot", order="1" if spec.cdrom_ejected else "2")

    _cdroms(devices, spec, cd_bus, cd_dev, root_dev)

    if spec.network or spec.bridge:
        if spec.network:
            nic = _sub(devices, "interface", type="network")
            _sub(nic, "source", network=spec.network)
        else:
            nic = _sub(devices, "interface", type="bridge")
            _sub(nic, "source", bridge=spec.bridge or "")
        _sub(nic, "mac", address=spec.mac or mac_for(spec.meta.uid))
        _sub(nic, "model", type=spec.nic_model)
        if spec.nwfilter:
            ref = _sub(nic, "filterref", filter=spec.nwfilter)
            for pname, pvalue in spec.nwfilter_params:
                _sub(ref, "parameter", name=pname, value=pvalue)

    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=spec.console_log, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")

    if spec.vnc:
        graphics = _sub(devices, "graphics", type="vnc")
        _sub(graphics, "listen", type="none")
        video = _sub(devices, "video")
        _sub(video, "model", type="vga")

    if spec.guest_agent:
        chan = _sub(devices, "channel", type="unix")
        _sub(chan, "target", type="virtio", name="org.qemu.guest_agent.0")

    _sub(devices, "memballoon", model="virtio")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")


def _cdroms(devices: ET.Element, spec: DomainSpec, bus: str, seed_dev: str,
            root_dev: str) -> None:
    """The seed's CD-ROM, then the ISO's: first in the boot order, or empty
    and out of it once ejected."""
    taken = {root_dev}
    if spec.seed_path:
        dev = "sdb" if seed_dev == root_dev else seed_dev
        taken.add(dev)
        _cdrom(devices, spec.seed_path, bus, dev)
    if spec.cdrom_ejected:
        _cdrom(devices, None, bus, _free_cdrom_dev(bus, taken))
    elif spec.cdrom_path:
        dev = _free_cdrom_dev(bus, taken)
        _sub(_cdrom(devices, spec.cdrom_path, bus, dev), "boot", order="1")


def _cdrom(devices: ET.Element, path: str | None, bus: str, dev: str) -> ET.Element:
    """A read-only CD-ROM holding the ISO file ``path`` (None: empty)."""
    cd = _sub(devices, "disk", type="file", device="cdrom")
    _sub(cd, "driver", name="qemu", type="raw")
    if path is not None:
        _sub(cd, "source", file=path)
    _sub(cd, "target", dev=dev, bus=bus)
    _sub(cd, "readonly")
    return cd


def _free_cdrom_dev(bus: str, taken: set[str]) -> str:
    """The first target device name on ``bus`` not in ``taken`` (IDE: the
    first channel's master, hda, before the others)."""
    names_ = ("hda", "hdb", "hdd") if bus == "ide" else tuple(f"sd{c}" for c in "abcdefgh")
    for dev in names_:
        if dev not in taken:
            return dev
    raise DomainSpecError(f"no free {bus} device for the CD-ROM")


def metadata_element(meta: DomainMetadata) -> ET.Element:
    """``<metadata><kova:instance .../></metadata>``."""
    md = ET.Element("metadata")
    md.append(instance_metadata_element(meta))
    return md


_TAGS = {"restart_token": "restartToken", "run_strategy": "runStrategy",
         "applied_spec": "appliedSpec"}


def instance_metadata_element(meta: DomainMetadata) -> ET.Element:
    """The ``<kova:instance>`` element alone (what ``virDomainSetMetadata`` takes)."""
    inst = ET.Element(_NS + "instance")
    for field in dataclasses.fields(meta):
        value = getattr(meta, field.name)
        if value in ("", None):
            continue
        tag = _TAGS.get(field.name, field.name)
        el = ET.SubElement(inst, _NS + tag)
        el.text = str(value)
    return inst


def instance_metadata_xml(meta: DomainMetadata) -> str:
    return ET.tostring(instance_metadata_element(meta), encoding="unicode")


def _meta_from_instance_element(inst: ET.Element, ns: str = _NS) -> DomainMetadata | None:
    values: dict[str, str] = {}
    for child in inst:
        if child.tag.startswith(ns):
            values[child.tag[len(ns):]] = (child.text or "").strip()
    if not values.get("uid") or not values.get("namespace") or not values.get("name"):
        return None
    try:
        generation = int(values.get("generation") or 0)
    except ValueError:
        generation = 0
    return DomainMetadata(
        uid=values["uid"],
        namespace=values["namespace"],
        name=values["name"],
        host=values.get("host", ""),
        image=values.get("image", ""),
        generation=generation,
        created=values.get("created", ""),
        restart_token=values.get("restartToken", ""),
        run_strategy=values.get("runStrategy", ""),
        applied_spec=values.get("appliedSpec", ""),
    )


def parse_domain_metadata(xml: str) -> DomainMetadata | None:
    """The Kova metadata of a domain (its full XML, or the ``<instance>``
    element alone), or None for a domain the agent did not create."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    if root.tag == _NS + "instance":
        return _meta_from_instance_element(root)
    if root.tag == "instance":  # virDomainGetMetadata's copy: no namespace
        return _meta_from_instance_element(root, ns="")
    inst = root.find(f"metadata/{_NS}instance")
    if inst is None:
        return None
    return _meta_from_instance_element(inst)


@dataclasses.dataclass(frozen=True)
class DomainDevices:
    """File paths a domain uses, read back from its XML (for cleanup)."""

    disks: tuple[str, ...]
    console_logs: tuple[str, ...]
    macs: tuple[str, ...]


def parse_domain_devices(xml: str) -> DomainDevices:
    root = ET.fromstring(xml)
    disks = tuple(
        s.get("file", "")
        for s in root.findall("devices/disk/source")
        if s.get("file")
    )
    logs = tuple(
        el.get("file") or el.get("path") or ""
        for el in root.findall("devices/serial/log") + root.findall("devices/serial/source")
        if el.get("file") or el.get("path")
    )
    macs = tuple(m.get("address", "") for m in root.findall("devices/interface/mac"))
    return DomainDevices(disks=disks, console_logs=logs, macs=macs)
