#!/usr/bin/env bash
# Run the fault suite with its long variants and regenerate docs/reliability.md.
#   bash hack/reliability-report.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
out="$(mktemp -d)"
echo "[kova] fault suite: records in ${out}"
KOVA_RELIABILITY_DIR="${out}" KOVA_RELIABILITY_LONG=1 KOVA_SLOW=1 \
  .venv/bin/python -m pytest -m reliability -p no:randomly "$@"
.venv/bin/python -m tests.reliability.render "${out}" > docs/reliability.md
echo "[kova] wrote docs/reliability.md ($(grep -c '^| ' docs/reliability.md) table lines)"
