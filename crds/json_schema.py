"""JSON Schemas (draft 2020-12) of the Kova kinds, for offline validators.

kubeconform, editors (yaml-language-server) and CI linters validate manifests
against JSON Schema files, not against CRDs.  :func:`json_schema` converts a
CRD's ``openAPIV3Schema``:

* ``strict`` (the default) adds ``additionalProperties: false`` to every object
  with ``properties`` -- the offline equivalent of the API server's strict
  field validation (an unknown or misspelt field is an error);
* OpenAPI v3's boolean ``exclusiveMinimum``/``exclusiveMaximum`` become 2020-12's
  numeric ones;
* ``apiVersion`` and ``kind`` are pinned to the kind's values;
* ``x-kubernetes-*`` extensions are dropped: CEL rules are checked only by the
  API server.

:func:`write_schemas` lays the files out as kubeconform's
``{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json`` template
expects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .common import GROUP, VERSION
from .models import KINDS

#: kubeconform ``-schema-location`` template relative to the output directory.
KUBECONFORM_TEMPLATE = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"


def _convert(node: dict[str, Any], strict: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            continue
        if key == "properties":
            out[key] = {k: _convert(v, strict) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value, strict)
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(value, bool):
            continue  # folded into minimum/maximum below
        else:
            out[key] = value
    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if node.get(flag) is True:
            out[flag] = out.pop(bound)
    if strict and out.get("type") == "object" and "properties" in out:
        out.setdefault("additionalProperties", False)
    return out


def json_schema(crd: dict[str, Any], strict: bool = True) -> dict[str, Any]:
    """The JSON Schema of the (only) version of one generated CRD."""
    (version,) = crd["spec"]["versions"]
    schema = _convert(version["schema"]["openAPIV3Schema"], strict)
    names = crd["spec"]["names"]
    props = schema["properties"]
    api_version = f"{crd['spec']['group']}/{version['name']}"
    props["apiVersion"] = {**props["apiVersion"], "enum": [api_version]}
    props["kind"] = {**props["kind"], "enum": [names["kind"]]}
    # Metadata is validated by the API server itself; offline, keep it open.
    props["metadata"] = {"type": "object"} | (
        {"properties": props["metadata"]["properties"]} if "properties" in props["metadata"] else {}
    )
    required = set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"}
    schema["required"] = sorted(required)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{names['kind']} ({GROUP}/{VERSION})",
        **schema,
    }


def write_schemas(output_dir: Path, strict: bool = True) -> list[Path]:
    """Write one JSON Schema per kind under ``output_dir/<group>/``."""
    from .generate import crd

    written = []
    for model in KINDS:
        doc = crd(model)
        path = output_dir / GROUP / f"{model.crd.kind.lower()}_{VERSION}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_schema(doc, strict), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
