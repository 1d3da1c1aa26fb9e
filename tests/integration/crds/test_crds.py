"""The Kova CRDs on a real kube-apiserver: examples, admission, columns, explain.

Needs the session control plane (``k8s``, ``kubectl``, ``namespace``) and
``kova_crds`` (tests/fixtures/crds.py).  Cluster-scoped objects (Flavor, Image,
Host) are shared by the whole session, so tests give them unique names or
delete them when done.
"""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from kova.crds import generate as gen
from kova.crds.json_schema import KUBECONFORM_TEMPLATE, write_schemas
from tests.fixtures.crds import strict_openapi

# Until tests/conftest.py lists "tests.fixtures.crds" in pytest_plugins.


REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))
API = "kova.dev/v1alpha1"


def _dump(*docs: dict) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)


def _uid() -> str:
    return uuid.uuid4().hex[:6]


def _words(text: str) -> str:
    """Collapse whitespace: kubectl wraps explain text at its own width."""
    return " ".join(text.split())


@pytest.fixture
def cleanup(kubectl, namespace):
    """Delete (cluster-scoped) objects after the test: call with manifest text or a path."""
    todo: list[str] = []
    yield todo.append
    for item in reversed(todo):
        args = ["-f", str(item)] if isinstance(item, Path) else ["-f", "-"]
        kubectl(
            "delete", "-n", namespace, "--ignore-not-found", "--wait=false", *args,
            input=None if isinstance(item, Path) else item, check=False,
        )


def _get(kubectl, namespace: str, resource: str, name: str) -> dict:
    return json.loads(kubectl("get", "-n", namespace, resource, name, "-o", "json").stdout)


# ==========================================================================
# Examples


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_is_accepted(kova_crds, kubectl, namespace, cleanup, path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    dry = kubectl("create", "-n", namespace, "--dry-run=server", "-f", str(path), "-o", "name")
    assert len(dry.stdout.split()) == len(docs)
    # A dry run stores nothing.
    for doc in docs:
        if doc["apiVersion"] == API:
            proc = kubectl("get", "-n", namespace, doc["kind"].lower() + ".kova.dev",
                           doc["metadata"]["name"], check=False)
            assert proc.returncode != 0 and "NotFound" in proc.stderr
    cleanup(path)
    created = kubectl("create", "-n", namespace, "-f", str(path), "-o", "name")
    assert len(created.stdout.split()) == len(docs)
    for doc in docs:
        got = _get(kubectl, namespace, doc["kind"].lower() + (".kova.dev" if doc["apiVersion"] == API else ""), doc["metadata"]["name"])
        if doc["apiVersion"] == API:
            for key, value in doc["spec"].items():
                assert got["spec"][key] == value, (path.name, key)
            assert got["metadata"]["generation"] == 1


def test_all_examples_together_and_kova_category(kova_crds, kubectl, namespace, cleanup) -> None:
    cleanup(EXAMPLES)
    kubectl("apply", "--server-side", "-n", namespace, "-f", str(EXAMPLES))
    names = set(kubectl("get", "kova", "-n", namespace, "-o", "name").stdout.split())
    assert {
        "instance.kova.dev/hello",
        "instance.kova.dev/web-1",
        "instance.kova.dev/tiny",
        "servergroup.kova.dev/web",
        "flavor.kova.dev/small",
        "image.kova.dev/kova-test",
        "tenantimage.kova.dev/app",
        "instance.kova.dev/app-1",
    } <= names
    # Every short name resolves.
    out = kubectl("get", "inst,flv,img,timg,hv,sg", "-n", namespace, "-o", "name").stdout
    assert "instance.kova.dev/hello" in out and "servergroup.kova.dev/web" in out
    assert "tenantimage.kova.dev/app" in out


# ==========================================================================
# Printer columns, explain, defaults


STATUS = {
    "status": {
        "phase": "Running",
        "host": "node-1",
        "powerState": "Running",
        "addresses": [{"address": "10.0.0.5", "family": "IPv4"}],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "DomainRunning",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
}


def test_get_inst_shows_printer_columns(kova_crds, kubectl, namespace) -> None:
    kubectl("create", "-n", namespace, "-f", str(EXAMPLES / "instance-hello.yaml"))
    kubectl(
        "patch", "-n", namespace, "inst", "hello", "--subresource=status",
        "--type=merge", "-p", json.dumps(STATUS),
    )
    lines = kubectl("get", "inst", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "HOST", "FLAVOR", "IP", "AGE"]
    assert lines[1].split()[:5] == ["hello", "Running", "node-1", "small", "10.0.0.5"]

    wide = kubectl("get", "inst", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == [
        "NAME", "PHASE", "HOST", "FLAVOR", "IP", "IMAGE", "MOVE", "POWER", "READY", "AGE",
    ]
    assert wide[1].split()[:8] == [
        "hello", "Running", "node-1", "small", "10.0.0.5", "kova-test", "Running", "True",
    ]


@pytest.mark.parametrize(
    "kind,header",
    [
        ("flavors", ["NAME", "VCPUS", "MEMORY", "DISK", "AGE"]),
        ("images", ["NAME", "FORMAT", "ARCH", "MINDISK", "AVAILABLE", "SIZE", "AGE"]),
        ("servergroups", ["NAME", "POLICY", "MAXPERHOST", "MEMBERS", "AGE"]),
        ("hosts", ["NAME", "ENABLED", "STATE", "ZONE", "INSTANCES", "DRAIN", "AGE"]),
    ],
)
def test_other_printer_columns(kova_crds, kubectl, namespace, cleanup, kind, header) -> None:
    name = f"cols-{_uid()}"
    manifest = {
        "flavors": {"kind": "Flavor", "spec": {"vcpus": 2, "memoryMiB": 512, "diskGiB": 3}},
        "images": {"kind": "Image", "spec": {"source": {"hostPath": "/x.qcow2"}, "minDiskGiB": 2,
                                             "properties": {"architecture": "x86_64"}}},
        "servergroups": {"kind": "ServerGroup", "spec": {"policy": "anti-affinity", "maxServerPerHost": 3}},
        "hosts": {"kind": "Host", "spec": {"availabilityZone": "az-1"}},
    }[kind]
    text = _dump({"apiVersion": API, "metadata": {"name": name}, **manifest})
    cleanup(text)
    kubectl("create", "-n", namespace, "-f", "-", input=text)
    lines = kubectl("get", kind, name, "-n", namespace).stdout.splitlines()
    assert lines[0].split() == header
    row = lines[1].split()
    expected = {
        "flavors": [name, "2", "512", "3"],
        "images": [name, "qcow2", "x86_64", "2"],
        "servergroups": [name, "anti-affinity", "3"],
        "hosts": [name, "true", "az-1"],  # State and Instances empty: no status yet
    }[kind]
    assert row[: len(expected)] == expected


def test_a_snapshots_tenant_image_is_filled_once(kova_crds, kubectl, namespace,
                                                cleanup) -> None:
    """A snapshot's TenantImage as the API component creates it (saving, no
    source), its status Saving shown by kubectl get; filled by the one update
    that ends saving; after that, sha256 and source are fixed and saving
    cannot come back."""
    name = f"snap-{_uid()}"
    doc = _named(_timg(**SAVING), name)
    text = _dump(doc)
    cleanup(text)
    kubectl("create", "-n", namespace, "-f", "-", input=text)
    cond = {"type": "Available", "status": "False", "reason": "Saving", "message": "saving",
            "lastTransitionTime": "2026-12-07T05:00:00Z"}
    kubectl("patch", "-n", namespace, "timg", name, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"conditions": [cond]}}))
    lines = kubectl("get", "timg", name, "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "FORMAT", "ARCH", "MINDISK", "AVAILABLE", "REASON",
                                "SIZE", "AGE"]
    row = lines[1].split()  # Arch and Size empty: no properties, no file yet
    assert row[:5] == [name, "qcow2", "0", "False", "Saving"], lines
    kubectl("patch", "-n", namespace, "timg", name, "--type=merge",
            "-p", json.dumps({"spec": FILLED}))
    spec = _get(kubectl, namespace, "timg", name)["spec"]
    assert "saving" not in spec and spec["sha256"] == "a" * 64, spec
    for patch, message in (({"sha256": "c" * 64}, "sha256 is immutable"),
                           ({"sha256": None}, "sha256 cannot be added or removed"),
                           ({"saving": True}, "saving cannot be set after creation"),
                           ({"saving": True, "sha256": None, "source": None},
                            "saving cannot be set after creation")):
        proc = kubectl("patch", "-n", namespace, "timg", name, "--type=merge",
                       "-p", json.dumps({"spec": patch}), check=False)
        assert proc.returncode != 0 and message in proc.stderr, (patch, proc.stderr)


def test_explain_instance_spec(kova_crds, kubectl) -> None:
    out = _words(kubectl("explain", "instance.spec").stdout)
    assert "The desired state of an Instance." in out
    for field in ("flavorRef", "resources", "imageRef", "userData", "sshKeys", "runStrategy",
                  "availabilityZone", "serverGroupRef", "traits", "schedulingHints"):
        assert f"{field} <" in out, field
    assert "imageRef <Object> -required-" in out
    assert "RerunOnFailure: restart it only when it crashed or failed" in out
    assert "Exactly one of flavorRef and resources." in out

    root = _words(kubectl("explain", "instance").stdout)
    assert "Instance is a virtual machine" in root
    status = _words(kubectl("explain", "instance.status.conditions").stdout)
    assert "Scheduled: a host was chosen" in status
    for kind, text in [
        ("flavor", "Flavor is a named instance size"),
        ("image", "Image is a bootable disk image"),
        ("host", "Host is a hypervisor node"),
        ("servergroup", "ServerGroup places a set of Instances"),
        ("host.spec.allocationRatios", "Overcommit ratios per resource class."),
    ]:
        assert text in _words(kubectl("explain", kind).stdout), kind


def test_server_side_defaults(kova_crds, kubectl, namespace, cleanup) -> None:
    inst = _dump({
        "apiVersion": API, "kind": "Instance", "metadata": {"name": "d"},
        "spec": {"flavorRef": {"name": "small"}, "imageRef": {"name": "kova-test"},
                 "userData": {"secretRef": {"name": "s"}}},
    })
    kubectl("create", "-n", namespace, "-f", "-", input=inst)
    spec = _get(kubectl, namespace, "inst", "d")["spec"]
    assert spec["runStrategy"] == "Always"
    assert spec["userData"]["secretRef"] == {"name": "s", "key": "userdata"}

    host = _dump({"apiVersion": API, "kind": "Host", "metadata": {"name": f"node-{_uid()}"}, "spec": {}})
    cleanup(host)
    created = json.loads(kubectl("create", "-f", "-", "-o", "json", input=host).stdout)
    assert created["spec"] == {
        "enabled": True,
        "fenced": False,
        "drain": False,
        "drainPolicy": "Live",
        "allocationRatios": {"vcpu": 4.0, "memory": 1.0, "disk": 1.0},
        "reserved": {"vcpus": 0, "memoryMiB": 512, "diskGiB": 0},
    }


def test_require_quiesce_is_an_image_property_false_by_default(kova_crds, kubectl,
                                                                namespace, cleanup) -> None:
    """properties.requireQuiesce (Glance's os_require_quiesce) on an Image
    and a TenantImage: true is kept, and an image without it reads false."""
    name = f"quiesced-{_uid()}"
    img = _named(_image(properties={"requireQuiesce": True}), name)
    cleanup(_dump(img))
    created = json.loads(kubectl("create", "-f", "-", "-o", "json", input=_dump(img)).stdout)
    assert created["spec"]["properties"]["requireQuiesce"] is True, created["spec"]
    plain = _named(_image(properties={"architecture": "x86_64"}), f"plain-{_uid()}")
    cleanup(_dump(plain))
    created = json.loads(kubectl("create", "-f", "-", "-o", "json", input=_dump(plain)).stdout)
    assert created["spec"]["properties"]["requireQuiesce"] is False, created["spec"]
    timg = _named(_timg(properties={"requireQuiesce": True}), "quiesced")
    created = json.loads(kubectl("create", "-n", namespace, "-f", "-", "-o", "json",
                                 input=_dump(timg)).stdout)
    assert created["spec"]["properties"]["requireQuiesce"] is True, created["spec"]


# ==========================================================================
# Bad manifests: rejected at admission, naming the field


def _inst(spec_update: dict | None = None, drop: tuple[str, ...] = (), name: str = "bad") -> dict:
    spec = {"flavorRef": {"name": "small"}, "imageRef": {"name": "kova-test"}}
    for key in drop:
        spec.pop(key)
    spec.update(spec_update or {})
    return {"apiVersion": API, "kind": "Instance", "metadata": {"name": name}, "spec": spec}


def _flavor(**spec: Any) -> dict:
    base = {"vcpus": 1, "memoryMiB": 256, "diskGiB": 1}
    base.update(spec)
    return {"apiVersion": API, "kind": "Flavor", "metadata": {"name": "bad-flavor"},
            "spec": {k: v for k, v in base.items() if v is not None}}


def _image(**spec: Any) -> dict:
    base = {"source": {"hostPath": "/var/lib/kova/images/x.qcow2"}}
    base.update(spec)
    return {"apiVersion": API, "kind": "Image", "metadata": {"name": "bad-image"},
            "spec": {k: v for k, v in base.items() if v is not None}}


def _timg(**spec: Any) -> dict:
    """A TenantImage; ``source=None, saving=True``: a snapshot's, being saved."""
    base = {"source": {"url": "https://images.example/v1/x"}}
    base.update(spec)
    return {"apiVersion": API, "kind": "TenantImage", "metadata": {"name": "bad-timg"},
            "spec": {k: v for k, v in base.items() if v is not None}}


SAVING = {"source": None, "saving": True}
FILLED = {"saving": None, "source": {"url": "https://images.example/v1/x"}, "sha256": "a" * 64,
          "minDiskGiB": 1}


def _sg(**spec: Any) -> dict:
    return {"apiVersion": API, "kind": "ServerGroup", "metadata": {"name": "bad-sg"}, "spec": spec}


def _host(**spec: Any) -> dict:
    return {"apiVersion": API, "kind": "Host", "metadata": {"name": "bad-host"}, "spec": spec}


SMALL = {"vcpus": 1, "memoryMiB": 256, "diskGiB": 1}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIERNOHqAr+6bfu1LSYAy6/YO3wGc21fzOW0PNO7SNNci k@h"

BAD = [
    # --- Instance
    ("inst-flavor-and-resources", _inst({"resources": SMALL}),
     ["spec:", "exactly one of flavorRef and resources must be set"]),
    ("inst-no-size", _inst(drop=("flavorRef",)),
     ["spec:", "exactly one of flavorRef and resources must be set"]),
    ("inst-missing-imageRef", _inst(drop=("imageRef",)), ["spec.imageRef: Required value"]),
    ("inst-bad-runStrategy", _inst({"runStrategy": "Sometimes"}),
     ["spec.runStrategy: Unsupported value: \"Sometimes\""]),
    ("inst-zero-vcpus", _inst({"resources": {**SMALL, "vcpus": 0}}, drop=("flavorRef",)),
     ["spec.resources.vcpus", "greater than or equal to 1"]),
    ("inst-tiny-memory", _inst({"resources": {**SMALL, "memoryMiB": 8}}, drop=("flavorRef",)),
     ["spec.resources.memoryMiB", "greater than or equal to 16"]),
    ("inst-negative-disk", _inst({"resources": {**SMALL, "diskGiB": -1}}, drop=("flavorRef",)),
     ["spec.resources.diskGiB", "greater than or equal to 1"]),
    ("inst-vcpus-not-integer", _inst({"resources": {**SMALL, "vcpus": "two"}}, drop=("flavorRef",)),
     ["spec.resources.vcpus", "must be of type integer"]),
    ("inst-bad-flavor-name", _inst({"flavorRef": {"name": "Small_1"}}),
     ["spec.flavorRef.name", "should match"]),
    ("inst-userdata-inline-and-secret",
     _inst({"userData": {"inline": "#!/bin/sh\n", "secretRef": {"name": "ud"}}}),
     ["spec.userData", "exactly one of inline and secretRef must be set"]),
    ("inst-userdata-too-large", _inst({"userData": {"inline": "x" * 65537}}),
     ["spec.userData.inline: Too long"]),
    ("inst-bad-secret-key", _inst({"userData": {"secretRef": {"name": "ud", "key": "a/b"}}}),
     ["spec.userData.secretRef.key", "should match"]),
    ("inst-bad-ssh-key", _inst({"sshKeys": ["ssh-rsa not-a-key"]}), ["spec.sshKeys[0]", "should match"]),
    ("inst-duplicate-ssh-key", _inst({"sshKeys": [KEY, KEY]}), ["spec.sshKeys[1]: Duplicate value"]),
    ("inst-bad-trait-name", _inst({"traits": {"required": ["hw_cpu_x86_avx2"]}}),
     ["spec.traits.required[0]", "should match"]),
    ("inst-trait-required-and-forbidden",
     _inst({"traits": {"required": ["CUSTOM_SSD"], "forbidden": ["CUSTOM_SSD"]}}),
     ["spec.traits.forbidden", "a trait cannot be both required and forbidden"]),
    ("inst-hints-conflict",
     _inst({"schedulingHints": {"sameHost": ["a"], "differentHost": ["a"]}}),
     ["spec.schedulingHints.differentHost", "both sameHost and differentHost"]),
    ("inst-bad-zone", _inst({"availabilityZone": "zone a"}), ["spec.availabilityZone", "should match"]),
    ("inst-bad-server-group-ref", _inst({"serverGroupRef": {}}), ["spec.serverGroupRef.name: Required value"]),
    ("inst-name-not-dns-label", _inst(name="web.1"), ["metadata.name", "should match"]),
    ("inst-unknown-field", _inst({"flavour": {"name": "small"}}), ['unknown field "spec.flavour"']),
    # --- Flavor
    ("flavor-zero-vcpus", _flavor(vcpus=0), ["spec.vcpus", "greater than or equal to 1"]),
    ("flavor-missing-memory", _flavor(memoryMiB=None), ["spec.memoryMiB: Required value"]),
    ("flavor-zero-disk", _flavor(diskGiB=0), ["spec.diskGiB", "greater than or equal to 1"]),
    ("flavor-bad-resource-class", _flavor(extraSpecs={"resources": {"custom_gpu": 1}}),
     ["spec.extraSpecs.resources", "resource class names must be upper case"]),
    ("flavor-standard-resource-class", _flavor(extraSpecs={"resources": {"VCPU": 2}}),
     ["spec.extraSpecs.resources", "VCPU, PCPU, MEMORY_MB and DISK_GB are set by"]),
    ("flavor-zero-resource-amount", _flavor(extraSpecs={"resources": {"CUSTOM_GPU": 0}}),
     ["spec.extraSpecs.resources.CUSTOM_GPU", "greater than or equal to 1"]),
    ("flavor-bad-cpu-policy", _flavor(extraSpecs={"cpuPolicy": "pinned"}),
     ["spec.extraSpecs.cpuPolicy: Unsupported value: \"pinned\""]),
    # --- Image
    ("image-url-and-path", _image(source={"url": "https://example.org/a.qcow2", "hostPath": "/a"}),
     ["spec.source", "exactly one of url and hostPath must be set"]),
    ("image-no-source", _image(source=None), ["spec.source: Required value"]),
    ("image-ftp-url", _image(source={"url": "ftp://example.org/a.qcow2"}), ["spec.source.url", "should match"]),
    ("image-http-without-sha256", _image(source={"url": "http://example.org/a.qcow2"}),
     ["spec.sha256: Required value", "sha256 is required for a plain http:// source.url"]),
    ("image-relative-path", _image(source={"hostPath": "images/a.qcow2"}),
     ["spec.source.hostPath", "should match"]),
    ("image-dotdot-path", _image(source={"hostPath": "/var/lib/kova/../../etc/shadow"}),
     ["spec.source.hostPath", "must not contain '..' components"]),
    ("image-bad-sha256", _image(sha256="ABC"), ["spec.sha256"]),
    ("image-bad-format", _image(format="vmdk"), ["spec.format: Unsupported value: \"vmdk\""]),
    ("image-bad-firmware", _image(properties={"firmware": "coreboot"}),
     ["spec.properties.firmware: Unsupported value"]),
    ("image-require-quiesce-not-boolean", _image(properties={"requireQuiesce": "yes"}),
     ["spec.properties.requireQuiesce", "must be of type boolean"]),
    # --- TenantImage
    ("timg-no-source", _timg(source=None), ["spec.source: Required value",
                                            "source is required (only a snapshot's"]),
    ("timg-saving-false", _timg(source=None, saving=False),
     ["spec.saving", "saving is true or absent"]),
    ("timg-host-path", _timg(source={"hostPath": "/var/lib/kova/images/x.qcow2"}),
     ["spec.source: Forbidden: a TenantImage cannot use source.hostPath"]),
    ("timg-require-quiesce-not-boolean", _timg(properties={"requireQuiesce": 1}),
     ["spec.properties.requireQuiesce", "must be of type boolean"]),
    # --- ServerGroup
    ("sg-max-with-affinity", _sg(policy="affinity", maxServerPerHost=2),
     ["spec.maxServerPerHost: Forbidden: maxServerPerHost is only allowed with policy anti-affinity"]),
    ("sg-max-with-soft-anti-affinity", _sg(policy="soft-anti-affinity", maxServerPerHost=2),
     ["spec.maxServerPerHost: Forbidden"]),
    ("sg-no-policy", _sg(), ["spec.policy: Required value"]),
    ("sg-bad-policy", _sg(policy="spread"), ["spec.policy: Unsupported value: \"spread\""]),
    ("sg-zero-max", _sg(policy="anti-affinity", maxServerPerHost=0),
     ["spec.maxServerPerHost", "greater than or equal to 1"]),
    # --- Host
    ("host-maintenance-without-reason", _host(maintenance={"enabled": True}),
     ["spec.maintenance.reason: Required value: reason is required when maintenance is enabled"]),
    ("host-zero-allocation-ratio", _host(allocationRatios={"vcpu": 0}),
     ["spec.allocationRatios.vcpu", "greater than 0"]),
    ("host-standard-trait", _host(traits=["HW_CPU_X86_AVX2"]), ["spec.traits[0]", "should match"]),
    ("host-negative-reserved", _host(reserved={"memoryMiB": -1}),
     ["spec.reserved.memoryMiB", "greater than or equal to 0"]),
]


def test_enough_distinct_bad_manifests() -> None:
    assert len(BAD) >= 15
    assert len({case[0] for case in BAD}) == len(BAD)
    assert len({json.dumps(case[1], sort_keys=True) for case in BAD}) == len(BAD)


@pytest.mark.parametrize("manifest,expected", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_manifest_is_rejected(kova_crds, kubectl, namespace, manifest, expected) -> None:
    proc = kubectl("create", "-n", namespace, "--dry-run=server", "-f", "-",
                   input=_dump(manifest), check=False)
    assert proc.returncode != 0, f"accepted silently: {proc.stdout}"
    assert "created" not in proc.stdout
    for text in expected:
        assert text in proc.stderr, f"{text!r} not in:\n{proc.stderr}"
    # And for real (not only in dry run): nothing is stored.
    proc = kubectl("create", "-n", namespace, "-f", "-", input=_dump(manifest), check=False)
    assert proc.returncode != 0 and "created" not in proc.stdout


# ==========================================================================
# Updates: immutable fields (transition rules) and allowed changes


def _named(doc: dict, name: str) -> dict:
    doc = copy.deepcopy(doc)
    doc["metadata"]["name"] = name
    return doc


UPDATES = [
    # (id, base object, merge patch, expected messages; [] = accepted)
    ("inst-change-image", _inst(), {"spec": {"imageRef": {"name": "other"}}},
     ["spec.imageRef: Invalid value", "imageRef is immutable"]),
    # a change of size resizes a placed Instance (docs/moving.md)
    ("inst-change-flavor", _inst(), {"spec": {"flavorRef": {"name": "large"}}}, []),
    ("inst-flavor-to-resources", _inst(), {"spec": {"flavorRef": None, "resources": SMALL}},
     ["spec.flavorRef", "flavorRef cannot be added or removed after creation"]),
    ("inst-resize-inline", _inst({"resources": SMALL}, drop=("flavorRef",)),
     {"spec": {"resources": {"vcpus": 2, "diskGiB": SMALL["diskGiB"] + 1}}}, []),
    ("inst-shrink-inline-disk", _inst({"resources": {**SMALL, "diskGiB": 5}}, drop=("flavorRef",)),
     {"spec": {"resources": {"diskGiB": 4}}},
     ["spec.resources", "resources.diskGiB cannot shrink"]),
    ("inst-join-server-group", _inst(), {"spec": {"serverGroupRef": {"name": "web"}}},
     ["spec.serverGroupRef", "serverGroupRef cannot be added or removed after creation"]),
    ("inst-change-zone", _inst({"availabilityZone": "az-1"}), {"spec": {"availabilityZone": "az-2"}},
     ["spec.availabilityZone", "availabilityZone is immutable"]),
    ("inst-change-run-strategy", _inst(), {"spec": {"runStrategy": "Halted"}}, []),
    ("inst-change-user-data", _inst(), {"spec": {"userData": {"inline": "#!/bin/sh\necho hi\n"}}}, []),
    ("flavor-change-vcpus", _flavor(), {"spec": {"vcpus": 2}}, ["spec.vcpus", "vcpus is immutable"]),
    ("flavor-change-memory", _flavor(), {"spec": {"memoryMiB": 512}}, ["spec.memoryMiB", "memoryMiB is immutable"]),
    ("flavor-change-description", _flavor(), {"spec": {"description": "new", "disabled": True}}, []),
    ("image-change-source", _image(), {"spec": {"source": {"hostPath": "/other.qcow2"}}},
     ["spec.source", "source is immutable"]),
    ("image-change-format", _image(), {"spec": {"format": "raw"}}, ["spec.format", "format is immutable"]),
    ("image-add-sha256", _image(), {"spec": {"sha256": "a" * 64}},
     ["spec.sha256", "sha256 cannot be added or removed after creation"]),
    ("image-change-min-disk", _image(), {"spec": {"minDiskGiB": 5}}, []),
    # A snapshot's TenantImage: filled once, by the update that ends saving.
    ("timg-fill-once-saved", _timg(**SAVING), {"spec": FILLED}, []),
    ("timg-sha256-while-saving", _timg(**SAVING), {"spec": {"sha256": "a" * 64}},
     ["spec.sha256", "sha256 cannot be added or removed after creation"]),
    ("timg-source-while-saving", _timg(**SAVING),
     {"spec": {"source": {"url": "https://images.example/v1/x"}}},
     ["spec.source", "source cannot be added or removed after creation"]),
    ("timg-saved-without-source", _timg(**SAVING), {"spec": {"saving": None}},
     ["spec.source: Required value"]),
    ("timg-saving-set-later", _timg(), {"spec": {"saving": True}},
     ["spec.saving", "saving cannot be set after creation"]),
    ("timg-add-sha256", _timg(), {"spec": {"sha256": "a" * 64}},
     ["spec.sha256", "sha256 cannot be added or removed after creation"]),
    ("timg-remove-sha256", _timg(sha256="b" * 64), {"spec": {"sha256": None}},
     ["spec.sha256", "sha256 cannot be added or removed after creation"]),
    ("timg-change-source", _timg(), {"spec": {"source": {"url": "https://other.example/y"}}},
     ["spec.source", "source is immutable"]),
    ("sg-change-policy", _sg(policy="anti-affinity"), {"spec": {"policy": "affinity"}},
     ["spec.policy", "policy is immutable"]),
    ("sg-add-max", _sg(policy="anti-affinity"), {"spec": {"maxServerPerHost": 2}},
     ["spec.maxServerPerHost", "cannot be added or removed after creation"]),
    ("host-disable-for-maintenance", _host(), {"spec": {"enabled": False, "maintenance": {"enabled": True, "reason": "BIOS update"}}}, []),
]


@pytest.mark.parametrize("base,patch,expected", [u[1:] for u in UPDATES], ids=[u[0] for u in UPDATES])
def test_update(kova_crds, kubectl, namespace, cleanup, base, patch, expected) -> None:
    doc = _named(base, f"upd-{_uid()}")
    text = _dump(doc)
    cleanup(text)
    kubectl("create", "-n", namespace, "-f", "-", input=text)
    resource = doc["kind"].lower() + ".kova.dev"
    before = _get(kubectl, namespace, resource, doc["metadata"]["name"])
    proc = kubectl("patch", "-n", namespace, resource, doc["metadata"]["name"],
                   "--type=merge", "-p", json.dumps(patch), check=False)
    after = _get(kubectl, namespace, resource, doc["metadata"]["name"])
    if expected:
        assert proc.returncode != 0, f"accepted: {proc.stdout}"
        for text in expected:
            assert text in proc.stderr, f"{text!r} not in:\n{proc.stderr}"
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    else:
        assert proc.returncode == 0, proc.stderr
        assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1


# ==========================================================================
# Server-side apply and the status subresource


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_server_side_apply_twice_is_a_noop(kova_crds, kubectl, namespace, cleanup, path) -> None:
    cleanup(path)

    def apply() -> list[dict]:
        out = kubectl("apply", "--server-side", "--field-manager=kova-test", "-n", namespace,
                      "-f", str(path), "-o", "json").stdout
        data = json.loads(out)
        return data["items"] if data.get("kind") == "List" else [data]

    first = apply()
    second = apply()
    assert [o["metadata"]["resourceVersion"] for o in first] == [
        o["metadata"]["resourceVersion"] for o in second
    ]
    assert [o["metadata"].get("generation") for o in first] == [
        o["metadata"].get("generation") for o in second
    ]


def test_status_subresource_does_not_bump_generation(kova_crds, kubectl, namespace) -> None:
    kubectl("create", "-n", namespace, "-f", str(EXAMPLES / "instance-hello.yaml"))
    before = _get(kubectl, namespace, "inst", "hello")
    assert before["metadata"]["generation"] == 1

    status = copy.deepcopy(STATUS)
    status["status"]["observedGeneration"] = 1
    kubectl("patch", "-n", namespace, "inst", "hello", "--subresource=status",
            "--type=merge", "-p", json.dumps(status))
    after = _get(kubectl, namespace, "inst", "hello")
    assert after["metadata"]["generation"] == 1
    assert after["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
    assert after["status"]["phase"] == "Running"
    assert after["status"]["observedGeneration"] == 1

    # Status written through the main resource is ignored; spec through it counts.
    kubectl("patch", "-n", namespace, "inst", "hello", "--type=merge",
            "-p", json.dumps({"status": {"phase": "Error"}}))
    assert _get(kubectl, namespace, "inst", "hello")["status"]["phase"] == "Running"
    kubectl("patch", "-n", namespace, "inst", "hello", "--type=merge",
            "-p", json.dumps({"spec": {"runStrategy": "Halted"}}))
    assert _get(kubectl, namespace, "inst", "hello")["metadata"]["generation"] == 2


def test_status_is_validated_too(kova_crds, kubectl, namespace) -> None:
    kubectl("create", "-n", namespace, "-f", str(EXAMPLES / "instance-hello.yaml"))
    proc = kubectl("patch", "-n", namespace, "inst", "hello", "--subresource=status",
                   "--type=merge", "-p", json.dumps({"status": {"phase": "Exploded"}}), check=False)
    assert proc.returncode != 0
    assert 'status.phase: Unsupported value: "Exploded"' in proc.stderr
    proc = kubectl(
        "patch", "-n", namespace, "inst", "hello", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"conditions": [{"type": "Ready", "status": "Yes"}]}}),
        check=False,
    )
    assert proc.returncode != 0
    assert "status.conditions[0].status: Unsupported value" in proc.stderr
    assert "status.conditions[0].reason: Required value" in proc.stderr


# ==========================================================================
# Strict offline schema checks (kubeconform)


def _kubeconform(binary: str, schema_dir: Path, *args: str, input: str | None = None):
    return subprocess.run(
        [binary, "-strict", "-summary", "-schema-location", f"{schema_dir}/{KUBECONFORM_TEMPLATE}",
         *args],
        input=input, capture_output=True, text=True, timeout=120,
    )


def test_kubeconform_strict_accepts_examples(kubeconform_bin, tmp_path) -> None:
    write_schemas(tmp_path)
    proc = _kubeconform(kubeconform_bin, tmp_path, "-skip", "Secret", str(EXAMPLES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Invalid: 0, Errors: 0" in proc.stdout


def test_kubeconform_strict_rejects_bad_manifests(kubeconform_bin, tmp_path) -> None:
    """Schema-level mistakes (not CEL rules) are caught offline as well."""
    write_schemas(tmp_path)
    for manifest, field in [
        (_inst({"flavour": {"name": "small"}}), "'flavour' not allowed"),
        (_inst({"runStrategy": "Sometimes"}), "/spec/runStrategy"),
        (_flavor(vcpus=0), "/spec/vcpus"),
        (_host(allocationRatios={"vcpu": 0}), "/spec/allocationRatios/vcpu"),
        (_image(source={"url": "ftp://x/y"}), "/spec/source/url"),
    ]:
        proc = _kubeconform(kubeconform_bin, tmp_path, "-", input=_dump(manifest))
        assert proc.returncode != 0, manifest
        assert field in proc.stdout, proc.stdout


def test_kubeconform_strict_accepts_generated_crds(kova_crds, kubeconform_bin, kubectl, tmp_path) -> None:
    """The CRD files against the API server's own OpenAPI schema of
    CustomResourceDefinition, with unknown fields forbidden."""
    spec = json.loads(kubectl("get", "--raw", "/openapi/v3/apis/apiextensions.k8s.io/v1").stdout)
    crd_ref = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"#/components/schemas/{crd_ref}",
        "components": {"schemas": strict_openapi(spec["components"]["schemas"])},
    }
    path = tmp_path / "apiextensions.k8s.io" / "customresourcedefinition_v1.json"
    path.parent.mkdir()
    path.write_text(json.dumps(schema))
    proc = _kubeconform(kubeconform_bin, tmp_path, str(gen.GENERATED_DIR))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Valid: {len(gen.render_all())}, Invalid: 0, Errors: 0" in proc.stdout

    # The check has teeth: a misspelt key in a CRD is found.
    bad = yaml.safe_load((gen.GENERATED_DIR / "kova.dev_flavors.yaml").read_text())
    bad["spec"]["versions"][0]["subresource"] = {"status": {}}
    proc = _kubeconform(kubeconform_bin, tmp_path, "-", input=_dump(bad))
    assert proc.returncode != 0 and "'subresource' not allowed" in proc.stdout


def test_installed_crds_match_generated_files(kova_crds, k8s_client) -> None:
    """What the API server stored is what was generated: no schema pruning or
    warnings, and no NonStructuralSchema condition."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(k8s_client)
    for name, text in gen.render_all().items():
        want = yaml.safe_load(text)
        got = ext.read_custom_resource_definition(want["metadata"]["name"])
        conds = {c.type: c.status for c in got.status.conditions}
        assert conds.get("Established") == "True" and "NonStructuralSchema" not in conds, name
        served = k8s_client.sanitize_for_serialization(got)
        got_schema = served["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert got_schema == want["spec"]["versions"][0]["schema"]["openAPIV3Schema"], name


def test_models_round_trip_through_the_api_server(kova_crds, k8s_client, namespace) -> None:
    """A client that sends the pydantic dump with nulls for unset fields is
    accepted (non-nullable nulls are dropped, not rejected), and what comes
    back parses into the same model."""
    from kubernetes import client

    from kova.crds import models

    inst = models.Instance(
        metadata={"name": "from-model"},
        spec=models.InstanceSpec(
            resources=models.Resources(vcpus=1, memory_mib=128, disk_gib=1),
            image_ref=models.ImageRef(name="kova-test"),
            run_strategy=models.RunStrategy.ONCE,
        ),
    )
    body = inst.model_dump(by_alias=True, mode="json")  # unset fields as null
    assert body["spec"]["flavorRef"] is None and body["status"] is None
    api = client.CustomObjectsApi(k8s_client)
    created = api.create_namespaced_custom_object("kova.dev", "v1alpha1", namespace, "instances", body)
    assert "flavorRef" not in created["spec"]
    back = models.Instance.model_validate(created)
    assert back.spec == inst.spec
    assert back.to_k8s()["spec"] == {
        "resources": {"vcpus": 1, "memoryMiB": 128, "diskGiB": 1},
        "imageRef": {"name": "kova-test"},
        "runStrategy": "Once",
    }


def test_apply_crds_again_is_a_noop(kova_crds, k8s_client) -> None:
    """kova dev up re-applies the CRDs on every run: nothing may change."""
    from kubernetes import client

    from kova.dev.crds import apply_crds

    ext = client.ApiextensionsV1Api(k8s_client)
    before = {n: ext.read_custom_resource_definition(n).metadata.resource_version for n in kova_crds}
    assert apply_crds(api_client=k8s_client) == kova_crds
    after = {n: ext.read_custom_resource_definition(n).metadata.resource_version for n in kova_crds}
    assert before == after
