#!/usr/bin/env bash
# End to end on kind, for machines with a Docker engine: create a kind
# cluster, build the Kova image and load it into the cluster, run libvirtd in
# the kind node (which stands in for a hypervisor host), install the Helm
# chart, apply the example Flavor, Image and Instance, and wait until the
# Instance is Running.
#
# NOT RUN by Kova's own tests or CI: their machines have no Docker engine, so
# neither kind nor `docker build` can run there (see docs/install.md, "What
# was not run"). Everything this script drives is tested there without kind.
#
# Usage:   hack/kind-e2e.sh            (needs docker, kind, kubectl, helm)
# Environment:
#   KOVA_KIND_CLUSTER   cluster name (default kova-e2e); reused if it exists
#   KOVA_IMAGE          image tag to build (default kova:e2e)
#   KOVA_TEST_IMAGE     a bootable qcow2 for the example Image (default: the
#                       one hack/build-test-image.sh builds, Debian hosts only)
#   KOVA_E2E_TIMEOUT    seconds to wait for Running (default 600)
# Clean up with:  kind delete cluster --name kova-e2e
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${KOVA_KIND_CLUSTER:-kova-e2e}"
IMAGE="${KOVA_IMAGE:-kova:e2e}"
TIMEOUT="${KOVA_E2E_TIMEOUT:-600}"
NODE="${CLUSTER}-control-plane"
log() { printf '[kind-e2e] %s\n' "$*" >&2; }
for tool in docker kind kubectl helm; do
  command -v "${tool}" >/dev/null || { log "missing ${tool}"; exit 1; }
done

log "kind cluster ${CLUSTER}"
kind get clusters 2>/dev/null | grep -qx "${CLUSTER}" || kind create cluster --name "${CLUSTER}" --wait 180s
kubectl config use-context "kind-${CLUSTER}" >/dev/null

log "libvirtd + QEMU (software emulation) inside the kind node"
docker exec "${NODE}" bash -euc '
  if ! command -v libvirtd >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libvirt-daemon-system qemu-system-x86 qemu-utils
  fi
  grep -q "^security_driver" /etc/libvirt/qemu.conf || echo "security_driver = \"none\"" >> /etc/libvirt/qemu.conf
  systemctl restart virtlogd libvirtd
  mkdir -p /var/lib/kova/images /var/lib/kova/instances'

log "test image into the node"
test_image="${KOVA_TEST_IMAGE:-}"
if [[ -z "${test_image}" ]]; then
  bash hack/build-test-image.sh >/dev/null
  test_image="${KOVA_CACHE:-${HOME}/.cache/kova}/images/kova-test.qcow2"
fi
docker cp "${test_image}" "${NODE}:/var/lib/kova/images/kova-test.qcow2"

log "docker build ${IMAGE} and kind load"
docker build -t "${IMAGE}" .
kind load docker-image "${IMAGE}" --name "${CLUSTER}"

log "helm install (agent on ${NODE}, QEMU emulation)"
kubectl label node "${NODE}" node-restriction.kubernetes.io/kova-hypervisor=true --overwrite
helm upgrade --install kova helm/kova --namespace kova-system --create-namespace \
  --set image.repository="${IMAGE%%:*}" --set image.tag="${IMAGE##*:}" \
  --set image.pullPolicy=Never --set agent.domainType=qemu \
  --wait --timeout 10m

log "examples: Flavor, Image, Instance"
kubectl apply -f examples/flavor-small.yaml -f examples/image-kova-test.yaml \
  -f examples/instance-hello.yaml
kubectl wait instance/hello --for=jsonpath='{.status.phase}'=Running --timeout="${TIMEOUT}s"
kubectl get instances -o wide

log "the guest's serial console (on the node):"
console="$(kubectl get instance hello -o jsonpath='{.status.console.logPath}')"
[[ -z "${console}" ]] || docker exec "${NODE}" bash -c "sleep 15; grep -a KOVA- '${console}' || true"
log "done: kind delete cluster --name ${CLUSTER} removes everything"
