#!/usr/bin/env bash
# A libvirt NAT network with DHCP on the local libvirtd (qemu:///system), for
# guests that need a real address (the agent's `--network`, the boot tests):
#
#   hack/start-libvirt-network.sh          prints the network name (last line)
#
# The network is `kova-test` (KOVA_TEST_NETWORK), bridge `kovabr0`
# (KOVA_TEST_BRIDGE), NAT to the host's uplink, libvirt's own dnsmasq handing
# out leases in 192.168.X.10-250 on the first /24 of KOVA_TEST_SUBNETS
# (default "251 252 253 254", the X) that no host address or route uses.  It is
# persistent and autostarted, so a libvirtd restart brings it back.
#
# Idempotent and safe to run from several test workers at once (flock): a
# defined network is reused as it is (its subnet is whatever it was defined
# with: read it from `virsh net-dumpxml`, never assume it), an inactive one is
# started.  Needs root, libvirtd (hack/start-libvirt.sh is run if it does not
# answer), and the packages dnsmasq-base, iptables and
# libvirt-daemon-config-network of hack/install-system-packages.sh.
#
# What starting a NAT network needs from the machine, checked when it fails:
# the kernel's bridge support (libvirt creates the bridge over netlink), a
# writable /proc/sys/net/ipv4/ip_forward (libvirt turns forwarding on),
# iptables (libvirt 9 adds its LIBVIRT_* chains with /usr/sbin/iptables, here
# the nf_tables backend) and /usr/sbin/dnsmasq (run by libvirtd as `nobody`).
# firewalld is not needed: without D-Bus libvirtd logs "disabling firewalld
# support" and uses iptables directly.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

NET=${KOVA_TEST_NETWORK:-kova-test}
BRIDGE=${KOVA_TEST_BRIDGE:-kovabr0}
SUBNETS=${KOVA_TEST_SUBNETS:-251 252 253 254}
URI=qemu:///system
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { echo "[kova] libvirt network $NET: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
for bin in virsh dnsmasq iptables ip flock; do
  command -v "$bin" >/dev/null 2>&1 || die "$bin is not installed (run hack/install-system-packages.sh)"
done

mkdir -p /var/run
exec 9>/var/run/kova-start-libvirt-network.lock
flock 9

if ! virsh -c "$URI" version >/dev/null 2>&1; then
  log "libvirtd does not answer; running hack/start-libvirt.sh"
  bash "$HERE/start-libvirt.sh" 9>&-
fi

virsh_q() { virsh -q -c "$URI" "$@"; }

subnet_used() { # 3rd octet: is 192.168.X.0/24 on any host interface or route?
  local x=$1
  ip -4 -o addr show | awk '{print $4}' | grep -q "^192\.168\.$x\." && return 0
  ip -4 route show | awk '{print $1}' | grep -q "^192\.168\.$x\." && return 0
  return 1
}

# 1. Define it (once).
if ! virsh_q net-info "$NET" >/dev/null 2>&1; then
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    die "a link named $BRIDGE exists but no network $NET; set KOVA_TEST_BRIDGE to another name"
  fi
  x=""
  for cand in $SUBNETS; do
    if ! subnet_used "$cand"; then x=$cand; break; fi
  done
  [ -n "$x" ] || die "all of 192.168.{${SUBNETS// /,}}.0/24 are used on this host; set KOVA_TEST_SUBNETS"
  xml=$(mktemp)
  trap 'rm -f "$xml"' EXIT
  cat >"$xml" <<XML
<network>
  <name>$NET</name>
  <forward mode='nat'/>
  <bridge name='$BRIDGE' stp='off' delay='0'/>
  <ip address='192.168.$x.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.$x.10' end='192.168.$x.250'/>
    </dhcp>
  </ip>
</network>
XML
  log "defining (bridge $BRIDGE, 192.168.$x.0/24, DHCP .10-.250, NAT)"
  virsh_q net-define "$xml" >/dev/null
  virsh_q net-autostart "$NET" >/dev/null
fi

# 2. Start it (when inactive).
active=$(virsh_q net-info "$NET" | awk '$1 == "Active:" {print $2}')
if [ "$active" != yes ]; then
  log "starting"
  if ! out=$(virsh_q net-start "$NET" 2>&1); then
    log "net-start failed: $out"
    log "diagnosis:"
    if ip link add kovachk0 type bridge 2>/dev/null; then
      ip link del kovachk0
      log "  bridge: the kernel can create bridges"
    else
      log "  bridge: 'ip link add TYPE bridge' fails (no bridge module / CAP_NET_ADMIN?)"
    fi
    if [ -w /proc/sys/net/ipv4/ip_forward ]; then
      log "  ip_forward: writable (now $(cat /proc/sys/net/ipv4/ip_forward))"
    else
      log "  ip_forward: /proc/sys/net/ipv4/ip_forward is read-only (NAT needs forwarding)"
    fi
    if iptables -w -t nat -S >/dev/null 2>&1; then
      log "  iptables: works ($(iptables -V))"
    else
      log "  iptables: 'iptables -t nat -S' fails: $(iptables -w -t nat -S 2>&1 | head -n1)"
    fi
    log "  (\"already in use by interface\": the subnet, chosen when the network was"
    log "  defined, is now on a host interface: virsh net-undefine $NET, rerun)"
    log "  libvirtd.log (last lines):"
    tail -n 15 /var/log/libvirt/libvirtd.log >&2 2>/dev/null || true
    exit 1
  fi
fi

# 3. Its dnsmasq must be serving (libvirt writes the pid file after starting it).
pidfile=/run/libvirt/network/$NET.pid
for _ in $(seq 1 50); do
  if [ -s "$pidfile" ] && [ -d "/proc/$(cat "$pidfile")" ]; then
    break
  fi
  sleep 0.1
done
if ! [ -s "$pidfile" ] || ! [ -d "/proc/$(cat "$pidfile")" ]; then
  die "network is active but its dnsmasq does not run (no live pid in $pidfile); see /var/log/libvirt/libvirtd.log"
fi
addr=$(virsh_q net-dumpxml "$NET" | sed -n "s/.*<ip address='\([^']*\)' netmask='\([^']*\)'.*/\1\/\2/p" | head -n1)
log "up: bridge $(virsh_q net-info "$NET" | awk '$1 == "Bridge:" {print $2}'), gateway $addr, dnsmasq pid $(cat "$pidfile")"
echo "$NET"
