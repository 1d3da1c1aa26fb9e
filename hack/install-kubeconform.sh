#!/usr/bin/env bash
# Install kubeconform (strict Kubernetes manifest validation against JSON
# schemas) from the Go module proxy, cached under
# ${KOVA_CACHE:-$HOME/.cache/kova}/bin as kubeconform-<version> with a
# kubeconform symlink; print the binary's path. The go install steps live in
# hack/install-helm-tools.sh (tool "kubeconform"); a cold install takes about
# a minute, a cached binary is reused at once.
#
# Usage:
#   hack/install-kubeconform.sh          install if missing; print the binary's path
#
# Environment:
#   KOVA_CACHE                 cache root (default: $HOME/.cache/kova)
#   KOVA_KUBECONFORM_VERSION   version to install (default pinned in install-helm-tools.sh)
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
  exit 0
fi
bin_dir="$(bash "$(dirname "$0")/install-helm-tools.sh" kubeconform)"
readlink -f "${bin_dir}/kubeconform"
