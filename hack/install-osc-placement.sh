#!/usr/bin/env bash
# The real OpenStack client with osc-placement, in its own virtualenv under
# ${KOVA_CACHE:-~/.cache/kova}/osc-placement, for the compatibility test
# (tests/placement/test_osc_placement.py).  Idempotent; prints the binary.
set -euo pipefail
KOVA_CACHE="${KOVA_CACHE:-${HOME}/.cache/kova}"
venv="${KOVA_CACHE}/osc-placement"
osc="${venv}/bin/openstack"
if [ -x "$osc" ] && "$osc" --version >/dev/null 2>&1 && \
   "${venv}/bin/python" -c "import osc_placement" 2>/dev/null; then
  echo "$osc"
  exit 0
fi
echo "[kova] installing python-openstackclient + osc-placement into ${venv}" >&2
rm -rf "${venv}.tmp"
python3 -m venv "${venv}.tmp"
"${venv}.tmp/bin/python" -m pip install -q --upgrade pip
"${venv}.tmp/bin/python" -m pip install -q python-openstackclient osc-placement
rm -rf "$venv"
mv "${venv}.tmp" "$venv"
# a moved venv keeps its old path in its scripts: rebuild them in place
python3 -m venv --upgrade "$venv" >/dev/null
sed -i "1s|.*|#!${venv}/bin/python|" "${venv}/bin/openstack" "${venv}/bin/pip"* 2>/dev/null || true
"$osc" --version >/dev/null
echo "$osc"
