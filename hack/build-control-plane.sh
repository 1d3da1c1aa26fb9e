#!/usr/bin/env bash
# Build the Kubernetes binaries that Kova's local clusters and tests run from
# Go modules and cache them under ${KOVA_CACHE:-$HOME/.cache/kova}/bin: the
# control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl) and the node (kubelet, kube-proxy; see kova/dev/node.py).
#
# No package registry ships kube-apiserver or a current etcd, so they are
# compiled from the Go module proxy with the `go` on PATH. A cold build takes
# many minutes on a small machine; afterwards the versioned binaries (and the
# Go module and build caches) are reused and this script returns in well under
# a second.
#
# Usage:
#   hack/build-control-plane.sh [COMPONENT...]   build what is missing (default: all)
#   hack/build-control-plane.sh --print-bin-dir  print the bin dir and exit
#
# Components: etcd kube-apiserver kube-controller-manager kube-scheduler kubectl
#             kubelet kube-proxy
#
# Layout of ${KOVA_CACHE}/bin:
#   etcd-v3.6.16, kube-apiserver-v1.36.5, ...   versioned binaries (never rebuilt)
#   etcd, kube-apiserver, ...                   symlinks to the pinned versions
#
# Environment:
#   KOVA_CACHE          cache root (default: $HOME/.cache/kova)
#   KOVA_ETCD_VERSION   etcd server version (default pinned below)
#   KOVA_K8S_VERSION    Kubernetes version (default pinned below)
set -euo pipefail

# --- Pinned versions: the newest patches the module proxy serves. ------------
# Note: `go list -m -versions k8s.io/kubernetes` lists only some patches;
# probe with `go mod download -json k8s.io/kubernetes@v1.36.N` before bumping.
KOVA_ETCD_VERSION="${KOVA_ETCD_VERSION:-v3.6.16}"
KOVA_K8S_VERSION="${KOVA_K8S_VERSION:-v1.36.5}"
# ------------------------------------------------------------------------------

KOVA_CACHE="${KOVA_CACHE:-${HOME}/.cache/kova}"
BIN_DIR="${KOVA_CACHE}/bin"
ALL_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)

log() { printf '[kova] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

components=()
while (($#)); do
  case "$1" in
    --print-bin-dir) printf '%s\n' "${BIN_DIR}"; exit 0 ;;
    -h | --help) usage; exit 0 ;;
    etcd | kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy)
      components+=("$1") ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
  shift
done
((${#components[@]})) || components=("${ALL_COMPONENTS[@]}")

# Accept "1.36.5" as well as "v1.36.5".
[[ "${KOVA_ETCD_VERSION}" == v* ]] || KOVA_ETCD_VERSION="v${KOVA_ETCD_VERSION}"
[[ "${KOVA_K8S_VERSION}" == v* ]] || KOVA_K8S_VERSION="v${KOVA_K8S_VERSION}"
semver_re='^v([0-9]+)\.([0-9]+)\.([0-9]+)(-[0-9A-Za-z.-]+)?$'
[[ "${KOVA_ETCD_VERSION}" =~ ${semver_re} ]] || die "bad KOVA_ETCD_VERSION: ${KOVA_ETCD_VERSION}"
[[ "${KOVA_K8S_VERSION}" =~ ${semver_re} ]] || die "bad KOVA_K8S_VERSION: ${KOVA_K8S_VERSION}"
K8S_MAJOR="${BASH_REMATCH[1]}"
K8S_MINOR="${BASH_REMATCH[2]}"
# Staging modules (k8s.io/api, client-go, ...) are tagged v0.<minor>.<patch>.
K8S_STAGING_VERSION="v0.${K8S_MINOR}.${BASH_REMATCH[3]}${BASH_REMATCH[4]}"

version_of() {
  case "$1" in
    etcd) printf '%s' "${KOVA_ETCD_VERSION}" ;;
    *) printf '%s' "${KOVA_K8S_VERSION}" ;;
  esac
}

missing_components() {
  local c
  for c in "${components[@]}"; do
    [[ -x "${BIN_DIR}/${c}-$(version_of "${c}")" ]] || printf '%s\n' "${c}"
  done
}

# Point the stable name at the versioned binary (atomic rename of a symlink).
link_component() {
  local c="$1" target link
  target="${c}-$(version_of "${c}")"
  link="${BIN_DIR}/${c}"
  [[ "$(readlink "${link}" 2>/dev/null || true)" == "${target}" ]] && return 0
  ln -sfn "${target}" "${link}.tmp.$$"
  mv -Tf "${link}.tmp.$$" "${link}"
}

link_all() {
  local c
  for c in "${components[@]}"; do link_component "${c}"; done
}

# --- Fast path: everything cached. -------------------------------------------
mapfile -t missing < <(missing_components)
if ((${#missing[@]} == 0)); then
  link_all
  log "control-plane binaries cached in ${BIN_DIR} (etcd ${KOVA_ETCD_VERSION}, kubernetes ${KOVA_K8S_VERSION})"
  exit 0
fi

# --- Slow path: build what is missing. ---------------------------------------
command -v go >/dev/null 2>&1 || die "go is required to build the control plane (apt-get install golang or put go on PATH)"

mkdir -p "${BIN_DIR}" "${KOVA_CACHE}/tmp" "${KOVA_CACHE}/go/mod" "${KOVA_CACHE}/go/build"

# One build at a time per cache; a second caller waits and then finds the
# binaries already there.
if command -v flock >/dev/null 2>&1; then
  exec 9>"${KOVA_CACHE}/.build-control-plane.lock"
  if ! flock -n 9; then
    log "another build of the control plane is running; waiting for it"
    flock 9
  fi
  mapfile -t missing < <(missing_components)
  if ((${#missing[@]} == 0)); then
    link_all
    log "control-plane binaries cached in ${BIN_DIR}"
    exit 0
  fi
fi

export GOMODCACHE="${KOVA_CACHE}/go/mod"
export GOCACHE="${KOVA_CACHE}/go/build"
# -modcacherw keeps the module cache deletable with a plain `rm -rf`.
export GOFLAGS="-modcacherw"
export GOWORK=off
export CGO_ENABLED=0
unset GOOS GOARCH GOBIN

WORK="$(mktemp -d "${KOVA_CACHE}/tmp/build.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT

# json_field FILE FIELD: value of a top-level string field in `go mod download -json` output.
json_field() {
  sed -n "s/^[[:space:]]*\"$2\": \"\(.*\)\",\{0,1\}\$/\1/p" "$1" | head -n1
}

# download MODULE VERSION OUTFILE: fetch a module into GOMODCACHE, record its -json.
download() {
  if ! (cd "${WORK}" && go mod download -json "$1@$2") >"$3" 2>"$3.err"; then
    cat "$3" "$3.err" >&2
    die "cannot download $1@$2 from the Go module proxy"
  fi
}

install_bin() { # SRC NAME VERSION
  local dest="${BIN_DIR}/$2-$3" tmp="${BIN_DIR}/.$2-$3.tmp.$$"
  mv -f "$1" "${tmp}"
  chmod 0755 "${tmp}"
  mv -f "${tmp}" "${dest}"
  log "installed ${dest}"
}

elapsed() { printf '%dm%02ds' $((($(date +%s) - $1) / 60)) $((($(date +%s) - $1) % 60)); }

build_etcd() {
  local v="${KOVA_ETCD_VERSION}" d="${WORK}/etcd" start gomod
  start="$(date +%s)"
  log "building etcd ${v} (cached binaries reused on later runs)"
  mkdir -p "${d}"
  download go.etcd.io/etcd/server/v3 "${v}" "${WORK}/etcd.json"
  gomod="$(json_field "${WORK}/etcd.json" GoMod)"
  {
    echo "module kova.local/build/etcd"
    echo
    grep -m1 '^go ' "${gomod}"
    echo
    echo "require go.etcd.io/etcd/server/v3 ${v}"
  } >"${d}/go.mod"
  (cd "${d}" && go build -mod=mod -trimpath -ldflags "-s -w" -o "${d}/etcd" go.etcd.io/etcd/server/v3)
  install_bin "${d}/etcd" etcd "${v}"
  log "built etcd ${v} in $(elapsed "${start}")"
}

# build_kubernetes COMPONENT...: one `go build` for all requested commands, so
# the shared packages compile once.
build_kubernetes() {
  local v="${KOVA_K8S_VERSION}" d="${WORK}/kubernetes" start gomod info build_date c
  local -a pkgs=()
  start="$(date +%s)"
  for c in "$@"; do
    log "building ${c} ${v} (cached binaries reused on later runs)"
    pkgs+=("k8s.io/kubernetes/cmd/${c}")
  done
  log "compiling Kubernetes takes several minutes on a cold cache"
  mkdir -p "${d}/out"
  download k8s.io/kubernetes "${v}" "${WORK}/kubernetes.json"
  gomod="$(json_field "${WORK}/kubernetes.json" GoMod)"
  info="$(json_field "${WORK}/kubernetes.json" Info)"

  # k8s.io/kubernetes points its staging modules at ./staging/src/...; a
  # dependent module must replace each with the published v0.<minor>.<patch>.
  # Other (non-local) replaces of the release are copied as they are, and so
  # is its godebug setting, which only the main module's go.mod can carry.
  {
    echo "module kova.local/build/kubernetes"
    echo
    grep -m1 '^go ' "${gomod}"
    echo
    awk '
      /^godebug[[:space:]]*\($/ { inblk = 1 }
      inblk { print; if ($0 ~ /^\)/) inblk = 0; next }
      /^godebug[[:space:]]/ { print }
    ' "${gomod}"
    echo
    echo "require k8s.io/kubernetes ${v}"
    echo
    echo "replace ("
    awk -v sv="${K8S_STAGING_VERSION}" '
      function handle(line,   n, f, i, arrow) {
        sub(/\/\/.*/, "", line)
        n = split(line, f, /[[:space:]]+/)
        arrow = 0
        for (i = 1; i <= n; i++) if (f[i] == "=>") arrow = i
        if (!arrow) return
        first = (f[1] == "") ? 2 : 1
        if (f[arrow + 1] ~ /^\.\/staging\/src\//) { printf "\t%s => %s %s\n", f[first], f[first], sv; return }
        if (f[arrow + 1] ~ /^\.\.?\//) return   # other local paths: not usable here
        out = ""
        for (i = first; i <= n; i++) if (f[i] != "") out = out (out == "" ? "" : " ") f[i]
        printf "\t%s\n", out
      }
      /^replace[[:space:]]*\($/ { inblk = 1; next }
      inblk && /^\)/ { inblk = 0; next }
      inblk { handle($0); next }
      /^replace[[:space:]]/ { sub(/^replace[[:space:]]+/, ""); handle($0) }
    ' "${gomod}"
    echo ")"
  } >"${d}/go.mod"
  grep -q "k8s.io/client-go => k8s.io/client-go ${K8S_STAGING_VERSION}" "${d}/go.mod" ||
    die "could not derive the staging-module replaces from ${gomod}"

  # Version stamping as the release build (hack/lib/version.sh) does it, so
  # `kubectl version` reports the real server version. The proxy records no
  # commit hash; the build date is the release's tag time, for reproducibility.
  build_date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "${info}")"
  build_date="${build_date%%.*}"
  [[ "${build_date}" == *Z ]] || build_date="${build_date}Z"
  local ldflags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${v}"
    ldflags+=" -X ${pkg}.gitMajor=${K8S_MAJOR}"
    ldflags+=" -X ${pkg}.gitMinor=${K8S_MINOR}"
    ldflags+=" -X ${pkg}.gitCommit="
    ldflags+=" -X ${pkg}.gitTreeState=clean"
    ldflags+=" -X ${pkg}.buildDate=${build_date}"
  done

  (cd "${d}" && go build -mod=mod -trimpath -tags selinux,notest,grpcnotrace \
    -ldflags "${ldflags}" -o "${d}/out/" "${pkgs[@]}")
  for c in "$@"; do
    install_bin "${d}/out/${c}" "${c}" "${v}"
  done
  log "built ${*} ${v} in $(elapsed "${start}")"
}

k8s_missing=()
for c in "${missing[@]}"; do
  case "${c}" in
    etcd) build_etcd ;;
    *) k8s_missing+=("${c}") ;;
  esac
done
((${#k8s_missing[@]} == 0)) || build_kubernetes "${k8s_missing[@]}"

link_all
log "control-plane binaries ready in ${BIN_DIR}"
