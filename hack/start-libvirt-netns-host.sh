#!/usr/bin/env bash
# Start a libvirtd (+ virtlogd) that is a separate libvirt host: its own
# network namespace (an existing one, made by the caller with its address),
# its own host UUID, its own hostname, run/lib/cache/log directories, sockets
# and qemu.conf.  Used by the two-host test bed for moving Instances
# (tests/support/twohost.py), where libvirt's live migration and the agents'
# disk copy run between two such hosts over TCP.
#
#   hack/start-libvirt-netns-host.sh NAME ROOT NETNS ADDR HOST_UUID
#
# prints the local libvirt URI (a unix socket outside the namespaces, so a
# process in the machine's namespaces can use it).  Inside NETNS the daemon
# also listens on ADDR:16509 over plain TCP with `auth_tcp = "none"`
# (qemu+tcp://ADDR/system): acceptable only on the private addresses of a
# test bed, never on a real network.  Its qemu.conf is the machine's plus
# migration_address/migration_host = ADDR (QEMU's migration and NBD streams use
# that address) and `cgroup_controllers = [ ]` (two hosts on one kernel would
# otherwise share cgroup paths for the same domain during a migration).
#
# The daemons run in a mount and UTS namespace of their own where
# /run/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt,
# /etc/libvirt/qemu, /etc/libvirt/nwfilter and /etc/libvirt/qemu.conf are bind
# mounts of ROOT/NAME/... (the network filters start empty: a Kova agent
# defines libvirt's stock filters it needs);
# the hostname is NAME.  ROOT/NAME/instances is the host's instance directory
# (created here, used by the caller).  Needs root; hack/start-libvirt.sh must
# have run once (qemu.conf, the libvirt-qemu user).  Idempotent: a running
# libvirtd is reused; a stopped one is started again (with the same
# configuration) and a running virtlogd kept.  The bed stops the daemons by
# their pid files ROOT/NAME/{libvirtd,virtlogd}.pid.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

usage="usage: start-libvirt-netns-host.sh NAME ROOT NETNS ADDR HOST_UUID"
name=${1:?$usage}
root=$(realpath -m "${2:?$usage}")/$name
netns=${3:?$usage}
addr=${4:?$usage}
host_uuid=${5:?$usage}
sock="/run/kova-libvirt/$(printf '%s' "$root" | sha256sum | cut -c1-16)"
uri="qemu+unix:///system?socket=${sock}/libvirt-sock"
log() { echo "[kova] libvirt host $name ($netns, $addr): $*" >&2; }
# shellcheck source=hack/libvirt-daemons.sh
source "$(dirname "${BASH_SOURCE[0]}")/libvirt-daemons.sh"

[ -e "/run/netns/$netns" ] || { log "no network namespace $netns"; exit 1; }
mkdir -p "$root"/{run,lib/qemu,cache/qemu,log/qemu,etc-qemu,etc-nwfilter,instances} "$sock"
if alive "$root/libvirtd.pid" libvirtd; then
  log "libvirtd already runs (pid $(cat "$root/libvirtd.pid"))"
  echo "$uri"
  exit 0
fi
# A running virtlogd is kept (it holds the console logs of running guests):
# starting again after libvirtd was stopped restarts libvirtd only.
keep_virtlogd=0
alive "$root/virtlogd.pid" virtlogd && keep_virtlogd=1
[ "$keep_virtlogd" = 1 ] || rm -f "$root/virtlogd.pid"
rm -f "$root/libvirtd.pid" "$sock/libvirt-sock" "$sock/libvirt-sock-ro" "$sock/libvirt-admin-sock"
cat >"$root/libvirtd.conf" <<CONF
unix_sock_dir = "$sock"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
listen_tls = 0
listen_tcp = 1
listen_addr = "$addr"
auth_tcp = "none"
host_uuid = "$host_uuid"
CONF
{
  cat /etc/libvirt/qemu.conf 2>/dev/null | grep -vE '^[[:space:]]*(migration_address|migration_host|cgroup_controllers)[[:space:]]*=' || true
  echo "migration_address = \"$addr\""
  echo "migration_host = \"$addr\""
  echo "cgroup_controllers = [ ]"
} >"$root/qemu.conf"

log "starting libvirtd (socket $sock/libvirt-sock, qemu+tcp://$addr/system)"
start_private_libvirtd "$name" "etc-nwfilter:/etc/libvirt/nwfilter qemu.conf:/etc/libvirt/qemu.conf" \
  --listen nsenter --net="/run/netns/$netns" unshare --mount --uts --propagation private
