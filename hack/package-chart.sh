#!/usr/bin/env bash
# Package the Helm chart for a release: dist/kova-<version>.tgz, with the
# chart's version and appVersion both set to Kova's version (pyproject.toml),
# which is also the tag of the image the chart runs by default (image.tag
# empty = appVersion) and the tag hack/build-images.sh gives the kova image.
#
#   hack/package-chart.sh [OUT_DIR]     default OUT_DIR: dist; prints the archive's path
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)"
[[ -n "${version}" ]] || { echo "[kova] no version in pyproject.toml" >&2; exit 1; }
helm="$(bash hack/install-helm-tools.sh helm | tail -n1)/helm"
"${helm}" lint --strict helm/kova >&2
mkdir -p "${out}"
"${helm}" package helm/kova --version "${version}" --app-version "${version}" \
  --destination "${out}" >&2
echo "${out}/kova-${version}.tgz"
