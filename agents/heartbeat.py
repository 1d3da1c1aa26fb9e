"""The host's heartbeat: a ``coordination.k8s.io`` Lease named after the host
in the Lease namespace (``--lease-namespace``, the operator reads the same
one), renewed every ``--lease-renew-seconds`` as the kubelet does it.  The
operator's host monitor marks the Host Down when it expires."""

from __future__ import annotations

import logging
import time

from kova.agents.context import AgentContext
from kova.conditions import now_rfc3339
from kova.crds import names
from kova.kube import KubeError, lease_path

log = logging.getLogger("kova.agents.heartbeat")


class Heartbeat:
    """Thread ``lease``: :meth:`run` until the agent stops."""

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
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
        try:
            kube.merge_patch(lease_path(ns, name), {"spec": spec})
            return
        except KubeError as exc:
            if exc.status != 404:
                raise
        self._create({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": ns, "labels": {names.LABEL_HOST: name}},
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
