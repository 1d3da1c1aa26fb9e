"""The host's heartbeat: a ``coordination.k8s.io`` Lease named after the host
in the Lease namespace (``--lease-namespace``, the operator reads the same
one), renewed every ``--lease-renew-seconds`` as the kubelet does it.  The
operator's host monitor marks the Host Down when it expires."""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

from kova.agents.context import AgentContext
from kova.conditions import now_rfc3339
from kova.crds import names
from kova.kube import KubeError, lease_path

log = logging.getLogger("kova.agents.heartbeat")


def lease_owner(token: str, namespace: str) -> dict | None:
    """The owner of this host's heartbeat Lease: the agent's ServiceAccount,
    named in the claims of its own service-account token -- when it lives in
    the Lease's namespace (an owner is never in another namespace).

    Uninstalling the chart deletes the ServiceAccount and with it (the
    garbage collector) the Lease; upgrades and restarts keep both.  The token
    is not verified: it is the agent's own, and only names are read."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        info = claims["kubernetes.io"]
        sa = info["serviceaccount"]
        if info["namespace"] != namespace or not sa["name"] or not sa["uid"]:
            return None
        return {"apiVersion": "v1", "kind": "ServiceAccount", "name": sa["name"], "uid": sa["uid"]}
    except (IndexError, ValueError, KeyError, TypeError):
        return None


class Heartbeat:
    """Thread ``lease``: :meth:`run` until the agent stops."""

    def __init__(self, ctx: AgentContext, owner: dict | None = None) -> None:
        self.ctx = ctx
        #: Owner reference of the Lease (None: none; in a pod, the agent's
        #: ServiceAccount read from its token, see lease_owner()).
        self.owner = owner if owner is not None else self._service_account()
        #: monotonic time of the last successful renewal (0: never).
        self.last_ok = 0.0

    def fresh(self) -> bool:
        """Renewed within the Lease's duration."""
        return time.monotonic() - self.last_ok <= self.ctx.cfg.lease_duration_seconds

    def beat(self) -> bool:
        """Renew once; whether it worked (a failure is logged and counted)."""
        try:
            self.renew()
        except Exception as exc:
            self.ctx.metrics.lease_renewals.labels("error").inc()
            log.warning("renewing the heartbeat lease failed: %s", exc)
            return False
        self.last_ok = time.monotonic()
        self.ctx.metrics.lease_renewals.labels("ok").inc()
        return True

    def run(self) -> None:
        while not self.ctx.stopping.is_set():
            self.beat()
            self.ctx.stopping.wait(self.ctx.cfg.lease_renew_seconds)

    def _service_account(self) -> dict | None:
        """In a pod: this agent's ServiceAccount, the heartbeat Lease's owner."""
        creds = self.ctx.kube.aio.creds
        if not creds.in_cluster:
            return None
        return lease_owner(creds.bearer() or "", self.ctx.cfg.lease_namespace)

    def renew(self) -> None:
        """Renew the Lease, creating it (and its namespace) when missing."""
        cfg, kube = self.ctx.cfg, self.ctx.kube
        ns, name = cfg.lease_namespace, self.ctx.host
        now = now_rfc3339(micro=True)
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": cfg.lease_duration_seconds,
            "renewTime": now,
        }
        owner = {"ownerReferences": [self.owner]} if self.owner else {}
        try:
            patch: dict[str, Any] = {"spec": spec}
            if owner:  # also a Lease written before its owner was known
                patch["metadata"] = owner
            kube.merge_patch(lease_path(ns, name), patch)
            return
        except KubeError as exc:
            if exc.status != 404:
                raise
        self._create({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": ns, "labels": {names.LABEL_HOST: name},
                         **owner},
            "spec": {**spec, "acquireTime": now},
        })

    def _create(self, body: dict) -> None:
        kube, ns = self.ctx.kube, body["metadata"]["namespace"]
        try:
            kube.create(lease_path(ns), body)
        except KubeError as exc:
            if exc.status == 404:  # the namespace is missing
                try:
                    kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
                except KubeError as exc2:
                    if exc2.status not in (403, 409):
                        raise
                kube.create(lease_path(ns), body)
            elif exc.status != 409:
                raise
