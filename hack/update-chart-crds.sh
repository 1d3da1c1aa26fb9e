#!/usr/bin/env bash
# Refresh the CRDs shipped in the Helm chart (helm/kova/crds/): Kova's own,
# generated from kova.crds.models exactly like crds/generated/, and kopf's
# peering CRDs (leader election) from kova.operator.peering.manifests().
# tests/unit/helm/test_chart.py fails when these copies are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${KOVA_VENV:-.venv}/bin/python"
[[ -x "${PY}" ]] || PY=python3
"${PY}" -m kova.cli crds generate --output-dir helm/kova/crds
"${PY}" - <<'PYEOF'
from pathlib import Path

import yaml

from kova.operator.peering import manifests

for crd in manifests()[:2]:
    plural, group = crd["metadata"]["name"].split(".", 1)
    path = Path("helm/kova/crds") / f"{group}_{plural}.yaml"
    text = ("# kopf's peering CRD (leader election), from kova.operator.peering.manifests();\n"
            "# refreshed by hack/update-chart-crds.sh.\n"
            + yaml.safe_dump(crd, sort_keys=False))
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
        print(f"wrote {path}")
PYEOF
