#!/usr/bin/env bash
# Runs a shell script inside a QEMU guest (TCG) booted with Debian's kernel, with the
# host's root file system shared over 9p: the guest chroots into it, so it runs the
# binaries just built on the host and sees the host's files (writes land on the host).
#
#   tools/vm/run.sh GUEST-SCRIPT [ARGS...]      exit status = the script's
#
# Environment: VM_TIMEOUT (s, default 600), VM_MEM (MiB, 2048), VM_EXTRA (more qemu
# arguments, e.g. a -drive), VM_LOG (console log path; default a temp file).
# The guest loads no module by itself: scripts modprobe what they use (nbd, ext4,
# target_core_user, tcm_loop, sd_mod, virtio_blk). Its loopback is up; anything a
# guest script talks to must run inside the guest on 127.0.0.1.
set -euo pipefail
script=$(readlink -f "${1:?usage: tools/vm/run.sh GUEST-SCRIPT [ARGS...]}")
shift
kver=$(ls /lib/modules | grep -E 'amd64$' | sort -V | tail -1 || true)
if [ -z "$kver" ] || [ ! -f "/boot/vmlinuz-$kver" ]; then
  echo "vm/run.sh: no Debian kernel found (tools/install-deps.sh installs linux-image-amd64)" >&2
  exit 2
fi
work=$(mktemp -d /tmp/obd-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/initrd/{bin,proc,sys,dev,mnt,mods}
cp /bin/busybox "$work/initrd/bin/"
mods="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p"
for m in $mods; do
  f=$(find "/lib/modules/$kver" -name "$m.ko*" | head -1)
  [ -n "$f" ] || continue   # built in
  case "$f" in
    *.ko.xz) xz -dc "$f" > "$work/initrd/mods/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" > "$work/initrd/mods/$m.ko" ;;
    *) cp "$f" "$work/initrd/mods/$m.ko" ;;
  esac
done
echo "$mods" > "$work/initrd/mods/order"
# The command line to run in the chroot, quoted for sh.
cmd="sh $(printf '%q' "$script")"
for a in "$@"; do cmd="$cmd $(printf '%q' "$a")"; done
printf '%s\n' "$cmd" > "$work/initrd/cmd"
cat > "$work/initrd/init" <<'EOF2'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do [ -f /mods/$m.ko ] && insmod /mods/$m.ko 2>/dev/null; done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 hostroot /mnt || { echo GUEST-9P-FAILED; poweroff -f; }
mount -t proc proc /mnt/proc; mount -t sysfs sys /mnt/sys; mount -t devtmpfs dev /mnt/dev
mount -t tmpfs tmp /mnt/run 2>/dev/null
chroot /mnt /bin/sh -c "ip link set lo up; modprobe configfs 2>/dev/null; mount -t configfs none /sys/kernel/config 2>/dev/null; $(cat /cmd)"
echo "GUEST-EXIT=$?"
poweroff -f
EOF2
chmod +x "$work/initrd/init"
(cd "$work/initrd" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > ../initrd.gz)
log=${VM_LOG:-$work/console.log}
# shellcheck disable=SC2086
timeout "${VM_TIMEOUT:-600}" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m "${VM_MEM:-2048}" -smp 2 \
  -nographic -no-reboot -kernel "/boot/vmlinuz-$kver" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 quiet panic=-1" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,id=hostroot,multidevs=remap \
  ${VM_EXTRA:-} > "$log" 2>&1 || true
grep -v -E '^\[ *[0-9]+\.[0-9]+\]' "$log" | tr -d '\r' | grep -v '^$' || true
code=$(grep -ao 'GUEST-EXIT=[0-9]*' "$log" | tail -1 | cut -d= -f2)
exit "${code:-99}"
