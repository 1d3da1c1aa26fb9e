#!/usr/bin/env bash
# Install kubeconform (strict Kubernetes manifest validation against JSON
# schemas) from the Go module proxy and cache it under
# ${KOVA_CACHE:-$HOME/.cache/kova}/bin. A cached binary is reused; a cold
# install takes about a minute.
#
# Usage:
#   hack/install-kubeconform.sh          install if missing; print the binary's path
#
# Layout of ${KOVA_CACHE}/bin:
#   kubeconform-v0.8.0    the pinned version (never rebuilt)
#   kubeconform           symlink to it
#
# Environment:
#   KOVA_CACHE                 cache root (default: $HOME/.cache/kova)
#   KOVA_KUBECONFORM_VERSION   version to install (default pinned below)
set -euo pipefail

KOVA_KUBECONFORM_VERSION="${KOVA_KUBECONFORM_VERSION:-v0.8.0}"
[[ "${KOVA_KUBECONFORM_VERSION}" == v* ]] || KOVA_KUBECONFORM_VERSION="v${KOVA_KUBECONFORM_VERSION}"
KOVA_CACHE="${KOVA_CACHE:-${HOME}/.cache/kova}"
BIN_DIR="${KOVA_CACHE}/bin"
TARGET="${BIN_DIR}/kubeconform-${KOVA_KUBECONFORM_VERSION}"

log() { printf '[kova] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
  exit 0
fi

if [[ ! -x "${TARGET}" ]]; then
  command -v go >/dev/null 2>&1 || die "go is not on PATH (needed to install kubeconform)"
  mkdir -p "${BIN_DIR}" "${KOVA_CACHE}/go/mod" "${KOVA_CACHE}/go/build" "${KOVA_CACHE}/tmp"
  tmp="$(mktemp -d "${KOVA_CACHE}/tmp/kubeconform.XXXXXX")"
  trap 'rm -rf "${tmp}"' EXIT
  log "installing kubeconform ${KOVA_KUBECONFORM_VERSION} (cached in ${BIN_DIR}) ..."
  GOMODCACHE="${KOVA_CACHE}/go/mod" GOCACHE="${KOVA_CACHE}/go/build" GOBIN="${tmp}" \
    CGO_ENABLED=0 GOFLAGS=-mod=mod \
    go install "github.com/yannh/kubeconform/cmd/kubeconform@${KOVA_KUBECONFORM_VERSION}"
  mv "${tmp}/kubeconform" "${TARGET}.partial"
  mv "${TARGET}.partial" "${TARGET}"
fi
ln -sfn "$(basename "${TARGET}")" "${BIN_DIR}/kubeconform"
printf '%s\n' "${TARGET}"
