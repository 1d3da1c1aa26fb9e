#!/usr/bin/env bash
# Kova's static checks, run by `make test` before pytest (and so by .ci/run):
#   ruff          style, imports, likely bugs, complexity (pyproject [tool.ruff])
#   mypy          types of crds, kova (with kova/dev and kova/plugin) and the
#                 operator
#   lint-imports  the import layers: crds <- kova <- components <- CLI/dev
#                 tooling and kubectl kova; Placement imports no other
#                 component; only kova.kube talks to the Kubernetes API
#   check_sizes   no function over 60 lines, no class over 400 (hack/check_sizes.py)
#   settings docs the settings tables in docs/ match the settings dataclasses
# Any failure fails the run.  All tools come from the virtualenv (pip extra
# "test", installed by hack/setup.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${KOVA_VENV:-.venv}"
BIN="${VENV}/bin"
failed=()

run() {
  local name="$1"; shift
  local t0=$SECONDS
  if "$@"; then
    printf '[lint] %-14s ok (%ds)\n' "${name}" "$((SECONDS - t0))"
  else
    printf '[lint] %-14s FAILED\n' "${name}" >&2
    failed+=("${name}")
  fi
}

# import-linter walks package directories, but Kova's components live in
# top-level folders mapped onto kova.<part> by the packaging (operator/ has no
# __init__.py on purpose): give it the installed layout, as a copy.
import_tree() {
  local tree rc=0
  tree="$(mktemp -d)"
  mkdir -p "${tree}/kova"
  (cd kova && find . -path ./operator -prune -o -name __pycache__ -prune -o \
     -name '*.py' -print | cpio -pdm --quiet "${tree}/kova")
  for part in operator agents api crds placement; do
    (cd "${part}" && find . -name __pycache__ -prune -o -name '*.py' -print \
       | cpio -pdm --quiet "${tree}/kova/${part}")
  done
  touch "${tree}/kova/operator/__init__.py"
  (cd "${tree}" && PYTHONPATH="${tree}" "${OLDPWD}/${BIN}/lint-imports" --no-cache \
     "${OLDPWD}/pyproject.toml") >"${tree}/out" 2>&1 || rc=$?
  if [ "${rc}" -ne 0 ]; then
    cat "${tree}/out"
  else
    grep -E '^Contracts:' "${tree}/out"
  fi
  rm -rf "${tree}"
  return "${rc}"
}

run ruff "${BIN}/ruff" check --quiet .
run mypy "${BIN}/mypy" --no-error-summary
run import-layers import_tree
run sizes "${BIN}/python" hack/check_sizes.py
run settings-docs "${BIN}/python" -m kova.dev.settings_docs --check

if [ "${#failed[@]}" -gt 0 ]; then
  echo "[lint] failed: ${failed[*]}" >&2
  exit 1
fi
echo "[lint] all checks passed"
