"""Instance objects as the API server returns them, for the operator's unit
tests of its pure decisions."""

from __future__ import annotations

import json

from kova.crds import names

HOST = "compute-1"


def instance(*, host: str | None = None, phase: str | None = None, deleting: bool = False,
             finalizers: tuple[str, ...] = (names.FINALIZER_OPERATOR,),
             label: str | None = "same", attempts: int | None = None,
             built: tuple[str, str, str] | None = None, failed_image: str | None = None,
             history: list[dict] | None = None, alternates: list[str] | None = None,
             conditions: list[dict] | None = None, uid: str = "uid-1",
             name: str = "vm-1", image: str = "cirros", group: str | None = None) -> dict:
    """An Instance.  ``label="same"`` labels it with its host (when it has
    one); ``built`` is the Built condition ``(status, reason, message)``."""
    meta: dict = {"name": name, "namespace": "ns", "uid": uid, "generation": 2,
                  "resourceVersion": "7", "finalizers": list(finalizers),
                  "creationTimestamp": "2026-01-01T00:00:00Z"}
    if label == "same":
        label = host
    if label:
        meta["labels"] = {names.LABEL_HOST: label}
    annotations = {}
    if failed_image is not None:
        annotations[names.ANNOTATION_FAILED_IMAGE] = failed_image
    if history is not None:
        annotations[names.ANNOTATION_ATTEMPTS] = json.dumps(history)
    if annotations:
        meta["annotations"] = annotations
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    spec: dict = {"flavorRef": {"name": "small"}, "imageRef": {"name": image}}
    if group:
        spec["serverGroupRef"] = {"name": group}
    status: dict = {}
    if host:
        status["host"] = host
    if phase:
        status["phase"] = phase
    if attempts is not None:
        status["attempts"] = attempts
    if alternates is not None:
        status["alternateHosts"] = alternates
    conds = list(conditions or [])
    if built is not None:
        conds.append({"type": names.COND_BUILT, "status": built[0], "reason": built[1],
                      "message": built[2], "lastTransitionTime": "2026-01-01T00:00:30Z"})
    if conds:
        status["conditions"] = conds
    body = {"apiVersion": names.API_VERSION, "kind": "Instance", "metadata": meta,
            "spec": spec}
    if status:
        body["status"] = status
    return body


def build_failed(message: str = "HypervisorError: libvirt said no") -> tuple[str, str, str]:
    return ("False", names.REASON_BUILD_FAILED, message)
