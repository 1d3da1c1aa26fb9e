"""An Instance's user data, SSH keys, host name and network configuration,
written into its NoCloud seed; and the wait for a user-data Secret that does
not exist yet.

User data comes from ``spec.userData.inline`` or the Secret key
``spec.userData.secretRef`` names.  It is read at build time (and at a start
after it changed) and written only into the seed ISO: never logged, put into
a status or an Event.

User data, SSH keys and host name apply at a start: when they changed since
the seed was written (:mod:`~kova.agents.instance.restart_fields`), a start
writes a new seed first, with a new instance-id (:meth:`UserData.fresh_seed`).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import threading

from kova import sealing
from kova.agents.context import AgentContext, InstanceFiles
from kova.agents.instance import decisions, restart_fields
from kova.agents.instance.decisions import BuildError
from kova.agents.instance.report import Reporter
from kova.agents.virt.domain import DomainMetadata
from kova.agents.virt.seed import write_nocloud_seed
from kova.crds import names
from kova.crds import objects as ob
from kova.kube import SyncKube

log = logging.getLogger("kova.agents.instance.userdata")


def meta_data(uid: str, hostname: str, ssh_keys: list[str] | None) -> str:
    """NoCloud meta-data (YAML written by hand: keys are fixed, values quoted)."""
    lines = [f"instance-id: {uid}", f"local-hostname: {hostname}"]
    if ssh_keys:
        lines.append("public-keys:")
        for key in ssh_keys:
            escaped = key.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'  - "{escaped}"')
    return "\n".join(lines) + "\n"


def network_config(mac: str) -> str:
    """NoCloud network-config v2: DHCP on the one NIC, matched by MAC."""
    return (
        "version: 2\n"
        "ethernets:\n"
        "  eth0:\n"
        "    match:\n"
        f"      macaddress: \"{mac}\"\n"
        "    set-name: eth0\n"
        "    dhcp4: true\n"
    )


def read_user_data(ctx: AgentContext, obj: dict) -> str:
    """The Instance's user data (empty when it has none).  Raises
    :class:`BuildError` (``UserDataUnavailable``) naming the Secret and key
    -- never a value -- when the Secret or its key is missing (or, with
    ``--user-data-from operator``, not handed over by the operator yet)."""
    ud = ob.spec(obj).get("userData") or {}
    if ud.get("inline") is not None:
        return ud["inline"]
    ref = ud.get("secretRef")
    if not ref:
        return ""
    if ctx.cfg.user_data_from == "operator":
        return unseal_user_data(ctx, obj, ref)
    return read_secret(ctx.kube, obj, ref)


def unseal_user_data(ctx: AgentContext, obj: dict, ref: dict) -> str:
    """The user data the operator sealed for this host (kova.sealing): the
    agent reads no Secret."""
    md = obj["metadata"]
    ns, key = md["namespace"], ref.get("key") or "userdata"
    sealed = ob.status(obj).get("sealedUserData") or {}
    if (sealed.get("host") != ctx.host or sealed.get("secret") != ref["name"]
            or sealed.get("key") != key):
        raise BuildError(names.ERROR_USER_DATA,
                         f"the operator has not handed over the user data of Secret "
                         f"{ns}/{ref['name']} (key {key!r}) for host {ctx.host} yet")
    try:
        data = sealing.unseal(ctx.user_data_key, sealed["data"],
                              sealing.context(ns, md["name"], md["uid"], ctx.host))
    except sealing.SealError as exc:
        raise BuildError(names.ERROR_USER_DATA,
                         f"the user data of Secret {ns}/{ref['name']}: {exc}") from None
    return data.decode("utf-8", errors="replace")


def read_secret(kube: SyncKube, obj: dict, ref: dict) -> str:
    ns = obj["metadata"]["namespace"]
    secret = kube.get_or_none(f"/api/v1/namespaces/{ns}/secrets/{ref['name']}")
    if secret is None:
        raise BuildError(names.ERROR_USER_DATA, f"Secret {ns}/{ref['name']} does not exist")
    key = ref.get("key") or "userdata"
    data = (secret.get("data") or {}).get(key)
    if data is None:
        raise BuildError(names.ERROR_USER_DATA,
                         f"Secret {ns}/{ref['name']} has no key {key!r}")
    return base64.b64decode(data).decode("utf-8", errors="replace")


class UserData:
    """The seed of an Instance, and the wait for its user-data Secret."""

    def __init__(self, ctx: AgentContext, report: Reporter) -> None:
        self.ctx = ctx
        self.report = report
        #: A power action and a reconcile may both start a domain.
        self._seed_lock = threading.Lock()

    def ready(self, obj: dict) -> bool:
        """A user-data Secret that does not exist (yet), or lacks the key, is
        waited for like a pod waits for its Secret volume -- with GitOps the
        Secret may well arrive after the Instance: nothing is created on the
        host, ``Ready=False`` names the Secret and key (never a value), one
        Warning Event, and the Secret is read again with back-off (1 s
        doubling to 60 s; the agent may only ``get`` Secrets, not watch them)."""
        key = ob.key(obj)
        if not (ob.spec(obj).get("userData") or {}).get("secretRef"):
            return True
        waits = self.ctx.memory.secret_waits
        try:
            read_user_data(self.ctx, obj)
        except BuildError as exc:
            n = waits.get(key, 0)
            waits[key] = n + 1
            self._waiting(obj, exc, decisions.secret_retry_delay(n))
            return False
        if waits.pop(key, None) is not None:
            log.info("%s/%s: its user-data Secret is there now; building", *key)
        return True

    def _waiting(self, obj: dict, exc: BuildError, delay: float) -> None:
        key = ob.key(obj)
        wanted = decisions.user_data_wait_status(obj, exc)
        message = f"waiting for the user data: {exc.message}"
        if decisions.status_changed(obj, wanted):
            log.warning("%s/%s: %s (retrying with back-off)", *key, message)
            self.report.instance_status(obj, wanted)
            self.report.event(obj, "Warning", exc.code, f"{self.ctx.host}: {message}")
        else:
            log.debug("%s/%s: still %s (retry in %.0fs)", *key, message, delay)
        self.ctx.metrics.user_data_waits.inc()
        self.ctx.queue.add_after(key, delay)

    def forget(self, key: tuple[str, str]) -> None:
        """The Instance is gone or being deleted: no more waiting for it."""
        self.ctx.memory.secret_waits.pop(key, None)

    def write_seed(self, obj: dict, files: InstanceFiles, instance_id: str | None = None,
                   mac: str | None = None) -> None:
        """The NoCloud seed: meta-data (``instance_id``, by default the uid;
        ``spec.hostname`` or the Instance name, ``spec.sshKeys``), the user
        data, and with a NIC (``mac``, by default the domain's) a
        network-config doing DHCP on it."""
        md, spec = obj["metadata"], ob.spec(obj)
        uid = md["uid"]
        if mac is None and self.ctx.with_nic:
            mac = self.ctx.guest_mac(uid)
        write_nocloud_seed(
            files.seed,
            meta_data(instance_id or uid, spec.get("hostname") or md["name"],
                      spec.get("sshKeys")),
            read_user_data(self.ctx, obj),
            network_config(mac) if mac else None,
        )

    def fresh_seed(self, obj: dict, meta: DomainMetadata) -> DomainMetadata:
        """Before domain ``meta`` starts: when user data, SSH keys or host
        name changed since its seed was written, a new seed (with a new
        instance-id) first.  Returns the metadata to record."""
        spec = ob.spec(obj)
        pending = restart_fields.pending_fields(meta.applied_spec, spec)
        if not pending:
            return meta
        applied = restart_fields.fingerprint(spec)
        with self._seed_lock:
            self.write_seed(obj, self.ctx.files(meta.uid),
                            restart_fields.instance_id(meta.uid, applied, first=False))
        log.info("%s/%s: new seed for the changed %s", *ob.key(obj), ", ".join(pending))
        return dataclasses.replace(meta, applied_spec=applied)
