"""Turning an Instance (with its Flavor, Image and ServerGroup) into a
scheduling request: pure functions, no I/O.

:func:`build_request` gives a :class:`RequestSpec`; :meth:`RequestSpec.query`
is the ``GET /allocation_candidates`` query string.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kova.crds import names
from kova.crds.names import ServerGroupPolicy


class InvalidRequest(Exception):
    """The Instance cannot be scheduled as written (a user error, terminal)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class MissingDependency(Exception):
    """A Flavor, Image or ServerGroup the Instance refers to does not exist
    (yet): the Instance waits in Pending."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class ServerGroupInfo:
    name: str
    policy: str
    max_server_per_host: int = 1
    #: How many *other* members run on each host.
    member_hosts: Counter = field(default_factory=Counter)

    @property
    def hard(self) -> bool:
        return self.policy in (ServerGroupPolicy.AFFINITY, ServerGroupPolicy.ANTI_AFFINITY)


@dataclass
class RequestSpec:
    namespace: str
    name: str
    uid: str
    resources: dict[str, int]
    required: set[str] = field(default_factory=set)
    forbidden: set[str] = field(default_factory=set)
    zone: str | None = None
    server_group: ServerGroupInfo | None = None
    #: Hosts of the Instances named in schedulingHints.sameHost / differentHost.
    same_host: set[str] | None = None
    different_host: set[str] = field(default_factory=set)
    requested_host: str | None = None
    #: The provider uuid of requested_host (Placement ``in_tree``), if known.
    requested_rp: str | None = None
    #: Hosts a build already failed on (never chosen again for this Instance).
    excluded_hosts: set[str] = field(default_factory=set)
    #: Alternates from the previous decision, preferred in this order.
    preferred_hosts: list[str] = field(default_factory=list)
    #: Where each resource class and required trait of the request comes
    #: from (``CUSTOM_GPU`` -> ``Flavor gpu extraSpecs.resources``), for the
    #: NoValidHost message.
    origins: dict[str, str] = field(default_factory=dict)

    def origin(self, name: str) -> str:
        """`` (from <field>)`` for a resource class or trait, or ``""``."""
        where = self.origins.get(name)
        return f" (from {where})" if where else ""

    def query(self, limit: int | None = None) -> list[tuple[str, str]]:
        """Query parameters of ``GET /allocation_candidates``."""
        params = [("resources", format_resources(self.resources))]
        traits = sorted(self.required) + ["!" + t for t in sorted(self.forbidden)]
        if traits:
            params.append(("required", ",".join(traits)))
        if self.zone:
            params.append(("member_of", names.az_aggregate_uuid(self.zone)))
        if self.requested_rp:
            params.append(("in_tree", self.requested_rp))
        if limit:
            params.append(("limit", str(limit)))
        return params


def format_resources(resources: dict[str, int]) -> str:
    return ",".join(f"{rc}:{amount}" for rc, amount in sorted(resources.items()) if amount)


def _get(d: dict | None, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d if d is not None else default


def resolve_size(spec: dict, flavor: dict | None) -> tuple[dict[str, int], dict]:
    """Placement resources and the resolved ``{vcpus, memoryMiB, diskGiB}``.

    ``flavor`` is the Flavor's spec (None when the Instance sizes itself inline).
    """
    if flavor is None:
        size = spec.get("resources")
        if not size:
            raise InvalidRequest(names.REASON_INVALID_REQUEST,
                                 "neither flavorRef nor resources is set")
        extra: dict = {}
    else:
        size = flavor
        extra = flavor.get("extraSpecs") or {}
    vcpus, mem, disk = int(size["vcpus"]), int(size["memoryMiB"]), int(size["diskGiB"])
    cpu_rc = "PCPU" if extra.get("cpuPolicy") == "dedicated" else "VCPU"
    resources = {cpu_rc: vcpus, "MEMORY_MB": mem, "DISK_GB": disk}
    for rc, amount in (extra.get("resources") or {}).items():
        resources[rc] = resources.get(rc, 0) + int(amount)
    return resources, {"vcpus": vcpus, "memoryMiB": mem, "diskGiB": disk}


def image_traits(image: dict) -> set[str]:
    """Required traits an Image's properties imply."""
    props = image.get("properties") or {}
    out = set()
    arch = props.get("architecture", "x86_64")
    if arch in names.ARCH_TRAITS:
        out.add(names.ARCH_TRAITS[arch])
    fw = props.get("firmware")
    if fw in names.FIRMWARE_TRAITS:
        out.add(names.FIRMWARE_TRAITS[fw])
    # virtio (the default) is every host's; another bus or model is asked for.
    for value, traits in ((props.get("diskBus"), names.DISK_BUS_TRAITS),
                          (props.get("nicModel"), names.NIC_MODEL_TRAITS)):
        if value and value != "virtio" and value in traits:
            out.add(traits[value])
    return out


def check_image_fits(size: dict, image: dict, image_name: str) -> None:
    min_disk = int(image.get("minDiskGiB") or 0)
    min_mem = int(image.get("minMemoryMiB") or 0)
    if size["diskGiB"] < min_disk:
        raise InvalidRequest(
            "FlavorDiskTooSmall",
            f"the root disk ({size['diskGiB']} GiB) is smaller than image "
            f"{image_name}'s minDiskGiB ({min_disk})",
        )
    if size["memoryMiB"] < min_mem:
        raise InvalidRequest(
            "FlavorMemoryTooSmall",
            f"the memory ({size['memoryMiB']} MiB) is less than image "
            f"{image_name}'s minMemoryMiB ({min_mem})",
        )


def build_request(
    instance: dict,
    *,
    flavor: dict | None,
    image: dict | None,
    server_group: dict | None = None,
    member_hosts: Counter | None = None,
    instance_hosts: dict[str, str | None] | None = None,
    host_rp: dict[str, str] | None = None,
    use_image_traits: bool = True,
) -> tuple[RequestSpec, dict]:
    """A :class:`RequestSpec` for ``instance`` and the resolved size.

    ``flavor``, ``image`` and ``server_group`` are the referenced objects'
    specs, None when missing (raises :class:`MissingDependency`).
    ``member_hosts`` counts the other server-group members per host;
    ``instance_hosts`` maps Instance names of the namespace to their hosts
    (for the sameHost/differentHost hints); ``host_rp`` maps Host names to
    provider uuids (for requestedHost).
    """
    meta = instance.get("metadata") or {}
    spec = instance.get("spec") or {}
    flavor_name = _get(spec, "flavorRef", "name")
    check_dependencies(spec, flavor, image, server_group)
    resources, size = resolve_size(spec, flavor if flavor_name else None)
    check_image_fits(size, image or {}, _get(spec, "imageRef", "name"))
    required, forbidden = wanted_traits(spec, flavor, image or {}, use_image_traits)

    req = RequestSpec(namespace=meta.get("namespace", ""), name=meta.get("name", ""),
                      uid=meta.get("uid", ""), resources=resources,
                      required=required, forbidden=forbidden,
                      zone=spec.get("availabilityZone"))
    sg_name = _get(spec, "serverGroupRef", "name")
    if sg_name and server_group is not None:
        req.server_group = ServerGroupInfo(
            name=sg_name,
            policy=server_group.get("policy", ServerGroupPolicy.ANTI_AFFINITY),
            max_server_per_host=int(server_group.get("maxServerPerHost") or 1),
            member_hosts=Counter(member_hosts or {}),
        )
    req.origins = request_origins(spec, flavor if flavor_name else None, flavor_name,
                                  image or {}, _get(spec, "imageRef", "name"))
    apply_hints(req, spec.get("schedulingHints") or {}, instance_hosts or {}, host_rp or {})
    return req, size


def request_origins(spec: dict, flavor: dict | None, flavor_name: str | None,
                    image: dict, image_name: str | None) -> dict[str, str]:
    """The field of the Instance, its Flavor or its Image that asks for each
    resource class and required trait (what a NoValidHost message names)."""
    out: dict[str, str] = {}
    if flavor is None:
        out.update({"VCPU": "spec.resources.vcpus", "MEMORY_MB": "spec.resources.memoryMiB",
                    "DISK_GB": "spec.resources.diskGiB"})
    else:
        fl = f"Flavor {flavor_name}"
        extra = flavor.get("extraSpecs") or {}
        out.update({"VCPU": f"{fl} vcpus", "MEMORY_MB": f"{fl} memoryMiB",
                    "DISK_GB": f"{fl} diskGiB",
                    "PCPU": f"{fl} vcpus with extraSpecs.cpuPolicy: dedicated"})
        for rc in extra.get("resources") or {}:
            out[rc] = f"{fl} extraSpecs.resources.{rc}"
        for t in _get(extra, "traits", "required") or ():
            out[t] = f"{fl} extraSpecs.traits.required"
    for t in _get(spec, "traits", "required") or ():
        out[t] = "spec.traits.required"
    props = image.get("properties") or {}
    im = f"Image {image_name}"
    arch, fw = props.get("architecture", "x86_64"), props.get("firmware")
    if arch in names.ARCH_TRAITS:
        out.setdefault(names.ARCH_TRAITS[arch], f"{im} properties.architecture: {arch}")
    if fw in names.FIRMWARE_TRAITS:
        out.setdefault(names.FIRMWARE_TRAITS[fw], f"{im} properties.firmware: {fw}")
    for prop, traits in (("diskBus", names.DISK_BUS_TRAITS),
                         ("nicModel", names.NIC_MODEL_TRAITS)):
        if props.get(prop) in traits:
            out.setdefault(traits[props[prop]], f"{im} properties.{prop}: {props[prop]}")
    return out


def check_dependencies(spec: dict, flavor: dict | None, image: dict | None,
                       server_group: dict | None) -> None:
    """Raise :class:`MissingDependency` for a referenced object that is
    missing (or a disabled Flavor)."""
    flavor_name = _get(spec, "flavorRef", "name")
    if flavor_name:
        if flavor is None:
            raise MissingDependency(names.REASON_FLAVOR_NOT_FOUND,
                                    f"Flavor {flavor_name} not found")
        if flavor.get("disabled"):
            raise MissingDependency(names.REASON_FLAVOR_DISABLED,
                                    f"Flavor {flavor_name} is disabled")
    if image is None:
        kind = _get(spec, "imageRef", "kind", default=names.ImageKind.IMAGE)
        where = " in the Instance's namespace" if kind == names.ImageKind.TENANT_IMAGE else ""
        raise MissingDependency(names.REASON_IMAGE_NOT_FOUND,
                                f"{kind} {_get(spec, 'imageRef', 'name')} not found{where}")
    if image.get("snapshotFailed"):
        raise MissingDependency(names.REASON_IMAGE_SNAPSHOT_FAILED,
                                f"TenantImage {_get(spec, 'imageRef', 'name')} holds no file: "
                                f"{image['snapshotFailed']}")
    if image.get("saving"):
        raise MissingDependency(names.REASON_IMAGE_SAVING,
                                f"TenantImage {_get(spec, 'imageRef', 'name')} is being saved "
                                "by a snapshot; the Instance waits until it is stored")
    sg_name = _get(spec, "serverGroupRef", "name")
    if sg_name and server_group is None:
        raise MissingDependency(names.REASON_SERVER_GROUP_NOT_FOUND,
                                f"ServerGroup {sg_name} not found")


def wanted_traits(spec: dict, flavor: dict | None, image: dict,
                  use_image_traits: bool) -> tuple[set[str], set[str]]:
    """(required, forbidden) traits of the Flavor's extra specs, the
    Instance and (``use_image_traits``) the Image's properties; every request
    forbids the disabled-host trait."""
    required: set[str] = set()
    forbidden: set[str] = {names.TRAIT_DISABLED}
    for source in (_get(flavor or {}, "extraSpecs", "traits"), spec.get("traits")):
        if source:
            required.update(source.get("required") or ())
            forbidden.update(source.get("forbidden") or ())
    if use_image_traits:
        required.update(image_traits(image))
    clash = required & forbidden
    if clash:
        raise InvalidRequest(names.REASON_INVALID_REQUEST,
                             f"traits both required and forbidden: {', '.join(sorted(clash))}")
    return required, forbidden


def apply_hints(req: RequestSpec, hints: dict, instance_hosts: dict[str, str | None],
                host_rp: dict[str, str]) -> None:
    """Nova-style scheduler hints: sameHost, differentHost, requestedHost."""
    if hints.get("sameHost"):
        req.same_host = {h for n in hints["sameHost"] if (h := instance_hosts.get(n))}
    if hints.get("differentHost"):
        req.different_host = {h for n in hints["differentHost"] if (h := instance_hosts.get(n))}
    if hints.get("requestedHost"):
        req.requested_host = hints["requestedHost"]
        req.requested_rp = host_rp.get(req.requested_host)
