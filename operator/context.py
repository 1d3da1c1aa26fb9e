"""What the operator's parts share, spelled out: the clients, the informer's
views, the ledger, the hosts' state, the work queue, the Event recorder, and
whether this replica is the active one.  Built once by :mod:`.app`; every
controller gets the same :class:`Context`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from dataclasses import dataclass, field

from kova.kube import Kube
from kova.operator import metrics
from kova.operator.host.view import HostView
from kova.operator.informer import Informer
from kova.operator.ledger import Ledger
from kova.operator.membership import Membership, share_key
from kova.operator.recorder import EventRecorder
from kova.operator.scheduler.weighers import BuildFailures
from kova.operator.settings import Settings
from kova.placement_client import PlacementClient
from kova.workqueue import AsyncWorkQueue

LOG = logging.getLogger("kova.operator")

#: Seconds a retrigger of the waiting Instances waits for more of the same.
RETRIGGER_DELAY = 0.2


@dataclass
class Context:
    settings: Settings
    kube: Kube
    placement: PlacementClient
    informer: Informer
    ledger: Ledger
    hosts: HostView
    queue: AsyncWorkQueue
    recorder: EventRecorder
    failures: BuildFailures
    #: This replica acts (leader election, see :mod:`.leadership`).
    leader: bool = True
    #: The replicas sharing the Instances (``--share-instances``), or None:
    #: the active replica acts on all of them.
    members: Membership | None = None
    #: A retrigger of the waiting Instances is due (see retrigger_pending).
    _retrigger: asyncio.TimerHandle | None = field(default=None, repr=False)

    def emit(self, obj: dict, type_: str, reason: str, message: str) -> None:
        self.recorder.emit(obj, type_, reason, message)

    # ------------------------------------------------------------ who acts
    def acts_on(self, key: tuple) -> bool:
        """This replica reconciles work-queue ``key``: with shared Instances,
        an Instance it owns (one that is gone has nothing left to share),
        a Host as every replica (its scheduler needs the Host's provider
        verified; only the leader writes), anything else only as the leader."""
        if self.members is None or key[0] not in ("inst", "host"):
            return self.leader
        if key[0] == "host":
            return True
        body = self.informer.instance(key[1], key[2])
        return body is None or self.members.owns(share_key(body))

    def owned_instances(self) -> int:
        """How many Instances this replica owns (for a gauge)."""
        if self.members is None:
            return len(self.informer.instance_keys()) if self.leader else 0
        return sum(1 for _, body in self.informer.instances()
                   if self.members.owns(share_key(body)))

    # ------------------------------------------------------------ the queue
    def enqueue(self, key: Hashable) -> None:
        self.queue.add(key)
        metrics.QUEUE_DEPTH.set(len(self.queue))

    def retry_later(self, key: Hashable) -> float:
        """Queue ``key`` again after its back-off delay (returned)."""
        delay = self.ledger.backoff(key, self.settings.backoff_base, self.settings.backoff_max)
        self.queue.add_after(key, delay)
        return delay

    def retrigger_pending(self) -> None:
        """Something an Instance may be waiting for appeared or changed (a
        host, a Flavor, ...): look at every waiting Instance again, soon.
        Coalesced: ten thousand hosts registering within a second are one
        pass over the waiting Instances, not ten thousand."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.retrigger_now()
            return
        if self._retrigger is None:
            self._retrigger = loop.call_later(RETRIGGER_DELAY, self.retrigger_now)

    def retrigger_now(self) -> None:
        if self._retrigger is not None:
            self._retrigger.cancel()
            self._retrigger = None
        for key in list(self.ledger.pending):
            self.ledger.reset_backoff(key)
            self.enqueue(key)

    def enqueue_host_instances(self, host: str) -> None:
        """Queue every Instance recorded on ``host`` (its state changed), from
        the informer's index by host."""
        for ns, name in self.informer.instances_on(host):
            self.enqueue(("inst", ns, name))

    def enqueue_instances(self) -> None:
        """Queue every Instance (the replicas sharing them changed)."""
        for ns, name in self.informer.instance_keys():
            self.enqueue(("inst", ns, name))

    def enqueue_all(self) -> None:
        """Queue every Instance and every Host (a new term as the active
        replica)."""
        for ns, name in self.informer.instance_keys():
            self.enqueue(("inst", ns, name))
        for name in self.informer.host_names():
            self.enqueue(("host", name))
            self.enqueue(("hstate", name))
