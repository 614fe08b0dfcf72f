#!/bin/busybox sh
# /init of the boot test's initramfs (tools/vm/boot-vm.sh): the root file system is
# the virtio-blk disk /dev/vda, an obd image that QEMU reads from `obd serve nbd` on the
# host. Loads the modules, mounts /dev/vda (read-only, or read-write with obd.root=rw),
# runs /workload.sh chrooted into it, prints markers on the console and powers off.
# Kernel arguments: obd.root=ro|rw, obd.write=TOKEN, obd.expect=TOKEN (for the workload).
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
up() { cut -d' ' -f1 /proc/uptime; }
echo "BOOT-INIT $(up)"
for m in $(cat /mods/order); do [ -f "/mods/$m.ko" ] && insmod "/mods/$m.ko" 2>/dev/null; done
mode=ro write= expect=
for a in $(cat /proc/cmdline); do
  case $a in
    obd.root=*) mode=${a#obd.root=} ;;
    obd.write=*) write=${a#obd.write=} ;;
    obd.expect=*) expect=${a#obd.expect=} ;;
  esac
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/vda ] || { echo "BOOT-FAIL: no /dev/vda"; poweroff -f; }
mkdir -p /newroot
opts=ro; [ "$mode" = rw ] && opts=rw
mount -t ext4 -o "$opts" /dev/vda /newroot || { echo "BOOT-FAIL: mount /dev/vda ($opts)"; poweroff -f; }
echo "BOOT-ROOT-MOUNTED $mode $(up)"
mount -t proc proc /newroot/proc; mount -t sysfs sys /newroot/sys; mount -t devtmpfs dev /newroot/dev
mount -t tmpfs tmp /newroot/run; mount -t tmpfs tmp /newroot/tmp
cp /workload.sh /newroot/run/obd-workload.sh
chroot /newroot /bin/sh /run/obd-workload.sh "$write" "$expect"
echo "BOOT-WORKLOAD-EXIT=$? $(up)"
umount /newroot/run /newroot/tmp /newroot/dev /newroot/sys /newroot/proc
sync
umount /newroot || echo "BOOT-FAIL: umount /newroot"
echo "BOOT-DONE $(up)"
poweroff -f
