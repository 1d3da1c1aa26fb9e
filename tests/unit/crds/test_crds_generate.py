"""The generated CRDs: up to date, deterministic, structural, complete."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from kova.cli import main as kova_main
from kova.crds import generate as gen
from kova.crds import models

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"

CRDS = {m.crd.kind: gen.crd(m) for m in models.KINDS}


def _schema(kind: str) -> dict[str, Any]:
    return CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: dict[str, Any], path: str = ""):
    """Yield (path, node) for every schema node."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[*]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{*}}")


def _all_nodes():
    for kind in CRDS:
        for path, node in _walk(_schema(kind)):
            yield kind, path or "<root>", node


# --------------------------------------------------------------------------
# Up to date and deterministic


def test_generated_files_are_up_to_date() -> None:
    problems = gen.check(gen.GENERATED_DIR)
    assert not problems, (
        "crds/generated/ is stale -- run `kova crds generate`:\n" + "\n".join(problems)
    )


def test_generation_is_deterministic() -> None:
    assert gen.render_all() == gen.render_all()
    # Every file starts with the do-not-edit header and holds exactly one CRD.
    for name, text in gen.render_all().items():
        assert text.startswith(gen.HEADER), name
        docs = list(yaml.safe_load_all(text))
        assert len(docs) == 1 and docs[0]["kind"] == "CustomResourceDefinition", name


def test_one_file_per_kind_named_group_plural() -> None:
    assert sorted(gen.render_all()) == sorted(
        [
            "kova.dev_flavors.yaml",
            "kova.dev_hosts.yaml",
            "kova.dev_images.yaml",
            "kova.dev_instances.yaml",
            "kova.dev_tenantimages.yaml",
            "kova.dev_servergroups.yaml",
        ]
    )


def test_cli_generate_and_check(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "crds"
    res = runner.invoke(kova_main, ["crds", "generate", "--output-dir", str(out), "--check"])
    assert res.exit_code == 1 and "missing" in res.output

    res = runner.invoke(kova_main, ["crds", "generate", "--output-dir", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == sorted(gen.render_all())

    res = runner.invoke(kova_main, ["crds", "generate", "--output-dir", str(out), "--check"])
    assert res.exit_code == 0, res.output

    stale = out / "kova.dev_flavors.yaml"
    stale.write_text(stale.read_text().replace("vcpus", "cpus"))
    (out / "kova.dev_widgets.yaml").write_text("{}\n")
    res = runner.invoke(kova_main, ["crds", "generate", "--output-dir", str(out), "--check"])
    assert res.exit_code == 1
    assert "kova.dev_flavors.yaml: out of date" in res.output
    assert "kova.dev_widgets.yaml: not generated" in res.output

    res = runner.invoke(kova_main, ["crds", "generate", "--output-dir", str(out)])
    assert res.exit_code == 0 and "kova.dev_flavors.yaml" in res.output


def test_default_output_dir_is_package_data() -> None:
    assert gen.GENERATED_DIR == Path(models.__file__).parent / "generated"


# --------------------------------------------------------------------------
# Structural schema rules


FORBIDDEN_KEYS = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const", "definitions"}


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_schema_is_structural(kind: str) -> None:
    for path, node in _walk(_schema(kind)):
        where = f"{kind}{path}"
        assert not FORBIDDEN_KEYS & node.keys(), f"{where}: {FORBIDDEN_KEYS & node.keys()}"
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, (
            f"{where}: every node needs a type"
        )
        assert "nullable" not in node, where
        if node["type"] == "object":
            assert not ("properties" in node and "additionalProperties" in node), where
            assert node.get("additionalProperties", {}) is not False, where
            for req in node.get("required", []):
                assert req in node.get("properties", {}), f"{where}: required {req} unknown"
            assert node.get("required", []) == sorted(node.get("required", [])), where
        if node["type"] == "array":
            assert isinstance(node.get("items"), dict), f"{where}: arrays need items"
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, where
        if "pattern" in node:
            re.compile(node["pattern"])
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "set":
            assert node["items"]["type"] in {"string", "integer", "number", "boolean"}, where
        if list_type == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), (
                f"{where}: list-map keys must be required"
            )


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_root_shape(kind: str) -> None:
    root = _schema(kind)
    assert root["type"] == "object"
    assert set(root["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    meta = root["properties"]["metadata"]
    # Only metadata.name / generateName may be restricted in a CRD schema.
    assert set(meta.get("properties", {})) <= {"name", "generateName"}
    assert root["description"], "the kind's docstring is its kubectl explain text"
    assert not any(
        node.get("x-kubernetes-preserve-unknown-fields") for _, node in _walk(root)
    ), "nothing in the Kova API needs preserve-unknown-fields"


def test_every_field_is_documented() -> None:
    for kind, path, node in _all_nodes():
        if path.endswith(("[*]", "{*}")) or path in ("<root>", ".metadata", ".metadata.name"):
            continue
        assert node.get("description"), f"{kind}{path} has no description (kubectl explain)"
        assert "\n" not in node["description"], f"{kind}{path}: description not re-flowed"


def test_strings_and_lists_are_bounded() -> None:
    """Bounds keep CEL cost estimates low and reject giant objects early."""
    for kind, path, node in _all_nodes():
        if path.startswith(".metadata") or path in (".apiVersion", ".kind"):
            continue
        if node["type"] == "string" and not ("enum" in node or "format" in node):
            assert "maxLength" in node, f"{kind}{path}: unbounded string"
        if node["type"] == "array":
            assert "maxItems" in node, f"{kind}{path}: unbounded list"
        if node["type"] == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, f"{kind}{path}: unbounded map"


def test_cel_rules_have_messages_and_valid_field_paths() -> None:
    count = 0
    for kind, path, node in _all_nodes():
        for rule in node.get("x-kubernetes-validations", []):
            count += 1
            assert rule["rule"] and rule["message"], f"{kind}{path}"
            if "fieldPath" in rule:
                target = rule["fieldPath"].lstrip(".")
                assert target in node.get("properties", {}), f"{kind}{path}: {rule}"
            if "reason" in rule:
                assert rule["reason"] in {
                    "FieldValueInvalid",
                    "FieldValueForbidden",
                    "FieldValueRequired",
                    "FieldValueDuplicate",
                }
    assert count >= 20


def test_structural_refuses_unions() -> None:
    with pytest.raises(gen.SchemaError, match="anyOf"):
        gen.structural({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {}, "x")
    with pytest.raises(gen.SchemaError, match="unsupported"):
        gen.structural({"type": "string", "contentEncoding": "base64"}, {}, "x")


def test_optional_and_exclusive_bounds_are_converted() -> None:
    node = gen.structural(
        {
            "anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "null"}],
            "default": None,
            "title": "X",
            "description": "two\nlines\n\nnew paragraph",
        },
        {},
    )
    assert node == {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "description": "two lines\n\nnew paragraph",
    }


# --------------------------------------------------------------------------
# Names, scope, printer columns, subresources


EXPECTED = {
    # kind: (plural, scope, short names)
    "Instance": ("instances", "Namespaced", ["inst"]),
    "Flavor": ("flavors", "Cluster", ["flv"]),
    "Image": ("images", "Cluster", ["img"]),
    "TenantImage": ("tenantimages", "Namespaced", ["timg"]),
    "Host": ("hosts", "Cluster", ["hv"]),
    "ServerGroup": ("servergroups", "Namespaced", ["sg"]),
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_names_scope_categories(kind: str) -> None:
    plural, scope, short = EXPECTED[kind]
    spec = CRDS[kind]["spec"]
    assert CRDS[kind]["metadata"]["name"] == f"{plural}.kova.dev"
    assert spec["group"] == "kova.dev"
    assert spec["scope"] == scope
    assert spec["names"]["plural"] == plural
    assert spec["names"]["kind"] == kind
    assert spec["names"]["listKind"] == f"{kind}List"
    assert spec["names"]["shortNames"] == short
    assert spec["names"]["categories"] == ["kova"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def _resolves(schema: dict[str, Any], json_path: str) -> bool:
    node = schema
    for part in re.sub(r"\[[^\]]*\]", "", json_path).strip(".").split("."):
        if part not in node.get("properties", {}):
            return False
        node = node["properties"][part]
        while node.get("type") == "array":
            node = node["items"]
    return True


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_printer_columns(kind: str) -> None:
    columns = CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert len([c for c in columns if c.get("priority", 0) == 0]) >= 3
    assert columns[-1] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
        "description": "Time since the object was created.",
    }
    schema = _schema(kind)
    for col in columns[:-1]:
        assert col["type"] in {"string", "integer", "number", "boolean", "date"}
        assert _resolves(schema, col["jsonPath"]), f"{kind}: {col['jsonPath']} not in schema"
        assert col["description"], col


def test_instance_printer_columns() -> None:
    columns = CRDS["Instance"]["spec"]["versions"][0]["additionalPrinterColumns"]
    default = [c["name"] for c in columns if c.get("priority", 0) == 0]
    assert default == ["Phase", "Host", "Flavor", "IP", "Age"]


# --------------------------------------------------------------------------
# The API's enums


def test_enums() -> None:
    inst = _schema("Instance")["properties"]
    assert inst["spec"]["properties"]["runStrategy"]["enum"] == [
        "Always", "Halted", "Manual", "RerunOnFailure", "Once",
    ]
    assert inst["status"]["properties"]["phase"]["enum"] == [
        "Pending", "Scheduling", "Scheduled", "Building", "Running",
        "Stopped", "Paused", "Migrating", "Resizing", "ResizeVerify", "Deleting", "Error",
        "Unknown",
    ]
    sg = _schema("ServerGroup")["properties"]["spec"]["properties"]["policy"]
    assert sg["enum"] == ["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"]
    img = _schema("Image")["properties"]["spec"]["properties"]["format"]
    assert img["enum"] == ["qcow2", "raw", "iso"] and img["default"] == "qcow2"


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_conditions_follow_kubernetes_conventions(kind: str) -> None:
    cond = _schema(kind)["properties"]["status"]["properties"]["conditions"]
    assert cond["x-kubernetes-list-type"] == "map"
    assert cond["x-kubernetes-list-map-keys"] == ["type"]
    item = cond["items"]
    assert set(item["properties"]) == {
        "type", "status", "reason", "message", "lastTransitionTime", "observedGeneration",
    }
    assert item["required"] == ["lastTransitionTime", "message", "reason", "status", "type"]
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
    status = _schema(kind)["properties"]["status"]["properties"]
    assert status["observedGeneration"]["type"] == "integer"


# --------------------------------------------------------------------------
# The models read the examples (the operator and agent will use them)


def _example_docs():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["apiVersion"] == "kova.dev/v1alpha1":
                yield path.name, doc


@pytest.mark.parametrize("name,doc", list(_example_docs()), ids=lambda v: v if isinstance(v, str) else "")
def test_examples_round_trip_through_models(name: str, doc: dict) -> None:
    model = {m.crd.kind: m for m in models.KINDS}[doc["kind"]]
    obj = model.model_validate(doc)
    wire = obj.to_k8s()
    # Everything in the example survives; the model only adds defaults.
    def contained(a: Any, b: Any) -> bool:
        if isinstance(a, dict):
            return isinstance(b, dict) and all(k in b and contained(v, b[k]) for k, v in a.items())
        return a == b
    assert contained(doc, wire), (doc, wire)


def test_examples_cover_every_namespaced_and_cluster_kind_a_user_creates() -> None:
    kinds = sorted({doc["kind"] for _, doc in _example_docs()})
    assert kinds == ["Flavor", "Image", "Instance", "ServerGroup", "TenantImage"]
    instances = [doc for _, doc in _example_docs() if doc["kind"] == "Instance"]
    assert len(instances) >= 2
    assert any("inline" in doc["spec"].get("userData", {}) for doc in instances)
    assert any("serverGroupRef" in doc["spec"] for doc in instances)


def test_status_model_parses_a_condition() -> None:
    status = models.InstanceStatus.model_validate(
        {
            "phase": "Running",
            "host": "node-1",
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
    )
    assert status.phase == "Running"
    assert status.conditions[0].status == "True"
    assert status.to_k8s()["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
