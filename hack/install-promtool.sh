#!/usr/bin/env bash
# Install promtool (checks and unit-tests Prometheus alerting rules: the
# chart's PrometheusRule, tests/unit/helm/test_alerts.py) and cache it under
# ${KOVA_CACHE:-$HOME/.cache/kova}/bin. promtool ships in Debian's
# `prometheus` package; only the binary is needed, so the package is
# downloaded and promtool extracted from it (no Prometheus service is
# installed or started). Idempotent: a cached binary returns at once.
# Prints the path of promtool.
set -euo pipefail

CACHE="${KOVA_CACHE:-$HOME/.cache/kova}"
BIN="${CACHE}/bin"
if [ -x "${BIN}/promtool" ]; then
  echo "${BIN}/promtool"
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
install -m 0755 root/usr/bin/promtool "${BIN}/promtool.tmp"
mv "${BIN}/promtool.tmp" "${BIN}/promtool"
"${BIN}/promtool" --version >&2
echo "${BIN}/promtool"
