"""Several active replicas: who is live, who owns which Instance, who runs the
singletons.

With ``--share-instances`` every operator replica schedules, as Nova runs
several ``nova-scheduler`` processes.  Each replica holds one
``coordination.k8s.io`` Lease (labelled :data:`MEMBER_LABEL` = the peering
name) in the member namespace and renews it every third of
``--member-lease-seconds``; the live members are the Leases renewed within
their duration.  Each replica lists them at each renewal, and:

* an Instance belongs to one live member, chosen by rendezvous hashing of its
  :func:`share_key` (its uid, or its server group: a group's members are
  placed by one replica, under one lock, so that each sees where the others
  went).  When a member appears or its Lease expires (or is deleted by a
  replica that stops), only the Instances of the member that came or went move;
  every replica looks at every Instance again (``on_change``), and the new
  owners take over the Instances they now own.
* the oldest live member (earliest ``acquireTime``) is the leader: it alone
  runs the host monitor's status writes, the provider syncs of Hosts, the
  server-group status and the audit.

A replica that cannot renew its Lease for a whole duration owns nothing and
leads nothing until it can again: the others have taken over by then.  Two
replicas that briefly disagree (one saw a member come or go, the other not
yet) may both act on an Instance: harmless, because a claim in Placement is
keyed by the Instance uid (the loser of the race adopts the winner's claim).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Iterable

from kova.conditions import now_rfc3339
from kova.crds import objects as ob
from kova.kube import Kube, KubeError, lease_path
from kova.operator import metrics
from kova.operator.host.view import parse_time

LOG = logging.getLogger("kova.operator")

#: renewTime of a Lease given up by a replica that stopped.
RELEASED = "1970-01-01T00:00:00.000000Z"

#: Label of the member Leases; its value is the peering name (the group).
MEMBER_LABEL = "kova.dev/operator-members"


def member_name(group: str, identity: str) -> str:
    """The member Lease's name: ``<group>-<identity>`` as a DNS subdomain."""
    clean = re.sub(r"[^a-z0-9.-]+", "-", f"{group}-{identity}".lower()).strip("-.")
    return clean[:253].rstrip("-.") or group


def share_key(body: dict) -> str:
    """What an Instance is shared by: its server group (``ns/group``) when it
    names one, else its uid."""
    group = ob.ref_name(body, "serverGroupRef")
    if group:
        return f"{ob.meta(body).get('namespace')}/servergroup/{group}"
    return ob.uid(body) or f"{ob.meta(body).get('namespace')}/{ob.meta(body).get('name')}"


def _score(member: str, key: str) -> int:
    digest = hashlib.blake2b(f"{member}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner_of(key: str, members: Iterable[str]) -> str | None:
    """The member that owns ``key``: the highest rendezvous score (a member
    that goes away moves only its own keys, each to the next best)."""
    best, best_score = None, -1
    for m in members:
        score = _score(m, key)
        if score > best_score or (score == best_score and best is not None and m < best):
            best, best_score = m, score
    return best


def live_members(leases: Iterable[dict], now: float) -> list[str]:
    """The names of the Leases renewed within their duration, oldest
    (``acquireTime``) first."""
    live = []
    for lease in leases:
        spec = ob.spec(lease)
        renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
        duration = float(spec.get("leaseDurationSeconds") or 0)
        if renewed is None or now > renewed + duration:
            continue
        acquired = parse_time(spec.get("acquireTime")) or renewed
        live.append((acquired, ob.meta(lease)["name"]))
    return [name for _, name in sorted(live)]


class Membership:
    """This replica's member Lease, and the live members as last listed."""

    def __init__(self, kube: Kube, namespace: str, group: str, identity: str,
                 duration: int, on_change: Callable[[], None],
                 pod_uid: str | None = None) -> None:
        self.kube = kube
        self.namespace = namespace
        self.group = group
        self.identity = identity
        self.name = member_name(group, identity)
        self.duration = duration
        self.on_change = on_change
        self.pod_uid = pod_uid
        #: Live members, oldest first (the first is the leader).
        self.members: tuple[str, ...] = ()
        #: monotonic time of the last renewal that worked (None: never).
        self._renewed: float | None = None
        #: owns() said no for want of a fresh Lease since the last update().
        self._missed = False
        self._acquired = now_rfc3339(micro=True)
        #: Set after the first renewal and listing.
        self.ready = asyncio.Event()
        self.changes = 0

    @property
    def interval(self) -> float:
        return max(self.duration / 3.0, 0.2)

    def fresh(self) -> bool:
        """This replica's own Lease is live as far as the others can tell."""
        return (self._renewed is not None
                and time.monotonic() - self._renewed < self.duration)

    def owns(self, key: str) -> bool:
        if not self.fresh():
            self._missed = True
            return False
        return owner_of(key, self.members) == self.name

    def is_leader(self) -> bool:
        return self.fresh() and bool(self.members) and self.members[0] == self.name

    # ------------------------------------------------------------ the Lease
    def _lease(self) -> dict:
        # In a pod: owned by it, so the garbage collector deletes the Lease
        # with the pod (a rollout leaves no stale members behind).
        owner = {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod",
                                      "name": self.identity, "uid": self.pod_uid}]
                 } if self.pod_uid else {}
        return {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace,
                         "labels": {MEMBER_LABEL: self.group}, **owner},
            "spec": {"holderIdentity": self.identity,
                     "leaseDurationSeconds": int(math.ceil(self.duration)),
                     "acquireTime": self._acquired,
                     "renewTime": now_rfc3339(micro=True)}}

    async def renew(self) -> None:
        """Renew this replica's Lease, creating it when missing."""
        path = lease_path(self.namespace, self.name)
        started = time.monotonic()
        try:
            spec = {"holderIdentity": self.identity, "renewTime": now_rfc3339(micro=True),
                    "leaseDurationSeconds": int(math.ceil(self.duration))}
            if self._renewed is None:  # this process's first: a Lease left by another
                spec["acquireTime"] = self._acquired
            await self.kube.merge_patch(path, {"spec": spec})
        except KubeError as exc:
            if exc.status != 404:
                raise
            await self.kube.create(lease_path(self.namespace), self._lease())
        self._renewed = started

    async def look(self) -> None:
        """List the member Leases; tell ``on_change`` when the members changed."""
        body = await self.kube.get(lease_path(self.namespace),
                                   {"labelSelector": f"{MEMBER_LABEL}={self.group}"})
        members = live_members(body.get("items") or [], time.time())
        if self.fresh() and self.name not in members:
            members.append(self.name)  # our renewal, not yet in a stale listing
        self.update(tuple(members))

    def update(self, members: tuple[str, ...]) -> None:
        """The live members as just listed.  ``on_change`` when they changed,
        and also when this replica skipped Instances for want of a fresh
        Lease (a renewal that came late, an event loop held up) and has one
        again: what it skipped is looked at again."""
        if members == self.members and not (self._missed and self.fresh()):
            return
        before = self.members
        self.members = members
        self._missed = False
        self.changes += 1
        metrics.MEMBERS.set(len(members))
        LOG.info("operator replicas: %d live (%s)%s; this one (%s) %s", len(members),
                 ", ".join(members), f", were {len(before)}" if before else "", self.name,
                 "leads" if self.is_leader() else "does not lead")
        self.on_change()

    async def run(self) -> None:
        """Renew and look, every third of the Lease's duration, until cancelled."""
        while True:
            try:
                await self.renew()
                await self.look()
                self.ready.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                LOG.warning("member Lease %s/%s: %s: %s", self.namespace, self.name,
                            type(exc).__name__, exc)
                if not self.fresh() and self.members:
                    LOG.warning("member Lease %s/%s not renewed for %ds: this replica "
                                "stands back until it is", self.namespace, self.name,
                                self.duration)
                    self.update(())
            await asyncio.sleep(self.interval)

    async def leave(self) -> None:
        """Release this replica's Lease (a stop: renewed "at the epoch"), so
        that the others take over at their next look instead of after its
        expiry."""
        self._renewed = None
        try:
            await self.kube.merge_patch(lease_path(self.namespace, self.name), {"spec": {
                "renewTime": RELEASED, "acquireTime": RELEASED}})
        except Exception as exc:  # the API server unreachable: it expires instead
            LOG.warning("member Lease %s/%s not released: %s", self.namespace, self.name, exc)
