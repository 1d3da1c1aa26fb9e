"""The agent's part of a resize (Nova's ``migrate_disk_and_power_off`` +
``finish_migration`` on one host, and ``finish_revert_migration``).

Step Moving, on the destination host (the same host for a resize there):

1. note in ``<instance-dir>/<uid>/move.json`` whether the guest ran (so a
   repeated step after a crash still knows), then stop it (ACPI shutdown,
   destroyed after ``--shutdown-timeout``);
2. keep the disk as it was: ``disk.pre-move.qcow2`` (a copy of the overlay,
   written under a temporary name and renamed), for a revert;
3. grow the disk to the new size (``qemu-img resize``; never shrunk);
4. define the domain again with the new vCPUs and memory (its Kova metadata
   kept), start it if it ran, and record step Verify.

Step Reverting: stop it, the kept disk back in place, the old size
defined, started if it ran; step Reverted.  Once the move is confirmed (no
record any more) the kept disk and the note go (:meth:`Mover.tidy`).

Each step is repeatable from any line: the files and the domain are looked
at afresh, and the status write is guarded by the migration's UUID.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess

import libvirt

from kova.agents.context import AgentContext, GiB, InstanceFiles
from kova.agents.instance import decisions
from kova.agents.instance.build import Builder
from kova.agents.instance.report import Reporter
from kova.agents.virt.domain import DomainSpec, build_domain_xml
from kova.agents.virt.driver import DomainInfo
from kova.agents.virt.images import ImageSource, private_file, qemu_img_info
from kova.conditions import now_rfc3339
from kova.crds import names
from kova.crds import objects as ob
from kova.crds.names import MigrationStep
from kova.kube import instance_path

log = logging.getLogger("kova.agents.instance.move")

KEPT_DISK = "disk.pre-move.qcow2"
NOTE = "move.json"


class MoveError(Exception):
    """The host cannot do its part of a move (the message says why)."""


def grow_disk(disk: os.PathLike, size_bytes: int) -> bool:
    """Grow qcow2 ``disk`` to ``size_bytes`` (virtual); never shrinks.
    True when it grew."""
    current = int(qemu_img_info(disk).get("virtual-size") or 0)
    if size_bytes <= current:
        return False
    proc = subprocess.run(["qemu-img", "resize", "-q", "-f", "qcow2", str(disk),
                           str(size_bytes)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise MoveError(f"qemu-img resize failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return True


class Mover:
    def __init__(self, ctx: AgentContext, report: Reporter, builder: Builder) -> None:
        self.ctx = ctx
        self.report = report
        self.builder = builder

    # ------------------------------------------------------------ Moving
    def move(self, obj: dict, info: DomainInfo) -> None:
        mig = ob.status(obj)["migration"]
        uid, key = info.uuid, ob.key(obj)
        files = self.ctx.files(uid)
        new = mig.get("newResources") or mig["oldResources"]
        log.info("%s/%s: %s to %s vCPU, %s MiB, %s GiB (migration %s)", *key, mig["type"],
                 new["vcpus"], new["memoryMiB"], new["diskGiB"], mig["uuid"])
        was_running = self._stop(obj, files, f"{mig['uuid']}/{MigrationStep.MOVING}")
        kept = files.dir / KEPT_DISK
        if not kept.exists():
            tmp = files.dir / f".{KEPT_DISK}.part"
            shutil.copyfile(files.disk, private_file(tmp))
            os.replace(tmp, kept)
        grow_disk(files.disk, int(new["diskGiB"]) * GiB)
        self._define(obj, info, new, files)
        self._finish(obj, info, mig, was_running, MigrationStep.VERIFY)
        self.report.event(obj, "Normal", names.EVENT_MOVED,
                          f"{self.ctx.host}: running with {new['vcpus']} vCPU, "
                          f"{new['memoryMiB']} MiB, {new['diskGiB']} GiB; confirm or revert")

    # ------------------------------------------------------------ Reverting
    def revert(self, obj: dict, info: DomainInfo) -> None:
        mig = ob.status(obj)["migration"]
        uid = info.uuid
        files = self.ctx.files(uid)
        old = mig["oldResources"]
        log.info("%s/%s: reverting to %s vCPU, %s MiB, %s GiB (migration %s)", *ob.key(obj),
                 old["vcpus"], old["memoryMiB"], old["diskGiB"], mig["uuid"])
        was_running = self._stop(obj, files, f"{mig['uuid']}/{MigrationStep.REVERTING}")
        kept = files.dir / KEPT_DISK
        if kept.exists():
            os.replace(kept, files.disk)
        self._define(obj, info, old, files)
        self._finish(obj, info, mig, was_running, MigrationStep.REVERTED)
        (files.dir / NOTE).unlink(missing_ok=True)

    # ------------------------------------------------------------ after
    def tidy(self, obj: dict) -> None:
        """No move recorded any more: drop the kept disk and the note."""
        if ob.status(obj).get("migration"):
            return
        files = self.ctx.files(ob.uid(obj) or "")
        kept = files.dir / KEPT_DISK
        if kept.exists() or (files.dir / NOTE).exists():
            log.info("%s/%s: the move is over; removing the kept disk", *ob.key(obj))
            kept.unlink(missing_ok=True)
            (files.dir / NOTE).unlink(missing_ok=True)

    # ------------------------------------------------------------ parts
    def _stop(self, obj: dict, files: InstanceFiles, mark: str) -> bool:
        """Stop the guest; whether it ran before this step (kept in the note
        under ``mark``, so a repeat after a crash knows)."""
        note = files.dir / NOTE
        uid = ob.uid(obj) or ""
        recorded = None
        if note.exists():
            data = json.loads(note.read_text() or "{}")
            if data.get("step") == mark:
                recorded = bool(data.get("wasRunning"))
        state = self.ctx.driver.state(uid)
        paused = bool(state and state.state == libvirt.VIR_DOMAIN_PAUSED)
        running = bool(state and state.running)
        if recorded is None:
            recorded = running or paused
            tmp = files.dir / f".{NOTE}.part"
            tmp.write_text(json.dumps({"step": mark, "wasRunning": recorded}))
            os.replace(tmp, note)
        self.ctx.memory.stopping.pop(uid, None)
        if paused:
            self.ctx.driver.destroy(uid)
        elif running:
            self.ctx.driver.stop(uid, timeout=self.ctx.cfg.shutdown_timeout)
        return recorded

    def _define(self, obj: dict, info: DomainInfo, size: dict, files: InstanceFiles) -> None:
        """Define the domain again at ``size`` (its Kova metadata kept)."""
        builder = self.builder
        image = builder.image(obj)
        props = ob.spec(image).get("properties") or {}
        spec = builder._domain_spec(obj, size, ImageSource.from_image(image), files, props)
        if info.meta is not None:
            spec = dataclasses.replace(spec, meta=info.meta)
        self.define_spec(obj, spec)

    def define_spec(self, obj: dict, spec: DomainSpec) -> DomainInfo:
        """Define ``spec`` (dedicated CPUs chosen for a Flavor that asks)."""
        with self.ctx.pinning:
            if self.builder.dedicated(obj):
                spec = dataclasses.replace(
                    spec, pinned_cpus=self.builder.choose_pcpus(spec.meta.uid, spec.vcpus))
            return self.ctx.driver.define(build_domain_xml(spec))

    def _finish(self, obj: dict, info: DomainInfo, mig: dict, start: bool,
                step: str, *, was_running: bool | None = None) -> None:
        """Start the guest if ``start``, then record ``step`` (and whether the
        guest ran before the move: ``was_running``, default ``start``)."""
        uid = info.uuid
        if start:
            self.ctx.driver.start(uid)
        new = self.write_step(obj, uid, mig, step, start if was_running is None else was_running)
        state = self.ctx.driver.state(uid)
        if new is not None and state is not None:
            self.report.observed(new, state, applied=info.meta.applied_spec
                                 if info.meta else "")

    def write_step(self, obj: dict, uid: str, mig: dict, step: str,
                   was_running: bool) -> dict | None:
        """Record ``step`` of migration ``mig`` (guarded by its UUID); the
        Instance as written, or None when the record moved on."""
        kube = self.ctx.kube
        md = obj["metadata"]
        path = instance_path(md["namespace"], md["name"])
        now = now_rfc3339()

        def patch(cur: dict) -> dict | None:
            if cur["metadata"]["uid"] != uid:
                return None
            status = decisions.moved_status(cur, mig["uuid"], step=step,
                                            was_running=was_running, now=now)
            return None if status is None else {"status": status}

        new = kube.run(kube.aio.patch_guarded(path + "/status", obj, patch, read_path=path,
                                              retries=10))
        if new is not None:
            self.report.watch.store_own_write(new)
        return new
