"""Every name Kova's components agree on, defined once.

The operator, the compute agent, Placement's users and the tests import these
instead of spelling a label, finalizer, annotation, condition or reason out.
``docs/api.md`` and ``docs/operator.md`` describe the same contract in prose.

The enumerations (phases, power states, host states, run strategies,
server-group policies, ...) are ``StrEnum``s: the pydantic models in
:mod:`kova.crds.models` use them for the CRD schemas, and at run time a member
compares equal to the string the API server returns (``InstancePhase.ERROR ==
"Error"``), so the controllers read raw object dicts without converting them.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

GROUP = "kova.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: The API group of the Instance subresources (console, vnc, log and the power
#: actions) that Kova's API component serves behind an APIService.
SUBRESOURCE_GROUP = f"subresources.{GROUP}"
SUBRESOURCE_VERSION = "v1alpha1"
SUBRESOURCE_API_VERSION = f"{SUBRESOURCE_GROUP}/{SUBRESOURCE_VERSION}"
#: The APIService that registers them with the API server's aggregator.
APISERVICE_NAME = f"{SUBRESOURCE_VERSION}.{SUBRESOURCE_GROUP}"

# --------------------------------------------------------------------------
# Resources (plurals) of the API group

INSTANCES = "instances"
HOSTS = "hosts"
IMAGES = "images"
#: Namespaced images a tenant owns (kind TenantImage), visible only in their namespace.
TENANT_IMAGES = "tenantimages"
FLAVORS = "flavors"
SERVER_GROUPS = "servergroups"

# --------------------------------------------------------------------------
# Labels, finalizers, annotations

#: Label the operator sets to the chosen Host's name; each agent watches only
#: the Instances labelled with its own host name.  Also on the heartbeat Leases.
LABEL_HOST = f"{GROUP}/host"
#: Set (``"true"``) by the API component on an Instance while one of its
#: snapshot actions is InProgress, removed when the last one ends: the API
#: component lists only these Instances to find snapshots nobody follows.
LABEL_SNAPSHOT_IN_PROGRESS = f"{GROUP}/snapshot-in-progress"

#: The operator's finalizer, added before any allocation is claimed.  Removed
#: after the agent's finalizer is gone and the allocations are deleted.
FINALIZER_OPERATOR = f"{GROUP}/operator"
#: The agent's finalizer: the agent adds it before it creates anything on the
#: host and removes it once the domain, its disks and seed are gone.
FINALIZER_AGENT = f"{GROUP}/agent"

#: The history of build attempts as JSON: a list of ``{"attempt": n, "host":
#: h, "reason": r, "message": m, "time": t}``.  Written by the operator only.
ANNOTATION_ATTEMPTS = f"{GROUP}/attempts"
#: Set by the operator when an Instance went to phase Error because its image
#: could not be used (:data:`IMAGE_FAILURE_CODES`): the Image's
#: ``<uid>/<generation>`` at that time, or ``missing``.  When the Image named
#: by ``spec.imageRef`` is re-created or changed, the Instance is scheduled
#: again from scratch (reason ``Retrying``) and the annotation removed.
ANNOTATION_FAILED_IMAGE = f"{GROUP}/failed-image"
#: On a Host: the availability zone whose Placement aggregate the operator last
#: put the host's provider in (so a changed zone's old aggregate is removed).
ANNOTATION_APPLIED_ZONE = f"{GROUP}/applied-zone"
#: Set by a user on an Instance with runStrategy Manual to power it ``on`` or
#: ``off`` (level-triggered: the agent keeps the domain in that state).
ANNOTATION_POWER = f"{GROUP}/power"
#: Set by a user to request a restart: any new value (e.g. a timestamp)
#: restarts the domain once; the agent records the value it acted on in the
#: domain's metadata.
ANNOTATION_RESTART = f"{GROUP}/restart"
#: On a snapshot's TenantImage (written by the image store): the Instance
#: (``<namespace>/<name>``) and the time it was taken.
ANNOTATION_SNAPSHOT_OF = f"{GROUP}/snapshot-of"
ANNOTATION_SNAPSHOT_TIME = f"{GROUP}/snapshot-time"
#: On a snapshot's TenantImage (written by the API component when it creates
#: it, ``spec.saving``, at the request): the request id of the snapshot action.
ANNOTATION_SNAPSHOT_REQUEST = f"{GROUP}/snapshot-request"
#: The reason of a saving TenantImage's ``Available=False`` condition.
IMAGE_REASON_SAVING = "Saving"
#: ... and of one whose snapshot failed for good (no file will come).
IMAGE_REASON_SNAPSHOT_FAILED = "SnapshotFailed"

#: Domain XML metadata namespace (the agent finds its domains by it).
DOMAIN_XMLNS = f"https://{GROUP}/xmlns/libvirt/instance/1"
DOMAIN_XMLNS_PREFIX = "kova"

#: Field manager of the agent's server-side-apply status writes.
FIELD_MANAGER_AGENT = "kova-agent"
#: ``source.component`` of the Events each component posts.
COMPONENT_OPERATOR = "kova-operator"
COMPONENT_AGENT = "kova-agent"
COMPONENT_API = "kova-api"

#: The common name of the API component's client certificate: the only
#: client an agent's stream endpoint accepts (``--stream-allowed-client``).
STREAM_CLIENT_NAME = "kova-api"
#: The name every agent's stream certificate carries, checked by the API
#: component whatever address a Host advertises (``--agent-server-name``).
STREAM_SERVER_NAME = "kova-agent"
#: Common name of the client certificate an agent presents to another
#: agent's stream endpoint to send it a disk (a cold migration).
STREAM_MIGRATION_CLIENT_NAME = "kova-agent-mover"


# --------------------------------------------------------------------------
# Enumerations of the API


class ConditionStatus(StrEnum):
    """Whether a condition holds: ``True``, ``False`` or ``Unknown``."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class InstancePhase(StrEnum):
    """Coarse lifecycle phase of an Instance."""

    PENDING = "Pending"
    SCHEDULING = "Scheduling"
    SCHEDULED = "Scheduled"
    BUILDING = "Building"
    RUNNING = "Running"
    STOPPED = "Stopped"
    PAUSED = "Paused"
    MIGRATING = "Migrating"
    #: A resize or cold migration is under way (status.migration.step).
    RESIZING = "Resizing"
    #: Running at the new size or on the new host: confirm or revert
    #: (kubectl kova resize --confirm/--revert); confirmed on its own after
    #: the operator's --resize-confirm-window.
    RESIZE_VERIFY = "ResizeVerify"
    DELETING = "Deleting"
    ERROR = "Error"
    #: The host's agent stopped reporting (its heartbeat Lease expired): the
    #: last known state may be stale; set by the operator's host monitor.
    UNKNOWN = "Unknown"


class PowerState(StrEnum):
    """Power state of the libvirt domain, as Nova reports it."""

    NO_STATE = "NoState"
    RUNNING = "Running"
    PAUSED = "Paused"
    SHUTDOWN = "Shutdown"
    CRASHED = "Crashed"
    SUSPENDED = "Suspended"
    #: Nobody can tell: the host is Down (set by the operator's host monitor).
    UNKNOWN = "Unknown"


class RunStrategy(StrEnum):
    """Whether and when the virtual machine should be running (KubeVirt's run
    strategies)."""

    ALWAYS = "Always"
    HALTED = "Halted"
    MANUAL = "Manual"
    RERUN_ON_FAILURE = "RerunOnFailure"
    ONCE = "Once"


class HostState(StrEnum):
    """Liveness of the host's compute agent (from its heartbeat Lease)."""

    UP = "Up"
    DOWN = "Down"
    UNKNOWN = "Unknown"


class DrainPolicy(StrEnum):
    """How a drained host's Instances are moved away (Host spec.drainPolicy)."""

    #: running Instances live-migrated; one whose live migration fails stays
    #: (reported); stopped ones cold-migrated (they are not running: no downtime)
    LIVE = "Live"
    #: as Live, then a cold migration (the guest is stopped and started on the
    #: destination) for a running Instance whose live migration failed
    LIVE_THEN_COLD = "LiveThenCold"
    #: every Instance cold-migrated (running guests stopped and started again)
    COLD = "Cold"


class DrainPhase(StrEnum):
    """Where a host's drain is (Host status.drain.phase)."""

    DRAINING = "Draining"
    DRAINED = "Drained"
    STUCK = "Stuck"


class ServerGroupPolicy(StrEnum):
    """How the members of a server group are spread over hosts."""

    AFFINITY = "affinity"
    ANTI_AFFINITY = "anti-affinity"
    SOFT_AFFINITY = "soft-affinity"
    SOFT_ANTI_AFFINITY = "soft-anti-affinity"


class CPUPolicy(StrEnum):
    """How guest vCPUs map onto host CPUs."""

    SHARED = "shared"
    DEDICATED = "dedicated"


class ImageFormat(StrEnum):
    """The disk format of the image file."""

    QCOW2 = "qcow2"
    RAW = "raw"
    #: An ISO 9660 image (installer, tools CD), stored as is; an Instance boots
    #: it as a read-only CD-ROM with a blank root disk.
    ISO = "iso"


class ImageKind(StrEnum):
    """The kind an Instance's imageRef names: a cluster-wide Image (public,
    administrators manage it) or a TenantImage of the Instance's namespace."""

    IMAGE = "Image"
    TENANT_IMAGE = "TenantImage"


class Architecture(StrEnum):
    """CPU architecture the image is built for."""

    X86_64 = "x86_64"
    AARCH64 = "aarch64"


class Firmware(StrEnum):
    """Firmware the guest boots with."""

    BIOS = "bios"
    UEFI = "uefi"


class DiskBus(StrEnum):
    """How the root disk is attached to the guest (Glance's hw_disk_bus)."""

    VIRTIO = "virtio"
    SATA = "sata"
    SCSI = "scsi"


class NICModel(StrEnum):
    """The guest's network card model (Glance's hw_vif_model)."""

    VIRTIO = "virtio"
    E1000 = "e1000"
    RTL8139 = "rtl8139"


class OSType(StrEnum):
    """Operating system family of the guest."""

    LINUX = "linux"
    WINDOWS = "windows"


class InstanceActionName(StrEnum):
    """What was done to an Instance (Nova's instance actions)."""

    CREATE = "create"
    RESCHEDULE = "reschedule"
    EVACUATE = "evacuate"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    REBOOT = "reboot"
    PAUSE = "pause"
    UNPAUSE = "unpause"
    RESIZE = "resize"
    MIGRATE = "migrate"
    CONFIRM_RESIZE = "confirmResize"
    REVERT_RESIZE = "revertResize"
    SNAPSHOT = "snapshot"
    EJECT = "eject"


class MigrationType(StrEnum):
    """What moves an Instance (status.migration.type)."""

    RESIZE = "resize"
    MIGRATE = "migrate"


class MigrationStep(StrEnum):
    """Where a resize or cold migration is (status.migration.step).  Whose
    turn it is: Claiming, Copied, Verify, Returning and Reverted are the
    operator's; Moving, Finishing, Reverting and Restoring an agent's.  A
    move to another host (a cold migration, a resize the scheduler sent
    elsewhere) goes Moving (source agent: stop, send the disk) -> Copied ->
    Finishing (destination agent: define, start) -> Verify; its revert
    Reverting (destination agent: stop, remove its copy) -> Returning ->
    Restoring (source agent: start its kept domain) -> Reverted."""

    #: The migration's UUID is recorded; the operator claims the new size.
    CLAIMING = "Claiming"
    #: Claimed (the migration consumer holds the old allocation): the agent
    #: stops the guest, grows or copies the disk, starts it at the new size.
    MOVING = "Moving"
    #: Done: waiting for a confirm or revert (or the confirm window).
    VERIFY = "Verify"
    #: A revert was asked for: the agent restores the old size and disk.
    REVERTING = "Reverting"
    #: Reverted on the host: the operator gives the old allocation back.
    REVERTED = "Reverted"
    #: Across hosts: the source sent the disk to the destination agent; the
    #: operator moves status.host and the host label to the destination.
    COPIED = "Copied"
    #: Across hosts: the destination agent defines the domain on the copied
    #: disk (grown to the new size) and starts it if it ran.
    FINISHING = "Finishing"
    #: Across hosts, reverting: the destination removed its copy; the
    #: operator moves status.host and the label back to the source.
    RETURNING = "Returning"
    #: Across hosts, reverting: the source agent starts its kept domain.
    RESTORING = "Restoring"
    #: Live: the destination agent creates the empty disk and the seed the
    #: guest's memory and disk are copied into, and names its libvirt URI.
    PREPARING = "Preparing"
    #: Live: the source agent runs libvirt's live migration (progress in
    #: status.migration.progress).
    LIVE_MIGRATING = "LiveMigrating"
    #: Live: the guest runs on the destination; the operator hands the
    #: Instance over and frees the source's allocation (no confirm).
    MIGRATED = "Migrated"
    #: Live: the migration failed, timed out or was aborted (the guest still
    #: runs on the source); the operator gives the destination's claim back.
    FAILED = "Failed"


class MigrationMode(StrEnum):
    """How a move to another host carries the guest (status.migration.mode):
    ``cold`` (stop, copy the disk, start there) or ``live`` (libvirt's live
    migration with the local disk copied along; the guest keeps running)."""

    COLD = "cold"
    LIVE = "live"


class MigrationDecision(StrEnum):
    """The user's answer to a resize or cold migration in ResizeVerify."""

    CONFIRM = "Confirm"
    REVERT = "Revert"
    #: Abort a live migration (kubectl kova migrate --abort).
    ABORT = "Abort"


class ActionResult(StrEnum):
    """How an action of ``status.actions`` ended."""

    IN_PROGRESS = "InProgress"
    SUCCESS = "Success"
    ERROR = "Error"


class SnapshotPhase(StrEnum):
    """Where a snapshot's agent is (``status.snapshot.phase``)."""

    COPYING = "Copying"
    UPLOADING = "Uploading"
    STORED = "Stored"
    FAILED = "Failed"


class SnapshotQuiesce(StrEnum):
    """Whether a snapshot freezes the guest's file systems through the QEMU
    guest agent first (``?quiesce=``; Nova's image property
    ``os_require_quiesce`` is ``required``)."""

    #: Frozen, or the snapshot is refused when no guest agent answers.
    REQUIRED = "required"
    #: Frozen when a guest agent answers; crash-consistent otherwise.
    AUTO = "auto"
    #: Never frozen: crash-consistent.
    OFF = "off"

    @classmethod
    def problem(cls, value: str) -> str | None:
        """Why ``value`` is not a quiescing mode (naming the field), or None."""
        if value in set(cls):
            return None
        return f"quiesce: {value!r} is not one of {', '.join(cls)}"


#: The field manager of the agent's ``status.snapshot`` (apart from its other
#: status fields, which it applies as a whole on every report).
FIELD_MANAGER_AGENT_SNAPSHOT = "kova-agent-snapshot"

#: The field manager of the agent's ``status.cdrom`` (the record of an
#: ejected CD-ROM, written once by ``kubectl kova eject``; the agent's other
#: status fields, applied as a whole, must not remove it).
FIELD_MANAGER_AGENT_MEDIA = "kova-agent-media"

#: How many actions ``status.actions`` keeps (the newest).
MAX_ACTIONS = 20


class AddressFamily(StrEnum):
    """IP address family."""

    IPV4 = "IPv4"
    IPV6 = "IPv6"


# --------------------------------------------------------------------------
# Instance conditions and their reasons

#: Set by the operator: True once a host is chosen and the allocation claimed.
COND_SCHEDULED = "Scheduled"
#: Set by the agent: False with reason BuildFailed when it could not build the
#: instance on status.host (the message starts with one of the ``ERROR_*``
#: codes below, "ImageNotFound: ..."); True (reason Built) once the domain is
#: defined.  The operator resets it to Unknown (reason Rescheduled) when it
#: moves the instance to another host.
COND_BUILT = "Built"
#: Set by the agent: True while the guest runs.  The host monitor sets it to
#: Unknown (reason HostDown) while the host is Down.
COND_READY = "Ready"
#: kstatus: True while Kova still converges on the spec (from the phase
#: whoever writes the phase writes; :mod:`kova.kstatus`).
COND_RECONCILING = "Reconciling"
#: kstatus: True when Kova cannot converge (phase Error), with its reason.
COND_STALLED = "Stalled"
#: Set by the agent: True (reason SpecChanged) while spec fields that apply at
#: the next start (userData, sshKeys, hostname) changed since the guest's seed
#: was written; the message names them.
COND_RESTART_REQUIRED = "RestartRequired"
REASON_SPEC_CHANGED = "SpecChanged"
REASON_UP_TO_DATE = "UpToDate"
#: Set by the operator: the last resize or cold migration of the Instance.
#: True reason Resizing/Migrating while one is under way (the message says the
#: step), ResizeVerify while it waits for a confirm or revert, Confirmed or
#: Reverted when it ended; False reason ResizeRefused (the message names the
#: spec field) or NoValidHost when it could not start: fix the spec, or set it
#: back, to go on.
COND_RESIZED = "Resized"
REASON_RESIZING = "Resizing"
REASON_MIGRATING = "Migrating"
REASON_RESIZE_VERIFY = "ResizeVerify"
REASON_CONFIRMED = "Confirmed"
REASON_REVERTED = "Reverted"
REASON_LIVE_MIGRATED = "LiveMigrated"
REASON_LIVE_MIGRATION_FAILED = "LiveMigrationFailed"
REASON_RESIZE_REFUSED = "ResizeRefused"
#: Events of a move (reasons of Events only).
EVENT_RESIZE_STARTED = "ResizeStarted"
EVENT_MIGRATION_STARTED = "MigrationStarted"
EVENT_MOVED = "Moved"
#: Warning: the destination of a cold migration cannot take the guest yet
#: (e.g. it cannot use the ISO the guest booted from); the guest keeps running.
EVENT_DESTINATION_NOT_READY = "DestinationNotReady"
EVENT_RESIZE_CONFIRMED = "ResizeConfirmed"
EVENT_RESIZE_REVERTED = "ResizeReverted"

# Reasons of the Scheduled condition (and of phase Pending / Error).
REASON_SCHEDULED = "Scheduled"
REASON_RESCHEDULED = "Rescheduled"
REASON_NO_VALID_HOST = "NoValidHost"
REASON_FLAVOR_NOT_FOUND = "FlavorNotFound"
REASON_FLAVOR_DISABLED = "FlavorDisabled"
REASON_IMAGE_NOT_FOUND = "ImageNotFound"
#: Scheduled=False while the TenantImage is a snapshot's still being saved.
REASON_IMAGE_SAVING = "ImageSaving"
#: Scheduled=False while the TenantImage is a snapshot's whose snapshot failed.
REASON_IMAGE_SNAPSHOT_FAILED = "ImageSnapshotFailed"
REASON_SERVER_GROUP_NOT_FOUND = "ServerGroupNotFound"
REASON_INVALID_REQUEST = "InvalidRequest"
REASON_MAX_ATTEMPTS = "MaxAttemptsExceeded"
#: Scheduled=False while claiming would go over the namespace's quota.
REASON_QUOTA_EXCEEDED = "QuotaExceeded"
#: Scheduled=False while Placement cannot be reached or answers 5xx (the
#: Instance waits, retried with back-off).
REASON_PLACEMENT_ERROR = "PlacementUnavailable"
#: Scheduled=False while Placement refuses the operator's credentials (401/403).
REASON_PLACEMENT_UNAUTHORIZED = "PlacementUnauthorized"
#: Scheduled=True reason after the host monitor moved the Instance off a
#: fenced host (its allocation moved, rebuilt by the new host's agent).
REASON_EVACUATED = "Evacuated"
#: Scheduled=False reason while an Instance on a fenced host waits for a host
#: to be evacuated to (it is retried with back-off).
REASON_EVACUATION_FAILED = "EvacuationFailed"
#: An Instance in Error scheduled again (its Image was fixed).
REASON_RETRYING = "Retrying"
#: Ready=Unknown reason (and a Warning Event) while the Instance's host is Down.
REASON_HOST_DOWN = "HostDown"

# Reasons of the Built and Ready conditions (the agent's).
REASON_BUILDING = "Building"
REASON_BUILT = "Built"
#: Built=False: agent -> operator, "reschedule me".
REASON_BUILD_FAILED = "BuildFailed"
REASON_RUNNING = "Running"
REASON_STOPPING = "Stopping"
REASON_STOPPED = "Stopped"
REASON_PAUSED = "Paused"
REASON_CRASHED = "Crashed"
REASON_DELETING = "Deleting"

# Reasons of Events only.
EVENT_DELETED_ON_FENCED_HOST = "DeletedOnFencedHost"
EVENT_ALLOCATION_MISSING = "AllocationMissing"
EVENT_ALLOCATION_MISMATCH = "AllocationMismatch"
EVENT_HOST_FENCED = "HostFenced"
EVENT_HOST_UNFENCED = "HostUnfenced"
EVENT_STARTED = "Started"
EVENT_STOPPING = "Stopping"
EVENT_RESTARTED = "Restarted"
EVENT_DELETED = "Deleted"
EVENT_STALE_DOMAIN_REMOVED = "StaleDomainRemoved"
#: Posted by the API component when a user opens a console or VNC session, and
#: asks for a power action; by the agent when it did one (``<Action>Done``).
EVENT_CONSOLE_CONNECTED = "ConsoleConnected"
EVENT_VNC_CONNECTED = "VNCConnected"
EVENT_ACTION_REQUESTED = "ActionRequested"
#: Warning by the agent: ``kubectl kova eject`` could not eject the ISO.
EVENT_EJECT_FAILED = "EjectFailed"
#: A snapshot the agent lost (it restarted midway) taken again (Normal).
EVENT_SNAPSHOT_RETRIED = "SnapshotRetried"
#: A guest frozen for a snapshot whose thaw failed: it may still be frozen (Warning).
EVENT_GUEST_THAW_FAILED = "GuestThawFailed"


def event_action_done(action: str) -> str:
    """The reason of the agent's Event after power action ``action``
    (``StartDone``, ``RebootDone``, ...)."""
    return action.capitalize() + "Done"

#: Build-failure codes: the Built=False message prefix, the Ready=False reason
#: and the ``kova_agent_build_failures_total`` metric's ``reason`` label.
ERROR_IMAGE_NOT_FOUND = "ImageNotFound"
ERROR_IMAGE_CHECKSUM = "ImageChecksumMismatch"
ERROR_IMAGE_DOWNLOAD = "ImageDownloadFailed"
ERROR_IMAGE_INVALID = "ImageInvalid"
ERROR_DISK_TOO_SMALL = "DiskTooSmall"
ERROR_USER_DATA = "UserDataUnavailable"
ERROR_LIBVIRT = "HypervisorError"
ERROR_INTERNAL = "InternalError"

#: Build-failure codes that come from the Image itself rather than the host.
IMAGE_FAILURE_CODES = frozenset({
    ERROR_IMAGE_NOT_FOUND, ERROR_IMAGE_CHECKSUM, ERROR_IMAGE_DOWNLOAD, ERROR_IMAGE_INVALID,
    ERROR_DISK_TOO_SMALL,
})
#: Build-failure codes no other host can fix (the image's virtual size is
#: larger than the Instance's disk; the file is not a usable image of its
#: declared format): the Instance goes to Error at once, as Nova aborts a
#: build on FlavorDiskSmallerThanImage or ImageUnacceptable instead of
#: rescheduling it.
TERMINAL_BUILD_CODES = frozenset({ERROR_DISK_TOO_SMALL, ERROR_IMAGE_INVALID})

# --------------------------------------------------------------------------
# Hosts

#: Default namespace of the heartbeat Leases (``--lease-namespace`` of both the
#: operator and the agent).  The Lease is named after the Host; the agent
#: renews it (spec.renewTime, spec.leaseDurationSeconds, spec.holderIdentity =
#: host name), as the kubelet does for Nodes.
LEASE_NAMESPACE = "kova-system"
#: Default Lease duration the agent announces (and the host monitor's
#: assumption for a Lease that does not say).
LEASE_DURATION_SECONDS = 40
#: Default interval of the agent's Lease renewals.
LEASE_RENEW_SECONDS = 10.0

#: Host condition the host monitor maintains from the Lease (the agent sets it
#: too while it registers).
HOST_COND_READY = "Ready"
HOST_REASON_UP = "Up"
HOST_REASON_DOWN = "Down"
HOST_REASON_NO_HEARTBEAT = "NoHeartbeat"
#: Set by the agent: True (reason Connected) while it reaches its libvirtd;
#: False (reason LibvirtUnreachable) with libvirt's error while it does not.
HOST_COND_HYPERVISOR = "HypervisorReachable"
HOST_REASON_CONNECTED = "Connected"
HOST_REASON_LIBVIRT_UNREACHABLE = "LibvirtUnreachable"
#: Set by the agent: True (reason Registered) while its resource provider,
#: inventory and traits are in Placement and Placement answers it; False with
#: PlacementUnavailable (unreachable or 5xx), PlacementUnauthorized (401/403:
#: the agent's token) or RegistrationFailed (any other refusal).
HOST_COND_PLACEMENT = "PlacementRegistered"
HOST_REASON_REGISTERED = "Registered"
HOST_REASON_REGISTRATION_FAILED = "RegistrationFailed"
#: Host condition: True while the host is fenced (Host.spec.fenced, or its
#: Node -- the Node named like the Host -- carries :data:`TAINT_OUT_OF_SERVICE`).
HOST_COND_FENCED = "Fenced"
HOST_REASON_FENCED_SPEC = "SpecFenced"
HOST_REASON_FENCED_NODE = "NodeOutOfService"
HOST_REASON_NOT_FENCED = "NotFenced"
#: The operator's check that the Host's status.resourceProviderUUID names
#: a root provider registered under the Host's own name in Placement.
HOST_COND_DRAINED = "Drained"
HOST_REASON_DRAINED = "Drained"
HOST_REASON_DRAINING = "Draining"
HOST_REASON_DRAIN_STUCK = "DrainStuck"
HOST_REASON_NOT_DRAINING = "NotDraining"
#: Reasons an Instance is left on a draining host (status.drain.left[].reason)
#: besides the move's own (NoValidHost, LiveMigrationFailed, ...).
DRAIN_LEFT_SERVER_GROUP = "ServerGroupPolicy"
DRAIN_LEFT_NOT_MOVABLE = "NotMovable"
DRAIN_LEFT_NOT_RUNNING_LIVE = "LiveOnly"
EVENT_DRAIN_LEFT = "DrainLeftInstance"
EVENT_DRAINED = "HostDrained"
#: The user recorded on the moves a drain starts (requestIds start "drain-").
DRAIN_USER = "kova-operator (drain)"
DRAIN_REQUEST_PREFIX = "drain-"
HOST_COND_PROVIDER = "ProviderVerified"
HOST_REASON_PROVIDER_OWNED = "ProviderOwned"
HOST_REASON_PROVIDER_NOT_OWNED = "ProviderNotOwned"
#: The Node taint that fences a host (Kubernetes' non-graceful node shutdown).
TAINT_OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"

# --------------------------------------------------------------------------
# ServerGroups

SG_COND_POLICY_SATISFIED = "PolicySatisfied"
SG_REASON_SATISFIED = "Satisfied"
SG_REASON_VIOLATED = "Violated"

# --------------------------------------------------------------------------
# Placement

#: The microversion Kova's clients speak.
PLACEMENT_MICROVERSION = "1.39"
#: The trait the operator keeps on a provider whose Host is disabled, in
#: maintenance or fenced (as Nova's compute does); every scheduling request
#: forbids it.  An agent that rewrites its provider's traits keeps it as found.
TRAIT_DISABLED = "COMPUTE_STATUS_DISABLED"
#: Consumer type of an Instance's allocations (microversion 1.38).
CONSUMER_TYPE = "INSTANCE"
#: Placement consumer type of a migration (it holds the source allocation).
CONSUMER_TYPE_MIGRATION = "MIGRATION"
#: user_id of the allocations (Kubernetes has no per-request user here).
ALLOCATION_USER_ID = "kova"

#: Namespace of the uuid5 that names an availability zone's Placement
#: aggregate.  The operator owns the aggregates of Host providers and keeps
#: exactly the one of Host.spec.availabilityZone among those it manages.
AZ_AGGREGATE_NAMESPACE = uuid.UUID("6f1b0b4e-6c4a-5bf1-9a52-6b6f7661a7a1")
#: Namespace of the uuid5 of a host's resource provider: a provider created
#: before a crash is found again under the same uuid.
PROVIDER_NAMESPACE = uuid.UUID("3d5f0f7e-4a8e-5c39-9f54-6b6f76612d61")

#: Image properties turned into required traits.
ARCH_TRAITS = {Architecture.X86_64: "HW_ARCH_X86_64", Architecture.AARCH64: "HW_ARCH_AARCH64"}
FIRMWARE_TRAITS = {Firmware.UEFI: "COMPUTE_FIRMWARE_UEFI"}
DISK_BUS_TRAITS = {b: f"COMPUTE_STORAGE_BUS_{b.upper()}" for b in DiskBus}
NIC_MODEL_TRAITS = {m: f"COMPUTE_NET_VIF_MODEL_{m.upper()}" for m in NICModel}


def az_aggregate_uuid(zone: str) -> str:
    """The Placement aggregate uuid of availability zone ``zone``."""
    return str(uuid.uuid5(AZ_AGGREGATE_NAMESPACE, f"availability-zone:{zone}"))


def provider_uuid(host: str) -> str:
    """The uuid the agent gives host ``host``'s resource provider."""
    return str(uuid.uuid5(PROVIDER_NAMESPACE, f"host:{host}"))


def project_id(namespace: str) -> str:
    """Placement project_id of an Instance's allocations: its namespace."""
    return namespace


# ==========================================================================
# Quotas: keys of a ResourceQuota's spec.hard that Kova enforces (the
# operator, before it schedules; see operator/quota.py and docs/security.md).

QUOTA_INSTANCES = f"{GROUP}/instances"
QUOTA_VCPUS = f"{GROUP}/vcpus"
QUOTA_MEMORY = f"{GROUP}/memory"
QUOTA_DISK = f"{GROUP}/disk"
