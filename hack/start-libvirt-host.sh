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

alive() { [ -s "$1" ] && [ -d "/proc/$(cat "$1")" ] && [ "$(cat "/proc/$(cat "$1")/comm")" = "$2" ]; }

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
unshare --mount --propagation private bash -s "$root" "$keep_virtlogd" <<'NS'
set -euo pipefail
root=$1
mount --bind "$root/run" /run/libvirt
mount --bind "$root/lib" /var/lib/libvirt
mount --bind "$root/cache" /var/cache/libvirt
mount --bind "$root/log" /var/log/libvirt
mkdir -p /etc/libvirt/qemu
mount --bind "$root/etc-qemu" /etc/libvirt/qemu
if [ "$2" != 1 ]; then
  LIBVIRT_LOG_OUTPUTS="3:file:$root/log/virtlogd.log" virtlogd -d -p "$root/virtlogd.pid"
fi
# Under tini -s (a child subreaper) so that exited QEMU processes are reaped at
# once (see hack/start-libvirt.sh).
LIBVIRT_LOG_OUTPUTS="3:file:$root/log/libvirtd.log" \
  setsid tini -s -- libvirtd -f "$root/libvirtd.conf" -p "$root/libvirtd.pid" \
  </dev/null >/dev/null 2>&1 &
NS

for _ in $(seq 1 120); do
  if virsh -c "$uri" version >/dev/null 2>&1; then
    log "up"
    echo "$uri"
    exit 0
  fi
  sleep 0.25
done
log "no answer after 30 s; see $root/log/libvirtd.log"
exit 1
