"""Unit tests: the Placement request built from an Instance."""

from __future__ import annotations

from collections import Counter

import pytest

from kova.crds import names as contract
from kova.operator.informer import tenant_image_facts
from kova.operator.scheduler.request import (
    InvalidRequest,
    MissingDependency,
    build_request,
    format_resources,
)

FLAVOR = {"vcpus": 2, "memoryMiB": 1024, "diskGiB": 10}
IMAGE = {"minDiskGiB": 1, "properties": {"architecture": "x86_64"}}


def inst(**spec):
    base = {"flavorRef": {"name": "small"}, "imageRef": {"name": "img"}}
    base.update(spec)
    return {"metadata": {"namespace": "ns", "name": "vm", "uid": "u-1"}, "spec": base}


def params(req):
    return dict(req.query(limit=50))


def test_flavor_resources_and_defaults():
    req, size = build_request(inst(), flavor=FLAVOR, image=IMAGE)
    assert req.resources == {"VCPU": 2, "MEMORY_MB": 1024, "DISK_GB": 10}
    assert size == {"vcpus": 2, "memoryMiB": 1024, "diskGiB": 10}
    q = params(req)
    assert q["resources"] == "DISK_GB:10,MEMORY_MB:1024,VCPU:2"
    assert q["required"] == "HW_ARCH_X86_64,!COMPUTE_STATUS_DISABLED"
    assert q["limit"] == "50"
    assert "member_of" not in q


def test_inline_resources():
    i = inst(resources={"vcpus": 1, "memoryMiB": 128, "diskGiB": 1})
    del i["spec"]["flavorRef"]
    req, _ = build_request(i, flavor=None, image=IMAGE)
    assert req.resources == {"VCPU": 1, "MEMORY_MB": 128, "DISK_GB": 1}


def test_dedicated_cpu_and_extra_resources():
    flavor = dict(FLAVOR, extraSpecs={"cpuPolicy": "dedicated", "resources": {"CUSTOM_GPU": 1}})
    req, _ = build_request(inst(), flavor=flavor, image=IMAGE)
    assert req.resources == {"PCPU": 2, "MEMORY_MB": 1024, "DISK_GB": 10, "CUSTOM_GPU": 1}


def test_traits_merge_flavor_instance_image():
    flavor = dict(FLAVOR, extraSpecs={"traits": {"required": ["CUSTOM_SSD"],
                                                 "forbidden": ["CUSTOM_SLOW"]}})
    image = {"properties": {"architecture": "aarch64", "firmware": "uefi"}}
    req, _ = build_request(inst(traits={"required": ["HW_CPU_X86_AVX2"],
                                        "forbidden": ["CUSTOM_GPU"]}),
                           flavor=flavor, image=image)
    assert req.required == {"CUSTOM_SSD", "HW_CPU_X86_AVX2", "HW_ARCH_AARCH64",
                            "COMPUTE_FIRMWARE_UEFI"}
    assert req.forbidden == {"CUSTOM_SLOW", "CUSTOM_GPU", contract.TRAIT_DISABLED}
    required = params(req)["required"].split(",")
    assert "!CUSTOM_GPU" in required and "CUSTOM_SSD" in required


def test_image_traits_can_be_turned_off():
    req, _ = build_request(inst(), flavor=FLAVOR, image=IMAGE, use_image_traits=False)
    assert req.required == set()


def test_required_and_forbidden_clash_is_invalid():
    flavor = dict(FLAVOR, extraSpecs={"traits": {"required": ["CUSTOM_A"]}})
    with pytest.raises(InvalidRequest):
        build_request(inst(traits={"forbidden": ["CUSTOM_A"]}), flavor=flavor, image=IMAGE)


def test_availability_zone_is_member_of():
    req, _ = build_request(inst(availabilityZone="az1"), flavor=FLAVOR, image=IMAGE)
    assert params(req)["member_of"] == contract.az_aggregate_uuid("az1")
    assert contract.az_aggregate_uuid("az1") != contract.az_aggregate_uuid("az2")


@pytest.mark.parametrize("flavor,image,sg,reason", [
    (None, IMAGE, None, contract.REASON_FLAVOR_NOT_FOUND),
    (dict(FLAVOR, disabled=True), IMAGE, None, contract.REASON_FLAVOR_DISABLED),
    (FLAVOR, None, None, contract.REASON_IMAGE_NOT_FOUND),
])
def test_missing_dependencies(flavor, image, sg, reason):
    with pytest.raises(MissingDependency) as exc:
        build_request(inst(), flavor=flavor, image=image, server_group=sg)
    assert exc.value.reason == reason


def test_a_saving_tenant_image_holds_the_instance():
    """A snapshot's TenantImage still being saved (spec.saving, no source
    yet): the Instance waits, told why, until the store fills it in."""
    spec = inst(imageRef={"name": "golden", "kind": "TenantImage"})
    with pytest.raises(MissingDependency) as exc:
        build_request(spec, flavor=FLAVOR, image={"saving": True, "format": "qcow2"})
    assert exc.value.reason == contract.REASON_IMAGE_SAVING
    assert exc.value.message == ("TenantImage golden is being saved by a snapshot; the "
                                 "Instance waits until it is stored")
    stored = {"format": "qcow2", "source": {"url": "https://store/x"}, "sha256": "a" * 64}
    build_request(spec, flavor=FLAVOR, image=stored)


def test_a_failed_snapshots_tenant_image_is_named_as_such():
    """The operator's index keeps the failure of a snapshot's TenantImage
    (its Available condition, reason SnapshotFailed) and an Instance of it
    waits with that reason and message; Saving alone, or a stored image
    whose status says anything, is kept as its spec."""
    failed = {"conditions": [{"type": "Available", "status": "False",
                              "reason": "SnapshotFailed", "message": "it broke"}]}
    saving = {"saving": True, "format": "qcow2"}
    facts = tenant_image_facts(saving, failed)
    assert facts == {**saving, "snapshotFailed": "it broke"}
    assert tenant_image_facts(saving, {}) == saving
    stored = {"format": "qcow2", "source": {"url": "https://store/x"}}
    assert tenant_image_facts(stored, failed) == stored
    spec = inst(imageRef={"name": "golden", "kind": "TenantImage"})
    with pytest.raises(MissingDependency) as exc:
        build_request(spec, flavor=FLAVOR, image=facts)
    assert exc.value.reason == contract.REASON_IMAGE_SNAPSHOT_FAILED
    assert exc.value.message == "TenantImage golden holds no file: it broke"


def test_missing_server_group():
    with pytest.raises(MissingDependency) as exc:
        build_request(inst(serverGroupRef={"name": "web"}), flavor=FLAVOR, image=IMAGE)
    assert exc.value.reason == contract.REASON_SERVER_GROUP_NOT_FOUND


def test_image_min_disk_and_memory():
    with pytest.raises(InvalidRequest) as exc:
        build_request(inst(), flavor=FLAVOR, image={"minDiskGiB": 20})
    assert exc.value.reason == "FlavorDiskTooSmall"
    with pytest.raises(InvalidRequest) as exc:
        build_request(inst(), flavor=FLAVOR, image={"minMemoryMiB": 4096})
    assert exc.value.reason == "FlavorMemoryTooSmall"


def test_server_group_and_hints():
    req, _ = build_request(
        inst(serverGroupRef={"name": "web"},
             schedulingHints={"sameHost": ["a"], "differentHost": ["b", "c"],
                              "requestedHost": "h9"}),
        flavor=FLAVOR, image=IMAGE,
        server_group={"policy": "anti-affinity", "maxServerPerHost": 2},
        member_hosts=Counter({"h1": 2}),
        instance_hosts={"a": "h1", "b": "h2", "c": None}, host_rp={"h9": "rp-9"})
    assert req.server_group.policy == "anti-affinity"
    assert req.server_group.max_server_per_host == 2
    assert req.server_group.member_hosts == Counter({"h1": 2})
    assert req.same_host == {"h1"}
    assert req.different_host == {"h2"}
    assert params(req)["in_tree"] == "rp-9"


def test_format_resources_skips_zero():
    assert format_resources({"VCPU": 1, "X": 0}) == "VCPU:1"


def test_origins_name_the_field_behind_each_resource_and_trait():
    flavor = {**FLAVOR, "extraSpecs": {"cpuPolicy": "dedicated",
                                       "resources": {"CUSTOM_GPU": 1},
                                       "traits": {"required": ["CUSTOM_FAST"]}}}
    image = {"properties": {"architecture": "x86_64", "firmware": "uefi"}}
    req, _ = build_request(inst(traits={"required": ["CUSTOM_SSD"]}), flavor=flavor, image=image)
    assert req.resources["PCPU"] == 2 and "VCPU" not in req.resources
    assert req.origin("PCPU") == " (from Flavor small vcpus with extraSpecs.cpuPolicy: dedicated)"
    assert req.origin("CUSTOM_GPU") == " (from Flavor small extraSpecs.resources.CUSTOM_GPU)"
    assert req.origin("CUSTOM_FAST") == " (from Flavor small extraSpecs.traits.required)"
    assert req.origin("CUSTOM_SSD") == " (from spec.traits.required)"
    assert req.origin("COMPUTE_FIRMWARE_UEFI") == " (from Image img properties.firmware: uefi)"
    assert req.origin("HW_ARCH_X86_64") == " (from Image img properties.architecture: x86_64)"
    assert req.origin("COMPUTE_STATUS_DISABLED") == ""


def test_origins_of_inline_resources():
    req, _ = build_request(inst(flavorRef=None, resources=FLAVOR), flavor=None, image=IMAGE)
    assert req.origin("MEMORY_MB") == " (from spec.resources.memoryMiB)"


def test_disk_bus_and_nic_model_require_their_traits():
    image = {"properties": {"architecture": "x86_64", "diskBus": "sata", "nicModel": "e1000"}}
    req, _ = build_request(inst(), flavor=FLAVOR, image=image)
    assert {"COMPUTE_STORAGE_BUS_SATA", "COMPUTE_NET_VIF_MODEL_E1000"} <= req.required
    assert req.origin("COMPUTE_STORAGE_BUS_SATA") == " (from Image img properties.diskBus: sata)"
    virtio = {"properties": {"architecture": "x86_64", "diskBus": "virtio",
                             "nicModel": "virtio"}}
    req, _ = build_request(inst(), flavor=FLAVOR, image=virtio)
    assert req.required == {"HW_ARCH_X86_64"}
