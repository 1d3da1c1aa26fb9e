"""The names the compute agent and the operator agree on.

The operator (issue 6) schedules an Instance onto a host by setting
``status.host`` and the label :data:`HOST_LABEL`; the agent on that host
watches only Instances carrying its label.  Everything both sides read or
write is named here so that the two stay in step; ``docs/agent.md`` explains
each item.  If the operator ships its own constants module, these values must
match it.
"""

from __future__ import annotations

try:  # the operator's contract module is the primary source (issue 6)
    from kova.operator import contract as _operator
except ImportError:  # pragma: no cover - the operator is not installed
    _operator = None


def _op(name: str, default):
    return getattr(_operator, name, default) if _operator is not None else default


GROUP = "kova.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

INSTANCES = "instances"
HOSTS = "hosts"
IMAGES = "images"
FLAVORS = "flavors"

#: Label the operator puts on a scheduled Instance; value: the host name.
HOST_LABEL = _op("LABEL_HOST", "kova.dev/host")

#: Finalizer the agent adds to an Instance it builds; removed only once the
#: domain, its overlay and its seed are gone.
AGENT_FINALIZER = _op("FINALIZER_AGENT", "kova.dev/agent")

#: Namespace of the heartbeat Leases (one per host, named after the host).
LEASE_NAMESPACE = _op("LEASE_NAMESPACE", "kova-system")
#: Lease duration the agent announces; the host monitor treats a lease older
#: than this as expired.
LEASE_DURATION_SECONDS = 40
#: How often the agent renews its Lease.
LEASE_RENEW_SECONDS = 10

#: Annotation a user sets on an Instance with runStrategy Manual to power it
#: on or off: ``on`` or ``off`` (level-triggered: the agent keeps the domain in
#: that state until the annotation changes or is removed).
POWER_ANNOTATION = "kova.dev/power"
#: Annotation a user sets to request a restart: any new value (e.g. a
#: timestamp) restarts the domain once; the agent records the last value it
#: acted on in the domain's metadata.
RESTART_ANNOTATION = "kova.dev/restart"

# --------------------------------------------------------------------------
# Conditions the agent sets on Instances.

#: True once the domain was defined (and started, unless Halted) on the host;
#: False with reason :data:`REASON_BUILD_FAILED` (message: the cause) when the
#: build failed -- the operator then reschedules to an alternate host.  The
#: message starts with one of the ``ERROR_*`` codes below ("ImageNotFound:
#: ..."); ``Ready`` is then False with that code as its reason.
COND_BUILT = _op("COND_BUILT", "Built")
#: True while the domain runs; False with a reason otherwise.
COND_READY = _op("COND_READY", "Ready")

REASON_BUILDING = "Building"
REASON_BUILT = _op("REASON_BUILT", "Built")
REASON_BUILD_FAILED = _op("REASON_BUILD_FAILED", "BuildFailed")
REASON_RUNNING = "Running"
REASON_STOPPED = "Stopped"
REASON_PAUSED = "Paused"
REASON_CRASHED = "Crashed"
REASON_DELETING = "Deleting"

#: Detail codes: the Built=False message prefix, the Ready=False reason and
#: the ``kova_agent_build_failures_total`` metric's ``reason`` label.
ERROR_IMAGE_NOT_FOUND = "ImageNotFound"
ERROR_IMAGE_CHECKSUM = "ImageChecksumMismatch"
ERROR_IMAGE_DOWNLOAD = "ImageDownloadFailed"
ERROR_IMAGE_INVALID = "ImageInvalid"
ERROR_DISK_TOO_SMALL = "DiskTooSmall"
ERROR_USER_DATA = "UserDataUnavailable"
ERROR_LIBVIRT = "HypervisorError"
ERROR_INTERNAL = "InternalError"

# --------------------------------------------------------------------------
# Host object

#: Condition on the Host: True while the agent runs and the resource provider
#: is in sync.
HOST_COND_READY = _op("COND_READY", "Ready")

#: The trait the operator keeps on the provider of a disabled Host; the agent
#: leaves it as it finds it when it rewrites its provider's traits.
TRAIT_DISABLED = _op("TRAIT_DISABLED", "COMPUTE_STATUS_DISABLED")
PLACEMENT_MICROVERSION = _op("PLACEMENT_MICROVERSION", "1.39")

#: Domain XML metadata namespace (the agent finds its domains by it).
DOMAIN_XMLNS = "https://kova.dev/xmlns/libvirt/instance/1"
DOMAIN_XMLNS_PREFIX = "kova"
