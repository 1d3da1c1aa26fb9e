"""Handing an Instance's user data to its host only (kova.sealing).

Agents may not read Secrets (a compromised node would read them all).  When
an Instance with ``spec.userData.secretRef`` is placed, the operator reads
the Secret and seals its key's value for the public key its host's agent
publishes (Host ``status.userDataKey``), into the Instance's
``status.sealedUserData``; sealed again when the Instance moves to another
host, the host's key changes or the reference changes.  A Secret that does
not exist (yet) is looked for again with the Instance's back-off; the agent waits meanwhile
(``Ready=False``, ``UserDataUnavailable``).
"""

from __future__ import annotations

import base64
import logging

from kova import sealing
from kova.crds import objects as ob
from kova.kube import instance_path
from kova.operator.context import Context

LOG = logging.getLogger("kova.operator.userdata")


def wanted(body: dict, host_body: dict | None) -> dict | None:
    """What status.sealedUserData must say (without the sealed text), or None
    when there is nothing to seal (no secretRef, not placed, deleted, or the
    host has published no key)."""
    ref = (ob.spec(body).get("userData") or {}).get("secretRef")
    host = ob.placed_host(body)
    if not ref or not host or body["metadata"].get("deletionTimestamp") or host_body is None:
        return None
    public = ob.status(host_body).get("userDataKey")
    if not public:
        return None
    return {"host": host, "keyId": sealing.key_id(public), "secret": ref["name"],
            "key": ref.get("key") or "userdata"}


def current(body: dict, want: dict) -> bool:
    sealed = ob.status(body).get("sealedUserData") or {}
    return all(sealed.get(k) == v for k, v in want.items())


class UserDataSealer:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def ensure(self, key: tuple, body: dict) -> None:
        ctx = self.ctx
        if not ctx.settings.seal_user_data:
            return
        host = ob.placed_host(body)
        host_body = ctx.informer.host(host) if host else None
        want = wanted(body, host_body)
        if want is None:
            if host and (ob.spec(body).get("userData") or {}).get("secretRef") \
                    and not body["metadata"].get("deletionTimestamp"):
                ctx.retry_later(key)  # the host's agent has no key out yet
            return
        if current(body, want):
            return
        md = body["metadata"]
        ns, name = md["namespace"], md["name"]
        secret = await ctx.kube.get_or_none(f"/api/v1/namespaces/{ns}/secrets/{want['secret']}")
        data = ((secret or {}).get("data") or {}).get(want["key"])
        if data is None:
            delay = ctx.retry_later(key)
            LOG.debug("%s/%s uid=%s: Secret %s key %r not there (yet); looking again in %.0fs",
                      ns, name, md["uid"], want["secret"], want["key"], delay)
            return
        public = ob.status(host_body).get("userDataKey")
        sealed = sealing.seal(public, base64.b64decode(data),
                              sealing.context(ns, name, md["uid"], want["host"]))
        await ctx.kube.merge_patch(instance_path(ns, name) + "/status",
                                   {"status": {"sealedUserData": {**want, "data": sealed}}})
        LOG.info("%s/%s uid=%s: user data of Secret %s sealed for host %s", ns, name,
                 md["uid"], want["secret"], want["host"])
