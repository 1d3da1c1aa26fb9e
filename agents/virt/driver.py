"""The libvirt driver: one connection, domain operations, lifecycle events.

Thread-safe: libvirt connections may be shared between threads (libvirt-python
releases the GIL around every call).  Lifecycle events arrive on libvirt's
default event loop, which :func:`start_event_loop` runs in a daemon thread;
the driver turns each into ``on_event(uid, event)`` -- the callback must be
quick (the agent only queues the Instance for a reconcile).

Only domains carrying Kova's metadata element are listed or touched by uid
lookups that go through :meth:`LibvirtDriver.list_domains`; anything else
defined on the host is ignored.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import libvirt

from kova.agents.virt.domain import (
    DomainMetadata,
    DomainSpecError,
    instance_metadata_element,
    parse_domain_devices,
    parse_domain_metadata,
)
from kova.crds import names
from kova.crds.names import PowerState

log = logging.getLogger("kova.agents.virt.driver")

# libvirt prints every error to stderr by default; we log what matters.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_event_loop_lock = threading.Lock()
_event_loop_thread: threading.Thread | None = None


def start_event_loop() -> None:
    """Register and run libvirt's default event loop (once per process; must
    happen before the connections that want events are opened)."""
    global _event_loop_thread
    with _event_loop_lock:
        if _event_loop_thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:  # pragma: no cover - keep the loop alive
                    log.exception("libvirt event loop iteration failed")
                    time.sleep(0.5)

        _event_loop_thread = threading.Thread(target=run, name="libvirt-events", daemon=True)
        _event_loop_thread.start()


# --------------------------------------------------------------------------
# Power state

#: libvirt state -> Instance status.powerState (Nova's mapping).
POWER_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: PowerState.NO_STATE,
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.RUNNING,  # shutting down: still running
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUTDOWN,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.SUSPENDED,
}

#: Shut-off reasons that count as a failure (RerunOnFailure restarts those).
FAILED_SHUTOFF_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED,
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED,
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED,
}

EVENT_NAMES = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "Defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "Undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "Started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "Suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "Resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "Stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "Shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "PMSuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "Crashed",
}


@dataclasses.dataclass(frozen=True)
class DomainState:
    state: int
    reason: int

    @property
    def power_state(self) -> PowerState:
        return POWER_STATES.get(self.state, PowerState.NO_STATE)

    @property
    def running(self) -> bool:
        return self.state in (
            libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_SHUTDOWN
        )

    @property
    def shutoff(self) -> bool:
        return self.state in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED)

    @property
    def failed(self) -> bool:
        """Stopped by a crash or a failure rather than a clean guest shutdown."""
        if self.state == libvirt.VIR_DOMAIN_CRASHED:
            return True
        return self.state == libvirt.VIR_DOMAIN_SHUTOFF and self.reason in FAILED_SHUTOFF_REASONS


@dataclasses.dataclass(frozen=True)
class DomainInfo:
    uuid: str
    name: str
    state: DomainState
    meta: DomainMetadata | None
    xml: str


@dataclasses.dataclass(frozen=True)
class HostInfo:
    hostname: str
    arch: str
    cpus: int
    memory_mib: int
    cpu_model: str
    cpu_vendor: str
    cpu_features: tuple[str, ...]
    hypervisor_type: str
    hypervisor_version: str
    libvirt_version: str
    #: Firmware guests can boot with here ("bios", and "uefi" when libvirt's
    #: domain capabilities offer an EFI firmware, e.g. Debian's ovmf).
    firmwares: tuple[str, ...] = ("bios",)


def _version(v: int) -> str:
    return f"{v // 1_000_000}.{(v // 1000) % 1000}.{v % 1000}"


class DriverError(Exception):
    """A libvirt operation failed; ``code`` is libvirt's error code."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


def _is_not_found(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN


class LibvirtDriver:
    """Domain operations on libvirt.

    Two connections: ``conn`` carries the lifecycle events and the quick
    queries (lookups, XML, state); ``ops_conn`` the calls that last --
    start, shutdown, destroy, reset, undefine, which take 0.3 s to seconds
    each in a burst. libvirtd serves at most ``max_client_requests`` (5 by
    default) calls of one client at once and queues the rest, so on a single
    connection a status read waited behind the starts of the other workers
    (measured: up to 2.5 s between a domain's define and its own start in a
    burst of 6). ``test:`` URIs use one connection: a custom test driver's
    state is private to each connection.
    """

    def __init__(
        self,
        uri: str,
        *,
        on_event: Callable[[str, str, int], None] | None = None,
        qemu_run_dir: str = "/run/libvirt/qemu",
    ) -> None:
        self.uri = uri
        self._on_event = on_event
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.RLock()
        self._ops: libvirt.virConnect | None = None
        self._ops_lock = threading.Lock()
        self._separate_ops = not uri.startswith("test:")
        self._callback_ids: list[int] = []
        self.qemu_run_dir = Path(qemu_run_dir)
        self.reconnects = 0

    # ------------------------------------------------------------------
    # Connection
    @staticmethod
    def _alive(conn: libvirt.virConnect | None) -> bool:
        try:
            return conn is not None and bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    @property
    def conn(self) -> libvirt.virConnect:
        with self._lock:
            if self._alive(self._conn):
                return self._conn
            if self._conn is not None:
                log.warning("libvirt connection to %s lost; reconnecting", self.uri)
                self._drop()
                self.reconnects += 1
            self._conn = self._open()
            return self._conn

    @property
    def ops_conn(self) -> libvirt.virConnect:
        """The connection for long operations (see the class docstring)."""
        if not self._separate_ops:
            return self.conn
        with self._ops_lock:
            if self._alive(self._ops):
                return self._ops
            self._drop_ops()
            try:
                self._ops = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise DriverError(f"cannot connect to {self.uri}: {exc}",
                                  exc.get_error_code()) from exc
            return self._ops

    def _drop_ops(self) -> None:
        conn, self._ops = self._ops, None
        if conn is not None:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass

    def _open(self) -> libvirt.virConnect:
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise DriverError(f"cannot connect to {self.uri}: {exc}", exc.get_error_code()) from exc
        if self._on_event is not None:
            try:
                cid = conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None
                )
                self._callback_ids = [cid]
            except libvirt.libvirtError as exc:
                log.warning("no lifecycle events from %s: %s", self.uri, exc)
            try:
                conn.registerCloseCallback(self._closed, None)
            except libvirt.libvirtError:
                pass
        log.info("connected to %s", self.uri)
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        for cid in self._callback_ids:
            try:
                conn.domainEventDeregisterAny(cid)
            except libvirt.libvirtError:
                pass
        self._callback_ids = []
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    def close(self) -> None:
        with self._lock:
            self._drop()
        with self._ops_lock:
            self._drop_ops()

    def _closed(self, _conn, reason, _opaque) -> None:
        log.warning("libvirt closed the connection (reason %s)", reason)
        if self._on_event is not None:
            # Everything may have changed: let the agent resync all domains.
            self._on_event("", "ConnectionClosed", reason)

    def _lifecycle(self, _conn, dom, event, detail, _opaque) -> None:
        try:
            uid = dom.UUIDString()
        except libvirt.libvirtError:
            return
        name = EVENT_NAMES.get(event, str(event))
        log.debug("domain %s (%s): event %s detail %s", dom.name(), uid, name, detail)
        if self._on_event is not None:
            try:
                self._on_event(uid, name, detail)
            except Exception:  # pragma: no cover
                log.exception("event callback failed")

    # ------------------------------------------------------------------
    # Lookups
    def lookup(self, uid: str) -> libvirt.virDomain | None:
        return self._find(self.conn.lookupByUUIDString, uid)

    def lookup_name(self, name: str) -> libvirt.virDomain | None:
        return self._find(self.conn.lookupByName, name)

    @staticmethod
    def _find(find: Callable[[str], libvirt.virDomain], key: str) -> libvirt.virDomain | None:
        """The domain ``find`` returns for ``key``; None when there is none."""
        try:
            return find(key)
        except libvirt.libvirtError as exc:
            if _is_not_found(exc):
                return None
            raise DriverError(f"lookup of {key} failed: {exc}", exc.get_error_code()) from exc

    def state(self, uid: str) -> DomainState | None:
        dom = self.lookup(uid)
        if dom is None:
            return None
        try:
            state, reason = dom.state()
        except libvirt.libvirtError as exc:
            if _is_not_found(exc):
                return None
            raise DriverError(f"state of {uid} failed: {exc}", exc.get_error_code()) from exc
        return DomainState(state, reason)

    def info(self, dom: libvirt.virDomain) -> DomainInfo:
        xml = dom.XMLDesc(0)
        state, reason = dom.state()
        return DomainInfo(
            uuid=dom.UUIDString(), name=dom.name(), state=DomainState(state, reason),
            meta=parse_domain_metadata(xml), xml=xml,
        )

    def get(self, uid: str) -> DomainInfo | None:
        dom = self.lookup(uid)
        if dom is None:
            return None
        try:
            return self.info(dom)
        except libvirt.libvirtError as exc:
            if _is_not_found(exc):
                return None
            raise DriverError(f"reading {uid} failed: {exc}", exc.get_error_code()) from exc

    def list_domains(self) -> list[DomainInfo]:
        """Every domain (running or only defined) that carries Kova metadata."""
        out = []
        try:
            doms = self.conn.listAllDomains(0)
        except libvirt.libvirtError as exc:
            raise DriverError(f"listing domains failed: {exc}", exc.get_error_code()) from exc
        for dom in doms:
            try:
                info = self.info(dom)
            except libvirt.libvirtError:
                continue  # vanished while we looked
            if info.meta is not None:
                out.append(info)
        return out

    # ------------------------------------------------------------------
    # Operations
    def define(self, xml: str) -> DomainInfo:
        try:
            dom = self.conn.defineXML(xml)
            return self.info(dom)
        except libvirt.libvirtError as exc:
            raise DriverError(f"defining the domain failed: {exc}", exc.get_error_code()) from exc

    def _op(self, uid: str, what: str, fn: Callable[[libvirt.virDomain], object],
            ok_codes: tuple[int, ...] = ()) -> bool:
        """Run a long operation on the domain, through ``ops_conn``."""
        try:
            dom = self.ops_conn.lookupByUUIDString(uid)
        except libvirt.libvirtError as exc:
            if _is_not_found(exc):
                return False
            raise DriverError(f"lookup of {uid} failed: {exc}", exc.get_error_code()) from exc
        try:
            fn(dom)
        except libvirt.libvirtError as exc:
            if _is_not_found(exc) or exc.get_error_code() in ok_codes:
                return False
            raise DriverError(f"{what} {uid} failed: {exc}", exc.get_error_code()) from exc
        return True

    def start(self, uid: str) -> bool:
        """Start a defined, shut-off domain; False if already running."""
        st = self.state(uid)
        if st is None:
            raise DriverError(f"domain {uid} is not defined", libvirt.VIR_ERR_NO_DOMAIN)
        if st.running:
            return False
        if st.state == libvirt.VIR_DOMAIN_PAUSED:
            return self._op(uid, "resume", lambda d: d.resume())
        return self._op(uid, "start", lambda d: d.create(), (libvirt.VIR_ERR_OPERATION_INVALID,))

    def shutdown(self, uid: str) -> bool:
        """Ask the guest to power off (ACPI); returns at once."""
        return self._op(uid, "shutdown", lambda d: d.shutdown(),
                        (libvirt.VIR_ERR_OPERATION_INVALID,))

    def destroy(self, uid: str) -> bool:
        """Pull the plug (no-op if not running)."""
        return self._op(uid, "destroy", lambda d: d.destroy(),
                        (libvirt.VIR_ERR_OPERATION_INVALID,))

    def reboot(self, uid: str) -> bool:
        return self._op(uid, "reset", lambda d: d.reset(0))

    def suspend(self, uid: str) -> bool:
        """Pause the guest's vCPUs (it stays in memory)."""
        return self._op(uid, "suspend", lambda d: d.suspend())

    def resume(self, uid: str) -> bool:
        """Let a paused guest run again."""
        return self._op(uid, "resume", lambda d: d.resume())

    def stop(self, uid: str, timeout: float = 60.0, poll: float = 0.25) -> bool:
        """Graceful shutdown, then destroy after ``timeout`` seconds.  The
        ACPI request is repeated every few seconds (a guest whose acpid is not
        up yet loses the first press).  Returns True if it was running."""
        st = self.state(uid)
        if st is None or not st.running:
            return False
        deadline = time.monotonic() + timeout
        next_press = 0.0
        while time.monotonic() < deadline:
            st = self.state(uid)
            if st is None or not st.running:
                return True
            if time.monotonic() >= next_press:
                self.shutdown(uid)
                next_press = time.monotonic() + 3.0
            time.sleep(poll)
        log.warning("domain %s ignored the shutdown request for %.0fs: destroying", uid, timeout)
        self.destroy(uid)
        return True

    def undefine(self, uid: str) -> bool:
        """Remove the definition (destroying the domain first)."""
        self.destroy(uid)
        flags = (
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        )

        def undef(d: libvirt.virDomain) -> None:
            try:
                d.undefineFlags(flags)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() in (
                    libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG,
                    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
                ):
                    d.undefine()
                elif (exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID
                      and not d.isPersistent()):
                    # A transient domain has no definition; destroying it
                    # removes it.
                    if d.isActive():
                        d.destroy()
                else:
                    raise

        return self._op(uid, "undefine", undef)

    def set_metadata(self, uid: str, meta: DomainMetadata) -> bool:
        """Replace the Kova metadata element of a domain (live and config)."""
        el = instance_metadata_element(meta)
        # virDomainSetMetadata wants the element without its namespace.
        plain = ET.Element("instance")
        for child in el:
            sub = ET.SubElement(plain, child.tag.split("}", 1)[-1])
            sub.text = child.text
        xml = ET.tostring(plain, encoding="unicode")

        def setmd(d: libvirt.virDomain) -> None:
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
            if d.isActive():
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            d.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml,
                          names.DOMAIN_XMLNS_PREFIX, names.DOMAIN_XMLNS, flags)

        return self._op(uid, "set metadata of", setmd)

    # ------------------------------------------------------------------
    # Observations
    def addresses(self, uid: str) -> list[dict[str, str]]:
        """IP addresses from the network's DHCP leases, else the guest agent."""
        dom = self.lookup(uid)
        if dom is None:
            return []
        for source in (
            libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
            libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
        ):
            try:
                ifaces = dom.interfaceAddresses(source, 0)
            except libvirt.libvirtError:
                continue
            out = _guest_addresses(ifaces or {})
            if out:
                return out
        return []

    def qemu_pid(self, name: str) -> int | None:
        """The QEMU process id of a running domain (qemu:///system only)."""
        try:
            return int((self.qemu_run_dir / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def host_info(self, virttype: str | None = None, machine: str | None = None) -> HostInfo:
        """The host's capacity, CPU, hypervisor and the firmware available to
        guests of ``virttype`` (qemu or kvm) on ``machine``."""
        conn = self.conn
        arch, memory_mib, cpus = "x86_64", 0, 0
        try:
            info = conn.getInfo()
            arch, memory_mib, cpus = info[0], int(info[1]), int(info[2])
        except libvirt.libvirtError as exc:
            log.warning("getInfo failed: %s", exc)
        model, vendor, features = _host_cpu(conn)
        try:
            hv_type = conn.getType()
        except libvirt.libvirtError:
            hv_type = ""
        try:
            hv_version = _version(conn.getVersion())
        except libvirt.libvirtError:
            hv_version = ""
        try:
            hostname = conn.getHostname()
        except libvirt.libvirtError:
            hostname = os.uname().nodename
        return HostInfo(
            hostname=hostname, arch=arch, cpus=cpus, memory_mib=memory_mib,
            cpu_model=model, cpu_vendor=vendor,
            cpu_features=tuple(sorted({f for f in features if f})),
            hypervisor_type=hv_type, hypervisor_version=hv_version,
            libvirt_version=_version(conn.getLibVersion()),
            firmwares=guest_firmwares(conn, arch, virttype, machine),
        )


def domain_nics(conn: libvirt.virConnect) -> list[tuple[str, str, str]]:
    """(MAC address, domain UUID, Kova namespace or "") of every NIC of
    every domain on the host (Kova's or not)."""
    out: list[tuple[str, str, str]] = []
    try:
        doms = conn.listAllDomains(0)
    except libvirt.libvirtError as exc:
        raise DriverError(f"listing domains failed: {exc}", exc.get_error_code()) from exc
    for dom in doms:
        try:
            uuid, xml = dom.UUIDString(), dom.XMLDesc(0)
        except libvirt.libvirtError:
            continue  # vanished while we looked
        meta = parse_domain_metadata(xml)
        for mac in parse_domain_devices(xml).macs:
            out.append((mac.lower(), uuid, meta.namespace if meta else ""))
    return out


def guest_stats(driver: LibvirtDriver) -> list[tuple[DomainMetadata, dict]]:
    """Every running Kova domain's metadata and libvirt statistics (CPU,
    balloon, vCPUs, interfaces, block devices) in one
    ``virConnectGetAllDomainStats`` call."""
    wanted = (libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
              | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_INTERFACE
              | libvirt.VIR_DOMAIN_STATS_BLOCK)
    try:
        records = driver.conn.getAllDomainStats(
            wanted, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
    except libvirt.libvirtError as exc:
        raise DriverError(f"domain statistics failed: {exc}", exc.get_error_code()) from exc
    out = []
    for dom, stats in records:
        try:
            element = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, names.DOMAIN_XMLNS)
        except libvirt.libvirtError:
            continue  # no Kova metadata, or gone meanwhile
        meta = parse_domain_metadata(element)
        if meta is not None:
            out.append((meta, stats))
    return out


def _guest_addresses(ifaces: dict) -> list[dict[str, str]]:
    """libvirt's interfaceAddresses() answer as status.addresses entries
    (loopback and link-local addresses left out)."""
    out = []
    for ifname, data in sorted(ifaces.items()):
        if ifname == "lo":
            continue
        for addr in data.get("addrs") or []:
            ip = addr.get("addr")
            if not ip or ip.startswith("127.") or ip == "::1" or ip.startswith("fe80:"):
                continue
            family = "IPv6" if addr.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV6 else "IPv4"
            entry = {"address": ip, "family": family, "interface": ifname}
            if data.get("hwaddr"):
                entry["mac"] = data["hwaddr"].lower()
            out.append(entry)
    return out


def guest_firmwares(conn: libvirt.virConnect, arch: str, virttype: str | None,
                    machine: str | None) -> tuple[str, ...]:
    """("bios",), plus "uefi" when libvirt's domain capabilities
    (``virConnectGetDomainCapabilities``) list the ``efi`` firmware or an
    EFI loader (a drivers that cannot tell, like test://, gives BIOS only)."""
    try:
        caps = ET.fromstring(conn.getDomainCapabilities(None, arch, machine, virttype, 0))
    except (libvirt.libvirtError, ET.ParseError) as exc:
        log.info("no domain capabilities (%s): BIOS firmware only", exc)
        return ("bios",)
    values = [v.text or "" for v in caps.findall("os/enum[@name='firmware']/value")]
    loaders = [v.text or "" for v in caps.findall("os/loader/value")]
    efi = "efi" in values or any("OVMF" in p or "edk2" in p for p in loaders)
    return ("bios", "uefi") if efi else ("bios",)


def _host_cpu(conn: libvirt.virConnect) -> tuple[str, str, list[str]]:
    """(model, vendor, feature names) of the host CPU, the features expanded
    by libvirt's baseline where it can."""
    model, vendor, features = "", "", []
    try:
        caps = ET.fromstring(conn.getCapabilities())
        cpu = caps.find("host/cpu")
        if cpu is None:
            return model, vendor, features
        model = (cpu.findtext("model") or "").strip()
        vendor = (cpu.findtext("vendor") or "").strip()
        features = [f.get("name", "") for f in cpu.findall("feature")]
        cpu_xml = ET.tostring(cpu, encoding="unicode")
        try:
            expanded = conn.baselineCPU(
                [cpu_xml], libvirt.VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES
            )
            features = [
                f.get("name", "") for f in ET.fromstring(expanded).findall("feature")
                if f.get("policy") in (None, "require")
            ]
        except libvirt.libvirtError:
            pass
    except (libvirt.libvirtError, ET.ParseError) as exc:
        log.warning("reading host capabilities failed: %s", exc)
    return model, vendor, features


__all__ = [
    "DomainInfo",
    "DomainSpecError",
    "DomainState",
    "DriverError",
    "HostInfo",
    "LibvirtDriver",
    "POWER_STATES",
    "start_event_loop",
]
