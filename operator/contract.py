"""The contract between the operator, the compute agent and Placement.

Every name another component must agree on is defined here once; the agent
imports these constants (``from kova.operator import contract``) rather than
repeating the strings.  ``docs/operator.md`` describes the same contract in
prose.
"""

from __future__ import annotations

import uuid

GROUP = "kova.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# --------------------------------------------------------------------------
# Instance metadata

#: Label the operator sets to the chosen Host's name; each agent watches only
#: the Instances labelled with its own host name.
LABEL_HOST = "kova.dev/host"

#: The operator's finalizer, added before any allocation is claimed.  Removed
#: after the agent's finalizer is gone and the allocations are deleted.
FINALIZER_OPERATOR = "kova.dev/operator"

#: The agent's finalizer: the agent adds it before it creates anything on the
#: host and removes it once the domain, its disks and seed are gone.
FINALIZER_AGENT = "kova.dev/agent"

#: Annotation holding the history of build attempts as JSON: a list of
#: ``{"attempt": n, "host": h, "reason": r, "message": m, "time": t}``.
#: Written by the operator only.
ANNOTATION_ATTEMPTS = "kova.dev/attempts"

#: Set by the operator when an Instance went to phase Error because its image
#: could not be used (the agents' image error codes below): the Image's
#: ``<uid>/<generation>`` at that time, or ``missing``.  When the Image named
#: by ``spec.imageRef`` is re-created or changed, the Instance is scheduled
#: again from scratch (reason ``Retrying``) and the annotation removed.
ANNOTATION_FAILED_IMAGE = "kova.dev/failed-image"

#: Build-failure codes (the agent's ``Built`` message prefix) that come from
#: the Image itself rather than from the host.
IMAGE_FAILURE_CODES = frozenset({
    "ImageNotFound", "ImageChecksumMismatch", "ImageDownloadFailed", "ImageInvalid",
    "DiskTooSmall",
})

#: Build-failure codes no other host can fix (the image's virtual size is
#: larger than the Instance's disk; the file is not a usable image of its
#: declared format): the Instance goes to Error at once, as Nova aborts a
#: build on FlavorDiskSmallerThanImage or ImageUnacceptable instead of
#: rescheduling it.
TERMINAL_BUILD_CODES = frozenset({"DiskTooSmall", "ImageInvalid"})

# --------------------------------------------------------------------------
# Instance conditions

#: Set by the operator: True once a host is chosen and the allocation claimed.
COND_SCHEDULED = "Scheduled"
#: Set by the agent: False with reason BuildFailed when it could not build the
#: instance on status.host; True (reason Built) once the domain is defined.
#: The operator resets it to Unknown (reason Rescheduled) when it moves the
#: instance to another host.
COND_BUILT = "Built"
#: Set by the agent: True while the guest runs.
COND_READY = "Ready"

# Reasons of the Scheduled condition (and of phase Pending / Error).
REASON_SCHEDULED = "Scheduled"
REASON_RESCHEDULED = "Rescheduled"
REASON_NO_VALID_HOST = "NoValidHost"
REASON_FLAVOR_NOT_FOUND = "FlavorNotFound"
REASON_FLAVOR_DISABLED = "FlavorDisabled"
REASON_IMAGE_NOT_FOUND = "ImageNotFound"
REASON_SERVER_GROUP_NOT_FOUND = "ServerGroupNotFound"
REASON_INVALID_REQUEST = "InvalidRequest"
REASON_MAX_ATTEMPTS = "MaxAttemptsExceeded"
REASON_PLACEMENT_ERROR = "PlacementUnavailable"
#: Scheduled=True reason after the host monitor moved the Instance off a
#: fenced host (its allocation moved, rebuilt by the new host's agent).
REASON_EVACUATED = "Evacuated"
#: Scheduled=False reason while an Instance on a fenced host waits for a host
#: to be evacuated to (it is retried with back-off).
REASON_EVACUATION_FAILED = "EvacuationFailed"
REASON_RETRYING = "Retrying"  # an Error Instance scheduled again (its Image was fixed)

# Reasons of the Built condition.
REASON_BUILD_FAILED = "BuildFailed"  # agent -> operator: reschedule me
REASON_BUILT = "Built"

# Phases the operator writes (the agent writes Building, Running, ...).
PHASE_PENDING = "Pending"
PHASE_SCHEDULED = "Scheduled"
PHASE_DELETING = "Deleting"
PHASE_ERROR = "Error"
#: Written by the host monitor on the Instances of a Down host (with
#: powerState Unknown and Ready=Unknown, reason HostDown); the agent writes the
#: real phase again once it is back.
PHASE_UNKNOWN = "Unknown"
POWER_UNKNOWN = "Unknown"
REASON_HOST_DOWN = "HostDown"

# --------------------------------------------------------------------------
# Hosts

#: Namespace of the heartbeat Leases.  The Lease is named after the Host; the
#: agent renews it (spec.renewTime, spec.leaseDurationSeconds,
#: spec.holderIdentity = host name), as the kubelet does for Nodes.
LEASE_NAMESPACE = "kova-system"

HOST_UP = "Up"
HOST_DOWN = "Down"
HOST_UNKNOWN = "Unknown"

#: Host condition the host monitor maintains from the Lease.
HOST_COND_READY = "Ready"
HOST_REASON_UP = "Up"
HOST_REASON_DOWN = "Down"

#: Host condition: True while the host is fenced (Host.spec.fenced, or its
#: Node -- the Node named like the Host -- carries the taint below).
HOST_COND_FENCED = "Fenced"
HOST_REASON_FENCED_SPEC = "SpecFenced"
HOST_REASON_FENCED_NODE = "NodeOutOfService"
HOST_REASON_NOT_FENCED = "NotFenced"
#: The Node taint that fences a host (Kubernetes' non-graceful node shutdown).
TAINT_OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"

# --------------------------------------------------------------------------
# Placement

#: The microversion the operator speaks.
PLACEMENT_MICROVERSION = "1.39"

#: A Host's resource provider: name = Host name, uuid recorded by the agent in
#: Host.status.resourceProviderUUID.
#: The trait the operator keeps on a provider whose Host is disabled or in
#: maintenance (as Nova's compute does); every scheduling request forbids it.
#: An agent that rewrites its provider's traits must keep this one as found.
TRAIT_DISABLED = "COMPUTE_STATUS_DISABLED"

#: Consumer type of an Instance's allocations (microversion 1.38).
CONSUMER_TYPE = "INSTANCE"
#: user_id of the allocations (Kubernetes has no per-request user here).
ALLOCATION_USER_ID = "kova"

#: Namespace of the uuid5 that names an availability zone's Placement
#: aggregate.  The operator owns the aggregates of Host providers and keeps
#: exactly the one of Host.spec.availabilityZone among those it manages.
AZ_AGGREGATE_NAMESPACE = uuid.UUID("6f1b0b4e-6c4a-5bf1-9a52-6b6f7661a7a1")

#: Image properties turned into required traits.
ARCH_TRAITS = {"x86_64": "HW_ARCH_X86_64", "aarch64": "HW_ARCH_AARCH64"}
FIRMWARE_TRAITS = {"uefi": "COMPUTE_FIRMWARE_UEFI"}


def az_aggregate_uuid(zone: str) -> str:
    """The Placement aggregate uuid of availability zone ``zone``."""
    return str(uuid.uuid5(AZ_AGGREGATE_NAMESPACE, f"availability-zone:{zone}"))


def project_id(namespace: str) -> str:
    """Placement project_id of an Instance's allocations: its namespace."""
    return namespace
