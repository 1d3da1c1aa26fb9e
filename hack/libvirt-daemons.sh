# Sourced by hack/start-libvirt-host.sh and hack/start-libvirt-netns-host.sh:
# the start of a private libvirtd (+ virtlogd) in a mount namespace of its own
# and the wait until it answers.
#
# The caller defines log() and sets root (ROOT/NAME, the host's directories),
# sock (the directory of its client sockets), uri (the client URI) and
# keep_virtlogd (1: a running virtlogd is kept).

# alive PIDFILE COMM: the pid file names a running process called COMM.
alive() { [ -s "$1" ] && [ -d "/proc/$(cat "$1")" ] && [ "$(cat "/proc/$(cat "$1")/comm")" = "$2" ]; }

# start_private_libvirtd HOSTNAME BINDS LIBVIRTD_FLAGS LAUNCHER...
#
# Runs LAUNCHER... (an unshare of at least the mount namespace, optionally
# entered from another network namespace) with a script that bind-mounts
# $root/{run,lib,cache,log,etc-qemu} over libvirt's /run/libvirt,
# /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt and
# /etc/libvirt/qemu, plus BINDS (space-separated REL:TARGET, REL under
# $root), sets the hostname to HOSTNAME (unless empty: then the namespace
# must not be a UTS one of its own), starts virtlogd (unless kept) and
# libvirtd with LIBVIRTD_FLAGS (may be empty) under tini -s, then waits up
# to 30 s for $uri to answer: prints $uri, or fails with the tail of the log.
start_private_libvirtd() {
  local hostname=$1 binds=$2 flags=$3
  shift 3
  "$@" bash -s "$root" "$keep_virtlogd" "$hostname" "$binds" "$flags" <<'NS'
set -euo pipefail
root=$1
[ -z "$3" ] || hostname "$3"
for bind in run:/run/libvirt lib:/var/lib/libvirt cache:/var/cache/libvirt \
            log:/var/log/libvirt etc-qemu:/etc/libvirt/qemu $4; do
  target=${bind#*:}
  [ -e "$target" ] || mkdir -p "$target"
  mount --bind "$root/${bind%%:*}" "$target"
done
if [ "$2" != 1 ]; then
  LIBVIRT_LOG_OUTPUTS="3:file:$root/log/virtlogd.log" virtlogd -d -p "$root/virtlogd.pid"
fi
# Under tini -s (a child subreaper) so that exited QEMU processes are reaped at
# once (see hack/start-libvirt.sh).
# shellcheck disable=SC2086  # the flags, word-split on purpose
LIBVIRT_LOG_OUTPUTS="3:file:$root/log/libvirtd.log" \
  setsid tini -s -- libvirtd $5 -f "$root/libvirtd.conf" -p "$root/libvirtd.pid" \
  </dev/null >/dev/null 2>&1 &
NS
  local _
  for _ in $(seq 1 120); do
    if virsh -c "$uri" version >/dev/null 2>&1; then
      log "up"
      echo "$uri"
      return 0
    fi
    sleep 0.25
  done
  log "no answer after 30 s; see $root/log/libvirtd.log"
  tail -n 20 "$root/log/libvirtd.log" >&2 2>/dev/null || true
  return 1
}
