#!/usr/bin/env bash
# Build the container images of Kova's local node without a Docker engine or
# a registry, and cache them as OCI archives under
# ${KOVA_CACHE:-$HOME/.cache/kova}/images/oci (keyed by a hash of their inputs).
#
#   pause     localhost/kova/pause:1.0          the pod sandbox (hack/images/pause.c,
#                                               static); containerd's sandbox_image
#   python    localhost/kova/python:3.11-bookworm
#                                               Debian 12 (mmdebstrap) with python3.11,
#                                               pip, venv and the headers: the
#                                               Dockerfile's PYTHON_IMAGE
#   kova      localhost/kova:<version>          the repository's Dockerfile, unchanged,
#                                               built by buildah on `python`
#   postgres  localhost/kova/postgres:15-bookworm
#                                               Debian 12's postgresql-15 with the
#                                               official image's environment contract
#                                               (hack/images/postgres-entrypoint.sh)
#   coredns   localhost/kova/coredns:<version>  cluster DNS (hack/build-coredns.sh)
#
# Usage:
#   hack/build-images.sh [IMAGE...]   build what is missing (default: all);
#                                     print "<reference> <archive>" per image
#
# buildah keeps its layers under ${KOVA_CACHE}/containers (not the machine's
# /var/lib/containers), so an empty KOVA_CACHE is a cold build. The build
# steps get the machine's CA bundle as a read-only bind mount, so apt and pip
# work behind a TLS-inspecting proxy; nothing of it lands in an image.
# kova/dev/node.py imports the archives into containerd (`ctr images import`).
#
# Environment:
#   KOVA_CACHE           cache root (default: $HOME/.cache/kova)
#   KOVA_REBUILD=1       build again even when the inputs are unchanged
#   KOVA_IMAGE_REVISION  kova image only: a revision label; the image is tagged
#                        <version>-<revision>: the same build committed again
#                        as a new image (its own digest) for upgrade tests
#   KOVA_DEBIAN_MIRROR   (default http://deb.debian.org)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
export PATH="$PATH:/usr/sbin:/sbin"

KOVA_CACHE="${KOVA_CACHE:-${HOME}/.cache/kova}"
OCI_DIR="${KOVA_CACHE}/images/oci"
MIRROR="${KOVA_DEBIAN_MIRROR:-http://deb.debian.org}"
SUITE=bookworm
STORAGE="${KOVA_CACHE}/containers/storage"
RUNROOT="/run/kova-containers/$(printf '%s' "${STORAGE}" | sha256sum | cut -c1-12)"
ALL=(pause python kova postgres coredns)

log() { printf '[kova] images: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
elapsed() { printf '%ds' $(($(date +%s) - $1)); }
bah() { buildah --root "${STORAGE}" --runroot "${RUNROOT}" --storage-driver overlay "$@"; }

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
  exit 0
fi
images=("$@")
((${#images[@]})) || images=("${ALL[@]}")
for i in "${images[@]}"; do
  [[ " ${ALL[*]} " == *" $i "* ]] || die "unknown image: $i (one of: ${ALL[*]})"
done
for tool in buildah mmdebstrap gcc; do
  command -v "$tool" >/dev/null || die "$tool is missing (hack/install-system-packages.sh installs it)"
done

mkdir -p "${OCI_DIR}" "${STORAGE}" "${KOVA_CACHE}/tmp"
# Builds (not lookups of cached archives) take one lock: checkouts sharing
# the cache build one image at a time.
locked=0
lock_builds() {
  ((locked)) && return 0
  exec 9>"${KOVA_CACHE}/.build-images.lock"
  flock -n 9 || { log "waiting for another image build (${KOVA_CACHE}/.build-images.lock)"; flock 9; }
  locked=1
}

KOVA_VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)"
[[ -n "${KOVA_VERSION}" ]] || die "no version in pyproject.toml"
COREDNS_VERSION="${KOVA_COREDNS_VERSION:-v1.14.7}"

sources=(
  "deb ${MIRROR}/debian ${SUITE} main"
  "deb ${MIRROR}/debian ${SUITE}-updates main"
  "deb ${MIRROR}/debian-security ${SUITE}-security main"
)
# What Debian's slim images leave out; also honoured by later apt-get installs
# in images built on these bases (written to /etc/dpkg/dpkg.cfg.d).
slim=(
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
)

key_of() { # NAME INPUT...: the cache key of an image: its build steps (the
  # shell functions that make it, as bash prints them) and its inputs
  local name="$1"
  shift
  {
    echo "${name}"
    declare -f "build_${name}" rootfs_image mm
    printf '%s\n' "${sources[@]}" "${slim[@]}" "$@"
  } | sha256sum | cut -c1-16
}

ref_of() {
  case "$1" in
    pause) echo localhost/kova/pause:1.0 ;;
    python) echo localhost/kova/python:3.11-bookworm ;;
    kova) echo "localhost/kova:${KOVA_VERSION}${KOVA_IMAGE_REVISION:+-${KOVA_IMAGE_REVISION}}" ;;
    postgres) echo localhost/kova/postgres:15-bookworm ;;
    coredns) echo "localhost/kova/coredns:${COREDNS_VERSION#v}" ;;
  esac
}

# The hash of the Docker build context: the files .dockerignore lets through
# (its "!path" lines).
context_hash() {
  (
    cd "${REPO}"
    local -a allowed
    mapfile -t allowed < <(sed -n 's/^!\(.*\)$/\1/p' .dockerignore)
    ((${#allowed[@]})) || die ".dockerignore lets nothing through"
    find "${allowed[@]}" \( -name __pycache__ -o -name '*.egg-info' \) -prune -o \
      \( -type f ! -name '*.pyc' -print0 \) | LC_ALL=C sort -z | xargs -0 sha256sum
    find "${allowed[@]}" -type l -printf '%p -> %l\n' | LC_ALL=C sort
    sha256sum Dockerfile .dockerignore
  ) | sha256sum | cut -c1-64
}

# export_archive REF ARCHIVE: the image as an OCI archive named REF.
export_archive() {
  local tmp="$2.tmp.$$"
  rm -f "${tmp}"
  bah push --quiet "$1" "oci-archive:${tmp}:$1" >/dev/null
  mv -f "${tmp}" "$2"
}

# have_image REF KEY: the image is in buildah's storage with this key label.
have_image() {
  [[ "$(bah inspect --type image --format '{{index .OCIv1.Config.Labels "dev.kova.image.key"}}' "$1" 2>/dev/null)" == "$2" ]]
}

# ensure_local REF KEY ARCHIVE: buildah's storage holds the image (from the
# archive when it was built by an earlier run with another storage).
ensure_local() {
  have_image "$1" "$2" && return 0
  [[ -s "$3" ]] || return 1
  bah pull --quiet "oci-archive:$3" >/dev/null
  have_image "$1" "$2"
}

# rootfs_image NAME KEY REF TAR CONFIG-ARGS...: an image of one layer from a
# root file system tarball.
rootfs_image() {
  local key="$2" ref="$3" tar="$4" ctr
  shift 4
  ctr="$(bah from --quiet scratch)"
  bah add --quiet "${ctr}" "${tar}" / >/dev/null
  bah config --label "dev.kova.image.key=${key}" \
    --label org.opencontainers.image.source=https://github.com/kova-dev/kova "$@" "${ctr}"
  bah commit --quiet --rm "${ctr}" "${ref}" >/dev/null
}

mm() { # OUT.tar mmdebstrap-args...: a minimal Debian root file system
  local out="$1"
  shift
  mmdebstrap --quiet --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='Acquire::Check-Valid-Until "false"' "${slim[@]}" "$@" \
    "${SUITE}" "${out}" "${sources[@]}"
}

build_pause() { # KEY REF ARCHIVE
  local w="$4" start
  start=$(date +%s)
  gcc -static -Os -s -Wall -Wextra -o "${w}/pause" hack/images/pause.c
  mkdir -p "${w}/root"
  cp "${w}/pause" "${w}/root/pause"
  tar -C "${w}/root" --owner=0 --group=0 -cf "${w}/pause.tar" pause
  rootfs_image pause "$1" "$2" "${w}/pause.tar" \
    --entrypoint '["/pause"]' --user 65535:65535 \
    --label org.opencontainers.image.title=kova-pause
  log "pause built in $(elapsed "${start}")"
}

build_python() { # KEY REF ARCHIVE WORK
  local w="$4" start
  start=$(date +%s)
  log "python: Debian ${SUITE} with python3 (mmdebstrap, about a minute or two)"
  # libpython's static library is of no use to a wheel build: left out.
  mm "${w}/rootfs.tar" \
    --include=python3,python3-pip,python3-venv,python3-dev,python-is-python3,ca-certificates \
    --dpkgopt='path-exclude=/usr/lib/python3.*/config-3.*/*.a'
  rootfs_image python "$1" "$2" "${w}/rootfs.tar" \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 \
    --label org.opencontainers.image.title=kova-python \
    --label "org.opencontainers.image.description=Debian ${SUITE} with python3, pip, venv and headers"
  log "python built in $(elapsed "${start}")"
}

build_postgres() { # KEY REF ARCHIVE WORK
  local w="$4" start
  start=$(date +%s)
  log "postgres: Debian ${SUITE} with postgresql-15 (mmdebstrap, about two minutes)"
  # The official image's user (uid/gid 999) exists before the packages are
  # installed (written directly: the essential set has no groupadd), and the
  # packages create no cluster: the entrypoint does.
  mm "${w}/rootfs.tar" --include=postgresql-15 \
    --essential-hook='echo "postgres:x:999:" >>"$1/etc/group"' \
    --essential-hook='echo "postgres:x:999:999:PostgreSQL administrator:/var/lib/postgresql:/bin/bash" >>"$1/etc/passwd"' \
    --essential-hook='mkdir -p "$1/etc/postgresql-common/createcluster.d" && echo "create_main_cluster = false" >"$1/etc/postgresql-common/createcluster.d/kova.conf"' \
    --customize-hook='install -m 0755 hack/images/postgres-entrypoint.sh "$1/usr/local/bin/docker-entrypoint.sh"' \
    --customize-hook='mkdir -p "$1/var/lib/postgresql/data" "$1/var/run/postgresql" && chroot "$1" chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql && chmod 2777 "$1/var/run/postgresql" && chmod 0700 "$1/var/lib/postgresql/data"' \
    --customize-hook='test ! -e "$1/var/lib/postgresql/15/main"'
  rootfs_image postgres "$1" "$2" "${w}/rootfs.tar" \
    --env PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --env PGDATA=/var/lib/postgresql/data \
    --entrypoint '["docker-entrypoint.sh"]' --cmd postgres --port 5432/tcp \
    --stop-signal SIGINT --volume /var/lib/postgresql/data \
    --label org.opencontainers.image.title=kova-postgres \
    --label "org.opencontainers.image.description=PostgreSQL 15 from Debian ${SUITE}"
  log "postgres built in $(elapsed "${start}")"
}

build_coredns() { # KEY REF ARCHIVE WORK BINARY
  local w="$4" start
  start=$(date +%s)
  mkdir -p "${w}/root"
  cp "$5" "${w}/root/coredns"
  tar -C "${w}/root" --owner=0 --group=0 -cf "${w}/coredns.tar" coredns
  rootfs_image coredns "$1" "$2" "${w}/coredns.tar" \
    --entrypoint '["/coredns"]' --user 65532:65532 --port 53/udp --port 53/tcp \
    --label org.opencontainers.image.title=kova-coredns
  log "coredns image built in $(elapsed "${start}")"
}

build_kova() { # KEY REF ARCHIVE WORK PYTHON-REF
  local start ca=()
  start=$(date +%s)
  log "kova: buildah bud of the Dockerfile on $5 (pip downloads; a few minutes cold)"
  [[ -s /etc/ssl/certs/ca-certificates.crt ]] &&
    ca=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
  # No --layers: buildah 1.28 (Debian 12) keys a cached
  # `RUN --mount=type=bind,from=builder` step without the builder's output, so
  # the runtime stage's install of the wheels came from the first build ever
  # cached (an hours-old Kova in a freshly built image); and when the builder
  # stage is all cached, the bind mount finds no files. The archive above is
  # keyed by the build context, so a build runs only when the sources changed.
  bah bud --quiet --network host --pull=never --format oci \
    --build-arg "PYTHON_IMAGE=$5" "${ca[@]}" \
    --label "dev.kova.image.key=$1" \
    --label "org.opencontainers.image.version=${KOVA_VERSION}" \
    ${KOVA_IMAGE_REVISION:+--label "org.opencontainers.image.revision=${KOVA_IMAGE_REVISION}"} \
    -f Dockerfile -t "$2" . >&2
  log "kova built in $(elapsed "${start}")"
}

# revise_kova KEY REF BASE-REF: the image of this build as another revision
# (KOVA_IMAGE_REVISION): a new image -- its own digest, tag and revision
# label -- on the same layers, committed by buildah in seconds.
revise_kova() {
  local ctr
  ctr="$(bah from --quiet --pull=never "$3")"
  bah config --label "dev.kova.image.key=$1" \
    --label "org.opencontainers.image.revision=${KOVA_IMAGE_REVISION}" "${ctr}"
  bah commit --quiet --rm "${ctr}" "$2" >/dev/null
  log "kova: $2 committed on $3"
}

python_key=""
declare -A keys
for name in "${ALL[@]}"; do
  case "${name}" in
    pause) keys[$name]="$(key_of pause "$(sha256sum hack/images/pause.c)" "$(gcc --version | head -n1)")" ;;
    python) keys[$name]="$(key_of python "${SUITE}")" ;;
    postgres) keys[$name]="$(key_of postgres "${SUITE}" "$(sha256sum hack/images/postgres-entrypoint.sh)")" ;;
    coredns) keys[$name]="$(key_of coredns "${COREDNS_VERSION}")" ;;
  esac
done
python_key="${keys[python]}"
context="$(context_hash)"
keys[kova]="$(key_of kova "${python_key}" "${context}" "${KOVA_VERSION}" "${KOVA_IMAGE_REVISION:-}" \
  ${KOVA_IMAGE_REVISION:+"$(declare -f revise_kova)"})"
kova_base_key="$(key_of kova "${python_key}" "${context}" "${KOVA_VERSION}" "")"

# The python base first when the kova image is wanted.
want=()
for name in "${images[@]}"; do
  if [[ "${name}" == kova && " ${images[*]} " != *" python "* ]]; then want+=(python); fi
  want+=("${name}")
done

for name in "${want[@]}"; do
  key="${keys[$name]}"
  ref="$(ref_of "${name}")"
  # kova-<key>.tar, kova-<revision>-<key>.tar (a rebuilt image), pause-<key>.tar, ...
  stem="${name}"
  [[ "${name}" == kova && -n "${KOVA_IMAGE_REVISION:-}" ]] && stem="${name}-${KOVA_IMAGE_REVISION}"
  archive="${OCI_DIR}/${stem}-${key}.tar"
  if [[ "${KOVA_REBUILD:-0}" != 1 && -s "${archive}" ]]; then
    # the kova build reads its base from buildah's storage
    if [[ "${name}" == python ]]; then ensure_local "${ref}" "${key}" "${archive}" || true; fi
    [[ " ${images[*]} " == *" ${name} "* ]] && echo "${ref} ${archive}"
    continue
  fi
  lock_builds
  if [[ "${KOVA_REBUILD:-0}" != 1 && -s "${archive}" ]]; then  # built meanwhile, elsewhere
    [[ " ${images[*]} " == *" ${name} "* ]] && echo "${ref} ${archive}"
    continue
  fi
  work="$(mktemp -d "${KOVA_CACHE}/tmp/image-${name}.XXXXXX")"
  case "${name}" in
    pause) build_pause "${key}" "${ref}" "${archive}" "${work}" ;;
    python) build_python "${key}" "${ref}" "${archive}" "${work}" ;;
    postgres) build_postgres "${key}" "${ref}" "${archive}" "${work}" ;;
    coredns) build_coredns "${key}" "${ref}" "${archive}" "${work}" "$(bash hack/build-coredns.sh)" ;;
    kova)
      ensure_local "$(ref_of python)" "${python_key}" "${OCI_DIR}/python-${python_key}.tar" ||
        die "the python base image is missing"
      if [[ -n "${KOVA_IMAGE_REVISION:-}" ]]; then
        base_ref="localhost/kova:${KOVA_VERSION}"
        if ! ensure_local "${base_ref}" "${kova_base_key}" "${OCI_DIR}/kova-${kova_base_key}.tar"; then
          KOVA_IMAGE_REVISION="" build_kova "${kova_base_key}" "${base_ref}" "" "${work}" \
            "$(ref_of python)"
          export_archive "${base_ref}" "${OCI_DIR}/kova-${kova_base_key}.tar"
        fi
        revise_kova "${key}" "${ref}" "${base_ref}"
      else
        build_kova "${key}" "${ref}" "${archive}" "${work}" "$(ref_of python)"
      fi
      ;;
  esac
  rm -rf "${work}"
  export_archive "${ref}" "${archive}"
  # older archives of this image are superseded; those of the last two hours
  # stay (other checkouts sharing this cache may be importing theirs). Each
  # kova build is ~200 MB of archive and ~600 MB of layers: kept for a day,
  # a busy day's builds filled tens of GB and the local node's kubelet then
  # reported disk pressure.
  find "${OCI_DIR}" -maxdepth 1 -name "${stem}-????????????????.tar" ! -name "${stem}-${key}.tar" \
    -mmin +120 -delete 2>/dev/null || true
  # the layers of superseded builds (untagged, no child image); the layers the
  # current images stand on stay and keep the next build's cache
  bah rmi --prune >/dev/null 2>&1 || true
  log "${ref}: ${archive} ($(du -h "${archive}" | cut -f1))"
  [[ " ${images[*]} " == *" ${name} "* ]] && echo "${ref} ${archive}"
done
exit 0
