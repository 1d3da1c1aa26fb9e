"""The operator's picture of every Host: heartbeat (alive or not), fencing,
and the :class:`~kova.operator.scheduler.filters.HostInfo` the scheduler's
filters read -- by name and by resource provider uuid.

All per-Host memory is here and dropped by :meth:`HostView.forget` when the
Host goes away (and the Node's fencing taint by :meth:`HostView.node_changed`
when the Node goes away)."""

from __future__ import annotations

import datetime as dt
import json
import time

from kova.crds import names
from kova.crds import objects as ob
from kova.operator.informer import Informer
from kova.operator.scheduler.filters import HostInfo


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def lease_duration(lease: dict | None) -> float:
    """A Lease's duration (the agent's default when it does not say)."""
    spec = ob.spec(lease or {})
    return float(spec.get("leaseDurationSeconds") or names.LEASE_DURATION_SECONDS)


def lease_renewed(lease: dict | None) -> float | None:
    """When the Lease was last renewed (or acquired), or None."""
    if not lease:
        return None
    spec = ob.spec(lease)
    return parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))


def lease_fresh(lease: dict | None, now: float, grace: float = 0.0) -> bool:
    """The Lease was renewed (or acquired) less than its duration (+ grace) ago."""
    renewed = lease_renewed(lease)
    return renewed is not None and now <= renewed + lease_duration(lease) + grace


def host_info(body: dict, alive: bool, fenced: bool = False) -> HostInfo:
    spec, status = ob.spec(body), ob.status(body)
    return HostInfo(
        name=body["metadata"]["name"],
        rp_uuid=status.get("resourceProviderUUID"),
        enabled=spec.get("enabled", True) and not spec.get("drain"),  # a drain takes none
        maintenance=bool((spec.get("maintenance") or {}).get("enabled")),
        zone=spec.get("availabilityZone"),
        alive=alive,
        fenced=fenced,
    )


def node_out_of_service(node: dict) -> bool:
    """The Node carries the out-of-service taint (any effect)."""
    return any(t.get("key") == names.TAINT_OUT_OF_SERVICE
               for t in (ob.spec(node).get("taints") or []))


def host_signature(body: dict) -> tuple:
    """What of a Host matters to scheduling and to its provider: enabled,
    drain, maintenance, zone, provider, capacity settings (the agent re-applies the
    inventory, and a pending Instance may fit now), fenced (the last item)."""
    spec, status = ob.spec(body), ob.status(body)
    return (spec.get("enabled", True) and not spec.get("drain"),
            json.dumps(spec.get("maintenance"), sort_keys=True),
            spec.get("availabilityZone"), status.get("resourceProviderUUID"),
            json.dumps(spec.get("allocationRatios"), sort_keys=True),
            json.dumps(spec.get("reserved"), sort_keys=True),
            bool(spec.get("fenced")))


class HostView:
    def __init__(self, informer: Informer, heartbeat_grace: float = 0.0) -> None:
        self.informer = informer
        self.heartbeat_grace = heartbeat_grace
        #: Host name -> its heartbeat Lease (as last watched).
        self.leases: dict[str, dict] = {}
        #: Host name -> heartbeat fresh (the host monitor's Up/Down).
        self.alive: dict[str, bool] = {}
        #: Node name -> tainted node.kubernetes.io/out-of-service.
        self.node_oos: dict[str, bool] = {}
        self.signatures: dict[str, tuple] = {}
        self._infos: dict[str, tuple] = {}
        #: Bumped whenever a Host's scheduling view changes.
        self.version = 0
        #: Resource provider uuid -> Host name, for verified providers only.
        self._rp_names: dict[str, str] = {}
        #: Host name -> the provider of its status that Placement confirmed
        #: is its own (a root provider named after the Host).  The scheduler
        #: sees a Host's provider only once verified: an agent-written
        #: status.resourceProviderUUID naming another host's provider gives
        #: the Host none.
        self.verified: dict[str, str] = {}

    def changed(self) -> None:
        self.version += 1

    def forget(self, name: str) -> None:
        """Host ``name`` was deleted."""
        old = self.signatures.pop(name, None)
        if old is not None and self._rp_names.get(old[3]) == name:
            del self._rp_names[old[3]]
        self.verified.pop(name, None)
        self._infos.pop(name, None)
        self.alive.pop(name, None)
        self.changed()

    def sizes(self) -> dict[str, int]:
        return {"alive": len(self.alive), "node_oos": len(self.node_oos),
                "signatures": len(self.signatures), "infos": len(self._infos)}

    # ------------------------------------------------------------ changes
    def spec_changed(self, name: str, body: dict) -> tuple[bool, bool]:
        """Note the Host as watched: (its signature changed, its fencing
        flipped)."""
        sig = host_signature(body)
        old = self.signatures.get(name)
        if old == sig:
            return False, False
        self.signatures[name] = sig
        if old is not None and old[3] != sig[3] and self._rp_names.get(old[3]) == name:
            del self._rp_names[old[3]]
        if sig[3] and self.verified.get(name) == sig[3]:
            self._rp_names[sig[3]] = name
        self.changed()
        return True, (old[-1] if old is not None else False) != sig[-1]

    def node_changed(self, name: str, node: dict, deleted: bool) -> bool:
        """Note the Node as watched: True when its out-of-service taint was
        added or removed."""
        oos = not deleted and node_out_of_service(node)
        was = self.node_oos.get(name, False)
        if oos:
            self.node_oos[name] = True
        else:
            self.node_oos.pop(name, None)
        if was == oos:
            return False
        self.changed()
        return True

    def provider_checked(self, name: str, rp: str, owned: bool) -> bool:
        """Placement said whether ``rp`` (the Host's status) is host
        ``name``'s own provider.  True when that changed what the scheduler
        sees."""
        if owned == (self.verified.get(name) == rp):
            return False
        if owned:
            self.verified[name] = rp
            self._rp_names[rp] = name
        else:
            self.verified.pop(name, None)
            if self._rp_names.get(rp) == name:
                del self._rp_names[rp]
        self._infos.pop(name, None)
        self.changed()
        return True

    # ------------------------------------------------------------ reads
    def fence_reason(self, name: str, body: dict | None = None) -> str | None:
        """Why host ``name`` is fenced (a condition reason), or None."""
        body = body if body is not None else self.informer.host(name)
        if body is not None and ob.spec(body).get("fenced"):
            return names.HOST_REASON_FENCED_SPEC
        if self.node_oos.get(name):
            return names.HOST_REASON_FENCED_NODE
        return None

    def is_down(self, name: str) -> bool:
        """The host's Lease expired (the host monitor's Down, not merely
        'no Lease yet')."""
        return self.alive.get(name) is False and name in self.leases

    def host_by_name(self, name: str) -> HostInfo | None:
        body = self.informer.host(name)
        if body is None:
            return None
        alive = self.alive.get(name)
        if alive is None:
            alive = lease_fresh(self.leases.get(name), time.time(), self.heartbeat_grace)
        fenced = self.fence_reason(name, body) is not None
        cached = self._infos.get(name)
        if (cached is not None and cached[0] is body and cached[1] == alive
                and cached[2] == fenced):
            return cached[3]
        info = host_info(body, alive, fenced)
        if info.rp_uuid and self.verified.get(name) != info.rp_uuid:
            info.rp_uuid = None  # not (yet) confirmed as its own in Placement
        self._infos[name] = (body, alive, fenced, info)
        return info

    def host_by_rp(self, rp: str) -> HostInfo | None:
        """Provider uuid -> HostInfo, through the provider -> Host map kept
        as Hosts are watched (O(1), nothing rebuilt when one Host changes)."""
        name = self._rp_names.get(rp)
        if name is None:
            return None
        info = self.host_by_name(name)
        return info if info is not None and info.rp_uuid == rp else None
