"""What this host knows of an Image, written into ``Image.status``.

Every agent applies the Image's status with a field manager of its own
(``kova-agent.<host>``), so that ``status.cachedOn`` (a set) holds one entry
per host and each agent adds or removes only its own:

* a verified copy (a fetch, or the first cache hit since the agent started):
  ``sizeBytes``, ``virtualSizeBytes``, ``sha256``, ``format``, this host in
  ``cachedOn`` and ``Available=True`` (reason ``Verified``);
* a refused file (checksum, format, an external reference, a source the
  agent does not fetch from, a failed download): ``Available=False`` with the
  refusal's code as reason and its message, this host out of ``cachedOn``,
  and a Warning Event on the Image;
* an evicted copy: this host out of ``cachedOn``; the rest stays.

Status writes are best effort: an Image deleted meanwhile, or an API-server
error, is logged and the build goes on.
"""

from __future__ import annotations

import logging
import threading

from kova import events
from kova.agents.context import AgentContext
from kova.agents.virt.images import CachedImage
from kova.conditions import new_condition
from kova.crds import names
from kova.kube import KubeError, image_path

log = logging.getLogger("kova.agents.image_status")

AVAILABLE = "Available"
REASON_VERIFIED = "Verified"


class ImageStatus:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.manager = f"{names.FIELD_MANAGER_AGENT}.{ctx.host}"[:128]
        #: Images whose verified copy this agent reported: {name: sha256}.
        self._reported: dict[str, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(image: dict) -> str:
        """``<name>`` of an Image, ``<namespace>/<name>`` of a TenantImage."""
        meta = image["metadata"]
        return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]

    def _apply(self, image: dict, status: dict) -> dict | None:
        key = self._key(image)
        meta = {k: v for k, v in image["metadata"].items() if k in ("name", "namespace")}
        body = {"apiVersion": names.API_VERSION,
                "kind": image.get("kind") or ("TenantImage" if "/" in key else "Image"),
                "metadata": meta, "status": status}
        try:
            return self.ctx.kube.apply(image_path(key, subresource="status"), body,
                                       field_manager=self.manager)
        except KubeError as exc:
            if exc.status != 404:
                log.warning("image %s: status not written: %s", key, exc)
            return None

    def _available(self, image: dict, status: str, reason: str, message: str) -> dict:
        prev = next((c for c in (image.get("status") or {}).get("conditions") or ()
                     if c.get("type") == AVAILABLE), None)
        generation = int(image["metadata"].get("generation") or 0)
        return new_condition(prev, AVAILABLE, status, reason, message, generation)

    def verified(self, image: dict, cached: CachedImage) -> None:
        """This host holds a verified copy of ``image``."""
        name = self._key(image)
        with self._lock:
            if self._reported.get(name) == cached.sha256:
                return
        status = {
            "observedGeneration": int(image["metadata"].get("generation") or 0),
            "sizeBytes": cached.size, "virtualSizeBytes": cached.virtual_size,
            "sha256": cached.sha256, "format": cached.format,
            "cachedOn": [self.ctx.host],
            "conditions": [self._available(image, "True", REASON_VERIFIED,
                                           f"verified on {self.ctx.host} (sha256 "
                                           f"{cached.sha256[:16]}...)")],
        }
        if self._apply(image, status) is not None:
            with self._lock:
                self._reported[name] = cached.sha256

    def refused(self, image: dict, code: str, message: str) -> None:
        """This host could not use ``image``: the condition and a Warning Event."""
        name = self._key(image)
        with self._lock:
            self._reported.pop(name, None)
        text = f"{self.ctx.host}: {message}"
        self._apply(image, {
            "observedGeneration": int(image["metadata"].get("generation") or 0),
            "conditions": [self._available(image, "False", code, text)],
        })
        kube = self.ctx.kube
        try:
            kube.run(events.post(kube.aio, image, "Warning", code, text,
                                 component=names.COMPONENT_AGENT, host=self.ctx.host))
        except Exception as exc:  # an Event is best effort
            log.warning("Image %s: Event not posted: %s", name, exc)

    def evicted(self, name: str) -> None:
        """This host removed its copy of Image ``name`` (``<namespace>/<name>``:
        a TenantImage) from its cache."""
        with self._lock:
            self._reported.pop(name, None)
        kube = self.ctx.kube
        image = kube.get_or_none(image_path(name))
        if image is None:
            return
        # Applying without this host's cachedOn entry removes it; the other
        # fields this manager owns are applied as they are.
        status = image.get("status") or {}
        mine = {k: status[k] for k in ("observedGeneration", "sizeBytes", "virtualSizeBytes",
                                       "sha256", "format") if k in status}
        cond = next((c for c in status.get("conditions") or () if c.get("type") == AVAILABLE),
                    None)
        if cond is not None:
            mine["conditions"] = [cond]
        self._apply(image, mine)
