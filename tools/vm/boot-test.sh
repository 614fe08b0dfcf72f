#!/usr/bin/env bash
# The `boot` VM test (tools/vm-test.sh boot), run on the host: a QEMU guest boots with
# its root file system on an obd image whose lowers are remote (Debian minbase, made by
# obd convert, pushed to docker-registry on loopback), served lazily by `obd serve nbd`
# over a unix socket that QEMU attaches as virtio-blk. No timing asserts.
#   tools/vm/boot-test.sh OBD WORKDIR
#  1. writable upper, empty cache: the guest mounts / read-write, runs the workload
#     (os-release, dpkg, apt, perl, binaries) and writes a stamp file; the registry
#     must have been used (metrics, cache dir);
#  2. second boot of the same upper: the stamp is there; then e2fsck -fn of the
#     exported disk passes and debugfs finds the stamp;
#  3. read-only boot recording a trace (recordTracePath, obd trace stop), which must
#     inspect clean; 4. a boot with that trace replayed into an empty cache;
#  5. a cold boot with a priority list (tools/vm/boot-priority.list: the files the
#     workload runs and reads) as recordTracePath content: the list resolves to files of
#     the image's ext4, every range is prefetched (counted) and the guest boots.
set -euo pipefail
cd "$(dirname "$0")/../.."
OBD=$1 BW=$2
mkdir -p "$BW"
export PATH=/usr/sbin:/sbin:$PATH
# shellcheck source=tools/vm/boot-lib.sh
source tools/vm/boot-lib.sh
trap boot_cleanup EXIT
fail() { echo "BOOT-TEST-FAIL: $*"; exit 1; }
TOKEN=obd-boot-$RANDOM$RANDOM

check_boot() { # check_boot LOG: the guest's markers and the workload's output
  grep -q '^BOOT-DONE' "$1" || fail "no BOOT-DONE in $1"
  grep -q '^BOOT-WORKLOAD-EXIT=0 ' "$1" || fail "workload failed ($1)"
  grep -q '^BOOT-OS Debian GNU/Linux 12 (bookworm) codename=bookworm$' "$1" || fail "os-release ($1)"
  local n; n=$(sed -n 's/^BOOT-DPKG //p' "$1")
  [ "${n:-0}" -ge 50 ] || fail "dpkg -l lists ${n:-no} packages ($1)"
  grep -q '^BOOT-PERL 42$' "$1" || fail "perl ($1)"
  grep -q '^BOOT-APT apt 2\.' "$1" || fail "apt-get --version ($1)"
  grep -E '^BOOT-(OS|DPKG|APT|STAMP|VM-SECONDS)' "$1" | sed 's/^/  /'
}

echo "== image: Debian minbase -> obd convert -> docker-registry on loopback"
boot_image || fail "image"
echo "BOOT-IMAGE $BOOT_REF: $(wc -l < "$BW/layers.txt") remote layers, $BOOT_BLOB_BYTES bytes (convert ${BOOT_CONVERT_SECONDS} s)"

echo "== 1. cold boot, writable upper, empty cache"
boot_global rw; boot_config rw upper
boot_serve rw || fail "serve rw"
VM_LOG=$BW/vm1.console tools/vm/boot-vm.sh "$BW/rw.sock" rw "obd.write=$TOKEN" > "$BW/vm1.log" 2>&1 || { tail -30 "$BW/vm1.log"; fail "boot 1"; }
check_boot "$BW/vm1.log"
grep -q "^BOOT-STAMP-WRITTEN $TOKEN$" "$BW/vm1.log" || fail "stamp not written"
fetches=$(boot_metric obd_registry_fetches_total); bytes=$(boot_metric obd_registry_fetch_bytes_total)
COLD_WAITS=$(boot_metric obd_cache_foreground_waits_total)
cache_kb=$(du -sk "$BW/rw.cache" | cut -f1)
echo "BOOT-REGISTRY $fetches fetches, $bytes bytes; cache dir ${cache_kb} KiB allocated"
[ "$fetches" -gt 0 ] && [ "$bytes" -gt 0 ] && [ "$cache_kb" -gt 1024 ] || fail "the registry was not used"
[ "$bytes" -lt "$BOOT_BLOB_BYTES" ] || echo "  (note: fetched the whole image)"
boot_stop_server || fail "obd serve nbd exit status (boot 1)"
HASH=$(sed -n 's/^BOOT-BIN //p' "$BW/vm1.log")

echo "== 2. second boot of the same upper (warm cache): the stamp survives"
boot_serve rw || fail "serve rw again"
VM_LOG=$BW/vm2.console tools/vm/boot-vm.sh "$BW/rw.sock" rw "obd.expect=$TOKEN" > "$BW/vm2.log" 2>&1 || { tail -30 "$BW/vm2.log"; fail "boot 2"; }
check_boot "$BW/vm2.log"
grep -q "^BOOT-STAMP-READ $TOKEN$" "$BW/vm2.log" || fail "stamp from boot 1 not seen"
[ "$(sed -n 's/^BOOT-BIN //p' "$BW/vm2.log")" = "$HASH" ] || fail "binaries read differently"
boot_stop_server || fail "obd serve nbd exit status (boot 2)"
timeout 300 "$OBD" export "$BW/rw.json" --config "$BW/rw.obd.json" -o "$BW/disk.raw" || fail "export"
rc=0; timeout 300 e2fsck -fn "$BW/disk.raw" > "$BW/fsck.log" 2>&1 || rc=$?
echo "e2fsck -fn exit $rc (exported disk after two read-write boots)"
[ $rc -eq 0 ] || { cat "$BW/fsck.log"; fail "e2fsck $rc"; }
[ "$(debugfs -R "cat /root/obd-boot-stamp" "$BW/disk.raw" 2>/dev/null)" = "$TOKEN" ] || fail "stamp not in the exported disk"
rm -f "$BW/disk.raw"

echo "== 3. read-only boot recording a trace"
boot_global rec; boot_config rec ro
"$OBD" trace record "$BW/rec.json" --trace "$BW/boot.trace" > /dev/null || fail "trace record"
boot_serve rec --read-only || fail "serve rec"
VM_LOG=$BW/vm3.console tools/vm/boot-vm.sh "$BW/rec.sock" ro > "$BW/vm3.log" 2>&1 || { tail -30 "$BW/vm3.log"; fail "boot 3"; }
check_boot "$BW/vm3.log"
timeout 90 "$OBD" trace stop "$BW/rec.json" --timeout 60 || fail "trace stop"
boot_stop_server || fail "obd serve nbd exit status (boot 3)"
"$OBD" trace inspect --no-records "$BW/boot.trace" > "$BW/trace.txt" || { cat "$BW/trace.txt"; fail "trace inspect"; }
sed 's/^/  /' "$BW/trace.txt" | head -8

echo "== 4. boot with the trace replayed into an empty cache"
boot_global rep; boot_config rep ro "\"recordTracePath\":\"$BW/boot.trace\""
boot_serve rep --read-only || fail "serve rep"
VM_LOG=$BW/vm4.console tools/vm/boot-vm.sh "$BW/rep.sock" ro > "$BW/vm4.log" 2>&1 || { tail -30 "$BW/vm4.log"; fail "boot 4"; }
check_boot "$BW/vm4.log"
[ "$(sed -n 's/^BOOT-BIN //p' "$BW/vm4.log")" = "$HASH" ] || fail "binaries read differently (replay)"
echo "BOOT-REPLAY $(boot_metric obd_registry_fetches_total) fetches, $(boot_metric obd_registry_fetch_bytes_total) bytes"
boot_stop_server || fail "obd serve nbd exit status (boot 4)"

echo "== 5. cold boot with a priority list"
cp tools/vm/boot-priority.list "$BW/boot.list"
"$OBD" trace inspect --no-records "$BW/boot.list" > "$BW/list.txt" || { cat "$BW/list.txt"; fail "trace inspect of the priority list"; }
grep -q '^format: priority list' "$BW/list.txt" || fail "not read as a priority list: $(cat "$BW/list.txt")"
boot_global pri; boot_config pri ro "\"recordTracePath\":\"$BW/boot.list\""
boot_serve pri --read-only || fail "serve pri"
VM_LOG=$BW/vm5.console tools/vm/boot-vm.sh "$BW/pri.sock" ro > "$BW/vm5.log" 2>&1 || { tail -30 "$BW/vm5.log"; fail "boot 5"; }
check_boot "$BW/vm5.log"
[ "$(sed -n 's/^BOOT-BIN //p' "$BW/vm5.log")" = "$HASH" ] || fail "binaries read differently (priority list)"
boot_wait_for 120 grep -q "prefetch finished" "$BW/pri.serve.log" || fail "no 'prefetch finished' 120 s after the boot: $(grep prefetch "$BW/pri.serve.log")"
plan=$(grep -m1 "priority list of" "$BW/pri.serve.log" | sed 's/.*priority list of //')
done_line=$(grep -m1 "prefetch finished" "$BW/pri.serve.log" | sed 's/.*prefetch finished: //')
echo "$done_line" | grep -q failed && fail "priority list prefetch failures: $done_line"
d=$(echo "$done_line" | sed -n 's/^\([0-9]*\) of \([0-9]*\) ranges.*/\1/p'); t=$(echo "$done_line" | sed -n 's/^\([0-9]*\) of \([0-9]*\) ranges.*/\2/p')
[ -n "$t" ] && [ "$t" -gt 0 ] && [ "$d" = "$t" ] || fail "priority list prefetch incomplete: $done_line"
echo "$plan" | grep -q ' 0 missing' || fail "priority list paths missing from the image: $plan"
pf=$(boot_metric obd_registry_fetches_total); pb=$(boot_metric obd_registry_fetch_bytes_total); pw=$(boot_metric obd_cache_foreground_waits_total)
[ "$pf" -gt 0 ] && [ "$pb" -gt 0 ] || fail "the priority list prefetched nothing"
echo "BOOT-PRIORITY list of $plan; prefetch $done_line; $pf fetches, $pb bytes; foreground network waits $pw (cold boot 1: $COLD_WAITS)"
boot_stop_server || fail "obd serve nbd exit status (boot 5)"
echo "BOOT-TEST-OK"
