"""Building an Instance's domain: the finalizer first, then the image (fetched
into the host's cache), the qcow2 overlay, the NoCloud seed and the domain
definition.  The domain is defined shut off; :mod:`~kova.agents.instance.power`
starts it.

A build is idempotent (a half-built Instance -- an overlay without a domain --
is finished with the same overlay).  A failure the user can act on becomes
``Built=False/BuildFailed`` with its code (see
:func:`~kova.agents.instance.decisions.build_failure`), the partial work is
removed and the agent's finalizer dropped; the operator reschedules.  An
API-server error is not a build failure: the reconcile is retried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

from kova.agents.context import AgentContext, GiB, InstanceFiles
from kova.agents.image_status import ImageStatus
from kova.agents.instance import decisions, restart_fields
from kova.agents.instance.decisions import BuildError
from kova.agents.instance.report import Reporter
from kova.agents.instance.teardown import Teardown
from kova.agents.instance.userdata import UserData
from kova.agents.virt import cpus
from kova.agents.virt.domain import (
    DomainMetadata,
    DomainSpec,
    build_domain_xml,
    domain_name,
)
from kova.agents.virt.driver import DomainInfo, DriverError
from kova.agents.virt.images import (
    CachedImage,
    ImageError,
    ImageSource,
    backing_file,
    create_blank_disk,
    create_overlay,
    remove_tree,
)
from kova.agents.virt.netfilter import filterref_params
from kova.conditions import now_rfc3339
from kova.crds import names
from kova.crds import objects as ob
from kova.kube import custom_path, image_path

log = logging.getLogger("kova.agents.instance.build")


class Steps:
    """The time each build step took, for the log line."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self._marks: list[tuple[str, float]] = []

    def __call__(self, name: str) -> None:
        self._marks.append((name, time.monotonic()))

    def summary(self) -> str:
        prev, parts = self.t0, []
        for name, t in self._marks:
            parts.append(f"{name} {t - prev:.3f}")
            prev = t
        return ", ".join(parts)


def link_cdrom(cached: Path, files: InstanceFiles) -> None:
    """The Instance's ``cdrom.iso``: a link to the cached ISO, which the
    domain's CD-ROM names and which keeps the cache from evicting it."""
    link = files.cdrom
    if not link.is_symlink() or Path(os.readlink(link)) != cached:
        tmp = link.with_name(f".{link.name}.part")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(cached)
        os.replace(tmp, link)


def cdrom_ejected(obj: dict) -> bool:
    """Whether the Instance's ISO was ejected (``status.cdrom.ejected``,
    written by ``kubectl kova eject``): its domain then gets an empty CD-ROM
    drive and boots from the root disk, and no host links or fetches the ISO
    for it any more."""
    return bool((ob.status(obj).get("cdrom") or {}).get("ejected"))


class Builder:
    def __init__(self, ctx: AgentContext, report: Reporter, teardown: Teardown,
                 userdata: UserData) -> None:
        self.ctx = ctx
        self.report = report
        self.teardown = teardown
        self.userdata = userdata
        self.image_status = ImageStatus(ctx)

    def build(self, obj: dict) -> DomainInfo:
        """Create everything for a new domain and define it.  Raises
        :class:`BuildError`; partial work is removed."""
        uid = obj["metadata"]["uid"]
        key = ob.key(obj)
        steps = Steps()
        self.ctx.memory.build_started[uid] = steps.t0
        obj = self.teardown.add_finalizer(obj)
        steps("finalizer")
        log.info("%s/%s: building (uid %s)", *key, uid)
        self.report.instance_status(obj, decisions.building_status(obj, self.ctx.host))
        steps("status")
        files = self.ctx.files(uid)
        created_dir = not files.dir.exists()
        try:
            defined = self._create(obj, files, steps)
        except Exception as exc:
            failure = decisions.build_failure(exc)
            if failure is None:
                raise  # an API-server hiccup (retry the reconcile) or a bug
            self.undo(uid, created_dir)
            if failure is exc:
                raise
            raise failure from exc
        log.info("%s/%s: domain defined in %.2fs (%s)", *key, time.monotonic() - steps.t0,
                 steps.summary())
        self.ctx.metrics.builds.labels("ok").inc()
        return defined

    def _create(self, obj: dict, files: InstanceFiles, steps: Steps) -> DomainInfo:
        uid = obj["metadata"]["uid"]
        key = ob.key(obj)
        self._replace_earlier_domain(uid, key)
        res = self.resources(obj)
        image = self.image(obj)
        source = ImageSource.from_image(image)
        files.dir.mkdir(parents=True, exist_ok=True)
        files.info.write_text(json.dumps(
            {"uid": uid, "namespace": key[0], "name": key[1], "host": self.ctx.host}))
        steps("lookups")
        cached = self._fetch(image, source)
        steps("image")
        if source.format == names.ImageFormat.ISO:
            self._iso_disks(cached, files, int(res["diskGiB"]) * GiB, cdrom_ejected(obj))
        elif not files.disk.exists():
            create_overlay(cached, files.disk, int(res["diskGiB"]) * GiB)
        steps("overlay")
        mac = self.ctx.guest_mac(uid) if self.ctx.with_nic else None
        self.userdata.write_seed(obj, files, mac=mac)
        spec = self._domain_spec(obj, res, source, files, ob.spec(image).get("properties") or {},
                                 mac=mac)
        steps("seed")
        with self.ctx.pinning:
            if self.dedicated(obj):
                spec = dataclasses.replace(spec, pinned_cpus=self.choose_pcpus(uid, spec.vcpus))
            defined = self.ctx.driver.define(build_domain_xml(spec))
        steps("define")
        return defined

    @staticmethod
    def _iso_disks(cached: CachedImage, files: InstanceFiles, size: int,
                   ejected: bool = False) -> None:
        """An ISO boots as a CD-ROM (Nova's libvirt driver does the same): the
        link to the cached ISO (none once ejected) and a blank root disk of
        the size claimed."""
        if not ejected:
            link_cdrom(cached.path, files)
        if not files.disk.exists():
            create_blank_disk(files.disk, size)

    def cdrom_here(self, obj: dict, files: InstanceFiles) -> Path | None:
        """For an Instance of an iso Image arriving on this host (a move):
        the ISO fetched into this host's cache and verified, linked from the
        Instance's directory here; its cached path.  None for an Instance of
        any other image, or whose ISO was ejected.  Raises
        :class:`ImageError` (also written into the Image's status) when this
        host cannot use the ISO."""
        image = self.image(obj)
        source = ImageSource.from_image(image)
        if source.format != names.ImageFormat.ISO or cdrom_ejected(obj):
            files.cdrom.unlink(missing_ok=True)
            return None
        cached = self._fetch(image, source)
        files.dir.mkdir(parents=True, exist_ok=True)
        link_cdrom(cached.path, files)
        return cached.path

    def _fetch(self, image: dict, source: ImageSource) -> CachedImage:
        """The Image's file in this host's cache, fetched and verified if it
        is not there yet; the outcome written into the Image's status (a
        refusal raises :class:`ImageError`), the cached file counted."""
        try:
            cached = self.ctx.images.fetch(source)
        except ImageError as exc:
            self.image_status.refused(image, exc.code, exc.message)
            raise
        self.image_status.verified(image, cached)
        self._count_image(cached)
        return cached

    def choose_pcpus(self, uid: str, vcpus: int) -> tuple[int, ...]:
        """Dedicated host CPUs for the vCPUs of Instance ``uid``: free ones of
        the Host's cpuDedicatedSet (no other domain of this host pinned to
        them).  Called with ``ctx.pinning`` held."""
        in_use: set[int] = set()
        for dom in self.ctx.driver.list_domains():
            if dom.uuid != uid and decisions.is_mine(dom.meta, self.ctx.host):
                in_use |= cpus.pinned_cpus(dom.xml)
        try:
            return cpus.choose_pcpus(self.ctx.cpus.dedicated, in_use, vcpus)
        except ValueError as exc:
            raise BuildError(names.ERROR_LIBVIRT, str(exc)) from None

    def dedicated(self, obj: dict) -> bool:
        """Whether the Instance's Flavor asks for dedicated CPUs."""
        flavor = self._flavor(obj)
        policy = ((ob.spec(flavor).get("extraSpecs") or {}).get("cpuPolicy")
                  if flavor else None)
        return policy == names.CPUPolicy.DEDICATED

    def _replace_earlier_domain(self, uid: str, key: tuple[str, str]) -> None:
        """A domain of an earlier Instance with the same name is an orphan:
        removed when this agent made it, a build failure otherwise."""
        name = domain_name(*key)
        old = self.ctx.driver.lookup_name(name)
        if old is None or old.UUIDString() == uid:
            return
        old_info = self.ctx.driver.info(old)
        if not decisions.is_mine(old_info.meta, self.ctx.host):
            raise BuildError(names.ERROR_LIBVIRT,
                             f"a domain named {name} that this agent did not "
                             f"create exists (uuid {old_info.uuid})")
        self.teardown.remove_stale(old_info.uuid, key)

    def _domain_spec(self, obj: dict, res: dict, source: ImageSource,
                     files: InstanceFiles, props: dict, mac: str | None = None) -> DomainSpec:
        """The domain of ``obj``: its size, files, the agent's settings and
        the Image's properties (``props``: firmware; a UEFI guest keeps its
        variables in the Instance's directory)."""
        cfg, md = self.ctx.cfg, obj["metadata"]
        uid = md["uid"]
        uefi = props.get("firmware") == names.Firmware.UEFI
        if mac is None and self.ctx.with_nic:
            mac = self.ctx.guest_mac(uid)
        arch = self.check_arch(source.name, props.get("architecture") or "x86_64")
        return DomainSpec(
            meta=DomainMetadata(
                uid=uid, namespace=md["namespace"], name=md["name"], host=self.ctx.host,
                image=source.name, generation=int(md.get("generation") or 0),
                created=now_rfc3339(),
                restart_token=ob.annotations_of(obj).get(names.ANNOTATION_RESTART, ""),
                run_strategy="",
                applied_spec=restart_fields.fingerprint(ob.spec(obj)),
            ),
            vcpus=int(res["vcpus"]),
            memory_mib=int(res["memoryMiB"]),
            disk_path=str(files.disk),
            console_log=str(files.console),
            seed_path=str(files.seed),
            cdrom_path=os.readlink(files.cdrom) if files.cdrom.is_symlink() else None,
            cdrom_ejected=source.format == names.ImageFormat.ISO and cdrom_ejected(obj),
            domain_type=cfg.domain_type,  # type: ignore[arg-type]
            arch=arch,
            machine=cfg.machine,
            firmware="uefi" if uefi else "bios",
            os_type=props.get("osType") or "linux",
            disk_bus=props.get("diskBus") or "virtio",
            nic_model=props.get("nicModel") or "virtio",
            nvram_path=str(files.nvram) if uefi else None,
            cpu_mode=cfg.cpu_mode,  # type: ignore[arg-type]
            disk_cache=self.ctx.disk_cache,
            network=cfg.network,
            bridge=cfg.bridge,
            mac=mac,
            nwfilter=self.ctx.nic_filter(md["namespace"], mac) if mac else None,
            nwfilter_params=filterref_params(mac, self.ctx.guest_dhcp) if mac else (),
            vcpu_scheduler=cfg.guest_vcpu_scheduler,  # type: ignore[arg-type]
            vnc=cfg.vnc,
            shared_cpuset=self.ctx.cpus.shared_cpuset,
        )

    def check_arch(self, image: str, arch: str) -> str:
        """The Image's architecture, if this host runs it (a host of another
        architecture than Kova's, like libvirt's test driver, is not checked)."""
        host = self.ctx.arch
        if host in names.ARCH_TRAITS and host != arch:
            raise BuildError(names.ERROR_IMAGE_INVALID,
                             f"Image {image} is for {arch} (properties.architecture); "
                             f"this host is {host}")
        return arch

    def resources(self, obj: dict) -> dict:
        """vCPUs, memory and disk: what the operator claimed
        (``status.resources``), else ``spec.resources``, else the Flavor."""
        res = ob.status(obj).get("resources") or ob.spec(obj).get("resources")
        if res:
            return res
        ref = ob.ref_name(obj, "flavorRef")
        if not ref:
            raise BuildError(names.ERROR_INTERNAL,
                             "the instance has neither resources nor a flavor")
        flavor = self._flavor(obj)
        if flavor is None:
            raise BuildError(names.ERROR_INTERNAL, f"flavor {ref} not found")
        fs = ob.spec(flavor)
        return {"vcpus": fs["vcpus"], "memoryMiB": fs["memoryMiB"], "diskGiB": fs["diskGiB"]}

    def _flavor(self, obj: dict) -> dict | None:
        ref = ob.ref_name(obj, "flavorRef")
        return self.ctx.kube.get_or_none(custom_path(names.FLAVORS, ref)) if ref else None

    def image(self, obj: dict) -> dict:
        """The Image, or the TenantImage of the Instance's namespace, it boots."""
        key = ob.image_key(obj)
        if not key:
            raise BuildError(names.ERROR_IMAGE_NOT_FOUND, "the Instance names no image")
        image = self.ctx.kube.get_or_none(image_path(key))
        if image is None:
            kind = names.ImageKind.TENANT_IMAGE if "/" in key else names.ImageKind.IMAGE
            raise BuildError(names.ERROR_IMAGE_NOT_FOUND, f"{kind} {key} does not exist")
        return image

    def _count_image(self, cached: CachedImage) -> None:
        metrics = self.ctx.metrics
        if cached.hit:
            metrics.image_cache_hits.inc()
        else:
            metrics.image_cache_misses.inc()
            metrics.image_bytes.inc(cached.size)

    def undo(self, uid: str, remove_dir: bool = True) -> None:
        """Remove what a failed build left: the domain and the directory."""
        try:
            self.ctx.driver.undefine(uid)
        except DriverError as exc:
            log.warning("undefining %s after a failed build: %s", uid, exc)
        remove_tree(self.ctx.files(uid).dir)
        self.ctx.memory.build_started.pop(uid, None)

    def failed(self, obj: dict, exc: BuildError) -> None:
        """Report a failed build: nothing is left on this host, so the
        finalizer goes first (a reader who sees the condition also sees the
        finalizer gone, and deleting the Instance does not wait for this
        agent), then ``Built=False/BuildFailed`` and a Warning Event."""
        metrics = self.ctx.metrics
        log.warning("%s/%s: build failed: %s: %s", *ob.key(obj), exc.code, exc.message)
        metrics.builds.labels("failed").inc()
        metrics.build_failures.labels(exc.code).inc()
        self.teardown.remove_finalizer(obj)
        self.report.instance_status(obj, decisions.build_failed_status(obj, exc))
        self.report.event(obj, "Warning", names.REASON_BUILD_FAILED,
                          f"{self.ctx.host}: {exc.code}: {exc.message}")

    def prune_images(self) -> None:
        """Drop cached images no overlay uses: unused for ``--image-cache-ttl``
        seconds, or least recently used first while the cache's file system
        is short of ``--image-cache-min-free-percent`` (Nova's image cache
        manager); each evicted Image loses this host from ``status.cachedOn``."""
        cfg = self.ctx.cfg
        in_use = set()
        for disk in self.ctx.instance_dir.glob("*/disk.qcow2"):
            b = backing_file(disk)
            if b is not None:
                in_use.add(b)
        for link in self.ctx.instance_dir.glob("*/cdrom.iso"):
            with contextlib.suppress(OSError):
                in_use.add(Path(os.readlink(link)))
        try:
            gone = self.ctx.images.evict(
                in_use, min_age=cfg.image_cache_ttl if cfg.image_cache_ttl > 0 else None,
                min_free_percent=cfg.image_cache_min_free_percent)
        except OSError as exc:
            log.warning("image cache eviction failed: %s", exc)
            return
        for meta in gone:
            for name in meta.get("names") or [meta.get("name")]:
                if name:
                    self.image_status.evicted(name)
