#!/usr/bin/env bash
# Everything Kova's tests and demo need on this machine, from nothing:
# Debian packages, the Python virtualenv, the Go-built control plane and node
# (kubelet, kube-proxy, CoreDNS), Postgres 15, libvirtd + virtlogd, the
# libvirt NAT network kova-test (DHCP), the bootable test image and the
# container images of the local node (built without Docker or a registry).
# Idempotent; slow builds are cached under ${KOVA_CACHE:-~/.cache/kova}.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${KOVA_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
step() { printf '\n[kova] === %s (%s)\n' "$1" "$(date +%H:%M:%S)" >&2; }
t0=$(date +%s)

step "system packages"
bash hack/install-system-packages.sh

step "python virtualenv ${VENV}"
if [ ! -x "${VENV}/bin/python" ]; then
  "${PYTHON}" -m venv "${VENV}"
fi
stamp="${VENV}/.kova-installed"
want="$(cat pyproject.toml setup.py | sha256sum | cut -c1-16)"
if [ "$(cat "${stamp}" 2>/dev/null)" != "${want}" ]; then
  "${VENV}/bin/python" -m pip install -q --upgrade pip
  "${VENV}/bin/python" -m pip install -q -e '.[test,libvirt]'
  echo "${want}" > "${stamp}"
else
  echo "[kova] python packages up to date" >&2
fi

step "Kubernetes binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl)"
bash hack/build-control-plane.sh
# the matching kubectl (v1.36) goes into the venv, ahead of Debian's older one
ln -sf "$(bash hack/build-control-plane.sh --print-bin-dir)/kubectl" "${VENV}/bin/kubectl"

step "helm, kube-score, kubeconform, hadolint (chart, schema and Dockerfile checks)"
bash hack/install-helm-tools.sh >/dev/null

step "promtool (alert rule tests)"
bash hack/install-promtool.sh >/dev/null

step "openstack client + osc-placement (compatibility test)"
bash hack/install-osc-placement.sh >/dev/null

step "keystone + keystonemiddleware (Placement behind a real Keystone)"
bash hack/install-keystone.sh >/dev/null

step "postgres"
bash hack/start-postgres.sh

step "libvirtd"
bash hack/start-libvirt.sh

step "libvirt NAT network with DHCP (kova-test)"
bash hack/start-libvirt-network.sh >/dev/null

step "test image"
bash hack/build-test-image.sh

step "the local node's images (pause, CoreDNS, PostgreSQL, the Dockerfile's kova image)"
bash hack/build-coredns.sh >/dev/null
bash hack/build-images.sh >/dev/null

echo "[kova] setup done in $(( $(date +%s) - t0 ))s" >&2
