#!/usr/bin/env bash
# The `daemon` VM test (tools/vm-test.sh daemon), run on the host: guests boot with their
# root file system on disks of ONE `obd daemon`, added through its control API (obd disk
# add) over an image whose lowers are remote (Debian minbase, obd convert, docker-registry
# on loopback; tools/vm/boot-lib.sh). Guests: tools/vm/daemon-vm.sh (boot-init.sh and
# boot-workload.sh, as the boot test) and tools/vm/guest-vhost.sh (fio).
#   tools/vm/daemon-test.sh OBD WORKDIR
#  1. vhost-user-blk (2 queues, memfd shared memory) writable disk, empty cache: the guest
#     boots read-write from it, runs the workload and writes a stamp; the registry was used;
#  2. second boot of the same disk (the daemon kept serving it; QEMU connects afresh):
#     the stamp is there;
#  3. two VMs at once, each on its own new writable disk of the same image (lowers opened
#     once: health says 1 set of lowers, 1 open), each writing its own stamp;
#  4. the same image through the daemon's NBD frontend and QEMU's NBD client: a writable
#     disk booted twice (stamp written, then seen);
#  5. each disk removed (flushed), re-added with --reopen as an NBD disk and copied out
#     with qemu-img: e2fsck -fn clean, and debugfs finds that disk's own stamp only;
#  6. restart: SIGKILL of the daemon while a guest runs fio (libaio QD16, crc32c verify)
#     on a writable vhost-user-blk disk; restarted with its state file, QEMU reconnects
#     (in-flight area handed over) and fio finishes with no error and no verify failure;
#     then SIGTERM, exit status 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
OBD=$1 BW=$2
mkdir -p "$BW"
export PATH=/usr/sbin:/sbin:$PATH
# shellcheck source=tools/vm/boot-lib.sh
source tools/vm/boot-lib.sh
trap boot_cleanup EXIT
fail() { echo "DAEMON-TEST-FAIL: $*"; exit 1; }
CTL=$BW/ctl.sock

check_boot() { # check_boot LOG: the guest's markers and the workload's output
  grep -aq '^BOOT-DONE' "$1" || fail "no BOOT-DONE in $1"
  grep -aq '^BOOT-WORKLOAD-EXIT=0 ' "$1" || fail "workload failed ($1)"
  grep -aq '^BOOT-OS Debian GNU/Linux 12 (bookworm) codename=bookworm$' "$1" || fail "os-release ($1)"
  local n; n=$(sed -n 's/^BOOT-DPKG //p' "$1")
  [ "${n:-0}" -ge 50 ] || fail "dpkg -l lists ${n:-no} packages ($1)"
  grep -aq '^BOOT-PERL 42$' "$1" || fail "perl ($1)"
  grep -aq '^BOOT-APT apt 2\.' "$1" || fail "apt-get --version ($1)"
  grep -aE '^BOOT-(STAMP|VM-SECONDS)' "$1" | sed "s|^|  $(basename "$1" .log): |"
}

# daemon_start LOG: obd daemon with the state file; returns once it is ready. Sets DPID.
daemon_start() {
  "$OBD" daemon --socket "$CTL" --state "$BW/state.json" --config "$BW/d.obd.json" 2> "$BW/$1" &
  DPID=$!
  BOOT_PIDS+=($DPID)
  boot_wait_for 120 grep -q "daemon ready" "$BW/$1" || { cat "$BW/$1"; fail "obd daemon not ready ($1)"; }
}

# disk_add ID FRONTEND [obd disk add options]: adds ID on $BW/ID.sock over the image.
disk_add() {
  local id=$1 fe=$2; shift 2
  timeout 130 "$OBD" disk add --socket "$CTL" "$id" "$BW/img.json" --frontend "$fe" --frontend-socket "$BW/$id.sock" "$@" \
    > "$BW/$id.add.json" || fail "obd disk add $id"
}
disk_remove() { timeout 130 "$OBD" disk remove --socket "$CTL" "$1" > /dev/null || fail "obd disk remove $1"; }
health() { curl -sf --max-time 10 --unix-socket "$CTL" http://obd/v1/health; }

# disk_check ID TOKEN: ID removed (flushed), its upper re-added read-write with --reopen as
# an NBD disk, copied out by qemu-img; e2fsck -fn must pass and the stamp must be TOKEN.
disk_check() {
  local id=$1 token=$2 rc=0
  disk_remove "$id"
  disk_add "$id-chk" nbd --upper "$BW/$id.upper" --reopen
  timeout 300 qemu-img convert -f raw -O raw "nbd:unix:$BW/$id-chk.sock" "$BW/$id.raw" || fail "qemu-img convert $id"
  disk_remove "$id-chk"
  timeout 300 e2fsck -fn "$BW/$id.raw" > "$BW/$id.fsck" 2>&1 || rc=$?
  [ $rc -eq 0 ] || { cat "$BW/$id.fsck"; fail "e2fsck of $id: exit $rc"; }
  local got; got=$(debugfs -R "cat /root/obd-boot-stamp" "$BW/$id.raw" 2>/dev/null)
  echo "DAEMON-DISK $id: e2fsck -fn clean, stamp ${got:-none}"
  [ "$got" = "$token" ] || fail "disk $id holds stamp '${got:-none}', not its own '$token'"
  rm -f "$BW/$id.raw"
}

echo "== image: Debian minbase -> obd convert -> docker-registry on loopback"
boot_image || fail "image"
echo "DAEMON-IMAGE $BOOT_REF: $(wc -l < "$BW/layers.txt") remote layers, $BOOT_BLOB_BYTES bytes"
boot_global d; boot_config img ro
rm -f "$BW/state.json"
daemon_start daemon1.log
T=obd-daemon-$RANDOM$RANDOM

echo "== 1. vhost-user-blk, writable disk, empty cache: cold boot"
disk_add vm1 vhost-user-blk --upper "$BW/vm1.upper" --queues 2
tools/vm/daemon-vm.sh vhost "$BW/vm1.sock" rw "obd.write=$T-1" > "$BW/vm1.log" 2>&1 || { tail -30 "$BW/vm1.log"; fail "boot 1"; }
check_boot "$BW/vm1.log"
grep -q "^BOOT-STAMP-WRITTEN $T-1$" "$BW/vm1.log" || fail "stamp not written (boot 1)"
fetches=$(boot_metric obd_registry_fetches_total); bytes=$(boot_metric obd_registry_fetch_bytes_total)
echo "DAEMON-REGISTRY $fetches fetches, $bytes bytes"
[ "$fetches" -gt 0 ] && [ "$bytes" -gt 0 ] || fail "the registry was not used"

echo "== 2. second boot of the same writable disk"
tools/vm/daemon-vm.sh vhost "$BW/vm1.sock" rw "obd.expect=$T-1" > "$BW/vm1b.log" 2>&1 || { tail -30 "$BW/vm1b.log"; fail "boot 2"; }
check_boot "$BW/vm1b.log"
grep -q "^BOOT-STAMP-READ $T-1$" "$BW/vm1b.log" || fail "stamp of boot 1 not seen"
sessions=$(timeout 30 "$OBD" disk stats --socket "$CTL" vm1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["sessions"])')
[ "$sessions" -ge 2 ] || fail "vm1: $sessions vhost-user sessions, expected 2"

echo "== 3. two VMs at once, each with its own writable disk of the same image"
disk_add vm2 vhost-user-blk --upper "$BW/vm2.upper" --queues 2
disk_add vm3 vhost-user-blk --upper "$BW/vm3.upper" --queues 2
h=$(health); echo "DAEMON-HEALTH $h"
echo "$h" | python3 -c 'import json,sys; h=json.load(sys.stdin); sys.exit(0 if h["disks"]==3 and h["lowers"]==1 and h["lowerOpens"]==1 else 1)' \
  || fail "the disks do not share one opened set of lowers"
VM_MEM=768 tools/vm/daemon-vm.sh vhost "$BW/vm2.sock" rw "obd.write=$T-2" > "$BW/vm2.log" 2>&1 & p2=$!
VM_MEM=768 tools/vm/daemon-vm.sh vhost "$BW/vm3.sock" rw "obd.write=$T-3" > "$BW/vm3.log" 2>&1 & p3=$!
wait $p2 || { tail -30 "$BW/vm2.log"; fail "boot vm2"; }
wait $p3 || { tail -30 "$BW/vm3.log"; fail "boot vm3"; }
check_boot "$BW/vm2.log"; check_boot "$BW/vm3.log"

echo "== 4. NBD frontend, QEMU's NBD client: writable disk booted twice"
disk_add vm4 nbd --upper "$BW/vm4.upper"
tools/vm/daemon-vm.sh nbd "$BW/vm4.sock" rw "obd.write=$T-4" > "$BW/vm4.log" 2>&1 || { tail -30 "$BW/vm4.log"; fail "boot vm4"; }
check_boot "$BW/vm4.log"
tools/vm/daemon-vm.sh nbd "$BW/vm4.sock" rw "obd.expect=$T-4" > "$BW/vm4b.log" 2>&1 || { tail -30 "$BW/vm4b.log"; fail "boot vm4 again"; }
check_boot "$BW/vm4b.log"
grep -q "^BOOT-STAMP-READ $T-4$" "$BW/vm4b.log" || fail "NBD: stamp of the first boot not seen"

echo "== 5. disks removed, checked offline: e2fsck -fn, each its own stamp"
for i in 1 2 3 4; do disk_check "vm$i" "$T-$i"; done

echo "== 6. SIGKILL of the daemon under guest fio (verify), restart from the state file"
disk_add vm5 vhost-user-blk --upper "$BW/vm5.upper" --queues 2
F=$BW/fio; rm -rf "$F"; mkdir -p "$F"
(VM_LOG=$BW/vm5.console VM_MEM=512 VM_EXTRA="-object memory-backend-memfd,id=mem,size=512M,share=on \
   -numa node,memdev=mem -chardev socket,id=vhc,path=$BW/vm5.sock,reconnect=1 -device vhost-user-blk-pci,chardev=vhc,num-queues=2" \
   tools/vm/run.sh tools/vm/guest-vhost.sh fio "$F" > "$BW/vm5.log" 2>&1 || true) &
vpid=$!
boot_wait_for 240 test -f "$F/phase1" || { kill "$vpid" 2>/dev/null; tail -30 "$BW/vm5.log"; fail "fio did not start"; }
kill -KILL "$DPID"; wait "$DPID" 2>/dev/null || true
daemon_start daemon2.log
boot_wait_for 60 grep -q "vm5.sock: front-end connected" "$BW/daemon2.log" || { kill "$vpid" 2>/dev/null; cat "$BW/daemon2.log"; fail "QEMU did not reconnect"; }
touch "$F/phase2"
wait "$vpid" || true
grep -aoE "GUEST-.*" "$BW/vm5.log" | sed "s/^/  fio: /" || true
grep -E "err=|verify" "$F/fio.out" 2>/dev/null | head -5 | sed "s/^/  fio: /" || true
grep -q "in-flight area .* handed over" "$BW/daemon2.log" || fail "no in-flight area handed over after the restart"
grep -q "1 disk(s) restored, 0 failed" "$BW/daemon2.log" || { cat "$BW/daemon2.log"; fail "the state file's disk was not restored"; }
grep -aq GUEST-VHOST-OK "$BW/vm5.log" || { tail -30 "$BW/vm5.log"; cat "$BW/daemon2.log"; fail "fio across the restart"; }
kill -TERM "$DPID"; rc=0; wait "$DPID" || rc=$?
[ $rc -eq 0 ] || { cat "$BW/daemon2.log"; fail "obd daemon exit status $rc after SIGTERM"; }
echo "DAEMON-TEST-OK"
