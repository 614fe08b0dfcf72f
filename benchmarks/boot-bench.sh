#!/usr/bin/env bash
# Cold start of a VM whose root file system is an obd image with remote lowers
# (issue 9's showcase): a QEMU guest (TCG) boots Debian's kernel, mounts /dev/vda, a
# virtio-blk disk that QEMU's NBD client reads from `obd serve nbd` on the host, and runs
# a start-up workload from it (tools/vm/boot-workload.sh: ls -R /usr, dpkg -l, apt-get
# --version, perl, some binaries read whole). The image is Debian minbase converted by
# obd convert and pushed to docker-registry on loopback. Modes, measured in one run:
#   cold   lazy, empty cache
#   warm   the same cache again (every block the boot reads is local)
#   eager  obd pull --prefetch-all into an empty cache, then boot (pull time included)
#   record cold boot with recordTracePath recording (a trace of the boot's reads)
#   replay that trace replayed into an empty cache when the image opens, then boot
# Total = from starting obd serve nbd (or the pull) to the guest's power-off.
# Writes benchmarks/results/boot-latest.md.
#   benchmarks/boot-bench.sh            (OBD=/path/to/obd skips the build and uses that binary)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${OBD:-}" ]; then
  tools/install-deps.sh >/dev/null
  swift build -c release --product obd 2>&1 | tail -1
  OBD=$(swift build -c release --show-bin-path)/obd
fi
export PATH=/usr/sbin:/sbin:$PATH
BW=$(mktemp -d /tmp/obd-boot-bench.XXXXXX)
# shellcheck source=tools/vm/boot-lib.sh
source tools/vm/boot-lib.sh
trap 'boot_cleanup; rm -rf "$BW"' EXIT
now() { date +%s.%N; }
sub() { printf "%.2f" "$(echo "$1 - $2" | bc)"; }

boot_image
echo "image: $BOOT_REF, $(wc -l < "$BW/layers.txt") layers, $BOOT_BLOB_BYTES bytes of obd blobs (convert ${BOOT_CONVERT_SECONDS} s)" >&2

declare -A TOTAL VM WL FETCH BYTES MISS
run_boot() { # run_boot MODE NAME T0: boots NAME's export; fills the tables for MODE
  local mode=$1 name=$2 t0=$3
  VM_LOG=$BW/$mode.console tools/vm/boot-vm.sh "$BW/$name.sock" ro > "$BW/$mode.log" 2>&1 \
    || { tail -30 "$BW/$mode.log"; echo "boot-bench: $mode boot failed" >&2; exit 1; }
  local t1; t1=$(now)
  grep -q 'codename=bookworm' "$BW/$mode.log" || { echo "boot-bench: $mode: wrong os-release" >&2; exit 1; }
  TOTAL[$mode]=$(sub "$t1" "$t0")
  VM[$mode]=$(sed -n 's/^BOOT-VM-SECONDS //p' "$BW/$mode.log" | xargs printf '%.2f')
  local a b; a=$(sed -n 's/^BOOT-ROOT-MOUNTED [a-z]* //p' "$BW/$mode.log"); b=$(sed -n 's/^BOOT-WL-END //p' "$BW/$mode.log")
  WL[$mode]=$(sub "$b" "$a")
  FETCH[$mode]=$(boot_metric obd_registry_fetches_total)
  BYTES[$mode]=$(boot_metric obd_registry_fetch_bytes_total)
  MISS[$mode]=$(boot_metric obd_cache_misses_total)
  echo "$mode: total ${TOTAL[$mode]} s, VM ${VM[$mode]} s, root mounted -> workload done ${WL[$mode]} s, ${FETCH[$mode]} fetches, ${BYTES[$mode]} bytes" >&2
}

# cold, then warm on the same cache
boot_global cold; boot_config cold ro
t0=$(now); boot_serve cold --read-only; run_boot cold cold "$t0"; boot_stop_server
t0=$(now); boot_serve cold --read-only; run_boot warm cold "$t0"; boot_stop_server
# eager: the whole image first
boot_global eager; boot_config eager ro
t0=$(now)
timeout 300 "$OBD" pull --prefetch-all --plain-http --config "$BW/eager.obd.json" "$BOOT_REF" > "$BW/pull.log" 2>&1 || { cat "$BW/pull.log"; exit 1; }
PULL=$(sub "$(now)" "$t0")
boot_serve eager --read-only; run_boot eager eager "$t0"; boot_stop_server
# trace: record during a cold boot, replay into an empty cache
boot_global rec; boot_config rec ro
"$OBD" trace record "$BW/rec.json" --trace "$BW/boot.trace" > /dev/null
t0=$(now); boot_serve rec --read-only; run_boot record rec "$t0"
timeout 90 "$OBD" trace stop "$BW/rec.json" --timeout 60 > "$BW/trace-stop.log"; boot_stop_server
TRACE=$(cat "$BW/trace-stop.log")
boot_global rep; boot_config rep ro "\"recordTracePath\":\"$BW/boot.trace\""
t0=$(now); boot_serve rep --read-only; run_boot replay rep "$t0"; boot_stop_server

ratio() { printf "%.2f" "$(echo "scale=4; $1 / $2" | bc)"; }
out=benchmarks/results/boot-latest.md
{
  echo "# VM boot from an obd image with remote lowers"
  echo
  echo "Run: $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); command: benchmarks/boot-bench.sh"
  echo
  echo "Debian bookworm minbase converted by obd convert (2 LZ4 ZFile layers, $BOOT_BLOB_BYTES bytes) in docker-registry on"
  echo "127.0.0.1 (no added latency); QEMU TCG guest, 2 vCPUs, root file system /dev/vda = QEMU's NBD client on"
  echo "\`obd serve nbd --read-only\` (unix socket). One run each, seconds. *total*: from starting obd serve nbd (eager:"
  echo "the pull) to the guest's power-off; *VM*: QEMU start to exit (kernel boot under TCG included, ~5 s);"
  echo "*workload*: guest uptime from mounting / to the workload's end. Counters from obd's Prometheus endpoint"
  echo "during the boot (replay: prefetch included)."
  echo
  echo "| mode | total | VM | workload | registry requests | bytes fetched | cache misses | total / cold | total / warm |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for m in cold warm eager record replay; do
    echo "| $m | ${TOTAL[$m]} | ${VM[$m]} | ${WL[$m]} | ${FETCH[$m]} | ${BYTES[$m]} | ${MISS[$m]} | $(ratio "${TOTAL[$m]}" "${TOTAL[cold]}") | $(ratio "${TOTAL[$m]}" "${TOTAL[warm]}") |"
  done
  echo
  echo "eager: obd pull --prefetch-all took $PULL s of its total. Trace: $TRACE"
  echo
  echo "Ratios: eager / cold $(ratio "${TOTAL[eager]}" "${TOTAL[cold]}"), replay / cold $(ratio "${TOTAL[replay]}" "${TOTAL[cold]}"), replay / warm $(ratio "${TOTAL[replay]}" "${TOTAL[warm]}"), cold / warm $(ratio "${TOTAL[cold]}" "${TOTAL[warm]}")."
} | tee "$out"
