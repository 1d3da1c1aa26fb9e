#!/usr/bin/env bash
# The real OpenStack client with osc-placement, in its own virtualenv under
# ${KOVA_CACHE:-~/.cache/kova}/osc-placement, for the compatibility test
# (tests/integration/placement/test_osc_placement.py).  Idempotent; prints the binary.
set -euo pipefail
KOVA_CACHE="${KOVA_CACHE:-${HOME}/.cache/kova}"
venv="${KOVA_CACHE}/osc-placement"
osc="${venv}/bin/openstack"
# the marker is written last: a half-finished install is redone
if [ -f "${venv}/.kova-complete" ] && [ -x "$osc" ]; then
  echo "$osc"
  exit 0
fi
echo "[kova] installing python-openstackclient + osc-placement into ${venv}" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"${venv}/bin/python" -m pip install -q --upgrade pip
"${venv}/bin/python" -m pip install -q python-openstackclient osc-placement
"$osc" --version >/dev/null
touch "${venv}/.kova-complete"
echo "$osc"
