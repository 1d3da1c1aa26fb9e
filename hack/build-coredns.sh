#!/usr/bin/env bash
# Build CoreDNS, the cluster DNS of Kova's local node, from the Go module proxy
# and cache it as ${KOVA_CACHE:-$HOME/.cache/kova}/bin/coredns-<version>.
#
# No registry ships a CoreDNS image here, so the binary is compiled like the
# Kubernetes components (hack/build-control-plane.sh): a throwaway module
# with its own main package that links only the plugins a cluster's DNS
# needs (kubernetes, cache, health, ready, prometheus, errors, log,
# loadbalance, reload) instead of CoreDNS's full list (which pulls in the
# AWS, Azure and Google clients). client-go and the API types are raised to
# the node's Kubernetes release (v0.<minor>.<patch>), so the compiled packages
# are shared with the Kubernetes build cache. hack/build-images.sh wraps the
# binary into the image `localhost/kova/coredns`.
#
# Usage:
#   hack/build-coredns.sh                 build if missing; print the binary's path
#
# Environment:
#   KOVA_CACHE            cache root (default: $HOME/.cache/kova)
#   KOVA_COREDNS_VERSION  CoreDNS release (default pinned below)
#   KOVA_K8S_VERSION      Kubernetes release whose client-go is linked
set -euo pipefail

KOVA_COREDNS_VERSION="${KOVA_COREDNS_VERSION:-v1.14.7}"
KOVA_K8S_VERSION="${KOVA_K8S_VERSION:-v1.36.5}"
KOVA_CACHE="${KOVA_CACHE:-${HOME}/.cache/kova}"
BIN_DIR="${KOVA_CACHE}/bin"
OUT="${BIN_DIR}/coredns-${KOVA_COREDNS_VERSION}"

log() { printf '[kova] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
  exit 0
fi

if [[ -x "${OUT}" ]]; then
  log "coredns ${KOVA_COREDNS_VERSION} cached in ${BIN_DIR}"
  echo "${OUT}"
  exit 0
fi
command -v go >/dev/null 2>&1 || die "go is required to build CoreDNS"
[[ "${KOVA_K8S_VERSION}" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "bad KOVA_K8S_VERSION: ${KOVA_K8S_VERSION}"
staging="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"

mkdir -p "${BIN_DIR}" "${KOVA_CACHE}/tmp" "${KOVA_CACHE}/go/mod" "${KOVA_CACHE}/go/build"
exec 9>"${KOVA_CACHE}/.build-coredns.lock"
flock 9
if [[ -x "${OUT}" ]]; then
  echo "${OUT}"
  exit 0
fi

export GOMODCACHE="${KOVA_CACHE}/go/mod" GOCACHE="${KOVA_CACHE}/go/build"
export GOFLAGS="-modcacherw" GOWORK=off CGO_ENABLED=0
unset GOOS GOARCH GOBIN
WORK="$(mktemp -d "${KOVA_CACHE}/tmp/coredns.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT
start=$(date +%s)
log "building coredns ${KOVA_COREDNS_VERSION} (client-go ${staging}; cached binary reused on later runs)"

cat >"${WORK}/main.go" <<'GO'
// CoreDNS with the plugins a Kubernetes cluster's DNS uses, nothing else.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func init() {
	// The order in which the plugins handle a query: CoreDNS's plugin.cfg order.
	dnsserver.Directives = []string{
		"reload", "ready", "health", "prometheus", "errors", "log",
		"loadbalance", "cache", "kubernetes",
	}
}

func main() { coremain.Run() }
GO
cat >"${WORK}/go.mod" <<MOD
module kova.local/build/coredns

go 1.25.0

require (
	github.com/coredns/coredns ${KOVA_COREDNS_VERSION}
	k8s.io/api ${staging}
	k8s.io/apimachinery ${staging}
	k8s.io/client-go ${staging}
)
MOD
(cd "${WORK}" && go mod tidy >/dev/null 2>"${WORK}/tidy.err") || { cat "${WORK}/tidy.err" >&2; die "go mod tidy failed"; }
(cd "${WORK}" && go build -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=${KOVA_COREDNS_VERSION}" \
  -o "${WORK}/coredns" .)
"${WORK}/coredns" -plugins >"${WORK}/plugins.txt" 2>&1 || true
grep -q kubernetes "${WORK}/plugins.txt" || { cat "${WORK}/plugins.txt" >&2; die "the built coredns lacks the kubernetes plugin"; }
install -m 0755 "${WORK}/coredns" "${OUT}.tmp.$$"
mv -f "${OUT}.tmp.$$" "${OUT}"
log "built coredns ${KOVA_COREDNS_VERSION} in $(( $(date +%s) - start ))s"
echo "${OUT}"
