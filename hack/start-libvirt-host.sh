#!/usr/bin/env bash
# Start a private libvirtd (+ virtlogd) for one simulated host of the local
# stack, so that several compute agents on one machine each own a hypervisor,
# as they would on separate nodes.
#
#   hack/start-libvirt-host.sh NAME ROOT     prints the libvirt URI to use
#
# The daemons run in their own mount namespace where /run/libvirt,
# /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt and /etc/libvirt/qemu
# are bind mounts of directories under ROOT/NAME; everything else (qemu.conf,
# the instance directories, images) is the machine's.  The client socket is
# /run/kova-libvirt/<hash of ROOT/NAME>/libvirt-sock (short: unix socket paths
# are limited to 107 bytes).  Needs root and the packages of
# hack/install-system-packages.sh; hack/start-libvirt.sh must have run once
# (it writes qemu.conf and creates the libvirt-qemu user).
# Idempotent: a running daemon is reused.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

name=${1:?usage: start-libvirt-host.sh NAME ROOT}
root=$(realpath -m "${2:?usage: start-libvirt-host.sh NAME ROOT}")/$name
# unix socket paths are limited to 107 bytes: keep the sockets under /run
sock="/run/kova-libvirt/$(printf '%s' "$root" | sha256sum | cut -c1-16)"
uri="qemu+unix:///system?socket=${sock}/libvirt-sock"
log() { echo "[kova] libvirt[$name]: $*" >&2; }
# shellcheck source=hack/libvirt-daemons.sh
source "$(dirname "${BASH_SOURCE[0]}")/libvirt-daemons.sh"

if alive "$root/libvirtd.pid" libvirtd && virsh -c "$uri" version >/dev/null 2>&1; then
  echo "$uri"
  exit 0
fi

mkdir -p "$root"/{run,lib/qemu,cache/qemu,log/qemu,etc-qemu} "$sock"
cat >"$root/libvirtd.conf" <<CONF
unix_sock_dir = "$sock"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
CONF
if [ -s "$root/libvirtd.pid" ] && [ -d "/proc/$(cat "$root/libvirtd.pid")" ]; then
  kill "$(cat "$root/libvirtd.pid")" 2>/dev/null || true
  sleep 0.5
fi
rm -f "$root/libvirtd.pid" "$sock/"*
# A running virtlogd is kept: it holds the console logs of running guests (a
# libvirtd restart must not touch them); its socket is under ROOT/NAME/run.
keep_virtlogd=0
if alive "$root/virtlogd.pid" virtlogd; then
  keep_virtlogd=1
else
  rm -f "$root/virtlogd.pid"
fi

log "starting a private libvirtd (socket $sock/libvirt-sock)"
start_private_libvirtd "" "" "" unshare --mount --propagation private
