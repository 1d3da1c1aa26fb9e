#!/usr/bin/env bash
# Install the Debian packages Kova's local stack and tests need.
# Idempotent: packages already present are skipped without touching apt.
set -euo pipefail

PACKAGES=(
  # libvirt + QEMU (software emulation), and what libvirt-python builds against
  qemu-system-x86 qemu-utils libvirt-daemon libvirt-daemon-driver-qemu
  libvirt-clients libvirt-dev pkg-config
  libvirt-daemon-config-network dnsmasq-base iptables
  # libvirt's stock network filters (clean-traffic, ...) that the agent's
  # guest filter references (agents/virt/netfilter.py)
  libvirt-daemon-config-nwfilter
  # UEFI firmware (OVMF) for Images with properties.firmware: uefi
  ovmf
  # reaps the exited QEMU processes libvirtd double-forks (hack/start-libvirt.sh)
  tini
  # Postgres 15
  postgresql postgresql-contrib
  # test image: kernel, busybox initramfs, boot loader
  linux-image-amd64 busybox-static syslinux syslinux-common syslinux-efi mtools dosfstools cpio xz-utils
  # the QEMU guest agent copied into the test image (quiesced snapshots)
  qemu-guest-agent
  # the local Kubernetes node (kova/dev/node.py): container runtime, CNI
  # plugins, kube-proxy's nftables mode; images built without Docker
  # (hack/build-images.sh: buildah, mmdebstrap, a static C compiler)
  containerd runc containernetworking-plugins nftables conntrack
  buildah mmdebstrap gcc libc6-dev
  # misc
  openssl curl iproute2 procps psmisc xorriso genisoimage
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "[kova] system packages: all ${#PACKAGES[@]} present"
  exit 0
fi

echo "[kova] installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
stamp=/var/lib/apt/periodic/kova-update-stamp
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +360 2>/dev/null)" ]; then
  apt-get update -q
  mkdir -p "$(dirname "$stamp")" && touch "$stamp"
fi
# linux-image-amd64 is installed only for its kernel file (the test image);
# skip the initramfs/bootloader hooks of the host.
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "[kova] system packages installed"
