#!/usr/bin/env bash
# Boots a QEMU guest (TCG) with Debian's kernel whose root file system is an obd image:
# the disk /dev/vda on SOCKET, a busybox initramfs (tools/vm/boot-init.sh) mounts it and
# runs tools/vm/boot-workload.sh chrooted into it, then powers off. No 9p, no network.
#
#   tools/vm/boot-vm.sh SOCKET ro|rw [KERNEL-ARGS...]     (e.g. obd.write=TOKEN)
#
# VM_DISK says what SOCKET is:
#   nbd (default): an NBD export (`obd serve nbd --socket`, a daemon disk's NBD socket),
#          attached by QEMU's NBD client as virtio-blk;
#   vhost: a vhost-user-blk socket, attached as vhost-user-blk-pci (2 queues, shared memfd
#          guest memory, reconnect=1).
#
# Prints the guest's console without kernel lines and "BOOT-VM-SECONDS S" (QEMU wall
# time); exits 0 when the guest printed BOOT-DONE with a workload exit status 0.
# Environment: VM_DISK (above), VM_TIMEOUT (s, default 300), VM_MEM (MiB, 1024), VM_LOG
# (console log).
set -euo pipefail
sock=${1:?usage: tools/vm/boot-vm.sh SOCKET ro|rw [KERNEL-ARGS...]}
mode=${2:?usage: tools/vm/boot-vm.sh SOCKET ro|rw [KERNEL-ARGS...]}
shift 2
here=$(dirname "$(readlink -f "$0")")
kver=$(ls /lib/modules | grep -E 'amd64$' | sort -V | tail -1 || true)
if [ -z "$kver" ] || [ ! -f "/boot/vmlinuz-$kver" ]; then
  echo "vm/boot-vm.sh: no Debian kernel found (tools/install-deps.sh installs linux-image-amd64)" >&2
  exit 2
fi
work=$(mktemp -d /tmp/obd-bootvm.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/initrd/{bin,proc,sys,dev,mods}
cp /bin/busybox "$work/initrd/bin/"
# virtio-pci, virtio-blk and ext4 with their dependencies, in load order.
order=""
for f in $(for m in virtio_pci virtio_blk crc32c_generic ext4; do modprobe -S "$kver" --show-depends "$m"; done 2>/dev/null | awk '$1 == "insmod" {print $2}'); do
  m=$(basename "$f"); m=${m%%.ko*}
  case " $order " in *" $m "*) continue ;; esac
  case "$f" in
    *.ko.xz) xz -dc "$f" > "$work/initrd/mods/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" > "$work/initrd/mods/$m.ko" ;;
    *) cp "$f" "$work/initrd/mods/$m.ko" ;;
  esac
  order="$order $m"
done
echo "$order" > "$work/initrd/mods/order"
cp "$here/boot-init.sh" "$work/initrd/init"; chmod +x "$work/initrd/init"
cp "$here/boot-workload.sh" "$work/initrd/workload.sh"
(cd "$work/initrd" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > ../initrd.gz)
mem=${VM_MEM:-1024}
case ${VM_DISK:-nbd} in
  vhost) disk=(-object "memory-backend-memfd,id=mem,size=${mem}M,share=on" -numa node,memdev=mem
               -chardev "socket,id=c0,path=$sock,reconnect=1" -device vhost-user-blk-pci,chardev=c0,num-queues=2) ;;
  nbd) drive="file=nbd:unix:$sock,format=raw,if=virtio,cache=none"
       [ "$mode" = rw ] || drive="$drive,readonly=on"
       disk=(-drive "$drive") ;;
  *) echo "vm/boot-vm.sh: VM_DISK must be nbd or vhost" >&2; exit 2 ;;
esac
log=${VM_LOG:-$work/console.log}
t0=$(date +%s.%N)
timeout "${VM_TIMEOUT:-300}" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m "$mem" -smp 2 \
  -nographic -no-reboot -kernel "/boot/vmlinuz-$kver" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 quiet panic=-1 obd.root=$mode $*" \
  "${disk[@]}" > "$log" 2>&1 || true
t1=$(date +%s.%N)
grep -a -v -E '^\[ *[0-9]+\.[0-9]+\]' "$log" | tr -d '\r' | grep -v '^$' || true
echo "BOOT-VM-SECONDS $(echo "$t1 - $t0" | bc)"
grep -aq 'BOOT-WORKLOAD-EXIT=0 ' "$log" && grep -aq 'BOOT-DONE' "$log"
