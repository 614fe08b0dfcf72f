#!/usr/bin/env bash
# Boots the boot test's guest (tools/vm/boot-vm.sh) with its disk from a disk of
# `obd daemon` (tools/vm/daemon-test.sh):
#   vhost: QEMU's vhost-user-blk-pci (2 queues, shared memfd guest memory, reconnect=1)
#          on the disk's vhost-user socket;
#   nbd:   QEMU's NBD client on the disk's NBD unix socket, as virtio-blk.
#
#   tools/vm/daemon-vm.sh vhost|nbd SOCKET ro|rw [KERNEL-ARGS...]   (e.g. obd.write=TOKEN)
#
# Output, exit status and environment as tools/vm/boot-vm.sh.
set -euo pipefail
usage="usage: tools/vm/daemon-vm.sh vhost|nbd SOCKET ro|rw [KERNEL-ARGS...]"
kind=${1:?$usage}
case $kind in vhost|nbd) ;; *) echo "$usage" >&2; exit 2 ;; esac
shift
VM_DISK=$kind exec "$(dirname "$(readlink -f "$0")")/boot-vm.sh" "$@"
