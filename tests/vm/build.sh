#!/bin/sh
# Builds tapir's VM test guest from Debian packages only, into a cache:
#
#   kernel      /boot/vmlinuz-RELEASE from linux-image-amd64
#   initramfs   cpio newc + gzip: busybox-static with a link per applet, the
#               virtio-net modules of that same RELEASE (decompressed, so
#               busybox insmod needs no xz/zstd support), the /init script and
#               helpers from tests/vm/guest/, and optionally /etc/tapirvm.conf
#
# Usage: tests/vm/build.sh [--conf FILE] [--kernel RELEASE] [--cache DIR]
#
#   --conf FILE       bake FILE in as /etc/tapirvm.conf (KEY=VALUE lines, see
#                     tests/vm/guest/init; the kernel command line overrides them)
#   --kernel RELEASE  kernel release to use (default: the newest /boot/vmlinuz-*
#                     that has the virtio-net modules; env TAPIR_VM_KERNEL)
#   --cache DIR       cache root (default: $TAPIR_VM_CACHE or /tmp/tapir-vm-cache)
#
# Prints the guest's directory as the last line of standard output; it holds
# `vmlinuz`, `initramfs.gz` and `release`. The directory is named after a hash
# of every input (kernel, modules, busybox, guest scripts, conf, this script),
# so a guest is rebuilt only when an input changes; a finished directory is
# never modified, and a build goes to a temporary directory renamed into place.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
guest_src="$here/guest"
cache="${TAPIR_VM_CACHE:-/tmp/tapir-vm-cache}"
release="${TAPIR_VM_KERNEL:-}"
conf=
# virtio-net and what it depends on, in load order.
modules="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover \
net_failover virtio_net"

die() {
  echo "build.sh: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --conf)
      [ $# -ge 2 ] || die "--conf needs a file"
      conf=$2
      [ -r "$conf" ] || die "--conf: cannot read $conf"
      shift 2
      ;;
    --kernel)
      [ $# -ge 2 ] || die "--kernel needs a release"
      release=$2
      shift 2
      ;;
    --cache)
      [ $# -ge 2 ] || die "--cache needs a directory"
      cache=$2
      shift 2
      ;;
    -h | --help)
      sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown option $1" ;;
  esac
done

# find_module RELEASE NAME: path of NAME.ko, NAME.ko.xz or NAME.ko.zst.
find_module() {
  find "/lib/modules/$1/kernel" \( -name "$2.ko" -o -name "$2.ko.xz" -o -name "$2.ko.zst" \
    -o -name "$2.ko.gz" \) -print 2>/dev/null | head -n 1
}

has_modules() {
  for m in $modules; do
    [ -n "$(find_module "$1" "$m")" ] || return 1
  done
}

if [ -z "$release" ]; then
  for k in $(ls /boot/vmlinuz-* 2>/dev/null | sort -rV); do
    r=${k#/boot/vmlinuz-}
    if has_modules "$r"; then
      release=$r
      break
    fi
  done
  [ -n "$release" ] || die "no /boot/vmlinuz-* with virtio-net modules; install linux-image-amd64"
fi
kernel="/boot/vmlinuz-$release"
[ -r "$kernel" ] || die "cannot read $kernel (install linux-image-amd64)"
has_modules "$release" || die "/lib/modules/$release lacks the virtio-net modules"

busybox=/bin/busybox
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" ||
  die "busybox-static is not installed"
[ -x "$busybox" ] || die "$busybox is missing"
if ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is dynamically linked; the guest needs busybox-static"
fi

module_paths=
for m in $modules; do
  module_paths="$module_paths $(find_module "$release" "$m")"
done
conf_files=
[ -n "$conf" ] && conf_files=$conf

# The cache key: this script, every input file's contents, and the release.
# shellcheck disable=SC2086 # word splitting of the path lists is wanted
key=$(
  {
    echo "release $release"
    echo "modules $modules"
    sha256sum "$0" "$kernel" "$busybox" $module_paths "$guest_src"/* $conf_files |
      sed 's/ .*//'
  } | sha256sum | cut -c1-16
)
out="$cache/$release-$key"
if [ -r "$out/initramfs.gz" ] && [ -r "$out/vmlinuz" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/.build-XXXXXX")
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT INT TERM
root="$work/root"
mkdir -p "$root/bin" "$root/dev" "$root/etc" "$root/lib/modules" "$root/proc" "$root/sys" \
  "$root/tmp" "$root/run"

cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
ln -s bin "$root/sbin"

for m in $modules; do
  src=$(find_module "$release" "$m")
  case "$src" in
    *.ko.xz) xz -dc "$src" >"$root/lib/modules/$m.ko" ;;
    *.ko.zst)
      command -v zstd >/dev/null || die "$src is zstd-compressed: install zstd"
      zstd -qdc "$src" >"$root/lib/modules/$m.ko"
      ;;
    *.ko.gz) gzip -dc "$src" >"$root/lib/modules/$m.ko" ;;
    *) cp "$src" "$root/lib/modules/$m.ko" ;;
  esac
  echo "$m" >>"$root/lib/modules/order"
done

cp "$guest_src/init" "$root/init"
cp "$guest_src/dhcp-event" "$root/bin/tapirvm-dhcp-event"
cp "$guest_src/inbound" "$root/bin/tapirvm-inbound"
chmod 755 "$root/init" "$root/bin/tapirvm-dhcp-event" "$root/bin/tapirvm-inbound"
[ -n "$conf" ] && cp "$conf" "$root/etc/tapirvm.conf"
# The kernel opens /dev/console before /init runs; its built-in initramfs
# usually provides the node, this one does too when the builder may mknod.
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true

# busybox's own cpio, so the build needs nothing beyond busybox-static here.
(cd "$root" && find . | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0) \
  >"$work/initramfs.cpio" 2>"$work/cpio.log" || die "cpio: $(cat "$work/cpio.log")"
gzip -6 <"$work/initramfs.cpio" >"$work/initramfs.gz"
rm -f "$work/initramfs.cpio" "$work/cpio.log"
cp "$kernel" "$work/vmlinuz"
echo "$release" >"$work/release"
rm -rf "$root"

# Guests of older inputs are left for concurrent runs, and pruned after a week.
find "$cache" -mindepth 1 -maxdepth 1 -type d -mtime +7 -exec rm -rf {} + 2>/dev/null || true
if ! mv -T "$work" "$out" 2>/dev/null; then
  # Another build of the same inputs finished first; its result is the same.
  [ -r "$out/initramfs.gz" ] || die "cannot move the guest into $out"
fi
trap - EXIT INT TERM
rm -rf "$work"
echo "$out"
