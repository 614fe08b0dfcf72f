#!/usr/bin/env bash
# NBD export benchmark: obd serve nbd vs qemu-nbd serving the same disk (qemu-nbd gets
# it as one flat raw file), measured in the same run with the same client: fio's nbd
# engine over a unix socket. 4 KiB random-read IOPS at queue depth 1 and 32, and
# sequential 1 MiB read MB/s, for an uncompressed 3-layer stack and an LZ4 ZFile stack.
#   benchmarks/nbd-bench.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${1:-}
MIB=1024; RUNTIME=10
[ "$QUICK" = "--quick" ] && { MIB=256; RUNTIME=3; }
tools/install-deps.sh >/dev/null
swift build -c release --product obd 2>&1 | tail -1
swift build -c release --product obd-bench 2>&1 | tail -1
BIN=$(swift build -c release --show-bin-path)
W=/tmp/obd-nbd-bench
mkdir -p "$W"
[ -f "$W/flat.raw" ] && [ "$(stat -c %s "$W/flat.raw")" = $((MIB << 20)) ] || "$BIN/obd-bench" nbd-setup "$W" "$MIB"
cat "$W/flat.raw" "$W"/l*.commit "$W"/l*.lz4.zfile > /dev/null   # warm the page cache for both sides

PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start_obd() { # config socket
  rm -f "$2"
  "$BIN/obd" serve nbd "$1" --socket "$2" --read-only 2> "$W/obd.log" &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q serving "$W/obd.log" && return; sleep 0.1; done
  cat "$W/obd.log"; exit 1
}
start_qemu() { # socket
  rm -f "$1"
  qemu-nbd --read-only --format=raw --shared=8 --persistent --socket="$1" "$W/flat.raw" &
  PIDS+=($!)
  for _ in $(seq 100); do [ -S "$1" ] && return; sleep 0.1; done
  echo "qemu-nbd did not start"; exit 1
}
fio_run() { # socket rw bs depth -> prints IOPS and MB/s
  fio --name=b --ioengine=nbd --uri="nbd+unix:///?socket=$1" --rw="$2" --bs="$3" --iodepth="$4" \
      --size=$((MIB << 20)) --time_based --runtime="$RUNTIME" --output-format=json 2>/dev/null | sed -n '/^{/,$p' |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["jobs"][0]["read"]; print(round(r["iops"]), round(r["bw_bytes"]/1e6))'
}

start_qemu "$W/qemu.sock"
declare -A QEMU
QEMU[qd1]=$(fio_run "$W/qemu.sock" randread 4k 1 | cut -d' ' -f1)
QEMU[qd32]=$(fio_run "$W/qemu.sock" randread 4k 32 | cut -d' ' -f1)
QEMU[seq]=$(fio_run "$W/qemu.sock" read 1m 4 | cut -d' ' -f2)

echo "### NBD export: obd serve nbd vs qemu-nbd (fio nbd engine, unix socket, ${MIB} MiB disk, ${RUNTIME} s per point)"
echo
echo "| image | measure | obd | qemu-nbd (flat raw) | obd / qemu-nbd | goal |"
echo "|---|---|---|---|---|---|"
for kind in raw lz4; do
  start_obd "$W/stack-$kind.json" "$W/obd-$kind.sock"
  qd1=$(fio_run "$W/obd-$kind.sock" randread 4k 1 | cut -d' ' -f1)
  qd32=$(fio_run "$W/obd-$kind.sock" randread 4k 32 | cut -d' ' -f1)
  seq=$(fio_run "$W/obd-$kind.sock" read 1m 4 | cut -d' ' -f2)
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
  if [ $kind = raw ]; then g1=">= 1.0"; g32=">= 1.5"; gs="reported"; name="3 layers, uncompressed"; else g1=">= 0.8"; g32=">= 0.8"; gs=">= 0.8"; name="3 layers, LZ4 ZFile"; fi
  ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
  echo "| $name | 4 KiB random read IOPS, QD1 | $qd1 | ${QEMU[qd1]} | $(ratio "$qd1" "${QEMU[qd1]}") | $g1 |"
  echo "| $name | 4 KiB random read IOPS, QD32 | $qd32 | ${QEMU[qd32]} | $(ratio "$qd32" "${QEMU[qd32]}") | $g32 |"
  echo "| $name | sequential 1 MiB read MB/s (QD4) | $seq | ${QEMU[seq]} | $(ratio "$seq" "${QEMU[seq]}") | $gs |"
done
