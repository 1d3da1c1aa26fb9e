"""Building blocks shared by the Kova API types.

Everything here is plain pydantic v2.  Two small helpers carry the pieces of a
CustomResourceDefinition schema that JSON Schema has no word for:

* :func:`cel` builds one ``x-kubernetes-validations`` rule (a CEL expression the
  API server evaluates at admission);
* :func:`k8s` collects ``x-kubernetes-*`` keys (list types, CEL rules, ...) for a
  field's ``json_schema_extra``.

The generator (:mod:`kova.crds.generate`) turns the models' JSON schema into a
structural OpenAPI v3 schema; see ``docs/api.md`` for the rules it follows.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .names import API_VERSION, GROUP, VERSION, ConditionStatus

__all__ = ["API_VERSION", "GROUP", "VERSION", "ConditionStatus"]  # re-exported

# --------------------------------------------------------------------------
# Patterns and limits (one place, so docs/api.md and the tests agree).

#: A DNS-1123 label: what Kubernetes accepts as a Service or Namespace name.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: A DNS-1123 subdomain: what Kubernetes accepts as most object names.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A Placement trait name (os-traits standard names or ``CUSTOM_*``).
TRAIT_NAME = r"^[A-Z][A-Z0-9_]*$"
#: A trait an operator may add to a host: only custom ones.
CUSTOM_TRAIT_NAME = r"^CUSTOM_[A-Z0-9_]+$"
#: A Placement resource class (os-resource-classes standard names or ``CUSTOM_*``).
RESOURCE_CLASS_NAME = r"^[A-Z][A-Z0-9_]*$"
#: A list of host CPUs, as libvirt and Nova write it: "2-5,8".
CPUSET = r"^[0-9]{1,4}(-[0-9]{1,4})?(,[0-9]{1,4}(-[0-9]{1,4})?)*$"
#: A Secret data key (``[-._a-zA-Z0-9]+``).
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
#: A lowercase hex SHA-256 digest.
SHA256 = r"^[a-f0-9]{64}$"

MAX_NAME = 253
MAX_LABEL = 63
MAX_TRAIT = 255
MAX_TRAITS = 64
MAX_REASON = 1024
MAX_MESSAGE = 32768


# --------------------------------------------------------------------------
# Schema helpers


def cel(
    rule: str,
    message: str,
    *,
    field_path: str | None = None,
    reason: str | None = None,
) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry.

    ``field_path`` (a JSON path relative to the schema node the rule is on,
    e.g. ``.flavorRef``) makes the API server report the failure on that field
    rather than on the node itself; ``reason`` is one of ``FieldValueInvalid``
    (the default), ``FieldValueForbidden``, ``FieldValueRequired`` or
    ``FieldValueDuplicate``.
    """
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    if reason is not None:
        entry["reason"] = reason
    return entry


def immutable(field: str) -> dict[str, str]:
    """A transition rule: the field may not change once set."""
    return cel("self == oldSelf", f"{field} is immutable")


def k8s(
    *,
    validations: list[dict[str, str]] | None = None,
    list_type: str | None = None,
    list_map_keys: list[str] | None = None,
    preserve_unknown_fields: bool = False,
) -> dict[str, Any]:
    """``json_schema_extra`` for a field: the ``x-kubernetes-*`` extensions."""
    extra: dict[str, Any] = {}
    if validations:
        extra["x-kubernetes-validations"] = validations
    if list_type:
        extra["x-kubernetes-list-type"] = list_type
    if list_map_keys:
        extra["x-kubernetes-list-map-keys"] = list_map_keys
    if preserve_unknown_fields:
        extra["x-kubernetes-preserve-unknown-fields"] = True
    return extra


class KovaModel(BaseModel):
    """Base of every Kova API model: snake_case in Python, camelCase on the wire.

    Unknown fields are ignored when reading (an older client reading a newer
    object keeps working); the API server prunes unknown fields anyway.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_enum_values=True,
        extra="ignore",
    )

    def to_k8s(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def model_config(*validations: dict[str, str], **kw: Any) -> ConfigDict:
    """A ``model_config`` for a KovaModel subclass carrying object-level CEL rules."""
    cfg = ConfigDict(KovaModel.model_config)  # type: ignore[misc]
    if validations:
        cfg["json_schema_extra"] = {"x-kubernetes-validations": list(validations)}
    cfg.update(kw)
    return cfg


# --------------------------------------------------------------------------
# Common types

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME, pattern=DNS_SUBDOMAIN)]
Label = Annotated[str, Field(min_length=1, max_length=MAX_LABEL, pattern=DNS_LABEL)]
Trait = Annotated[str, Field(min_length=1, max_length=MAX_TRAIT, pattern=TRAIT_NAME)]
CustomTrait = Annotated[
    str, Field(min_length=8, max_length=MAX_TRAIT, pattern=CUSTOM_TRAIT_NAME)
]


class Condition(KovaModel):
    """One aspect of the object's current state, as Kubernetes conventions
    (``metav1.Condition``) define it: kstatus, Argo CD and Flux read these."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Type of the condition in CamelCase, e.g. Ready or Scheduled.",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=MAX_REASON,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="A programmatic identifier (CamelCase) for the condition's last transition.",
    )
    message: str = Field(
        max_length=MAX_MESSAGE,
        description="A human-readable message with details about the transition; may be empty.",
    )
    last_transition_time: dt.datetime = Field(
        description="When the condition last changed from one status to another (RFC 3339).",
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The metadata.generation the condition was set for; if it is older "
        "than the object's generation, the condition is out of date.",
    )


def conditions_field(types: str) -> Any:
    """The ``conditions`` list of a status: a map keyed by ``type``."""
    return Field(
        default=None,
        max_length=32,
        description=f"Current state of the object as conditions, keyed by type. {types}",
        json_schema_extra=k8s(list_type="map", list_map_keys=["type"]),
    )


def observed_generation_field() -> Any:
    return Field(
        default=None,
        ge=0,
        description="The metadata.generation of the spec the controller last acted on.",
    )


class ObjectRef(KovaModel):
    """A reference to another Kova object by name."""

    name: Name = Field(description="Name of the referenced object.")


class SecretKeyRef(KovaModel):
    """A key of a Secret in the same namespace as the referring object."""

    name: Name = Field(description="Name of the Secret (same namespace).")
    key: str = Field(
        default="userdata",
        min_length=1,
        max_length=MAX_NAME,
        pattern=SECRET_KEY,
        description="Key in the Secret's data holding the value.",
    )


class Resources(KovaModel):
    """An amount of the three standard resources an instance consumes."""

    vcpus: int = Field(ge=1, le=1024, description="Number of virtual CPUs (Placement VCPU).")
    memory_mib: int = Field(
        alias="memoryMiB",
        ge=16,
        le=16 * 1024 * 1024,
        description="Memory in MiB (Placement MEMORY_MB).",
    )
    disk_gib: int = Field(
        alias="diskGiB",
        ge=1,
        le=64 * 1024,
        description="Size of the root disk in GiB (Placement DISK_GB); the image is "
        "grown to this size.",
    )


class ResourceAmounts(KovaModel):
    """Amounts of the three standard resources (zero allowed)."""

    vcpus: int = Field(default=0, ge=0, description="Virtual CPUs (VCPU).")
    memory_mib: int = Field(
        default=0, alias="memoryMiB", ge=0, description="Memory in MiB (MEMORY_MB)."
    )
    disk_gib: int = Field(default=0, alias="diskGiB", ge=0, description="Disk in GiB (DISK_GB).")


class TraitRequirements(KovaModel):
    """Placement traits a host's resource provider must have or must not have."""

    model_config = model_config(
        cel(
            "!has(self.required) || !has(self.forbidden) || "
            "!self.required.exists(t, t in self.forbidden)",
            "a trait cannot be both required and forbidden",
            field_path=".forbidden",
        ),
    )

    required: list[Trait] | None = Field(
        default=None,
        max_length=MAX_TRAITS,
        description="Traits the host must have, e.g. HW_CPU_X86_AVX2 or CUSTOM_SSD "
        "(os-traits names or CUSTOM_*).",
        json_schema_extra=k8s(list_type="set"),
    )
    forbidden: list[Trait] | None = Field(
        default=None,
        max_length=MAX_TRAITS,
        description="Traits the host must not have.",
        json_schema_extra=k8s(list_type="set"),
    )


class CRDInfo(BaseModel):
    """How a top-level model becomes a CustomResourceDefinition."""

    model_config = ConfigDict(frozen=True)

    kind: str
    plural: str
    singular: str
    scope: str  # Namespaced | Cluster
    short_names: tuple[str, ...]
    categories: tuple[str, ...] = ("kova",)
    #: (name, type, jsonPath, description, priority) -- Age is appended.
    printer_columns: tuple[tuple[str, str, str, str, int], ...] = ()
    #: Restrictions on metadata.name beyond a DNS subdomain (the only
    #: metadata field a CRD schema may restrict, with generateName).
    metadata_name: dict[str, object] | None = None

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"


class KovaObject(KovaModel):
    """Base of the top-level kinds: apiVersion, kind, metadata, spec, status."""

    crd: ClassVar[CRDInfo]

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str
    metadata: dict[str, Any] = Field(default_factory=dict)
