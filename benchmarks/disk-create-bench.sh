#!/usr/bin/env bash
# Disk creation benchmark (benchmarks/run.sh disk-create): time until N writable disks
# (N = 1, 10, 32, 64), made at once over one already-open image, have each answered their
# first 4 KiB read over NBD on a unix socket.
#   obd: one `obd daemon` (with a state file, as packaging/obd-daemon.service runs it) that
#        already serves a read-only disk of the image (its lowers are open); each new disk
#        is one POST /v1/disks (writable, new sparse upper, NBD frontend on its own socket).
#   qsd: the peer a QEMU user would pick: one qemu-storage-daemon with the flat raw image
#        already open as node "base" and one NBD server socket; each new disk is
#        `qemu-img create -f qcow2 -b base.raw -F raw`, then QMP blockdev-add (qcow2, backing
#        = "base") and block-export-add (nbd, writable).
# The client (benchmarks/disk-create-client.py) runs one thread per disk and checks each
# first read against the image. Rounds: REPEAT (default 3) per N, median total reported.
#   benchmarks/disk-create-bench.sh [--quick]      writes benchmarks/results/disk-create-latest.md
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${REPEAT:-3}; NS=(1 10 32 64)
[ "${1:-}" = "--quick" ] && { REPEAT=1; NS=(1 64); }
swift build -c release --product obd 2>&1 | tail -1
swift build -c release --product obd-bench 2>&1 | tail -1
BIN=$(swift build -c release --show-bin-path)
W=$(mktemp -d /tmp/obd-disk-create.XXXXXX)
# PIDs in BOOT_PIDS are stopped on exit; boot_wait_for polls a readiness condition.
source tools/vm/boot-lib.sh
trap 'boot_cleanup; rm -rf "$W"' EXIT
CLIENT=benchmarks/disk-create-client.py
"$BIN/obd-bench" nbd-setup "$W" 256 > /dev/null
cat "$W/flat.raw" "$W"/l*.commit > /dev/null   # both sides read from the page cache
IMG=$W/stack-raw.json

# obd daemon, lowers opened by a read-only disk that stays for the whole run.
"$BIN/obd" daemon --socket "$W/ctl.sock" --state "$W/state.json" 2> "$W/daemon.log" &
BOOT_PIDS+=($!)
boot_wait_for 60 grep -q "daemon ready" "$W/daemon.log" || { cat "$W/daemon.log"; exit 1; }
"$BIN/obd" disk add --socket "$W/ctl.sock" base "$IMG" --frontend nbd --frontend-socket "$W/base.sock" > /dev/null
qemu-io -r -f raw -c "read 0 4k" "nbd:unix:$W/base.sock" > /dev/null

# qemu-storage-daemon with the base image open and one NBD server.
qemu-storage-daemon --chardev "socket,path=$W/qmp.sock,server=on,wait=off,id=qmp0" --monitor chardev=qmp0 \
  --blockdev "driver=file,filename=$W/flat.raw,node-name=base-file,read-only=on" \
  --blockdev driver=raw,file=base-file,node-name=base,read-only=on \
  --nbd-server "addr.type=unix,addr.path=$W/qsd-nbd.sock" 2> "$W/qsd.log" &
BOOT_PIDS+=($!)
boot_wait_for 30 test -S "$W/qsd-nbd.sock" || { cat "$W/qsd.log"; exit 1; }
boot_wait_for 30 test -S "$W/qmp.sock" || { cat "$W/qsd.log"; exit 1; }

round() { # round obd|qsd N I -> JSON line
  local d=$W/r-$1-$2-$3; mkdir -p "$d"
  if [ "$1" = obd ]; then python3 "$CLIENT" obd "$W/ctl.sock" "$IMG" "$d" "$W/flat.raw" "$2"
  else python3 "$CLIENT" qsd "$W/qmp.sock" "$W/qsd-nbd.sock" "$d" "$W/flat.raw" "$2"; fi
  rm -rf "$d"
}
median_of() { python3 -c 'import json,sys,statistics
rs=[json.loads(l) for l in sys.stdin if l.strip()]
t=sorted(rs,key=lambda r:r["total_ms"]); m=t[len(t)//2]; per=m["per_disk_ms"]
print(m["total_ms"], round(statistics.mean(per),2), round(statistics.median(per),2), max(per))'; }

# QEMU guests (TCG) elsewhere on the host take the CPUs: count them every second.
( while :; do pgrep -c -x qemu-system-x86 >> "$W/qemu-count" || true; sleep 1; done ) &
SAMPLER=$!
BOOT_PIDS+=($SAMPLER)
mkdir -p benchmarks/results
OUT=benchmarks/results/disk-create-latest.md
{
  echo "# Disk creation: N writable disks at once over one open image, until each has served its first read"
  echo
  echo "Run: $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); command: benchmarks/disk-create-bench.sh $*"
  echo
  echo "Image: obd-bench nbd-setup, 256 MiB, 3 uncompressed LSMT layers (obd) = the same disk as one flat raw file"
  echo "(qemu-storage-daemon $(qemu-storage-daemon --version | head -1 | awk '{print $3}')). Both sides have the image open before the clock starts and"
  echo "answer over NBD on unix sockets; the client (one thread per disk, benchmarks/disk-create-client.py) checks"
  echo "each 4 KiB first read against the image. obd: POST /v1/disks to one obd daemon (state file on), a new sparse upper"
  echo "and NBD socket per disk. qsd: qemu-img create -f qcow2 -b base.raw -F raw, QMP blockdev-add (backing = the open"
  echo "base node) and block-export-add on one qemu-storage-daemon. Median of $REPEAT rounds (by total); *per disk*:"
  echo "each disk's time from the round's start to its first read answered (mean / median / max over the N disks)."
  echo
  echo "| N | obd total ms | obd per disk mean / median / max ms | qsd total ms | qsd per disk mean / median / max ms | obd / qsd (total) | goal |"
  echo "|---|---|---|---|---|---|---|"
  for n in "${NS[@]}"; do
    o=$(for i in $(seq "$REPEAT"); do round obd "$n" "$i"; done | median_of)
    q=$(for i in $(seq "$REPEAT"); do round qsd "$n" "$i"; done | median_of)
    read -r ot om omd ox <<< "$o"; read -r qt qm qmd qx <<< "$q"
    goal=""; [ "$n" = 1 ] && goal="obd < 20 ms per disk"; [ "$n" = 64 ] && goal="obd < 1000 ms total"
    echo "| $n | $ot | $om / $omd / $ox | $qt | $qm / $qmd / $qx | $(python3 -c "print(f'{$ot/$qt:.2f}')") | $goal |"
  done
  echo
  kill "$SAMPLER"; wait "$SAMPLER" 2>/dev/null || true
  busy=$(awk '$1 > 0' "$W/qemu-count" | wc -l)
  if [ "$busy" -gt 0 ]; then echo "**Contended run:** a QEMU guest ran on the host during $busy of $(wc -l < "$W/qemu-count") s of the measurement."
  else echo "No QEMU guest ran on the host during the measurement ($(wc -l < "$W/qemu-count") s sampled)."; fi
  echo
  h=$(curl -sf --max-time 10 --unix-socket "$W/ctl.sock" http://obd/v1/health || echo '?')
  echo "obd daemon health after the run: $h (lowerOpens stays 1: no disk reopened the image)."
} | tee "$OUT"
echo "benchmarks: written to $OUT"
