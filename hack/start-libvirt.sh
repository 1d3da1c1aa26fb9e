#!/usr/bin/env bash
# Start virtlogd and libvirtd without systemd, so that qemu:///system works.
#
# Idempotent: creates the directories, the libvirt-qemu user and group (Debian 12
# without libvirt-daemon-system has neither, and libvirtd refuses to start without
# them), sets user/group root and security_driver none in /etc/libvirt/qemu.conf
# (other settings in that file are kept), starts the daemons that are not running
# (restarting libvirtd if qemu.conf changed) and waits until
# `virsh -c qemu:///system version` answers.
#
# libvirtd runs under `tini -s` (a child subreaper): QEMU processes are
# double-forked by libvirtd, so when one exits it is reaped by its nearest
# subreaper ancestor, or else by PID 1. Where PID 1 reaps late (1.6 s on
# Kova's development machines) libvirt's virDomainDestroy polls the zombie
# and takes ~2 s instead of ~0.2 s; systemd reaps at once, and so does tini.
#
# Daemon logs: /var/log/libvirt/libvirtd.log and virtlogd.log.
# QEMU runs as root with no security driver: this is a development/test host.
# Must run as root.
set -euo pipefail

log() { echo "[kova] libvirt: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root"
  exit 1
fi
for bin in libvirtd virtlogd virsh tini; do
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
    log "$bin is not installed (run hack/install-system-packages.sh)"
    exit 1
  fi
done
export PATH="$PATH:/usr/sbin:/sbin"

# One run at a time (parallel test workers all call this script). The daemons
# must not inherit the lock's descriptor (9>&- below), or they would hold it.
mkdir -p /var/run
exec 9>/var/run/kova-start-libvirt.lock
flock 9

mkdir -p /var/log/libvirt /var/log/libvirt/qemu /var/run/libvirt /var/lib/libvirt/qemu \
  /var/cache/libvirt/qemu /etc/libvirt

# 1. The libvirt-qemu group and user.
if ! getent group libvirt-qemu >/dev/null; then
  log "creating group libvirt-qemu"
  groupadd --system libvirt-qemu
fi
if ! getent passwd libvirt-qemu >/dev/null; then
  log "creating user libvirt-qemu"
  useradd --system --gid libvirt-qemu --home-dir /var/lib/libvirt --no-create-home \
    --shell /usr/sbin/nologin libvirt-qemu
fi

# 2. qemu.conf: set our three keys, keep everything else.
conf=/etc/libvirt/qemu.conf
touch "$conf"
before=$(sha256sum "$conf")
set_key() {
  local key=$1 value=$2
  if grep -qxE "[[:space:]]*${key}[[:space:]]*=[[:space:]]*${value}[[:space:]]*" "$conf" &&
    [ "$(grep -cE "^[[:space:]]*${key}[[:space:]]*=" "$conf")" = 1 ]; then
    return
  fi
  sed -i -E "/^[[:space:]]*${key}[[:space:]]*=/d" "$conf"
  echo "${key} = ${value}" >>"$conf"
}
set_key user '"root"'
set_key group '"root"'
set_key security_driver '"none"'
conf_changed=0
[ "$before" = "$(sha256sum "$conf")" ] || conf_changed=1

# 3. The daemons (tracked by their pid files, so that libvirtds started for
#    other purposes, e.g. inside a network namespace with their own sockets,
#    are left alone).
running() {
  local pidfile=$1 name=$2 pid
  [ -s "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}

if ! running /var/run/virtlogd.pid virtlogd; then
  log "starting virtlogd"
  rm -f /var/run/virtlogd.pid
  LIBVIRT_LOG_OUTPUTS="3:file:/var/log/libvirt/virtlogd.log" virtlogd -d 9>&-
fi

reaped() { # libvirtd's parent is the tini subreaper
  local ppid
  ppid=$(awk '{print $4}' "/proc/$(cat /var/run/libvirtd.pid)/stat" 2>/dev/null) || return 1
  [ "$(cat "/proc/$ppid/comm" 2>/dev/null)" = tini ]
}
restart_why=""
if running /var/run/libvirtd.pid libvirtd; then
  [ "$conf_changed" = 1 ] && restart_why="qemu.conf changed"
  reaped || restart_why="${restart_why:+$restart_why, }not under the tini subreaper"
fi
if [ -n "$restart_why" ]; then
  pid=$(cat /var/run/libvirtd.pid)
  log "restarting libvirtd (pid $pid): $restart_why (running guests keep running)"
  kill "$pid"
  for _ in $(seq 1 100); do
    [ -d "/proc/$pid" ] || break
    sleep 0.1
  done
fi
if ! running /var/run/libvirtd.pid libvirtd; then
  log "starting libvirtd"
  rm -f /var/run/libvirtd.pid
  # In the foreground under tini, itself detached (setsid) from this script.
  LIBVIRT_LOG_OUTPUTS="3:file:/var/log/libvirt/libvirtd.log" \
    setsid tini -s -- libvirtd </dev/null >/dev/null 2>&1 9>&- &
  for _ in $(seq 1 100); do
    running /var/run/libvirtd.pid libvirtd && break
    sleep 0.1
  done
fi

# 4. Wait until qemu:///system answers.
for _ in $(seq 1 120); do
  if virsh -c qemu:///system version >/dev/null 2>&1; then
    log "qemu:///system is up ($(virsh -c qemu:///system version 2>/dev/null | awk '/Running hypervisor/ {print $3, $4}'))"
    exit 0
  fi
  sleep 0.25
done
log "qemu:///system does not answer after 30 s; see /var/log/libvirt/libvirtd.log"
virsh -c qemu:///system version >&2 || true
exit 1
