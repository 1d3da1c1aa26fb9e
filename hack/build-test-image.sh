#!/usr/bin/env bash
# Build Kova's bootable test image from Debian packages, without root mounts or
# loop devices:
#
#   MBR (syslinux mbr.bin) + one bootable FAT16 partition at 1 MiB holding
#   ldlinux.sys/ldlinux.c32 (the syslinux installer, run on the image file with
#   --offset), syslinux.cfg, Debian's kernel (/boot/vmlinuz-<ver>, package
#   linux-image-amd64) and a busybox initramfs; and for UEFI firmware (OVMF)
#   EFI/BOOT/BOOTX64.EFI, syslinux's EFI build (package syslinux-efi), with
#   ldlinux.e64 and the same syslinux.cfg: one image boots either way.
#
# The initramfs's /init (static busybox) loads the virtio/ATA/SCSI/CD-ROM/isofs/
# vfat/ACPI-button modules and, on the serial console (ttyS0):
#
#   KOVA-TEST-IMAGE-BOOTED             as soon as init runs
#   KOVA-SEED: <dev> <fstype>          the NoCloud seed found (ISO9660 label
#                                      "cidata", or vfat label "CIDATA"), or
#   KOVA-SEED: none
#   KOVA-HOSTNAME: <local-hostname>    (if meta-data has one)
#   KOVA-INSTANCE-ID: <instance-id>
#   KOVA-USERDATA-BEGIN / user-data / KOVA-USERDATA-END
#   KOVA-READY                         acpid is listening: `virsh shutdown` works
#   KOVA-GUEST-AGENT: started          the QEMU guest agent (Debian's qemu-ga,
#                                      package qemu-guest-agent, with the shared
#                                      libraries it needs) runs on the virtio-serial
#                                      channel org.qemu.guest_agent.0; or
#   KOVA-GUEST-AGENT: off              the user-data has a line
#                                      "kova-guest-agent: off" (a guest whose
#                                      channel has no agent), or
#   KOVA-GUEST-AGENT: failed <why>
#   KOVA-FSFREEZE: freeze|thaw         later, from the agent's fsfreeze hook, when
#                                      the host freezes/thaws the guest's file
#                                      systems (guest-fsfreeze-freeze/-thaw)
#   KOVA-NETWORK-CONFIG: <nic> <mac> dhcp4=<yes|no>
#                                      if the seed has a network-config: the
#                                      NIC whose MAC it names (or "none")
#   KOVA-DHCP: <nic> <addr/prefix>     later, when that NIC (without a
#                                      network-config: eth0) got a DHCP lease;
#                                      the request carries the hostname
#   KOVA-SHELL: ttyS0                  then a shell (prompt "<hostname>:<dir># ")
#                                      on the serial console, and one on the VGA
#                                      console (tty1) under a banner, both
#                                      started again when they exit
#   KOVA-POWEROFF                      on the ACPI power button, then poweroff -f
#
# Output: $KOVA_CACHE/images/kova-test-<hash>.qcow2 (hash of this script, the
# kernel version, the busybox/syslinux/qemu-guest-agent package versions and
# the guest agent's files, so any change
# rebuilds) and the symlink $KOVA_CACHE/images/kova-test.qcow2 to it.  The build
# is reproducible (fixed timestamps, volume ids and disk signature) and takes a
# few seconds; an existing image is reused.  The image path is the last line on
# stdout; progress goes to stderr.
#
# Environment: KOVA_CACHE (default ~/.cache/kova), KOVA_TEST_KERNEL (kernel
# version under /boot and /lib/modules; default: the newest one present),
# KOVA_REBUILD=1 (rebuild even if the image exists).
set -euo pipefail
export LC_ALL=C

KOVA_CACHE=${KOVA_CACHE:-$HOME/.cache/kova}
OUT_DIR=$KOVA_CACHE/images
SELF=$(readlink -f "${BASH_SOURCE[0]}")
SOURCE_DATE_EPOCH=1577836800 # 2020-01-01: fixed timestamps everywhere
export SOURCE_DATE_EPOCH
t0=$(date +%s.%N)

log() { printf '[kova] test image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in busybox mcopy mattrib mkfs.vfat syslinux cpio gzip qemu-img sha256sum flock; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || [ -x "/sbin/$tool" ] ||
    die "$tool is missing (run hack/install-system-packages.sh)"
done
export PATH="$PATH:/usr/sbin:/sbin"
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || BUSYBOX=$(command -v busybox)
if ldd "$BUSYBOX" >/dev/null 2>&1; then
  die "$BUSYBOX is dynamically linked; install busybox-static"
fi
MBR_BIN=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$MBR_BIN" ] || die "$MBR_BIN is missing (package syslinux-common)"
EFI_BIN=/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi
EFI_LDLINUX=/usr/lib/syslinux/modules/efi64/ldlinux.e64
[ -f "$EFI_BIN" ] || die "$EFI_BIN is missing (package syslinux-efi)"
[ -f "$EFI_LDLINUX" ] || die "$EFI_LDLINUX is missing (package syslinux-common)"
QEMU_GA=/usr/sbin/qemu-ga
[ -x "$QEMU_GA" ] || die "$QEMU_GA is missing (package qemu-guest-agent)"
# The guest agent's shared libraries and dynamic loader, as ldd resolves them.
QGA_LIBS=$(ldd "$QEMU_GA" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
[ -n "$QGA_LIBS" ] || die "ldd found no libraries for $QEMU_GA"

# --- kernel ----------------------------------------------------------------
if [ -n "${KOVA_TEST_KERNEL:-}" ]; then
  KVER=$KOVA_TEST_KERNEL
else
  KVER=""
  for k in $(ls /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V); do
    [ -f "/lib/modules/$k/modules.dep" ] && KVER=$k
  done
fi
[ -n "$KVER" ] || die "no kernel in /boot with modules in /lib/modules (package linux-image-amd64)"
KERNEL=/boot/vmlinuz-$KVER
MODDIR=/lib/modules/$KVER
[ -r "$KERNEL" ] || die "$KERNEL is missing or unreadable"
[ -f "$MODDIR/modules.dep" ] || die "$MODDIR/modules.dep is missing"

pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo unknown; }
HASH=$( {
  cat "$SELF"
  echo "kernel=$KVER $(stat -c %s "$KERNEL")"
  echo "busybox=$(pkgver busybox-static) syslinux=$(pkgver syslinux) $(pkgver syslinux-common)" \
    "$(pkgver syslinux-efi) qemu-guest-agent=$(pkgver qemu-guest-agent)"
  # shellcheck disable=SC2086
  sha256sum "$QEMU_GA" $(for l in $QGA_LIBS; do readlink -f "$l"; done)
} | sha256sum | cut -c1-16)
IMAGE=$OUT_DIR/kova-test-$HASH.qcow2
LINK=$OUT_DIR/kova-test.qcow2

mkdir -p "$OUT_DIR"
exec 9>"$OUT_DIR/.build.lock"
flock 9

link_image() {
  if [ "$(readlink "$LINK" 2>/dev/null)" != "$(basename "$IMAGE")" ]; then
    ln -sfn "$(basename "$IMAGE")" "$LINK.tmp.$$"
    mv -Tf "$LINK.tmp.$$" "$LINK"
  fi
}

if [ -s "$IMAGE" ] && [ "${KOVA_REBUILD:-0}" != 1 ]; then
  link_image
  log "up to date: $IMAGE (kernel $KVER)"
  echo "$IMAGE"
  exit 0
fi

log "building $(basename "$IMAGE") (kernel $KVER)"
WORK=$(mktemp -d "$OUT_DIR/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- initramfs ---------------------------------------------------------------
ROOT=$WORK/initramfs
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,etc/acpi/PWRF,proc,sys,dev,tmp,run,mnt/seed,var/log,var/run,"lib/modules/$KVER"}
cp "$BUSYBOX" "$ROOT/bin/busybox"

# Modules, each after its dependencies (modules.dep lists them transitively).
# Storage and the power button load before the seed is read; the NIC drivers
# (whose probing is slow under emulation) only after KOVA-READY.
EARLY=(
  virtio_pci virtio_blk virtio_scsi
  ata_piix ahci sr_mod cdrom isofs
  vfat nls_cp437 nls_ascii nls_utf8 nls_iso8859_1
  button evdev
)
LATE=(virtio_net e1000 8139cp 8139too)
AGENT=(virtio_console)
declare -A MODPATH=() SEEN=()
while read -r name path; do
  MODPATH[$name]=$path
done < <(awk -F: '{ n = $1; sub(/.*\//, "", n); sub(/\.ko.*/, "", n); gsub(/-/, "_", n); print n, $1 }' "$MODDIR/modules.dep")
builtin_mod() { grep -qE "/${1//_/[-_]}\.ko\$" "$MODDIR/modules.builtin" 2>/dev/null; }
ORDER=()
visit() {
  local name=${1//-/_} path dep deps
  [ -n "${SEEN[$name]:-}" ] && return 0
  SEEN[$name]=1
  path=${MODPATH[$name]:-}
  if [ -z "$path" ]; then
    builtin_mod "$name" && return 0
    log "module $name not found in $MODDIR, skipped"
    return 0
  fi
  deps=$(awk -F: -v p="$path" '$1 == p { print $2; exit }' "$MODDIR/modules.dep")
  for dep in $deps; do
    dep=$(basename "$dep"); visit "${dep%%.ko*}"
  done
  ORDER+=("$path")
}
add_modules() { # list file, module names...
  local list=$1 path dest; shift
  ORDER=()
  for m in "$@"; do visit "$m"; done
  : >"$list"
  for path in "${ORDER[@]}"; do
    dest=$ROOT/lib/modules/$KVER/$(basename "${path%%.ko*}").ko
    case "$path" in
      *.ko) cp "$MODDIR/$path" "$dest" ;;
      *.ko.xz) xz -dc "$MODDIR/$path" >"$dest" ;;
      *.ko.zst) zstd -qdc "$MODDIR/$path" >"$dest" ;;
      *.ko.gz) gzip -dc "$MODDIR/$path" >"$dest" ;;
      *) die "unknown module format: $path" ;;
    esac
    echo "/lib/modules/$KVER/$(basename "$dest")" >>"$list"
  done
}
add_modules "$ROOT/etc/modules.early" "${EARLY[@]}"
add_modules "$ROOT/etc/modules.late" "${LATE[@]}"
add_modules "$ROOT/etc/modules.agent" "${AGENT[@]}"

# The QEMU guest agent: Debian's binary, its libraries at the paths ldd named
# (the loader's own path included) and an fsfreeze hook that says on the
# console when the host freezes and thaws the guest.
mkdir -p "$ROOT/usr/sbin" "$ROOT/etc/qemu"
cp "$QEMU_GA" "$ROOT/usr/sbin/qemu-ga"
for lib in $QGA_LIBS; do
  mkdir -p "$ROOT$(dirname "$lib")"
  cp "$(readlink -f "$lib")" "$ROOT$lib"
done
cat >"$ROOT/etc/qemu/fsfreeze-hook" <<'EOF'
#!/bin/sh
# Called by qemu-ga with "freeze" before it freezes the file systems and
# "thaw" after it thawed them.
echo "KOVA-FSFREEZE: $1" >/dev/console
exit 0
EOF
chmod 0755 "$ROOT/etc/qemu/fsfreeze-hook"
log "initramfs: busybox + $(cat "$ROOT"/etc/modules.* | wc -l) modules"

cat >"$ROOT/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo KOVA-POWEROFF >/dev/console
sync
poweroff -f
EOF
chmod 0755 "$ROOT/etc/acpi/PWRF/00000080"

cat >"$ROOT/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# udhcpc hook: configure the interface, say which address it got.
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "$router" ]; then
      for r in $router; do ip route add default via "$r" dev "$interface" && break; done
    fi
    : >/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    echo "KOVA-DHCP: $interface $ip/${mask:-24}" >/dev/console
    ;;
esac
exit 0
EOF
chmod 0755 "$ROOT/etc/udhcpc.script"

cat >"$ROOT/init" <<'EOF'
#!/bin/busybox sh
# Kova test image init (PID 1). See hack/build-test-image.sh.
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run
exec </dev/console >/dev/console 2>&1
echo KOVA-TEST-IMAGE-BOOTED
echo 1 >/proc/sys/kernel/printk

for m in $(cat /etc/modules.early); do insmod "$m" 2>/dev/null; done
hostname kova-test

# The volume label of an ISO 9660 file system: 32 bytes at offset 32808 (the
# primary volume descriptor is sector 16, "CD001" at offset 1, label at 40).
iso_label() {
  [ "$(dd if="$1" bs=1 skip=32769 count=5 2>/dev/null)" = CD001 ] || return 1
  dd if="$1" bs=1 skip=32808 count=32 2>/dev/null | sed 's/ *$//'
}
# The volume label of a FAT file system (FAT12/16 at 43, FAT32 at 71).
fat_label() {
  local t
  t=$(dd if="$1" bs=1 skip=54 count=5 2>/dev/null)
  case "$t" in FAT1*) dd if="$1" bs=1 skip=43 count=11 2>/dev/null | sed 's/ *$//'; return ;; esac
  t=$(dd if="$1" bs=1 skip=82 count=5 2>/dev/null)
  case "$t" in FAT32) dd if="$1" bs=1 skip=71 count=11 2>/dev/null | sed 's/ *$//'; return ;; esac
  return 1
}
find_seed() {
  local d dev label
  for d in /sys/class/block/*; do
    dev=/dev/${d##*/}
    [ -b "$dev" ] || continue
    label=$(iso_label "$dev") && case "$label" in cidata|CIDATA) echo "$dev iso9660"; return 0 ;; esac
    label=$(fat_label "$dev") && case "$label" in cidata|CIDATA) echo "$dev vfat"; return 0 ;; esac
  done
  return 1
}

seed=""
i=0
while [ $i -lt 100 ]; do
  seed=$(find_seed) && break
  seed=""
  i=$((i + 1))
  sleep 0.1
done
if [ -n "$seed" ] && mount -t "${seed#* }" -o ro "${seed% *}" /mnt/seed; then
  echo "KOVA-SEED: $seed"
  md=/mnt/seed/meta-data
  iid=$(sed -n 's/^instance-id:[[:space:]]*//p' "$md" 2>/dev/null | tr -d "\"'\r" | head -n1)
  hn=$(sed -n 's/^local-hostname:[[:space:]]*//p' "$md" 2>/dev/null | tr -d "\"'\r" | head -n1)
  if [ -n "$hn" ]; then
    hostname "$hn"
    echo "KOVA-HOSTNAME: $hn"
  fi
  echo "KOVA-INSTANCE-ID: $iid"
  echo KOVA-USERDATA-BEGIN
  cat /mnt/seed/user-data 2>/dev/null
  # user-data may lack a final newline; keep the end marker on its own line.
  [ -z "$(tail -c1 /mnt/seed/user-data 2>/dev/null)" ] || echo
  echo KOVA-USERDATA-END
else
  echo "KOVA-SEED: none"
fi

# The ACPI power button (virsh shutdown) runs /etc/acpi/PWRF/00000080.
acpid -c /etc/acpi -l /dev/null
echo KOVA-READY

# The QEMU guest agent on its virtio-serial channel (a device node named
# after the channel, as udev would link it), unless the user-data turns it off.
if grep -qE '^[[:space:]]*kova-guest-agent:[[:space:]]*off[[:space:]]*$' /mnt/seed/user-data 2>/dev/null; then
  echo "KOVA-GUEST-AGENT: off"
else
  for m in $(cat /etc/modules.agent); do insmod "$m" 2>/dev/null; done
  port=""
  i=0
  while [ -z "$port" ] && [ $i -lt 50 ]; do
    for p in /sys/class/virtio-ports/*; do
      [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && [ -c "/dev/${p##*/}" ] &&
        port=/dev/${p##*/}
    done
    i=$((i + 1))
    [ -n "$port" ] || sleep 0.1
  done
  if [ -z "$port" ]; then
    echo "KOVA-GUEST-AGENT: failed no org.qemu.guest_agent.0 port"
  else
    mkdir -p /dev/virtio-ports
    ln -sf "$port" /dev/virtio-ports/org.qemu.guest_agent.0
    # Its state directory is on /run (a tmpfs mounted above); it writes its
    # state file there before it opens the channel.
    mkdir -p /run/qga
    qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 \
      -F/etc/qemu/fsfreeze-hook -t /run/qga </dev/null >/dev/null 2>&1 &
    qga=$!
    i=0
    while [ ! -e /run/qga/qga.state ] && [ $i -lt 50 ] && kill -0 $qga 2>/dev/null; do
      i=$((i + 1))
      sleep 0.1
    done
    if [ -e /run/qga/qga.state ] && kill -0 $qga 2>/dev/null; then
      echo "KOVA-GUEST-AGENT: started"
    else
      echo "KOVA-GUEST-AGENT: failed qemu-ga did not start"
    fi
  fi
fi

for m in $(cat /etc/modules.late); do insmod "$m" 2>/dev/null; done
ip link set lo up 2>/dev/null
# The NIC: with a network-config in the seed (what Kova's agent writes:
# version 2, one ethernet matched by macaddress, dhcp4), the interface with
# that MAC, DHCP only if dhcp4 is true; without one, eth0 if it exists.
nic=""
dhcp=yes
nc=/mnt/seed/network-config
if [ -f "$nc" ]; then
  mac=$(sed -n 's/^[[:space:]]*macaddress:[[:space:]]*//p' "$nc" | tr -d "\"'\r " | tr A-F a-f | head -n1)
  grep -qE '^[[:space:]]*dhcp4:[[:space:]]*(true|yes)[[:space:]]*$' "$nc" || dhcp=no
  for d in /sys/class/net/*; do
    if [ -n "$mac" ] && [ "$(cat "$d/address" 2>/dev/null)" = "$mac" ]; then nic=${d##*/}; fi
  done
  echo "KOVA-NETWORK-CONFIG: ${nic:-none} ${mac:-no-mac} dhcp4=$dhcp"
elif [ -e /sys/class/net/eth0 ]; then
  nic=eth0
fi
if [ -n "$nic" ] && [ "$dhcp" = yes ]; then
  ip link set "$nic" up 2>/dev/null
  # The hostname goes into the DHCP request: libvirt's lease table shows it.
  udhcpc -i "$nic" -x "hostname:$(hostname)" -s /etc/udhcpc.script -t 5 -T 2 -A 3 -b -q \
    >/dev/null 2>&1 &
fi

# Shells: one on the serial console (kubectl kova console reaches it), one
# on the VGA console (kubectl kova vnc shows it), each started again when it
# exits. The prompt is "<hostname>:<dir># ".
echo 'export PS1="\h:\w# "' >/etc/profile
shell_on() {
  while true; do
    setsid -c sh -l <"$1" >"$1" 2>&1
    sleep 1
  done
}
{
  echo
  echo "Kova test image -- host $(hostname)"
  echo "Serial console: kubectl kova console <instance>"
  echo
} >/dev/tty1 2>/dev/null
shell_on /dev/tty1 &
echo "KOVA-SHELL: ttyS0"
shell_on /dev/ttyS0 &

# Stay alive (PID 1 must not exit), reaping orphans.
while true; do
  sleep 3600 &
  wait
done
EOF
chmod 0755 "$ROOT/init"

find "$ROOT" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$ROOT" && find . -mindepth 1 | sort | cpio --quiet -o -H newc -R 0:0 --reproducible) |
  gzip -9 -n >"$WORK/initrd.img"
log "initramfs: $(( $(stat -c %s "$WORK/initrd.img") / 1024 )) KiB"

# --- boot partition ------------------------------------------------------------
cat >"$WORK/syslinux.cfg" <<'EOF'
DEFAULT kova
PROMPT 0
TIMEOUT 0
LABEL kova
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND console=ttyS0,115200n8 quiet loglevel=3 panic=-1
EOF
cp "$KERNEL" "$WORK/vmlinuz"
touch -d "@$SOURCE_DATE_EPOCH" "$WORK/syslinux.cfg" "$WORK/vmlinuz" "$WORK/initrd.img"

PART_START=2048 # sectors (1 MiB)
payload_kib=$(( ($(stat -c %s "$WORK/vmlinuz") + $(stat -c %s "$WORK/initrd.img")) / 1024 ))
PART_MIB=$(( (payload_kib / 1024 + 8) < 32 ? 32 : (payload_kib / 1024 + 8) ))
PART_SECTORS=$(( PART_MIB * 2048 ))
DISK=$WORK/disk.img
truncate -s $(( (PART_START + PART_SECTORS) * 512 )) "$DISK"

# FAT16 file system inside the image, at the partition's offset.
mkfs.vfat -F 16 -n KOVABOOT --invariant --offset "$PART_START" -h "$PART_START" \
  "$DISK" $(( PART_SECTORS / 2 )) >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -m -i "$DISK@@$(( PART_START * 512 ))" "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/syslinux.cfg" ::/
# UEFI: the removable-media boot path \EFI\BOOT\BOOTX64.EFI is syslinux's EFI
# build with the same configuration, so the one image boots with SeaBIOS and OVMF.
mkdir -p "$WORK/esp/EFI/BOOT"
cp "$EFI_BIN" "$WORK/esp/EFI/BOOT/BOOTX64.EFI"
cp "$EFI_LDLINUX" "$WORK/syslinux.cfg" "$WORK/esp/EFI/BOOT/"
find "$WORK/esp" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mcopy -s -m -i "$DISK@@$(( PART_START * 512 ))" "$WORK/esp/EFI" ::/
syslinux --offset $(( PART_START * 512 )) --install "$DISK"

# MBR: syslinux boot code, fixed disk signature, one active FAT16 (LBA) partition.
le32() { printf "\\x$(printf %02x $(($1 & 255)))\\x$(printf %02x $((($1 >> 8) & 255)))\\x$(printf %02x $((($1 >> 16) & 255)))\\x$(printf %02x $((($1 >> 24) & 255)))"; }
dd if="$MBR_BIN" of="$DISK" bs=440 count=1 conv=notrunc status=none
{
  printf 'KOVA\0\0'                      # disk signature + reserved
  printf '\x80\xfe\xff\xff\x0e\xfe\xff\xff' # active, CHS "use LBA", type 0x0e
  le32 "$PART_START"
  le32 "$PART_SECTORS"
  head -c 48 /dev/zero                     # partitions 2-4
  printf '\x55\xaa'
} | dd of="$DISK" bs=1 seek=440 conv=notrunc status=none

qemu-img convert -q -f raw -O qcow2 "$DISK" "$WORK/image.qcow2"
mv -f "$WORK/image.qcow2" "$IMAGE"
link_image
# Older builds, no longer linked, go after a day (running guests may still use
# them as backing files).
find "$OUT_DIR" -maxdepth 1 -name 'kova-test-*.qcow2' ! -name "$(basename "$IMAGE")" -mmin +1440 -delete 2>/dev/null || true
elapsed=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
log "built $IMAGE ($(( $(stat -c %s "$IMAGE") / 1024 )) KiB, sha256 $(sha256sum "$IMAGE" | cut -c1-16)) in ${elapsed}s"
echo "$IMAGE"
