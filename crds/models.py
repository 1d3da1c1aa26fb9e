"""The Kova API, group ``kova.dev``, version ``v1alpha1``.

These pydantic models are the single source of truth for the
CustomResourceDefinitions: ``kova crds generate`` turns them into the YAML under
``crds/generated/`` (see :mod:`kova.crds.generate`).  Docstrings and field
descriptions become ``kubectl explain`` text, so they are written for users.

Six kinds:

* :class:`Instance` (namespaced, ``inst``) -- a virtual machine;
* :class:`Flavor` (cluster, ``flv``) -- a named size;
* :class:`Image` (cluster, ``img``) -- a public bootable disk image;
* :class:`TenantImage` (namespaced, ``timg``) -- a tenant's own disk image;
* :class:`Host` (cluster, ``hv``) -- a hypervisor node, registered by its agent;
* :class:`ServerGroup` (namespaced, ``sg``) -- an (anti-)affinity group.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from pydantic import Field

from .common import (
    CPUSET,
    CUSTOM_TRAIT_NAME,
    DNS_LABEL,
    MAX_LABEL,
    MAX_NAME,
    MAX_TRAIT,
    MAX_TRAITS,
    RESOURCE_CLASS_NAME,
    SHA256,
    Condition,
    CRDInfo,
    CustomTrait,
    KovaModel,
    KovaObject,
    Label,
    Name,
    ObjectRef,
    ResourceAmounts,
    Resources,
    SecretKeyRef,
    TraitRequirements,
    cel,
    conditions_field,
    immutable,
    k8s,
    model_config,
    observed_generation_field,
)
from .names import (
    MAX_ACTIONS,
    ActionResult,
    AddressFamily,
    Architecture,
    CPUPolicy,
    DiskBus,
    DrainPhase,
    DrainPolicy,
    Firmware,
    HostState,
    ImageFormat,
    ImageKind,
    InstanceActionName,
    InstancePhase,
    MigrationDecision,
    MigrationMode,
    MigrationStep,
    MigrationType,
    NICModel,
    OSType,
    PowerState,
    RunStrategy,
    ServerGroupPolicy,
    SnapshotPhase,
    SnapshotQuiesce,
)

#: A label value, as used for availability zones (``topology.kubernetes.io/zone``).
ZONE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
Zone = Annotated[str, Field(min_length=1, max_length=MAX_LABEL, pattern=ZONE)]

#: An OpenSSH public key line: type, base64 blob, optional comment; one line.
SSH_KEY = (
    r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)"
    r"|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) AAAA[A-Za-z0-9+/]{8,}={0,3}( [^\r\n]*)?$"
)
SSHKey = Annotated[str, Field(min_length=16, max_length=16384, pattern=SSH_KEY)]

#: 64 KiB: Nova's limit for user data.
MAX_USER_DATA = 65536
#: The largest inline size (spec.resources) a tenant may ask for without a
#: Flavor: bigger machines come from Flavors, which administrators create.
MAX_INLINE_VCPUS = 128
MAX_INLINE_MEMORY_MIB = 1024 * 1024  # 1 TiB
MAX_INLINE_DISK_GIB = 16 * 1024  # 16 TiB


def _presence_immutable(field: str) -> dict[str, str]:
    """A spec-level transition rule: an optional field may be neither added
    nor removed after creation (the field-level ``self == oldSelf`` rule only
    runs when both old and new values exist)."""
    return cel(
        f"has(self.{field}) == has(oldSelf.{field})",
        f"{field} cannot be added or removed after creation",
        field_path=f".{field}",
    )


# ==========================================================================
# Flavor




class FlavorExtraSpecs(KovaModel):
    """Scheduling and tuning details beyond the three standard sizes (Nova's
    flavor extra specs)."""

    model_config = model_config()

    traits: TraitRequirements | None = Field(
        default=None,
        description="Traits the host must have (required) or must not have (forbidden); "
        "merged with the Instance's own spec.traits.",
    )
    resources: dict[str, int] | None = Field(
        default=None,
        max_length=32,
        description="Additional Placement resources each instance of this flavor consumes, "
        "by resource class, e.g. {CUSTOM_GPU: 1} or {VGPU: 1}. VCPU, PCPU, MEMORY_MB and "
        "DISK_GB come from the flavor's own fields and may not be listed.",
        json_schema_extra={
            "additionalProperties": {"type": "integer", "minimum": 1, "maximum": 1 << 20},
            **k8s(
                validations=[
                    cel(
                        "self.all(k, size(k) <= 255 && k.matches('" + RESOURCE_CLASS_NAME + "'))",
                        "resource class names must be upper case letters, digits and "
                        "underscores, e.g. CUSTOM_GPU",
                    ),
                    cel(
                        "self.all(k, !(k in ['VCPU', 'PCPU', 'MEMORY_MB', 'DISK_GB']))",
                        "VCPU, PCPU, MEMORY_MB and DISK_GB are set by vcpus, cpuPolicy, "
                        "memoryMiB and diskGiB, not by extraSpecs.resources",
                    ),
                ]
            ),
        },
    )
    cpu_policy: CPUPolicy | None = Field(
        default=None,
        description="shared (default): vCPUs float over the host's CPUs and consume VCPU; "
        "dedicated: each vCPU is pinned to its own host CPU and consumes PCPU.",
    )


class FlavorSpec(KovaModel):
    """The size of an instance. vcpus, memoryMiB and diskGiB are immutable, as
    in Nova: create a new Flavor to offer a new size."""

    model_config = model_config()

    vcpus: int = Field(
        ge=1,
        le=1024,
        description="Number of virtual CPUs. Immutable.",
        json_schema_extra=k8s(validations=[immutable("vcpus")]),
    )
    memory_mib: int = Field(
        alias="memoryMiB",
        ge=16,
        le=16 * 1024 * 1024,
        description="Memory in MiB. Immutable.",
        json_schema_extra=k8s(validations=[immutable("memoryMiB")]),
    )
    disk_gib: int = Field(
        alias="diskGiB",
        ge=1,
        le=64 * 1024,
        description="Root disk size in GiB; the image is grown to this size and must "
        "fit in it (Image spec.minDiskGiB). Immutable.",
        json_schema_extra=k8s(validations=[immutable("diskGiB")]),
    )
    description: str | None = Field(
        default=None, max_length=1024, description="Free text shown to users."
    )
    disabled: bool = Field(
        default=False,
        description="A disabled flavor stays valid for existing instances but new "
        "Instances referring to it are not scheduled.",
    )
    extra_specs: FlavorExtraSpecs | None = Field(
        default=None, description="Scheduling and tuning details beyond the sizes."
    )


class FlavorStatus(KovaModel):
    """Observed state of a Flavor."""

    observed_generation: int | None = observed_generation_field()
    conditions: list[Condition] | None = conditions_field("No types are defined yet.")


class Flavor(KovaObject):
    """Flavor is a named instance size (vCPUs, memory, disk and extra specs),
    cluster-scoped like Nova's flavors. Instances refer to it with
    spec.flavorRef."""

    crd = CRDInfo(
        kind="Flavor",
        plural="flavors",
        singular="flavor",
        scope="Cluster",
        short_names=("flv",),
        printer_columns=(
            ("VCPUs", "integer", ".spec.vcpus", "Number of virtual CPUs.", 0),
            ("Memory", "integer", ".spec.memoryMiB", "Memory in MiB.", 0),
            ("Disk", "integer", ".spec.diskGiB", "Root disk in GiB.", 0),
            ("Disabled", "boolean", ".spec.disabled", "Whether new instances may use it.", 1),
        ),
    )

    kind: Literal["Flavor"] = "Flavor"
    spec: FlavorSpec
    status: FlavorStatus | None = None


# ==========================================================================
# Image










class ImageSource(KovaModel):
    """Where the compute agent gets the image file. Exactly one of url and
    hostPath."""

    model_config = model_config(
        cel(
            "has(self.url) != has(self.hostPath)",
            "exactly one of url and hostPath must be set",
        ),
    )

    url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://[^\s/?#]+[^\s]*$",
        description="An https:// URL (or http:// with spec.sha256) the agent downloads the "
        "image from (once per host; cached by sha256 or URL). Addresses on loopback, "
        "link-local and the networks the agent blocks are refused; credentials and the "
        "query string never appear in status, Events or logs.",
    )
    host_path: str | None = Field(
        default=None,
        max_length=4096,
        pattern=r"^/[^\x00]*$",
        description="An absolute path to the image file on every hypervisor host, inside "
        "the agent's image directory (--image-host-dir, default /var/lib/kova/images), e.g. "
        "/var/lib/kova/images/kova-test.qcow2. Must not contain '..' components.",
        json_schema_extra=k8s(
            validations=[
                cel(
                    "!self.matches('(^|/)\\\\.\\\\.(/|$)')",
                    "hostPath must not contain '..' components",
                )
            ]
        ),
    )


class ImageProperties(KovaModel):
    """Properties of the guest inside the image (Glance image properties)."""

    architecture: Architecture = Field(
        default=Architecture.X86_64, description="CPU architecture the image needs."
    )
    firmware: Firmware = Field(default=Firmware.BIOS, description="bios or uefi.")
    disk_bus: DiskBus = Field(
        default=DiskBus.VIRTIO,
        description="How the root disk is attached (Glance's hw_disk_bus): virtio "
        "(default), sata or scsi (virtio-scsi), for guests without virtio-blk drivers.",
    )
    nic_model: NICModel = Field(
        default=NICModel.VIRTIO,
        description="The network card model (Glance's hw_vif_model): virtio (default), "
        "e1000 or rtl8139, for guests without virtio-net drivers.",
    )
    os_type: OSType = Field(default=OSType.LINUX, description="linux or windows.")
    require_quiesce: bool = Field(
        default=False,
        description="Snapshots of its Instances must quiesce the guest (Glance's "
        "os_require_quiesce): with true, kubectl kova snapshot without --quiesce freezes "
        "the guest's file systems through its QEMU guest agent and fails when no agent "
        "answers; --quiesce auto or off is refused. A snapshot's TenantImage keeps it.",
    )
    os_distro: str | None = Field(
        default=None,
        max_length=MAX_LABEL,
        pattern=DNS_LABEL,
        description="Distribution, lower case, e.g. debian, ubuntu, cirros.",
    )
    os_version: str | None = Field(
        default=None,
        max_length=MAX_LABEL,
        pattern=r"^[A-Za-z0-9][-A-Za-z0-9._]*$",
        description="Distribution version, e.g. 12 or 24.04.",
    )


def _image_spec_rules() -> tuple[dict[str, str], ...]:
    """The rules of an Image's spec (a TenantImage's adds its own)."""
    return (
        _presence_immutable("sha256"),
        cel(
            "!has(self.source.url) || !self.source.url.startsWith('http://') "
            "|| has(self.sha256)",
            "sha256 is required for a plain http:// source.url (the download is not "
            "authenticated; the checksum is what makes it safe)",
            field_path=".sha256",
            reason="FieldValueRequired",
        ),
    )


class ImageSpec(KovaModel):
    """A bootable disk image. source, format and sha256 are immutable: an Image
    names one exact file."""

    model_config = model_config(*_image_spec_rules())

    source: ImageSource = Field(
        description="Where the image file comes from. Immutable.",
        json_schema_extra=k8s(validations=[immutable("source")]),
    )
    format: ImageFormat = Field(
        default=ImageFormat.QCOW2,
        description="Format of the file: qcow2 (default) or raw (disk images an Instance "
        "boots from), or iso (an ISO 9660 image, stored and served as is; an Instance "
        "boots it as a read-only CD-ROM with a blank root disk of its size). Immutable.",
        json_schema_extra=k8s(validations=[immutable("format")]),
    )
    sha256: str | None = Field(
        default=None,
        min_length=64,
        max_length=64,
        pattern=SHA256,
        description="Lower-case hex SHA-256 of the file; when set, the agent refuses a "
        "file that does not match. Immutable.",
        json_schema_extra=k8s(validations=[immutable("sha256")]),
    )
    min_disk_gib: int = Field(
        default=0,
        alias="minDiskGiB",
        ge=0,
        le=64 * 1024,
        description="Smallest root disk (GiB) the image boots from; instances whose "
        "disk is smaller fail scheduling.",
    )
    min_memory_mib: int = Field(
        default=0,
        alias="minMemoryMiB",
        ge=0,
        le=16 * 1024 * 1024,
        description="Least memory (MiB) the image boots with.",
    )
    properties: ImageProperties | None = Field(
        default=None, description="What the guest needs from the virtual hardware."
    )


class ImageStatus(KovaModel):
    """Observed state of an Image."""

    observed_generation: int | None = observed_generation_field()
    size_bytes: int | None = Field(default=None, ge=0, description="Size of the file in bytes.")
    virtual_size_bytes: int | None = Field(
        default=None, ge=0, description="Size of the disk the image holds, in bytes."
    )
    sha256: str | None = Field(
        default=None, min_length=64, max_length=64, pattern=SHA256,
        description="SHA-256 of the file the hosts verified (spec.sha256 when given).",
    )
    format: ImageFormat | None = Field(
        default=None, description="The format qemu-img read the verified file as.")
    cached_on: list[Name] | None = Field(
        default=None,
        max_length=4096,
        description="Hosts that hold a verified copy of the image in their cache; a host "
        "leaves the list when it evicts its copy.",
        json_schema_extra=k8s(list_type="set"),
    )
    conditions: list[Condition] | None = conditions_field(
        "Available: True (reason Verified) once a host fetched and verified the file; "
        "False with the refusal's code as reason (ImageInvalid, ImageChecksumMismatch, "
        "ImageDownloadFailed, ImageNotFound) when the last host that tried could not use it."
    )


class Image(KovaObject):
    """Image is a bootable disk image (qcow2 or raw) that instances boot from,
    cluster-scoped like a public Glance image. The compute agent fetches it
    from an HTTP(S) URL or a path on the host, caches it and boots each
    instance from a copy-on-write overlay."""

    crd = CRDInfo(
        kind="Image",
        plural="images",
        singular="image",
        scope="Cluster",
        short_names=("img",),
        printer_columns=(
            ("Format", "string", ".spec.format", "Disk format.", 0),
            ("Arch", "string", ".spec.properties.architecture", "CPU architecture.", 0),
            ("MinDisk", "integer", ".spec.minDiskGiB", "Smallest root disk in GiB.", 0),
            ("Available", "string", '.status.conditions[?(@.type=="Available")].status',
             "Verified on a host.", 0),
            ("Size", "integer", ".status.sizeBytes", "File size in bytes.", 0),
            ("Hosts", "string", ".status.cachedOn", "Hosts holding a verified copy.", 1),
            ("URL", "string", ".spec.source.url", "Download URL.", 1),
            ("Path", "string", ".spec.source.hostPath", "Path on the hosts.", 1),
        ),
    )

    kind: Literal["Image"] = "Image"
    spec: ImageSpec
    status: ImageStatus | None = None


#: In a TenantImage's spec transition rule: the update that ends the saving
#: of a snapshot (``saving`` was set and is no more).
_SAVED = "(has(oldSelf.saving) && !has(self.saving))"


def _set_once_when_saved(field: str) -> dict[str, str]:
    """A TenantImage's field that may be neither added nor removed after
    creation, except added once, in the update that ends ``saving`` (the
    image store filling a snapshot's placeholder)."""
    return cel(
        f"has(self.{field}) == has(oldSelf.{field}) "
        f"|| (!has(oldSelf.{field}) && {_SAVED})",
        f"{field} cannot be added or removed after creation (the image store sets it "
        "once, when it stores the file of a snapshot's TenantImage and removes saving)",
        field_path=f".{field}",
    )


class TenantImageSpec(ImageSpec):
    """A tenant's disk image: as an Image's spec, but the file comes from a
    URL (an upload to Kova's image store, or any https:// server): a tenant
    may not name files on the hosts. A snapshot's TenantImage exists from the
    snapshot's request on, with saving set and no source yet; the image store
    fills in source, sha256 and minDiskGiB and removes saving once the file
    is stored."""

    model_config = model_config(
        cel(
            "has(self.source) || has(self.saving)",
            "source is required (only a snapshot's TenantImage being saved has none yet)",
            field_path=".source",
            reason="FieldValueRequired",
        ),
        cel(
            "!has(self.saving) || has(oldSelf.saving)",
            "saving cannot be set after creation (a TenantImage is created saving by a "
            "snapshot's request; the image store removes it once the file is stored)",
            field_path=".saving",
        ),
        _set_once_when_saved("source"),
        _set_once_when_saved("sha256"),
        cel(
            "!has(self.source) || !has(self.source.url) "
            "|| !self.source.url.startsWith('http://') || has(self.sha256)",
            "sha256 is required for a plain http:// source.url (the download is not "
            "authenticated; the checksum is what makes it safe)",
            field_path=".sha256",
            reason="FieldValueRequired",
        ),
        cel(
            "!has(self.source) || !has(self.source.hostPath)",
            "a TenantImage cannot use source.hostPath (files on the hosts are for "
            "cluster Images, which administrators manage): give source.url",
            field_path=".source",
            reason="FieldValueForbidden",
        ),
    )

    source: ImageSource | None = Field(  # type: ignore[assignment]
        default=None,
        description="Where the image file comes from. Required, but for a snapshot's "
        "TenantImage while it is saved (saving), whose source the image store sets once "
        "the file is stored. Immutable.",
        json_schema_extra=k8s(validations=[immutable("source")]),
    )
    saving: bool | None = Field(
        default=None,
        description="Set (true) by Kova's API component on a snapshot's TenantImage, "
        "created at the snapshot's request: the file is being saved, there is no source "
        "or sha256 yet, and Instances of it wait (Pending, reason ImageSaving). The image "
        "store removes it when it stores the file, in the same update that sets source, "
        "sha256 and minDiskGiB; it cannot be set after creation.",
        json_schema_extra=k8s(validations=[
            cel("self", "saving is true or absent (removed once the file is stored)")]),
    )


class TenantImage(KovaObject):
    """TenantImage is a bootable disk image that a tenant owns: it lives in a
    namespace and only Instances of that namespace boot from it (imageRef with
    kind TenantImage), like a private Glance image. Uploads with kubectl kova
    image upload --namespace and snapshots create them; the spec and status
    are those of an Image, but the file always comes from a URL."""

    crd = CRDInfo(
        kind="TenantImage",
        plural="tenantimages",
        singular="tenantimage",
        scope="Namespaced",
        short_names=("timg",),
        printer_columns=Image.crd.printer_columns[:4] + (
            ("Reason", "string", '.status.conditions[?(@.type=="Available")].reason',
             "Why it is (not) available: Saving while a snapshot stores its file, "
             "Stored, Verified, or the refusal's code.", 0),
            Image.crd.printer_columns[4],
            ("Hosts", "string", ".status.cachedOn", "Hosts holding a verified copy.", 1),
            ("URL", "string", ".spec.source.url", "Download URL.", 1),
        ),
    )

    kind: Literal["TenantImage"] = "TenantImage"
    spec: TenantImageSpec
    status: ImageStatus | None = None


# ==========================================================================
# ServerGroup




class ServerGroupSpec(KovaModel):
    """The placement policy of a server group. Immutable, as in Nova."""

    model_config = model_config(
        cel(
            "!has(self.maxServerPerHost) || self.policy == 'anti-affinity'",
            "maxServerPerHost is only allowed with policy anti-affinity",
            field_path=".maxServerPerHost",
            reason="FieldValueForbidden",
        ),
        _presence_immutable("maxServerPerHost"),
    )

    policy: ServerGroupPolicy = Field(
        description="affinity: all members on one host; anti-affinity: each member on "
        "a different host (up to maxServerPerHost per host); soft-affinity and "
        "soft-anti-affinity: preferred, not required. Immutable.",
        json_schema_extra=k8s(validations=[immutable("policy")]),
    )
    max_server_per_host: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="With policy anti-affinity only: how many members one host may run "
        "(default 1). Immutable.",
        json_schema_extra=k8s(validations=[immutable("maxServerPerHost")]),
    )


class ServerGroupStatus(KovaModel):
    """Observed state of a ServerGroup."""

    observed_generation: int | None = observed_generation_field()
    members: list[Name] | None = Field(
        default=None,
        max_length=4096,
        description="Names of the Instances in the group (same namespace).",
        json_schema_extra=k8s(list_type="set"),
    )
    hosts: list[Name] | None = Field(
        default=None,
        max_length=4096,
        description="Hosts the members were placed on.",
        json_schema_extra=k8s(list_type="set"),
    )
    conditions: list[Condition] | None = conditions_field(
        "PolicySatisfied: the members' hosts satisfy the policy."
    )


class ServerGroup(KovaObject):
    """ServerGroup places a set of Instances on the same host (affinity) or on
    different hosts (anti-affinity). Instances join it with
    spec.serverGroupRef at creation."""

    crd = CRDInfo(
        kind="ServerGroup",
        plural="servergroups",
        singular="servergroup",
        scope="Namespaced",
        short_names=("sg",),
        printer_columns=(
            ("Policy", "string", ".spec.policy", "Placement policy.", 0),
            ("MaxPerHost", "integer", ".spec.maxServerPerHost", "Members per host.", 0),
            ("Members", "string", ".status.members", "Member Instances.", 0),
        ),
    )

    kind: Literal["ServerGroup"] = "ServerGroup"
    spec: ServerGroupSpec
    status: ServerGroupStatus | None = None


# ==========================================================================
# Instance








class UserData(KovaModel):
    """cloud-init user data for the instance: inline text or a Secret key.
    Exactly one of inline and secretRef."""

    model_config = model_config(
        cel(
            "has(self.inline) != has(self.secretRef)",
            "exactly one of inline and secretRef must be set",
        ),
    )

    inline: str | None = Field(
        default=None,
        max_length=MAX_USER_DATA,
        description="User data as text (e.g. a #cloud-config document or a shell script "
        "starting with #!), at most 64 KiB. Visible to anyone who can read the "
        "Instance: put secrets in a Secret and use secretRef.",
    )
    secret_ref: SecretKeyRef | None = Field(
        default=None, description="A key of a Secret in the Instance's namespace."
    )


class SchedulingHints(KovaModel):
    """Nova-style scheduler hints; they apply to every scheduling decision
    (first placement, rescheduling, evacuation)."""

    model_config = model_config(
        cel(
            "!has(self.sameHost) || !has(self.differentHost) || "
            "!self.sameHost.exists(n, n in self.differentHost)",
            "an instance cannot be in both sameHost and differentHost",
            field_path=".differentHost",
        ),
    )

    same_host: list[Label] | None = Field(
        default=None,
        max_length=MAX_TRAITS,
        description="Place on the same host as these Instances (names, same namespace).",
        json_schema_extra=k8s(list_type="set"),
    )
    different_host: list[Label] | None = Field(
        default=None,
        max_length=MAX_TRAITS,
        description="Place on a host running none of these Instances (names, same namespace).",
        json_schema_extra=k8s(list_type="set"),
    )
    requested_host: Name | None = Field(
        default=None,
        description="Consider only this Host (Nova's requested destination). Placement "
        "must still have room on it.",
    )


class ImageRef(KovaModel):
    """The image an Instance boots: a cluster Image by default, a TenantImage of
    the Instance's own namespace with kind TenantImage."""

    name: Name = Field(description="Name of the Image, or of the TenantImage in this "
                       "namespace.")
    kind: ImageKind | None = Field(
        default=None,
        description="Image (when unset): the cluster-wide Image of that name. TenantImage: "
        "the TenantImage of that name in the Instance's namespace (never another "
        "namespace's).",
    )


class InstanceSpec(KovaModel):
    """The desired state of an Instance. runStrategy applies at once;
    userData, sshKeys and hostname apply at the next start or restart (the
    RestartRequired condition names the fields waiting for one); the size
    (flavorRef or resources), imageRef, serverGroupRef, availabilityZone,
    traits and schedulingHints are fixed at creation (the API server rejects
    a change). A change of flavorRef or resources on a placed Instance resizes
    it (docs/moving.md): a root disk never shrinks."""

    model_config = model_config(
        cel(
            "has(self.flavorRef) != has(self.resources)",
            "exactly one of flavorRef and resources must be set",
        ),
        _presence_immutable("flavorRef"),
        _presence_immutable("resources"),
        _presence_immutable("serverGroupRef"),
        _presence_immutable("availabilityZone"),
        _presence_immutable("traits"),
        _presence_immutable("schedulingHints"),
    )

    flavor_ref: ObjectRef | None = Field(
        default=None,
        description="The Flavor (cluster-scoped) giving the size. Exactly one of "
        "flavorRef and resources. A change resizes the Instance (phase Resizing, then "
        "ResizeVerify: kubectl kova resize NAME --confirm or --revert); a Flavor with a "
        "smaller diskGiB is refused (condition Resized=False, reason ResizeRefused).",
    )
    resources: Resources | None = Field(
        default=None,
        description="An inline size instead of a Flavor. Exactly one of flavorRef and "
        "resources. A change resizes the Instance, as a change of flavorRef does; "
        f"diskGiB may grow, never shrink. At most {MAX_INLINE_VCPUS} vCPUs, "
        f"{MAX_INLINE_MEMORY_MIB} MiB of memory and {MAX_INLINE_DISK_GIB} GiB of disk: larger "
        "sizes come from a Flavor.",
        json_schema_extra=k8s(validations=[
            cel("self.diskGiB >= oldSelf.diskGiB",
                "resources.diskGiB cannot shrink: a resize can only grow the root disk"),
            cel(f"self.vcpus <= {MAX_INLINE_VCPUS}",
                f"inline resources.vcpus may be at most {MAX_INLINE_VCPUS}; larger sizes "
                "come from a Flavor", field_path=".vcpus"),
            cel(f"self.memoryMiB <= {MAX_INLINE_MEMORY_MIB}",
                f"inline resources.memoryMiB may be at most {MAX_INLINE_MEMORY_MIB} (1 TiB); "
                "larger sizes come from a Flavor", field_path=".memoryMiB"),
            cel(f"self.diskGiB <= {MAX_INLINE_DISK_GIB}",
                f"inline resources.diskGiB may be at most {MAX_INLINE_DISK_GIB} (16 TiB); "
                "larger sizes come from a Flavor", field_path=".diskGiB"),
        ]),
    )
    image_ref: ImageRef = Field(
        description="The image the root disk is created from: a cluster Image (kind Image, "
        "the default) or a TenantImage of this namespace (kind TenantImage). Immutable.",
        json_schema_extra=k8s(validations=[immutable("imageRef")]),
    )
    user_data: UserData | None = Field(
        default=None,
        description="cloud-init user data, served through a NoCloud seed disk. A change "
        "applies at the next start or restart (condition RestartRequired until then); "
        "the guest then sees a new instance-id, so cloud-init runs it again.",
    )
    ssh_keys: list[SSHKey] | None = Field(
        default=None,
        max_length=32,
        description="OpenSSH public keys (one line each, e.g. 'ssh-ed25519 AAAA... "
        "me@laptop') installed for the default user through cloud-init. A change "
        "applies at the next start or restart (condition RestartRequired until then).",
        json_schema_extra=k8s(list_type="set"),
    )
    hostname: Label | None = Field(
        default=None,
        description="Host name of the guest (a DNS label); defaults to metadata.name. "
        "A change applies at the next start or restart (condition RestartRequired until "
        "then).",
    )
    run_strategy: RunStrategy = Field(
        default=RunStrategy.ALWAYS,
        description="Always: keep it running, restart it whenever it stops. Halted: keep "
        "it stopped. Manual: start it once, then leave power to the user. "
        "RerunOnFailure: restart it only when it crashed or failed, not when the "
        "guest shut down cleanly. Once: run it once, never restart.",
    )
    availability_zone: Zone | None = Field(
        default=None,
        description="Only hosts in this availability zone (Host spec.availabilityZone) "
        "are considered. Immutable.",
        json_schema_extra=k8s(validations=[immutable("availabilityZone")]),
    )
    server_group_ref: ObjectRef | None = Field(
        default=None,
        description="The ServerGroup (same namespace) whose policy constrains the host. "
        "Immutable.",
        json_schema_extra=k8s(validations=[immutable("serverGroupRef")]),
    )
    traits: TraitRequirements | None = Field(
        default=None,
        description="Traits the host must or must not have, in addition to the "
        "Flavor's extraSpecs.traits. Immutable: they chose the host; create a new "
        "Instance to change them.",
        json_schema_extra=k8s(validations=[cel(
            "self == oldSelf",
            "traits is immutable: they chose the host at scheduling; create a new Instance "
            "to change them")]),
    )
    scheduling_hints: SchedulingHints | None = Field(
        default=None,
        description="Nova-style scheduler hints. Immutable, as in Nova: they applied "
        "when the host was chosen.",
        json_schema_extra=k8s(validations=[cel(
            "self == oldSelf",
            "schedulingHints is immutable: they applied when the host was chosen; create a "
            "new Instance to change them")]),
    )




class InstanceAddress(KovaModel):
    """One IP address of the guest."""

    address: str = Field(max_length=64, description="The IP address.")
    family: AddressFamily | None = Field(default=None, description="IPv4 or IPv6.")
    mac: str | None = Field(
        default=None,
        max_length=17,
        pattern=r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$",
        description="MAC address of the interface (lower case).",
    )
    interface: str | None = Field(
        default=None, max_length=64, description="Interface name inside the guest or on the host."
    )


class InstanceAction(KovaModel):
    """One entry of the action history: who asked for what, when, and how it
    ended."""

    action: InstanceActionName = Field(description="What was done.")
    request_id: str = Field(
        max_length=64, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$",
        description="Identifier of the request (also in the component's log lines).",
    )
    user: str = Field(
        max_length=1024,
        description="Who asked: the Kubernetes user name of the request, or the Kova "
        "component that acted on its own (e.g. kova-operator for a reschedule).",
    )
    start_time: dt.datetime = Field(description="When the action started (RFC 3339).")
    finish_time: dt.datetime | None = Field(
        default=None, description="When it finished; unset while in progress."
    )
    result: ActionResult = Field(description="InProgress, Success or Error.")
    message: str | None = Field(
        default=None, max_length=1024, description="What happened, in a sentence."
    )
    image: str | None = Field(
        default=None, max_length=253,
        description="A snapshot's TenantImage (of the Instance's namespace).",
    )
    attempt: int | None = Field(
        default=None, ge=1,
        description="A snapshot's attempt: 1, then one more each time the agent lost it "
        "(restarted midway) and it was taken again.",
    )
    quiesce: SnapshotQuiesce | None = Field(
        default=None,
        description="A snapshot's quiescing through the QEMU guest agent: required, auto "
        "(frozen when the agent answers) or off.",
    )
    quiesce_from: str | None = Field(
        default=None, max_length=512,
        description="Where a snapshot's quiesce came from: request (--quiesce), the image "
        "whose properties.requireQuiesce requires it (e.g. Image debian-12), or default "
        "(neither asked: auto).",
    )
    image_uid: str | None = Field(
        default=None, alias="imageUID", max_length=64,
        description="A snapshot's TenantImage as created at the request (its "
        "metadata.uid, while saving): the image store fills only that object.",
    )


class SnapshotProgress(KovaModel):
    """How far the agent is with a snapshot (kubectl kova snapshot shows it)."""

    request_id: str = Field(
        max_length=64, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$",
        description="The snapshot's action in status.actions.",
    )
    image: str | None = Field(default=None, max_length=253,
                              description="The TenantImage it makes.")
    phase: SnapshotPhase = Field(
        description="Copying (the root disk into a standalone qcow2), Uploading (the copy "
        "to the image store), Stored or Failed.")
    bytes_done: int = Field(default=0, ge=0, description="Bytes of the phase done.")
    bytes_total: int = Field(default=0, ge=0,
                             description="Bytes of the phase in all (0: not known yet).")
    update_time: dt.datetime = Field(description="When the agent wrote this (RFC 3339).")
    message: str | None = Field(default=None, max_length=1024,
                                description="Why it failed (phase Failed).")


class CdromStatus(KovaModel):
    """The CD-ROM of an Instance booted from an iso Image."""

    ejected: bool = Field(
        description="True once the ISO was ejected (kubectl kova eject): the drive stays, "
        "empty, the guest boots from its root disk, and restarts, redefinitions and moves "
        "keep it so.")
    eject_time: dt.datetime | None = Field(default=None,
                                           description="When it was ejected (RFC 3339).")
    request_id: str | None = Field(
        default=None, max_length=64,
        description="The eject's entry of status.actions.")


class ConsoleStatus(KovaModel):
    """Where to read the instance's serial console."""

    log_path: str | None = Field(
        default=None,
        max_length=4096,
        description="Path of the serial console log file on status.host.",
    )


class SealedUserData(KovaModel):
    """The user data of spec.userData.secretRef, sealed by the operator for the
    Instance's host (only its agent can open it; agents may not read Secrets)."""

    host: Name = Field(description="The Host it is sealed for.")
    key_id: str = Field(max_length=64, description="Fingerprint of the Host's userDataKey.")
    secret: Name = Field(description="The Secret it was read from.")
    key: str = Field(max_length=MAX_NAME, description="The key of the Secret.")
    data: str = Field(max_length=2 * MAX_USER_DATA,
                      description="The sealed text (base64).")


class LiveMigrationProgress(KovaModel):
    """How far a live migration is (libvirt's job statistics)."""

    phase: str = Field(max_length=32, description="CopyingDisk, CopyingMemory, PostCopy, "
                       "Completed, Aborted or Failed.")
    elapsed_ms: int | None = Field(default=None, ge=0, description="Time since it started.")
    memory_remaining_bytes: int | None = Field(default=None, ge=0, description="Memory left.")
    memory_total_bytes: int | None = Field(default=None, ge=0, description="Guest memory.")
    disk_remaining_bytes: int | None = Field(default=None, ge=0, description="Disk left.")
    disk_total_bytes: int | None = Field(default=None, ge=0, description="Disk to copy.")
    iteration: int | None = Field(default=None, ge=0, description="Memory copy iteration.")
    downtime_ms: int | None = Field(default=None, ge=0,
                                    description="When completed: how long the guest paused.")


class InstanceMigration(KovaModel):
    """A resize or cold migration under way (Nova's migration record). The
    migration's uuid is the Placement consumer that holds the source
    allocation while the Instance's own uid holds the destination's."""

    uuid: str = Field(
        max_length=36, pattern=r"^[0-9a-f-]{36}$",
        description="The migration's UUID: its Placement consumer (type MIGRATION) holds "
        "the old allocation until the move is confirmed or reverted.",
    )
    type: MigrationType = Field(description="resize or migrate (cold).")
    mode: MigrationMode | None = Field(
        default=None, description="How a move to another host carries the guest: cold "
        "(stopped, its disk copied agent to agent, started there) or live (libvirt's live "
        "migration with the local disk, the guest keeps running). Unset on the same host.",
    )
    step: MigrationStep = Field(
        description="Claiming (the operator claims the new size), Moving (the agent stops "
        "the guest, grows or copies the disk, starts it), Verify (confirm or revert), "
        "Reverting (the agent restores the old size and disk), Reverted (the operator "
        "gives the old allocation back). Across hosts also Copied (the disk is on the "
        "destination), Finishing (the destination starts it), Returning and Restoring "
        "(a revert: the source starts its kept copy); docs/moving.md.",
    )
    source_host: Name = Field(description="The host it was on.")
    dest_host: Name | None = Field(
        default=None, description="The host the scheduler chose (set once claimed)."
    )
    requested_host: Name | None = Field(
        default=None, description="The host a cold migration was asked to go to."
    )
    old_resources: Resources = Field(description="The size before the move (for a revert).")
    new_resources: Resources | None = Field(
        default=None, description="The size after the move."
    )
    old_flavor: Name | None = Field(default=None, description="The Flavor before a resize.")
    request_id: str = Field(
        max_length=64, description="The entry of status.actions this move is."
    )
    user: str | None = Field(
        default=None, max_length=1024, description="Who asked for it."
    )
    start_time: dt.datetime = Field(description="When it started (RFC 3339).")
    verify_time: dt.datetime | None = Field(
        default=None,
        description="When it reached Verify (the confirm window counts from here).",
    )
    decision: MigrationDecision | None = Field(
        default=None, description="Confirm or Revert, as asked through the subresources."
    )
    decided_by: str | None = Field(
        default=None, max_length=1024, description="Who confirmed or reverted."
    )
    was_running: bool | None = Field(
        default=None,
        description="Whether the guest ran when the agent stopped it (it is started "
        "again after the move and after a revert).",
    )
    dest_uri: str | None = Field(
        default=None, max_length=512,
        description="Live: the destination's libvirt URI as the source's libvirtd reaches it "
        "(the destination agent's --live-migration-uri, written at step Preparing).",
    )
    dest_dir: str | None = Field(
        default=None, max_length=1024,
        description="Live: the Instance's directory on the destination (its disk paths there).",
    )
    dest_nic_filter: str | None = Field(
        default=None, max_length=253,
        description="Live: the network filter the destination agent defined for the guest's "
        "NIC (its <filterref> on the destination names it).",
    )
    dest_cdrom: str | None = Field(
        default=None, max_length=1024,
        description="Live, a guest booted from an iso Image: the ISO's file in the "
        "destination's image cache (its CD-ROM on the destination names it).",
    )
    progress: LiveMigrationProgress | None = Field(
        default=None, description="Live: libvirt's job statistics, written by the source agent.",
    )
    failure: str | None = Field(
        default=None, max_length=2048,
        description="Live: why the migration failed, timed out or was aborted.",
    )


class InstanceStatus(KovaModel):
    """The observed state of an Instance, written by the operator and the
    compute agent."""

    observed_generation: int | None = observed_generation_field()
    phase: InstancePhase | None = Field(
        default=None,
        description="Coarse lifecycle phase: Pending, Scheduling, Scheduled, Building, "
        "Running, Stopped, Paused, Migrating, Deleting, Error, or Unknown while its host "
        "is Down. Conditions carry the details.",
    )
    host: Name | None = Field(default=None, description="The Host the instance is placed on.")
    alternate_hosts: list[Name] | None = Field(
        default=None,
        max_length=16,
        description="Other candidate Hosts the scheduler found, tried in order when "
        "building on status.host fails.",
    )
    attempts: int | None = Field(
        default=None, ge=0, description="How many times the instance was built so far."
    )
    resources: Resources | None = Field(
        default=None,
        description="The size claimed in Placement (resolved from the Flavor at scheduling).",
    )
    power_state: PowerState | None = Field(
        default=None, description="Power state of the domain as seen by the compute agent."
    )
    addresses: list[InstanceAddress] | None = Field(
        default=None,
        max_length=64,
        description="IP addresses of the guest; the first one is the primary address.",
    )
    console: ConsoleStatus | None = Field(default=None, description="Serial console.")
    cdrom: CdromStatus | None = Field(
        default=None,
        description="The CD-ROM of an Instance booted from an iso Image, once ejected "
        "(written by the agent); unset while the ISO is in the drive.",
    )
    sealed_user_data: SealedUserData | None = Field(
        default=None,
        description="The user data of spec.userData.secretRef sealed for status.host "
        "(written by the operator, opened by that host's agent only).",
    )
    actions: list[InstanceAction] | None = Field(
        default=None,
        max_length=MAX_ACTIONS,
        description=f"The last {MAX_ACTIONS} actions on the Instance, oldest first: power "
        "actions and eject requested through the subresource API (kubectl kova start, stop, "
        "eject, ...) "
        "and the scheduler's create, reschedule and evacuate.",
    )
    migration: InstanceMigration | None = Field(
        default=None,
        description="The resize or cold migration under way (docs/moving.md); unset "
        "when none is.",
    )
    snapshot: SnapshotProgress | None = Field(
        default=None,
        description="The progress of the Instance's last snapshot, written by the agent "
        "on its host at each phase and then at most every 2 seconds (docs/images.md).",
    )
    conditions: list[Condition] | None = conditions_field(
        "Scheduled: a host was chosen and resources claimed. Ready: the guest is "
        "running. Reconciling: Kova is still converging on the spec. Stalled: it "
        "cannot (phase Error). RestartRequired: spec fields that apply at the next "
        "restart changed. Reasons and messages explain failures."
    )


class Instance(KovaObject):
    """Instance is a virtual machine: a size (a Flavor or inline resources), an
    Image to boot, cloud-init user data and SSH keys, and scheduling
    constraints. Kova schedules it onto a Host and its compute agent runs it
    with libvirt/QEMU."""

    crd = CRDInfo(
        kind="Instance",
        plural="instances",
        singular="instance",
        scope="Namespaced",
        short_names=("inst",),
        printer_columns=(
            ("Phase", "string", ".status.phase", "Lifecycle phase.", 0),
            ("Host", "string", ".status.host", "Host the instance runs on.", 0),
            ("Flavor", "string", ".spec.flavorRef.name", "Flavor name.", 0),
            ("IP", "string", ".status.addresses[0].address", "Primary IP address.", 0),
            ("Image", "string", ".spec.imageRef.name", "Image name.", 1),
            ("Move", "string", ".status.migration.step", "Step of a resize or migration.", 1),
            ("Power", "string", ".status.powerState", "Power state.", 1),
            (
                "Ready",
                "string",
                '.status.conditions[?(@.type=="Ready")].status',
                "Ready condition.",
                1,
            ),
        ),
        # The name becomes the guest's default host name and the libvirt
        # domain's name: a DNS label, not the default DNS subdomain.
        metadata_name={"maxLength": MAX_LABEL, "pattern": DNS_LABEL},
    )

    kind: Literal["Instance"] = "Instance"
    spec: InstanceSpec
    status: InstanceStatus | None = None


# ==========================================================================
# Host




class Maintenance(KovaModel):
    """Maintenance mode: no new instances are placed on the host."""

    model_config = model_config(
        cel(
            "!self.enabled || (has(self.reason) && size(self.reason) > 0)",
            "reason is required when maintenance is enabled",
            field_path=".reason",
            reason="FieldValueRequired",
        ),
    )

    enabled: bool = Field(default=False, description="Whether the host is in maintenance.")
    reason: str | None = Field(
        default=None, max_length=255, description="Why; required when enabled."
    )


class AllocationRatios(KovaModel):
    """Overcommit ratios: Placement capacity is (total - reserved) * ratio."""

    vcpu: float = Field(
        default=4.0, gt=0, le=1024, description="VCPU allocation ratio (default 4.0)."
    )
    memory: float = Field(
        default=1.0, gt=0, le=1024, description="MEMORY_MB allocation ratio (default 1.0)."
    )
    disk: float = Field(
        default=1.0, gt=0, le=1024, description="DISK_GB allocation ratio (default 1.0)."
    )


class ReservedResources(KovaModel):
    """Host resources kept back for the host itself."""

    vcpus: int = Field(default=0, ge=0, le=4096, description="Reserved VCPU.")
    memory_mib: int = Field(
        default=512, alias="memoryMiB", ge=0, description="Reserved memory in MiB (default 512)."
    )
    disk_gib: int = Field(default=0, alias="diskGiB", ge=0, description="Reserved disk in GiB.")


class ExtraResource(KovaModel):
    """Inventory of one custom resource class on a host (Placement inventory)."""

    model_config = model_config(
        cel("!has(self.reserved) || self.reserved <= self.total",
            "reserved must not exceed total", field_path=".reserved"))

    total: int = Field(ge=1, le=1 << 20, description="How many units the host has.")
    reserved: int = Field(
        default=0, ge=0, le=1 << 20, description="Units kept back (not for instances)."
    )
    allocation_ratio: float = Field(
        default=1.0, gt=0, le=1024, description="Overcommit ratio (default 1.0)."
    )


class HostSpec(KovaModel):
    """Operator-controlled settings of a hypervisor host."""

    enabled: bool = Field(
        default=True,
        description="Whether new instances may be scheduled to the host (Nova's "
        "compute service enabled/disabled). Running instances are not affected.",
    )
    disabled_reason: str | None = Field(
        default=None, max_length=255, description="Why the host is disabled."
    )
    maintenance: Maintenance | None = Field(
        default=None, description="Maintenance mode, with a reason."
    )
    availability_zone: Zone | None = Field(
        default=None,
        description="The availability zone the host belongs to (a Placement aggregate).",
    )
    allocation_ratios: AllocationRatios = Field(
        default_factory=AllocationRatios,
        description="Overcommit ratios per resource class.",
        json_schema_extra={"default": {}},
    )
    reserved: ReservedResources = Field(
        default_factory=ReservedResources,
        description="Resources kept back for the host operating system.",
        json_schema_extra={"default": {}},
    )
    traits: list[CustomTrait] | None = Field(
        default=None,
        max_length=MAX_TRAITS,
        description="Custom traits (CUSTOM_*) added to the host's resource provider, "
        "next to the traits the agent detects.",
        json_schema_extra=k8s(list_type="set"),
    )
    cpu_dedicated_set: str | None = Field(
        default=None,
        max_length=1024,
        pattern=CPUSET,
        description="Host CPUs kept for instances with dedicated CPUs (Nova's "
        "cpu_dedicated_set), e.g. 2-7: they are the host's PCPU inventory, the other "
        "CPUs its VCPU inventory. A Flavor with extraSpecs.cpuPolicy: dedicated pins "
        "each vCPU to one of them, never shared with another instance; emulator "
        "threads and shared instances run on the other CPUs.",
    )
    extra_resources: dict[str, ExtraResource] | None = Field(
        default=None,
        max_length=32,
        description="Custom resources the host offers, by resource class name "
        "(CUSTOM_*), e.g. {CUSTOM_GPU: {total: 1}}: the agent writes them into the "
        "host's Placement inventory next to VCPU, PCPU, MEMORY_MB and DISK_GB, and "
        "Instances whose Flavor asks for them (extraSpecs.resources) consume them.",
        json_schema_extra=k8s(
            validations=[
                cel(
                    "self.all(k, size(k) <= 255 && k.matches('" + CUSTOM_TRAIT_NAME + "'))",
                    "extraResources names must be CUSTOM_ followed by upper case letters, "
                    "digits and underscores, e.g. CUSTOM_GPU",
                ),
            ]
        ),
    )
    fenced: bool = Field(
        default=False,
        description="The host is known to be powered off or cut off (fenced): its "
        "instances are evacuated (rebuilt on other hosts) and it gets no new ones. "
        "Tainting its Node node.kubernetes.io/out-of-service has the same effect. "
        "Set it back to false once the host is repaired; its agent removes the "
        "stale domains when it comes back.",
    )
    drain: bool = Field(
        default=False,
        description="Empty the host for maintenance: it takes no new instances and the "
        "operator moves each of its instances to another host the scheduler picks "
        "(server-group policies hold; an instance with no valid destination stays and is "
        "named in status.drain.left with the reason). Set it back to false to end the "
        "drain: the host takes new instances again (if enabled).",
    )
    drain_policy: DrainPolicy = Field(
        default=DrainPolicy.LIVE,
        description="How a drain moves instances: Live (default) live-migrates the running "
        "ones and leaves one whose live migration fails; LiveThenCold migrates such an "
        "instance cold (its guest is stopped and started on the destination); Cold "
        "cold-migrates every instance. Stopped instances are always cold-migrated.",
    )
    drain_parallel: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Instances moved off the host at the same time during a drain "
        "(default: the operator's --drain-parallel).",
    )


class HypervisorInfo(KovaModel):
    """What the compute agent found on the host."""

    type: str | None = Field(default=None, max_length=64, description="QEMU or KVM.")
    version: str | None = Field(default=None, max_length=64, description="QEMU version.")
    libvirt_version: str | None = Field(default=None, max_length=64, description="libvirt version.")
    hostname: str | None = Field(default=None, max_length=MAX_NAME, description="Host name.")
    cpu_arch: str | None = Field(default=None, max_length=64, description="CPU architecture.")
    cpu_model: str | None = Field(default=None, max_length=255, description="Host CPU model.")


class StreamEndpoint(KovaModel):
    """The agent's stream endpoint: an address and a port."""

    address: str = Field(max_length=MAX_NAME, description="IP address or DNS name.")
    port: int = Field(ge=1, le=65535, description="TCP port.")


class DrainLeft(KovaModel):
    """An instance a drain could not move (yet), and why."""

    namespace: str = Field(max_length=MAX_NAME, description="The instance's namespace.")
    name: str = Field(max_length=MAX_NAME, description="The instance's name.")
    reason: str = Field(max_length=128, description="Why it is left (CamelCase).")
    message: str | None = Field(default=None, max_length=1024, description="The details.")


class HostDrain(KovaModel):
    """Progress of a drain (spec.drain), written by the operator."""

    phase: DrainPhase = Field(
        description="Draining while instances are being moved; Drained when none is left; "
        "Stuck when the ones left cannot be moved (each in left, tried again now and then)."
    )
    start_time: dt.datetime | None = Field(default=None, description="When the drain began.")
    instances: int = Field(default=0, ge=0, description="Instances still on the host.")
    moving: int = Field(default=0, ge=0, description="Instances being moved off it now.")
    moved: int = Field(default=0, ge=0, description="Instances this drain moved away.")
    left: list[DrainLeft] | None = Field(
        default=None, max_length=1024,
        description="Instances the drain could not move, with the reason for each.",
    )


class HostStatus(KovaModel):
    """Observed state of a host, written by its compute agent and the host
    monitor."""

    observed_generation: int | None = observed_generation_field()
    state: HostState | None = Field(
        default=None,
        description="Up while the agent's heartbeat Lease is renewed; Down once it expired.",
    )
    capacity: ResourceAmounts | None = Field(
        default=None, description="Total resources found on the host."
    )
    allocated: ResourceAmounts | None = Field(
        default=None, description="Resources allocated in Placement to instances on the host."
    )
    instance_count: int | None = Field(
        default=None, ge=0, description="Number of instances placed on the host."
    )
    hypervisor: HypervisorInfo | None = Field(default=None, description="Hypervisor details.")
    resource_provider_uuid: uuid.UUID | None = Field(
        default=None,
        alias="resourceProviderUUID",
        description="UUID of the host's Placement resource provider.",
    )
    traits: list[Annotated[str, Field(max_length=MAX_TRAIT)]] | None = Field(
        default=None,
        max_length=1024,
        description="Traits of the resource provider (detected and custom).",
        json_schema_extra=k8s(list_type="set"),
    )
    last_heartbeat_time: dt.datetime | None = Field(
        default=None, description="When the agent last renewed its heartbeat."
    )
    stream_endpoint: StreamEndpoint | None = Field(
        default=None,
        description="Where the agent serves consoles, VNC and power actions to Kova's "
        "API component (mutual TLS; no other client is accepted).",
    )
    user_data_key: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z0-9+/]{43}=$",
        description="The agent's X25519 public key (base64): the operator seals the user "
        "data of a Secret for this host with it (Instance status.sealedUserData).",
    )
    drain: HostDrain | None = Field(
        default=None, description="The drain's progress while spec.drain is true."
    )
    conditions: list[Condition] | None = conditions_field(
        "Ready: the agent is up and the resource provider is in sync; False with "
        "reason Down when its heartbeat expired. Drained (while spec.drain is true): True "
        "once no instance is left, False with reason Draining or DrainStuck. "
        "HypervisorReachable: the agent reaches its libvirtd (False: LibvirtUnreachable). "
        "PlacementRegistered: the resource "
        "provider is registered and Placement answers the agent (False: "
        "PlacementUnavailable, PlacementUnauthorized or RegistrationFailed)."
    )


class Host(KovaObject):
    """Host is a hypervisor node, cluster-scoped and named after its Kubernetes
    Node. The compute agent registers it and reports capacity; operators set
    enabled, maintenance, availability zone, allocation ratios and reserved
    resources in spec."""

    crd = CRDInfo(
        kind="Host",
        plural="hosts",
        singular="host",
        scope="Cluster",
        short_names=("hv",),
        printer_columns=(
            ("Enabled", "boolean", ".spec.enabled", "Accepts new instances.", 0),
            ("State", "string", ".status.state", "Agent liveness.", 0),
            ("Zone", "string", ".spec.availabilityZone", "Availability zone.", 0),
            ("Instances", "integer", ".status.instanceCount", "Instances on the host.", 0),
            ("Fenced", "boolean", ".spec.fenced", "Fenced: instances evacuated.", 1),
            ("Maintenance", "boolean", ".spec.maintenance.enabled", "In maintenance.", 1),
            ("Drain", "string", ".status.drain.phase", "Drain: Draining, Drained, Stuck.", 0),
            ("Hypervisor", "string", ".status.hypervisor.type", "Hypervisor type.", 1),
        ),
    )

    kind: Literal["Host"] = "Host"
    spec: HostSpec = Field(default_factory=HostSpec)
    status: HostStatus | None = None


#: Every kind, in the order the CRD files are written and documented.
KINDS: tuple[type[KovaObject], ...] = (Instance, Flavor, Image, TenantImage, Host,
                                        ServerGroup)
