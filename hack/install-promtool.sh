#!/usr/bin/env bash
# Install promtool (checks and unit-tests Prometheus alerting rules: the
# chart's PrometheusRule, tests/unit/helm/test_alerts.py) and the Prometheus
# server (the real scrape of Kova's components and the dashboard's queries in
# tests/integration/observability/), cached under
# ${KOVA_CACHE:-$HOME/.cache/kova}/bin. Both ship in Debian's `prometheus`
# package; only the binaries are needed, so the package is downloaded and
# they are extracted from it (no Prometheus service is installed or started:
# the test runs its own, on a free port with a temporary directory).
# Idempotent: cached binaries return at once.
# Prints the path of promtool (`--prometheus`: of prometheus).
set -euo pipefail

CACHE="${KOVA_CACHE:-$HOME/.cache/kova}"
BIN="${CACHE}/bin"
want=promtool
if [ "${1:-}" = "--prometheus" ]; then
  want=prometheus
fi
if [ -x "${BIN}/promtool" ] && [ -x "${BIN}/prometheus" ]; then
  echo "${BIN}/${want}"
  exit 0
fi
mkdir -p "${BIN}"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
cd "${work}"
if ! apt-get download prometheus >/dev/null 2>&1; then
  apt-get update -q >/dev/null
  apt-get download prometheus >/dev/null
fi
dpkg-deb -x prometheus_*.deb root
for tool in promtool prometheus; do
  install -m 0755 "root/usr/bin/${tool}" "${BIN}/${tool}.tmp.$$"
  mv "${BIN}/${tool}.tmp.$$" "${BIN}/${tool}"
done
"${BIN}/promtool" --version >&2
"${BIN}/prometheus" --version >&2
echo "${BIN}/${want}"
