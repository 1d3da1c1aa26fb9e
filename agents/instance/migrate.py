"""The agents' part of a move to another host -- a cold migration, or a
resize the scheduler sent to another host (Nova's
``migrate_disk_and_power_off`` on the source, ``finish_migration`` on the
destination, ``revert_resize`` / ``finish_revert_resize``).

Step Moving, on the source (:meth:`Migrator.send`): for a guest booted from
an iso Image, first the destination agent's ``image-prepare`` (its stream
endpoint, mutual TLS): the destination fetches the ISO into its own cache
and verifies it (:meth:`Migrator.prepare_here`) while the guest still runs
-- a destination that cannot use it leaves the guest running, with a
Warning Event, and the step is retried.  Then note whether the guest
ran, stop it, flatten its disk into one standalone qcow2 and send it to the
destination agent's stream endpoint (mutual TLS, sha256-checked:
:mod:`.disk_copy`; never through the API server), a UEFI guest's variable
store first, the same way (its boot entries and variables go along); step
Copied.  The source
keeps its domain and disk, shut off, until the move is confirmed (its
leftover removal spares them while the record names this host:
``decisions.kept_for_move``).

Step Finishing, on the destination (:meth:`Migrator.finish`): the received
disk grown to the new size, the seed written, the domain defined and
started if the guest ran; step Verify.  A guest booted from an iso Image
keeps its CD-ROM: the destination fetches the ISO into its own cache,
verifies it and names its own cached file in the domain.

A revert: step Reverting on the destination (:meth:`Migrator.drop`): its
domain destroyed and its directory removed (the loser's copy goes at once);
step Returning.  Step Restoring on the source (:meth:`Migrator.restore`):
the kept domain started if the guest ran; step Reverted.

Every step is repeatable from any line: the flattened copy is written under
a temporary name, the destination takes a disk only while it has no domain
of the Instance, defining is idempotent, and each status write is guarded by
the migration's UUID.
"""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path

import httpx

from kova.agents.context import AgentContext, GiB, InstanceFiles
from kova.agents.instance import decisions, disk_copy
from kova.agents.instance.build import Builder
from kova.agents.instance.move import MoveError, Mover, grow_disk
from kova.agents.instance.report import Reporter
from kova.agents.instance.teardown import Teardown
from kova.agents.instance.userdata import UserData
from kova.agents.virt.driver import DomainInfo
from kova.agents.virt.images import ImageError, ImageSource
from kova.crds import names
from kova.crds import objects as ob
from kova.crds.names import MigrationStep
from kova.kube import host_path, instance_path

log = logging.getLogger("kova.agents.instance.migrate")

OUTGOING = "disk.outgoing.qcow2"
#: Seconds the source waits for the destination to cache the guest's ISO.
PREPARE_SECONDS = 600.0


def stream_endpoint(host_obj: dict | None, host: str) -> tuple[str, int]:
    """The address and port of ``host``'s stream endpoint (its Host's
    status.streamEndpoint).  Raises MoveError when it has none."""
    ep = ((host_obj or {}).get("status") or {}).get("streamEndpoint") or {}
    if not ep.get("address") or not ep.get("port"):
        raise MoveError(f"host {host} advertises no stream endpoint (status.streamEndpoint): "
                        "its agent cannot receive the disk")
    return str(ep["address"]), int(ep["port"])


def own_cdrom(builder: Builder, host: str, obj: dict, files: InstanceFiles) -> Path | None:
    """For an ISO-booted Instance arriving on ``host`` (a cold or live
    move): :meth:`Builder.cdrom_here` -- this host's own verified copy of
    the ISO, linked from the Instance's directory; None for any other
    Instance.  Raises MoveError when this host cannot use the ISO."""
    try:
        return builder.cdrom_here(obj, files)
    except ImageError as exc:
        raise MoveError(f"{host} cannot use the Instance's ISO: {exc.code}: "
                        f"{exc.message}") from exc


class Migrator:
    def __init__(self, ctx: AgentContext, report: Reporter, builder: Builder,
                 mover: Mover, teardown: Teardown, userdata: UserData) -> None:
        self.ctx = ctx
        self.report = report
        self.builder = builder
        self.mover = mover
        self.teardown = teardown
        self.userdata = userdata
        self._tls: ssl.SSLContext | None = None

    def client_tls(self) -> ssl.SSLContext:
        """The client side of the disk copy: this agent's migration
        certificate, the CA of the other agents' stream certificates."""
        if self._tls is None:
            cfg = self.ctx.cfg
            if not (cfg.migration_client_cert_file and cfg.migration_client_key_file):
                raise MoveError(f"{self.ctx.host} has no --migration-client-cert-file: it "
                                "cannot send disks to other hosts")
            tls = ssl.create_default_context(
                cafile=cfg.migration_ca_file or cfg.stream_client_ca_file)
            tls.load_cert_chain(cfg.migration_client_cert_file, cfg.migration_client_key_file)
            self._tls = tls
        return self._tls

    # ------------------------------------------------------------ Moving (source)
    def send(self, obj: dict, info: DomainInfo | None) -> None:
        mig = ob.status(obj)["migration"]
        if info is None:
            raise MoveError(f"the domain of migration {mig['uuid']} is not defined on "
                            f"{self.ctx.host}, its source")
        uid, key, dest = info.uuid, ob.key(obj), mig["destHost"]
        files = self.ctx.files(uid)
        address, port = stream_endpoint(self.ctx.kube.get_or_none(host_path(dest)), dest)
        tls = self.client_tls()
        if files.cdrom.is_symlink():
            self._prepare_dest(obj, address, port, uid, tls)
        log.info("%s/%s: cold migration to %s (migration %s): stopping the guest", *key, dest,
                 mig["uuid"])
        was_running = self.mover._stop(obj, files, f"{mig['uuid']}/{MigrationStep.MOVING}")
        nvram = ""
        if files.nvram.exists():  # a UEFI guest's variable store, before the disk
            sent = self._send(files.nvram, "nvram", address, port, uid, tls, key, dest)
            nvram = f", UEFI variable store sha256 {sent.sha256[:16]}..."
        flat = disk_copy.flatten(files.disk, files.dir / OUTGOING)
        try:
            got = self._send(flat, "disk", address, port, uid, tls, key, dest)
        finally:
            flat.unlink(missing_ok=True)
        self.mover._finish(obj, info, mig, False, MigrationStep.COPIED, was_running=was_running)
        self.report.event(obj, "Normal", names.EVENT_MOVED,
                          f"{self.ctx.host}: guest stopped, disk sent to {dest} ({got.size} "
                          f"bytes, sha256 {got.sha256[:16]}...{nvram}); kept here until the "
                          "confirm")

    def _prepare_dest(self, obj: dict, address: str, port: int, uid: str,
                      tls: ssl.SSLContext) -> None:
        """Have the destination cache and verify the guest's ISO before the
        guest is stopped.  Raises MoveError (with a Warning Event when the
        destination refused)."""
        dest = ob.status(obj)["migration"]["destHost"]
        ns, name = ob.key(obj)
        try:
            with httpx.Client(verify=tls, timeout=PREPARE_SECONDS) as client:
                resp = client.put(f"https://{address}:{port}/v1/domains/{uid}/image-prepare",
                                  params={"namespace": ns, "name": name},
                                  extensions={"sni_hostname": names.STREAM_SERVER_NAME})
        except httpx.HTTPError as exc:
            raise MoveError(f"the destination {dest} ({address}:{port}) did not answer: "
                            f"{exc!r}") from exc
        if resp.status_code != 201:
            why = f"{dest} is not ready for the guest: {resp.status_code} {resp.text[:500]}"
            if resp.status_code == 409:
                why = f"{dest}: {resp.json().get('message', resp.text)}"
                self.report.event(obj, "Warning", names.EVENT_DESTINATION_NOT_READY,
                                  f"{why}; the guest keeps running on {self.ctx.host}")
            raise MoveError(why)
        log.info("%s/%s: %s cached the ISO: %s", ns, name, dest, resp.json().get("cdrom"))

    def prepare_here(self, namespace: str, name: str, uid: str) -> dict:
        """On the destination (the stream endpoint's image-prepare): the ISO
        of an ISO-booted Instance moving here fetched into this host's cache
        and verified, linked from its directory here.  Raises MoveError
        when no cold migration of it to this host is under way or the ISO
        cannot be used here."""
        obj = self.ctx.kube.get_or_none(instance_path(namespace, name))
        mig = ob.status(obj or {}).get("migration") or {}
        if (obj is None or ob.uid(obj) != uid or mig.get("mode") == names.MigrationMode.LIVE
                or not decisions.across_hosts(mig) or mig.get("destHost") != self.ctx.host
                or mig.get("step") != MigrationStep.MOVING):
            raise MoveError(f"no move of {namespace}/{name} to {self.ctx.host} is under way")
        if self.ctx.driver.get(uid) is not None:
            raise MoveError(f"a domain {uid} is already defined on {self.ctx.host}")
        files = self.ctx.files(uid)
        files.dir.mkdir(parents=True, exist_ok=True)
        # names the Instance: the leftover sweep spares the directory during the move
        files.info.write_text(json.dumps({"uid": uid, "namespace": namespace, "name": name,
                                          "host": self.ctx.host}))
        cdrom = own_cdrom(self.builder, self.ctx.host, obj, files)
        return {"cdrom": str(cdrom) if cdrom else None}

    @staticmethod
    def _send(path: Path, part: str, address: str, port: int, uid: str,
              tls: ssl.SSLContext, key: tuple[str, str], dest: str) -> disk_copy.Received:
        try:
            got = disk_copy.send(path, address, port, uid, tls, instance="/".join(key),
                                 server_name=names.STREAM_SERVER_NAME, part=part)
        except disk_copy.CopyError as exc:
            raise MoveError(f"sending the {part} to {dest} ({address}:{port}) failed: "
                            f"{exc.status} {exc.reason}: {exc.message}") from exc
        log.info("%s/%s: %s sent to %s: %d bytes, sha256 %s", *key, part, dest, got.size,
                 got.sha256)
        return got

    # ------------------------------------------------------------ Finishing (destination)
    def finish(self, obj: dict, info: DomainInfo | None) -> None:
        mig = ob.status(obj)["migration"]
        uid, key = ob.uid(obj) or "", ob.key(obj)
        files = self.ctx.files(uid)
        size = mig.get("newResources") or mig["oldResources"]
        if info is None:
            if not files.disk.exists():
                raise MoveError(f"the disk of migration {mig['uuid']} has not arrived on "
                                f"{self.ctx.host}")
            if not self.userdata.ready(obj):
                return
            # an ISO-booted guest keeps its CD-ROM: this host's copy of the ISO
            own_cdrom(self.builder, self.ctx.host, obj, files)
            obj = self.teardown.add_finalizer(obj)
            grow_disk(files.disk, int(size["diskGiB"]) * GiB)
            self.userdata.write_seed(obj, files)
            image = self.builder.image(obj)
            spec = self.builder._domain_spec(obj, size, ImageSource.from_image(image), files,
                                             ob.spec(image).get("properties") or {})
            info = self.mover.define_spec(obj, spec)
        was_running = bool(mig.get("wasRunning"))
        log.info("%s/%s: cold migration from %s finished here (migration %s)%s", *key,
                 mig.get("sourceHost"), mig["uuid"], ", starting it" if was_running else "")
        self.mover._finish(obj, info, mig, was_running, MigrationStep.VERIFY)
        self.report.event(obj, "Normal", names.EVENT_MOVED,
                          f"{self.ctx.host}: defined from the disk copied from "
                          f"{mig.get('sourceHost')}" + (", running" if was_running else "")
                          + "; confirm or revert")

    # ------------------------------------------------------------ Reverting (destination)
    def drop(self, obj: dict, info: DomainInfo | None) -> None:
        mig = ob.status(obj)["migration"]
        uid = ob.uid(obj) or ""
        log.info("%s/%s: reverting the cold migration (migration %s): removing the copy on %s",
                 *ob.key(obj), mig["uuid"], self.ctx.host)
        self.teardown.remove(uid)
        self.mover.write_step(obj, uid, mig, MigrationStep.RETURNING,
                              bool(mig.get("wasRunning")))

    # ------------------------------------------------------------ Restoring (source)
    def restore(self, obj: dict, info: DomainInfo | None) -> None:
        mig = ob.status(obj)["migration"]
        if info is None:
            raise MoveError(f"the kept domain of migration {mig['uuid']} is gone from "
                            f"{self.ctx.host}: it cannot be reverted")
        was_running = bool(mig.get("wasRunning"))
        log.info("%s/%s: reverted: the kept domain is back on %s%s", *ob.key(obj),
                 self.ctx.host, ", starting it" if was_running else "")
        self.mover._finish(obj, info, mig, was_running, MigrationStep.REVERTED)
        (self.ctx.files(info.uuid).dir / "move.json").unlink(missing_ok=True)
