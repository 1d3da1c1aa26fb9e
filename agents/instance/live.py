"""The agents' part of a live migration (Nova's ``pre_live_migration`` on
the destination, ``live_migration`` on the source).

Step Preparing, the source's turn (:meth:`LiveMigrator.prepare`): it asks
the destination agent's stream endpoint (``PUT
/v1/domains/<uid>/live-prepare``, mutual TLS with its migration
certificate, as the cold migration's disk copy) to prepare -- the
destination does not watch the Instance before it is handed over.  The
destination (:meth:`LiveMigrator.prepare_here`) makes an empty qcow2 of the
disk's size (libvirt copies the guest's disk into it over NBD) and the seed
(a read-only disk libvirt does not copy) in its Instance directory, with
its ``instance.json``; for a guest booted from an iso Image, the ISO
fetched into its own cache and verified, linked as the Instance's
``cdrom.iso``; when the guest has a NIC (its MAC is in the request)
it defines its own network filter for the Instance's namespace with that
MAC (the namespace's peers on that host then reach the arriving guest).  It
answers its ``--live-migration-uri`` (``destUri``), Instance directory
(``destDir``), the NIC's filter (``nicFilter``) and the cached ISO
(``cdrom``); nothing else is defined there: libvirt defines the domain
when the guest arrives.  The source records them with step LiveMigrating
(``destNicFilter``, ``destCdrom``: the CD-ROM's path on the destination is
that file, never the source's cache).

Step LiveMigrating, on the source (:meth:`LiveMigrator.migrate`):
:func:`kova.agents.virt.migration.live_migrate` to ``destUri``, the paths
under this host's Instance directory rewritten to ``destDir`` and the NIC's
``<filterref>`` to the destination's filter (this host's filters do not
exist on the destination's libvirtd); its progress
written into ``status.migration.progress`` every few seconds, an abort
asked through ``instances/migrate?abort=true`` (``decision: Abort``)
passed on.  Success: step Migrated (the operator hands the Instance over)
and this host's copy of the files removed.  Failure, timeout or abort: step
Failed with the reason (the guest still runs here).

An agent killed in the middle does not stop the migration: the source
libvirtd drives it (peer to peer) to its end.  The restarted agent looks at
the domain: a migration job still on it, it waits for its end (the step
retried with back-off); the domain shut off by the migration (libvirt's
reason ``migrated``), the guest runs on the destination: the source's
definition is removed and Migrated written; the domain gone from this host
(removed after the completion), Migrated too; the domain running with no
job (the migration failed or never started), it is migrated again (libvirt
dropped the half-arrived one on the destination).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import httpx
import libvirt

from kova.agents.context import AgentContext, GiB
from kova.agents.instance.build import Builder
from kova.agents.instance.migrate import own_cdrom, stream_endpoint
from kova.agents.instance.move import MoveError
from kova.agents.instance.report import Reporter
from kova.agents.instance.userdata import UserData
from kova.agents.virt import migration
from kova.agents.virt.driver import DomainInfo
from kova.crds import names
from kova.crds import objects as ob
from kova.crds.names import MigrationDecision, MigrationStep
from kova.kube import host_path, instance_path

log = logging.getLogger("kova.agents.instance.live")

#: Seconds between two progress writes into status.migration.
PROGRESS_EVERY = 2.0
#: The step an agent writes, and the step it must follow.
_FOLLOWS = {MigrationStep.LIVE_MIGRATING: MigrationStep.PREPARING,
            MigrationStep.MIGRATED: MigrationStep.LIVE_MIGRATING,
            MigrationStep.FAILED: MigrationStep.LIVE_MIGRATING}


def path_map(xml: str, src_dir: str, dest_dir: str,
             cdrom: tuple[str, str] | None = None) -> dict[str, str]:
    """Every disk/console path of domain ``xml`` under ``src_dir``, and its
    UEFI variable store (``<nvram>``), -> the same name under ``dest_dir``;
    ``cdrom``: the ISO a guest booted from, (its file in this host's image
    cache, the destination's cached copy)."""
    prefix = src_dir.rstrip("/") + "/"
    root = ET.fromstring(xml)
    paths = [(el.text or "").strip() for el in root.findall("./os/nvram")]
    for el in root.iter():
        if el.tag in ("source", "log"):
            paths += [el.get(attr) or "" for attr in ("file", "path", "dev")]
    out = {p: dest_dir.rstrip("/") + "/" + p[len(prefix):] for p in paths
           if p.startswith(prefix)}
    if cdrom is not None and cdrom[0] in paths:
        out[cdrom[0]] = cdrom[1]
    return out


def with_host(xml: str, host: str) -> str:
    """Domain ``xml`` with its Kova metadata naming ``host`` (the destination
    agent then treats the arrived domain as its own)."""
    ET.register_namespace(names.DOMAIN_XMLNS_PREFIX, names.DOMAIN_XMLNS)
    root = ET.fromstring(xml)
    for el in root.iter(f"{{{names.DOMAIN_XMLNS}}}host"):
        el.text = host
    return ET.tostring(root, encoding="unicode")


def with_nic_filter(xml: str, nwfilter: str) -> str:
    """Domain ``xml`` with the ``<filterref>`` of every NIC naming
    ``nwfilter`` (the destination's filter; the parameters, the guest's MAC,
    stay as they are)."""
    root = ET.fromstring(xml)
    for ref in root.findall("./devices/interface/filterref"):
        ref.set("filter", nwfilter)
    return ET.tostring(root, encoding="unicode")


def nic_filters(xml: str) -> list[str]:
    """The filters named by the NICs of domain ``xml``."""
    return [ref.get("filter", "") for ref in
            ET.fromstring(xml).findall("./devices/interface/filterref")]


def guest_mac(xml: str) -> str | None:
    """The MAC of the first NIC of domain ``xml``, if it has one."""
    el = ET.fromstring(xml).find("./devices/interface/mac")
    return el.get("address", "").lower() or None if el is not None else None


def step_status(cur: dict, mig_uuid: str, step: str, after: str | None = None,
                **fields: Any) -> dict | None:
    """The status patch moving live migration ``mig_uuid`` to ``step`` (with
    ``fields`` added to the record); None unless it is at the step before
    (``after``, by default the one ``step`` follows)."""
    mig = ob.status(cur).get("migration") or {}
    if mig.get("uuid") != mig_uuid or mig.get("step") != (after or _FOLLOWS[step]):
        return None
    return {"status": {"migration": {**mig, **fields, "step": step}}}


def progress_status(cur: dict, mig_uuid: str, progress: dict) -> dict | None:
    mig = ob.status(cur).get("migration") or {}
    if mig.get("uuid") != mig_uuid or mig.get("step") != MigrationStep.LIVE_MIGRATING:
        return None
    return {"status": {"migration": {**mig, "progress": progress}}}


class LiveMigrator:
    def __init__(self, ctx: AgentContext, report: Reporter, userdata: UserData,
                 tls: Callable[[], ssl.SSLContext], builder: Builder) -> None:
        self.ctx = ctx
        self.report = report
        self.userdata = userdata
        #: fetches an ISO-booted guest's ISO into this host's cache
        self.builder = builder
        #: the client side of the call to the destination agent (the cold
        #: migration's: this agent's migration certificate)
        self.tls = tls

    def _write(self, obj: dict, patch: Any) -> dict | None:
        kube = self.ctx.kube
        md = obj["metadata"]
        path = instance_path(md["namespace"], md["name"])
        uid = md["uid"]

        def guarded(cur: dict) -> dict | None:
            return None if cur["metadata"]["uid"] != uid else patch(cur)

        new = kube.run(kube.aio.patch_guarded(path + "/status", obj, guarded, read_path=path,
                                              retries=10))
        if new is not None:
            self.report.watch.store_own_write(new)
        return new

    # ------------------------------------------------------------ Preparing
    def prepare(self, obj: dict, info: DomainInfo | None) -> None:
        """On the source: ask the destination agent to prepare (its stream
        endpoint, mutual TLS with this agent's migration certificate), then
        step LiveMigrating with its answer, and migrate."""
        mig = ob.status(obj)["migration"]
        uid, key, dest = ob.uid(obj) or "", ob.key(obj), mig["destHost"]
        if info is None or not info.state.running:
            self._fail(obj, mig, f"the guest is not running on {self.ctx.host}", None,
                       after=MigrationStep.PREPARING)
            return
        address, port = stream_endpoint(self.ctx.kube.get_or_none(host_path(dest)), dest)
        params = {"namespace": key[0], "name": key[1]}
        mac = guest_mac(self.ctx.driver.conn.lookupByUUIDString(uid).XMLDesc(0))
        if mac:
            params["mac"] = mac
        try:
            with httpx.Client(verify=self.tls(), timeout=120.0) as client:
                resp = client.put(f"https://{address}:{port}/v1/domains/{uid}/live-prepare",
                                  params=params,
                                  extensions={"sni_hostname": names.STREAM_SERVER_NAME})
        except httpx.HTTPError as exc:
            raise MoveError(f"the destination {dest} ({address}:{port}) did not answer: "
                            f"{exc}") from exc
        if resp.status_code == 409:  # the destination cannot receive it
            self._fail(obj, mig, f"{dest}: {resp.json().get('message', resp.text)}", None,
                       after=MigrationStep.PREPARING)
            return
        if resp.status_code != 201:
            raise MoveError(f"the destination {dest} refused to prepare: {resp.status_code} "
                            f"{resp.text[:300]}")
        got = resp.json()
        nic = {"destNicFilter": got["nicFilter"]} if got.get("nicFilter") else {}
        if got.get("cdrom"):
            nic["destCdrom"] = got["cdrom"]
        new = self._write(obj, lambda cur: step_status(
            cur, mig["uuid"], MigrationStep.LIVE_MIGRATING, destUri=got["destUri"],
            destDir=got["destDir"], **nic))
        if new is not None:
            self.migrate(new, info)

    def prepare_here(self, namespace: str, name: str, uid: str,
                     mac: str | None = None) -> dict:
        """On the destination (the stream endpoint's live-prepare): an
        empty disk of the Instance's size and its seed in this host's
        Instance directory, and this host's filter for a NIC with ``mac``
        (the guest's) of ``namespace``.  Raises MoveError when it cannot
        receive it."""
        obj = self.ctx.kube.get_or_none(instance_path(namespace, name))
        mig = ob.status(obj or {}).get("migration") or {}
        if (obj is None or ob.uid(obj) != uid or mig.get("mode") != names.MigrationMode.LIVE
                or mig.get("destHost") != self.ctx.host
                or mig.get("step") != MigrationStep.PREPARING):
            raise MoveError(f"no live migration of {namespace}/{name} to {self.ctx.host} is "
                            "being prepared")
        uri = self.ctx.cfg.live_migration_uri
        if not uri:
            raise MoveError(f"{self.ctx.host} has no --live-migration-uri: it cannot receive "
                            "a live migration")
        if self.ctx.driver.get(uid) is not None:
            raise MoveError(f"a domain {uid} is already defined on {self.ctx.host}")
        if not self.userdata.ready(obj):
            raise MoveError(f"the user data of {namespace}/{name} cannot be read on "
                            f"{self.ctx.host} yet")
        files = self.ctx.files(uid)
        files.dir.mkdir(parents=True, exist_ok=True)
        files.info.write_text(json.dumps({"uid": uid, "namespace": namespace, "name": name,
                                          "host": self.ctx.host}))
        # an ISO-booted guest's CD-ROM: this host's own verified copy
        cdrom = own_cdrom(self.builder, self.ctx.host, obj, files)
        size = mig.get("newResources") or mig["oldResources"]
        files.disk.unlink(missing_ok=True)  # a repeated step starts from an empty disk
        # A UEFI guest's variable store: libvirt makes a placeholder from the
        # firmware's template when the guest arrives, and QEMU overwrites it
        # with the guest's variables (docs/moving.md); never a stale one.
        files.nvram.unlink(missing_ok=True)
        migration.create_destination_disk(str(files.disk), int(size["diskGiB"]) * GiB)
        self.userdata.write_seed(obj, files)
        out = {"destUri": uri, "destDir": str(files.dir)}
        if cdrom is not None:
            out["cdrom"] = str(cdrom)
        if mac and self.ctx.with_nic:
            nwfilter = self.ctx.nic_filter(namespace, mac)
            if nwfilter:
                out["nicFilter"] = nwfilter
        log.info("%s/%s: ready to receive the live migration %s from %s at %s (NIC filter %s)",
                 namespace, name, mig["uuid"], mig.get("sourceHost"), uri,
                 out.get("nicFilter", "none"))
        return out

    # ------------------------------------------------------------ LiveMigrating (source)
    def migrate(self, obj: dict, info: DomainInfo | None) -> None:
        mig = ob.status(obj)["migration"]
        uid, key = ob.uid(obj) or "", ob.key(obj)
        if info is None:
            # libvirt undefines the source only after a completed migration.
            log.info("%s/%s: the domain is gone from %s: live migration %s completed", *key,
                     self.ctx.host, mig["uuid"])
            self._done(obj, mig, None)
            return
        if mig.get("decision") == MigrationDecision.ABORT:
            self._fail(obj, mig, f"aborted by {mig.get('decidedBy') or 'a user'} before it "
                       "started", None)
            return
        conn = libvirt.open(self.ctx.cfg.libvirt_uri)
        try:
            dom = conn.lookupByUUIDString(uid)
            if not dom.isActive():
                if migration.migrated_away(dom):
                    # libvirt completed the migration of an agent that died
                    # in the middle: the guest runs on the destination.
                    log.info("%s/%s: live migration %s to %s completed while this agent "
                             "was away", *key, mig["uuid"], mig["destHost"])
                    self._done(obj, mig, migration.finish_source(dom))
                    return
                self._fail(obj, mig, "the guest is not running", None)
                return
            if nic_filters(dom.XMLDesc(0)) and not mig.get("destNicFilter"):
                self._fail(obj, mig, f"the guest's NIC is filtered on {self.ctx.host} but "
                           f"{mig['destHost']} named no network filter for it (no --network "
                           "or --bridge there, or its guest network filter is off): it would "
                           "run unfiltered there", None)
                return
            if self.ctx.files(uid).cdrom.is_symlink() and not mig.get("destCdrom"):
                self._fail(obj, mig, f"the guest has the ISO of its Image on a CD-ROM but "
                           f"{mig['destHost']} named no copy of it in its cache", None)
                return
            if dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
                # the job of an agent that died in the middle: let it end
                raise MoveError(f"a job (a live migration started before a restart) still "
                                f"runs on the domain of {key[0]}/{key[1]}: waiting for it")
            opts = self._options(dom, mig)
            abort = migration.Abort()
            watcher = _Progress(self, obj, mig, abort)
            log.info("%s/%s: live migration %s to %s (%s)", *key, mig["uuid"], mig["destHost"],
                     mig["destUri"])
            try:
                done = migration.live_migrate(dom, mig["destUri"], opts, watcher, abort)
            except migration.LiveMigrationError as exc:
                self.ctx.metrics.live_migrations.labels(result=exc.reason).inc()
                self._fail(obj, mig, f"{exc.reason}: {exc}{lost_destination(str(exc), mig)}",
                           exc.progress)
                return
        finally:
            conn.close()
        metrics = self.ctx.metrics
        metrics.live_migrations.labels(result=migration.COMPLETED).inc()
        metrics.live_migration_seconds.observe((done.total_ms or done.elapsed_ms) / 1000)
        metrics.live_migration_downtime.observe((done.downtime_ms or 0) / 1000)
        self._done(obj, mig, done)

    def _options(self, dom: libvirt.virDomain, mig: dict) -> migration.LiveMigrationOptions:
        cfg = self.ctx.cfg
        if not mig.get("destUri") or not mig.get("destDir"):
            raise MoveError(f"live migration {mig['uuid']}: the destination named no URI or "
                            "directory")
        files = self.ctx.files(dom.UUIDString())
        cdrom = ((os.readlink(files.cdrom), mig["destCdrom"])
                 if mig.get("destCdrom") and files.cdrom.is_symlink() else None)
        return migration.LiveMigrationOptions(
            bandwidth_mib=cfg.live_migration_bandwidth_mib or None,
            post_copy=cfg.live_migration_post_copy,
            completion_timeout=cfg.live_migration_timeout,
            path_map=path_map(dom.XMLDesc(0), str(files.dir), mig["destDir"], cdrom),
            xml_edit=lambda xml: self._dest_xml(xml, mig))

    @staticmethod
    def _dest_xml(xml: str, mig: dict) -> str:
        """The guest's XML as the destination defines it: its host there
        and the destination's NIC filter."""
        xml = with_host(xml, mig["destHost"])
        nwfilter = mig.get("destNicFilter")
        return with_nic_filter(xml, nwfilter) if nwfilter else xml

    def _done(self, obj: dict, mig: dict, done: migration.MigrationProgress | None) -> None:
        fields = {"progress": done.as_status()} if done else {}
        self._write(obj, lambda cur: step_status(cur, mig["uuid"], MigrationStep.MIGRATED,
                                                 **fields))
        shutil.rmtree(self.ctx.files(ob.uid(obj) or "").dir, ignore_errors=True)
        self.report.event(obj, "Normal", names.EVENT_MOVED,
                          f"{self.ctx.host}: live-migrated to {mig['destHost']}"
                          + (f" in {done.total_ms} ms, downtime {done.downtime_ms} ms"
                             if done else ""))

    def _fail(self, obj: dict, mig: dict, why: str,
              progress: migration.MigrationProgress | None,
              after: str = MigrationStep.LIVE_MIGRATING) -> None:
        log.warning("%s/%s: live migration %s to %s failed: %s", *ob.key(obj), mig["uuid"],
                    mig.get("destHost"), why)
        fields: dict[str, Any] = {"failure": why[:2048]}
        if progress is not None:
            fields["progress"] = progress.as_status()
        self._write(obj, lambda cur: step_status(cur, mig["uuid"], MigrationStep.FAILED,
                                                 after=after, **fields))


class _Progress:
    """``on_progress`` of a running migration: the progress into the
    Instance every PROGRESS_EVERY seconds; an abort asked meanwhile passed on."""

    def __init__(self, owner: LiveMigrator, obj: dict, mig: dict,
                 abort: migration.Abort) -> None:
        self.owner = owner
        self.obj = obj
        self.mig = mig
        self.abort = abort
        self.last = 0.0

    def __call__(self, progress: migration.MigrationProgress) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY or progress.phase == migration.COMPLETED:
            return
        self.last = now
        new = self.owner._write(self.obj, lambda cur: progress_status(
            cur, self.mig["uuid"], progress.as_status()))
        current = new or self.owner.report.watch.get(ob.key(self.obj)) or {}
        if (ob.status(current).get("migration") or {}).get("decision") == \
                MigrationDecision.ABORT and not self.abort.requested:
            log.info("%s/%s: aborting live migration %s as asked", *ob.key(self.obj),
                     self.mig["uuid"])
            self.abort()
        self.obj = new or self.obj


#: libvirt's words when the source's connection to the destination's
#: libvirtd broke (it stopped, crashed or became unreachable) mid-migration.
CONNECTION_LOST = ("client socket is closed", "end of file while reading", "connection reset",
                   "cannot recv data", "keepalive timeout", "broken pipe", "connection refused",
                   "unable to connect to server")


def lost_destination(message: str, mig: dict) -> str:
    """What to add to a failed migration's message when libvirt's says the
    connection to the destination's libvirtd was lost (libvirt's own words
    do not name it)."""
    if not any(words in message.lower() for words in CONNECTION_LOST):
        return ""
    return (f"; the connection to the destination's libvirtd ({mig.get('destHost')}, "
            f"{mig.get('destUri')}) was lost: it stopped or became unreachable")
