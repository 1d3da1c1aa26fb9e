"""The host's registration: the cluster-scoped ``Host`` named after it (created
when missing), and with Placement its resource provider (named after the host;
a new one gets the uuid5 of the host name), inventory (VCPU, MEMORY_MB,
DISK_GB with the Host spec's allocation ratios and reserved amounts; PCPU for
the CPUs of ``spec.cpuDedicatedSet``, which VCPU then leaves out; and the
custom resource classes of ``spec.extraResources``, created in Placement
when missing) and
traits (CPU flags, architecture, the driver's ``COMPUTE_*`` capabilities and
the Host spec's ``CUSTOM_*`` traits).  The Host status carries the capacity,
the hypervisor, the traits, the provider, Placement's usages, the number
of Instances and, when the agent serves it, the stream endpoint
(``streamEndpoint``: where Kova's API component reaches consoles, VNC and
power actions).

``COMPUTE_STATUS_DISABLED`` and the availability-zone aggregates are the
operator's: the agent keeps the trait as it finds it and never touches
aggregates.  Allocations are the operator's too.

The agent's conditions on the Host (``HypervisorReachable``,
``PlacementRegistered``: :mod:`kova.agents.host_health`) are probed by
:meth:`Registration.check` every ``--host-check-seconds`` and written with
every Host status; each failure gets one Warning Event.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

from kova import sealing
from kova.agents.context import AgentContext, GiB
from kova.agents.host_health import HostHealth
from kova.agents.instance.report import Reporter
from kova.agents.virt import cpus
from kova.agents.virt import traits as host_traits
from kova.agents.virt.driver import HostInfo
from kova.agents.watch import InstanceWatch
from kova.conditions import now_rfc3339
from kova.crds import names
from kova.crds import objects as ob
from kova.kube import KubeError, custom_path, host_path
from kova.placement_client import (
    PLACEMENT_FAILURES,
    Conflict,
    PlacementError,
    SyncPlacementClient,
    placement_unreachable,
)

if TYPE_CHECKING:  # pragma: no cover
    from kova.agents.stream.server import StreamServer

log = logging.getLogger("kova.agents.registration")


class Registration:
    def __init__(self, ctx: AgentContext, watch: InstanceWatch, report: Reporter,
                 placement: SyncPlacementClient | None,
                 stream: StreamServer | None = None) -> None:
        self.ctx = ctx
        self.watch = watch
        self.report = report
        self.placement = placement
        self.stream = stream
        #: The resource provider's uuid once registered.
        self.rp_uuid: str | None = None
        #: The Host spec last registered (a change re-applies the inventory).
        self._spec_seen: str | None = None
        self.health = HostHealth(ctx.cfg.libvirt_uri,
                                 ctx.cfg.placement_url if placement is not None else None)
        #: The agent's Host status fields as last written: every write sends
        #: them all (server-side apply drops what an apply leaves out).
        self._written: dict[str, Any] = {}
        #: A custom class removed from the spec was kept because it is in use.
        self._kept_in_use = False

    def get_host(self) -> dict:
        """This host's Host object, created (spec defaults from the CRD) when missing."""
        kube = self.ctx.kube
        found = kube.get_or_none(host_path(self.ctx.host))
        if found is not None:
            return found
        body = {
            "apiVersion": names.API_VERSION,
            "kind": "Host",
            "metadata": {"name": self.ctx.host},
            "spec": {},
        }
        try:
            return kube.create(custom_path(names.HOSTS), body)
        except KubeError as exc:
            if exc.status != 409:
                raise
            return kube.get(host_path(self.ctx.host))

    def register(self) -> dict:
        """Create/update the Host, its resource provider, inventory and
        traits, and the Host status.  Returns the status written.  A
        Placement failure is recorded in the PlacementRegistered condition
        (the registration is tried again at the next check); a libvirt
        failure in HypervisorReachable, and raised."""
        cfg = self.ctx.cfg
        host = self.get_host()
        try:
            info = self.ctx.driver.host_info(cfg.domain_type, cfg.machine)
        except Exception as exc:
            self.health.libvirt_failed(exc)
            self.write({}, host)
            raise
        self.health.libvirt_ok()
        vfs = os.statvfs(self.ctx.instance_dir)
        disk_gib = max(1, vfs.f_blocks * vfs.f_frsize // GiB)
        spec = ob.spec(host)
        self.ctx.cpus = self._cpu_layout(info, spec)
        self.ctx.arch = info.arch
        wanted_traits = host_traits.host_traits(
            info, domain_type=cfg.domain_type, custom=spec.get("traits"))
        body = self._status(info, disk_gib)
        if self.placement is not None:
            try:
                body.update(self._provider(info, disk_gib, spec, ob.status(host), wanted_traits))
            except PLACEMENT_FAILURES as exc:
                self.rp_uuid = None  # registered again at the next check
                self.health.placement_failed(exc)
                # Placement starting beside the agent (a fresh install) is
                # one warning per check, without a traceback
                why = ("Placement is not reachable yet" if placement_unreachable(exc)
                       else "Placement refused it")
                log.warning("registering host %s with Placement failed: %s (%s); retrying at "
                            "the next check", self.ctx.host, why, str(exc) or type(exc).__name__)
            else:
                self.health.placement_ok(body["resourceProviderUUID"])
        else:
            body["traits"] = wanted_traits
        self.write(body, host)
        self._spec_seen = json.dumps(spec, sort_keys=True)
        log.info("registered host %s: %d vCPU, %d MiB, %d GiB, provider %s",
                 self.ctx.host, info.cpus, info.memory_mib, disk_gib, self.rp_uuid)
        return body

    def write(self, body: dict[str, Any], host: dict | None = None) -> None:
        """Apply ``body`` over the agent's Host status fields last written,
        with the agent's conditions; post a Warning Event for each new
        failure among them."""
        self._written.update(body)
        host = host if host is not None else self.get_host()
        status = dict(self._written)
        if self.health.states:
            status["conditions"] = self.health.conditions(host)
        self.report.host_status(status)
        self.health.dirty = False
        for reason, message in self.health.new_warnings():
            log.warning("host %s: %s: %s", self.ctx.host, reason, message)
            self.report.event(host, "Warning", reason, message)

    def _cpu_layout(self, info: HostInfo, spec: dict) -> cpus.CpuLayout:
        """The Host's cpuDedicatedSet over this host's CPUs (CPUs it does not
        have are left out, with a warning)."""
        try:
            found = cpus.layout(info.cpus, spec.get("cpuDedicatedSet"))
        except ValueError as exc:
            log.warning("Host %s spec.cpuDedicatedSet ignored: %s", self.ctx.host, exc)
            return cpus.layout(info.cpus, None)
        if found.missing:
            log.warning("Host %s spec.cpuDedicatedSet names CPU(s) %s the host does not "
                        "have (it has %d): left out", self.ctx.host,
                        cpus.format_cpuset(found.missing), info.cpus)
        return found

    def _status(self, info: HostInfo, disk_gib: int) -> dict[str, Any]:
        return {
            "capacity": {"vcpus": info.cpus, "memoryMiB": info.memory_mib, "diskGiB": disk_gib},
            "hypervisor": {
                "type": "KVM" if self.ctx.cfg.domain_type == "kvm" else "QEMU",
                "version": info.hypervisor_version,
                "libvirtVersion": info.libvirt_version,
                "hostname": info.hostname[:253],
                "cpuArch": info.arch,
                "cpuModel": info.cpu_model,
            },
            "instanceCount": self.watch.count(),
            "lastHeartbeatTime": now_rfc3339(),
            "userDataKey": sealing.public_text(self.ctx.user_data_key),
            **self._stream_status(),
        }

    def _stream_status(self) -> dict[str, Any]:
        return self.stream.host_status() if self.stream is not None else {}

    def _provider(self, info: HostInfo, disk_gib: int, spec: dict, hstatus: dict,
                  wanted_traits: list[str]) -> dict[str, Any]:
        """The resource provider, its inventory and traits; the Host status
        fields they give."""
        assert self.placement is not None
        layout = self.ctx.cpus
        rp = self.placement.ensure_provider(
            self.ctx.host, hstatus.get("resourceProviderUUID") or names.provider_uuid(self.ctx.host)
        )
        self.rp_uuid = rp["uuid"]
        inv = host_traits.inventory(
            vcpus=info.cpus, memory_mib=info.memory_mib, disk_gib=disk_gib,
            ratios=spec.get("allocationRatios"), reserved=spec.get("reserved"),
            extra=spec.get("extraResources"), pcpus=len(layout.dedicated),
        )
        for rc in inv:
            if rc.startswith("CUSTOM_"):
                self.placement.ensure_resource_class(rc)
        self._write_inventory(inv)
        return {
            "traits": self.placement.set_traits(self.rp_uuid, wanted_traits,
                                                keep=(names.TRAIT_DISABLED,)),
            "resourceProviderUUID": self.rp_uuid,
            "allocated": self.allocated(),
        }

    def _write_inventory(self, inv: dict[str, dict]) -> None:
        """Replace the provider's inventory with ``inv``; a custom class that
        Instances still use (Placement refuses its removal) is kept as it is
        until they are gone, the rest is written."""
        assert self.placement is not None and self.rp_uuid is not None
        self._kept_in_use = False
        try:
            self.placement.set_inventories(self.rp_uuid, inv)
            return
        except Conflict as exc:
            if exc.code != "placement.inventory.inuse":
                raise
        current = (self.placement.get_inventories(self.rp_uuid).get("inventories") or {})
        kept = {rc: v for rc, v in current.items() if rc.startswith("CUSTOM_") and rc not in inv}
        log.warning("Host %s: custom resource(s) %s removed from spec.extraResources are still "
                    "allocated to Instances: kept until they are gone", self.ctx.host,
                    ", ".join(sorted(kept)))
        self.placement.set_inventories(self.rp_uuid, {**inv, **kept})
        self._kept_in_use = True  # tried again at every sync

    def allocated(self) -> dict[str, int]:
        """What Placement has allocated on this host's provider."""
        if self.placement is None or self.rp_uuid is None:
            return {}
        u = self.placement.usages(self.rp_uuid)
        return {
            "vcpus": int(u.get("VCPU", 0)),
            "memoryMiB": int(u.get("MEMORY_MB", 0)),
            "diskGiB": int(u.get("DISK_GB", 0)),
        }

    def sync(self) -> None:
        """Register again when the Host spec changed (or the provider is not
        registered yet); else refresh the instance count, Placement's usages
        and the heartbeat time of the Host status."""
        host = self.get_host()
        spec_now = json.dumps(ob.spec(host), sort_keys=True)
        if (spec_now != self._spec_seen or self._kept_in_use
                or self.rp_uuid is None and self.placement):
            self.register()
            return
        body: dict[str, Any] = {
            "instanceCount": self.watch.count(),
            "lastHeartbeatTime": now_rfc3339(),
            **self._stream_status(),
        }
        if self.rp_uuid:
            allocated = self._placement_probe()
            if allocated is not None:
                body["allocated"] = allocated
            body["resourceProviderUUID"] = self.rp_uuid
        self.write(body, host)

    def _placement_probe(self) -> dict[str, int] | None:
        """Placement's usages of this host's provider (None when Placement
        fails: PlacementRegistered says why)."""
        try:
            allocated = self.allocated()
        except PLACEMENT_FAILURES as exc:
            self.health.placement_failed(exc)
            if isinstance(exc, PlacementError) and exc.status == 404:
                # the provider is gone (deleted, or Placement's database
                # restored from before it existed): register again at the
                # next check, with the same uuid
                log.warning("host %s: resource provider %s is gone from Placement; "
                            "registering it again", self.ctx.host, self.rp_uuid)
                self.rp_uuid = None
            return None
        assert self.rp_uuid is not None
        self.health.placement_ok(self.rp_uuid)
        return allocated

    def check(self) -> None:
        """Every ``--host-check-seconds``: is libvirt reachable; while
        Placement fails, is it back (a failed registration is tried again).
        The Host status is written when a condition changed.  Placement is
        not asked while it works: a new failure shows at the next Host sync
        (every ``--resync-seconds`` and after Instance changes)."""
        try:
            self.ctx.driver.conn.getLibVersion()
        except Exception as exc:  # noqa: BLE001 - any failure to reach libvirtd
            self.health.libvirt_failed(exc)
        else:
            self.health.libvirt_ok()
        placement_down = self.health.failing(names.HOST_COND_PLACEMENT)
        if self.placement is not None and (self.rp_uuid is None or placement_down):
            self.sync()
        elif self.health.dirty:
            self.write({})
