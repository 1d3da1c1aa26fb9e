#!/usr/bin/env bash
# OpenStack Keystone and keystonemiddleware in their own virtualenv under
# ${KOVA_CACHE:-~/.cache/kova}/keystone, for the test that puts Kova
# Placement behind a real Keystone (tests/integration/placement/test_keystone.py).
# Idempotent; prints the virtualenv's python.
set -euo pipefail
KOVA_CACHE="${KOVA_CACHE:-${HOME}/.cache/kova}"
venv="${KOVA_CACHE}/keystone"
python="${venv}/bin/python"
# the marker is written last: a half-finished install is redone
if [ -f "${venv}/.kova-complete" ] && [ -x "$python" ]; then
  echo "$python"
  exit 0
fi
echo "[kova] installing keystone + keystonemiddleware into ${venv}" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$python" -m pip install -q --upgrade pip
"$python" -m pip install -q keystone keystonemiddleware httpx
"$python" -c "import keystone.server, keystonemiddleware.auth_token, httpx"
touch "${venv}/.kova-complete"
echo "$python"
