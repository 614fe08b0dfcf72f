#!/usr/bin/env bash
# Guest block I/O benchmark (benchmarks/run.sh vhost): fio inside ONE QEMU guest (TCG,
# 2 vCPUs) on three disks that hold the same image, measured in the same run:
#   obd vhost-user-blk: a read-only disk of `obd daemon` (3 uncompressed LSMT layers), 2 queues;
#   qsd vhost-user-blk: qemu-storage-daemon --export type=vhost-user-blk of the same disk as
#                       one flat raw file, 2 queues;
#   obd NBD:            a read-only NBD disk of the same daemon through QEMU's NBD client
#                       (virtio-blk-pci in the guest).
# Points: 4 KiB random read QD1 and QD32 and 1 MiB sequential read (QD4), libaio, O_DIRECT,
# RUNTIME s each (default 10, after 2 s of ramp), interleaved disk by disk.
#   benchmarks/vhost-bench.sh [--quick]     writes benchmarks/results/vhost-latest.md
# TCG: the guest's CPUs are emulated and share the host's 2 cores with the back-ends, so
# absolute figures are far below native ones; the ratios are what the table is for.
set -euo pipefail
cd "$(dirname "$0")/.."
RT=${RUNTIME:-10}; MIB=1024
[ "${1:-}" = "--quick" ] && { RT=3; MIB=256; }
swift build -c release --product obd 2>&1 | tail -1
swift build -c release --product obd-bench 2>&1 | tail -1
BIN=$(swift build -c release --show-bin-path)
OBD=${OBD_BIN:-$BIN/obd}   # OBD_BIN: another obd binary (e.g. an A/B comparison)
W=$(mktemp -d /tmp/obd-vhost-bench.XXXXXX)
# PIDs in BOOT_PIDS are stopped on exit; boot_wait_for polls a readiness condition.
source tools/vm/boot-lib.sh
trap 'boot_cleanup; rm -rf "$W"' EXIT
for _ in $(seq 600); do pgrep -f qemu-system-x86_64 > /dev/null || break; sleep 1; done   # one TCG guest at a time
"$BIN/obd-bench" nbd-setup "$W" "$MIB" > /dev/null
cat "$W/flat.raw" "$W"/l*.commit > /dev/null   # both sides read from the page cache

"$OBD" daemon --socket "$W/ctl.sock" 2> "$W/daemon.log" &
BOOT_PIDS+=($!)
boot_wait_for 60 grep -q "daemon ready" "$W/daemon.log" || { cat "$W/daemon.log"; exit 1; }
"$OBD" disk add --socket "$W/ctl.sock" bench "$W/stack-raw.json" --frontend vhost-user-blk --frontend-socket "$W/obd.sock" --queues 2 > /dev/null
"$OBD" disk add --socket "$W/ctl.sock" bench-nbd "$W/stack-raw.json" --frontend nbd --frontend-socket "$W/obd-nbd.sock" > /dev/null
qemu-storage-daemon --blockdev "driver=file,filename=$W/flat.raw,node-name=f,read-only=on" \
  --export "type=vhost-user-blk,id=e0,node-name=f,addr.type=unix,addr.path=$W/qsd.sock,num-queues=2,writable=off" 2> "$W/qsd.log" &
BOOT_PIDS+=($!)
boot_wait_for 30 test -S "$W/qsd.sock" || { cat "$W/qsd.log"; exit 1; }

mkdir -p "$W/out"
MEM=1024
# Other TCG guests on the host while ours runs make the figures meaningless: count them
# every second (ours is one qemu-system-x86 process) and say so in the results.
( while :; do pgrep -c -x qemu-system-x86 >> "$W/qemu-count" || true; sleep 1; done ) &
SAMPLER=$!
BOOT_PIDS+=($SAMPLER)
VM_TIMEOUT=900 VM_MEM=$MEM VM_LOG=$W/console.log VM_EXTRA="-object memory-backend-memfd,id=mem,size=${MEM}M,share=on -numa node,memdev=mem \
  -chardev socket,id=c0,path=$W/obd.sock -device vhost-user-blk-pci,chardev=c0,num-queues=2,addr=0x10 \
  -chardev socket,id=c1,path=$W/qsd.sock -device vhost-user-blk-pci,chardev=c1,num-queues=2,addr=0x11 \
  -drive file=nbd:unix:$W/obd-nbd.sock,if=none,id=n0,format=raw,readonly=on,cache=none -device virtio-blk-pci,drive=n0,addr=0x12" \
  tools/vm/run.sh benchmarks/vhost-guest.sh "$W/out" "$RT" > "$W/guest.out" 2>&1 || true
kill "$SAMPLER"; wait "$SAMPLER" 2>/dev/null || true
CONTENDED=$(awk '$1 > 1' "$W/qemu-count" | wc -l); SAMPLES=$(wc -l < "$W/qemu-count")
grep -a "GUEST-BENCH-OK" "$W/guest.out" > /dev/null || { tail -40 "$W/guest.out"; tail -20 "$W/daemon.log" "$W/qsd.log"; echo "vhost-bench: the guest failed"; exit 1; }

mkdir -p benchmarks/results
OUT=benchmarks/results/vhost-latest.md
{
  echo "# Guest block I/O: obd vhost-user-blk vs qemu-storage-daemon vhost-user-blk vs obd NBD (QEMU's NBD client)"
  echo
  echo "Run: $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); command: benchmarks/vhost-bench.sh $*"
  echo
  echo "One QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}') guest, TCG (no KVM here), 2 vCPUs, ${MEM} MiB shared memfd memory, with three disks holding the"
  echo "same ${MIB} MiB image: obd daemon vhost-user-blk (3 uncompressed LSMT layers, 2 queues); qemu-storage-daemon"
  echo "--export type=vhost-user-blk of the same disk as a flat raw file (2 queues); the daemon's NBD frontend through"
  echo "QEMU's NBD client (virtio-blk-pci). Guest fio: libaio, O_DIRECT, ${RT} s per point after 2 s of ramp,"
  echo "disks interleaved per point. Image files in the host page cache. Under TCG the guest's emulated CPUs and the"
  echo "back-ends share 2 host cores: absolute figures are far below native ones, compare the ratios."
  echo
  echo "| measure | obd vhost-user-blk | qsd vhost-user-blk | obd NBD (QEMU client) | obd vhost / qsd | obd vhost / obd NBD | goal |"
  echo "|---|---|---|---|---|---|---|"
  python3 - "$W/out" <<'PY'
import json, sys
d = sys.argv[1]
def val(name, point):
    r = json.load(open(f"{d}/{name}-{point}.json"))["jobs"][0]["read"]
    return r["iops"] if point != "seq" else r["bw_bytes"] / 1e6
for point, label in (("qd1", "4 KiB random read IOPS, QD1"), ("qd32", "4 KiB random read IOPS, QD32"), ("seq", "1 MiB sequential read MB/s, QD4")):
    o, q, n = (val(x, point) for x in ("obd", "qsd", "nbd"))
    print(f"| {label} | {o:.0f} | {q:.0f} | {n:.0f} | {o/q:.2f} | {o/n:.2f} | >= 1.0 vs qsd, > 1.0 vs NBD |")
PY
  echo
  if [ "$CONTENDED" -gt 0 ]; then
    echo "**Contended run:** another QEMU guest ran on the host during $CONTENDED of $SAMPLES s of this guest: do not trust these figures."
  else
    echo "No other QEMU guest ran on the host during this guest ($SAMPLES s sampled)."
  fi
  echo
  grep -ao "GUEST-DISK.*" "$W/guest.out" | tr -d "\r" | sed "s/^/    /"
} | tee "$OUT"
echo "benchmarks: written to $OUT"
