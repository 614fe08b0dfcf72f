#!/usr/bin/env bash
# Cold start of a VM whose root file system is an obd image with remote lowers
# (issue 9's showcase): a QEMU guest (TCG) boots Debian's kernel, mounts /dev/vda, a
# virtio-blk disk that QEMU's NBD client reads from `obd serve nbd` on the host, and runs
# a start-up workload from it (tools/vm/boot-workload.sh: ls -R /usr, dpkg -l, apt-get
# --version, perl, some binaries read whole). The image is Debian minbase converted by
# obd convert and pushed to docker-registry on loopback. Modes, measured in one run:
#   cold     lazy, empty cache
#   warm     the same cache again (every block the boot reads is local)
#   eager    obd pull --prefetch-all into an empty cache, then boot (pull time included)
#   record   cold boot with recordTracePath recording (a trace of the boot's reads)
#   replay   that trace replayed into an empty cache when the image opens, then boot
#   priority a priority list (tools/vm/boot-priority.list: the files the workload runs and
#            reads) as recordTracePath content, prefetched into an empty cache from open
# Total = from starting obd serve nbd (or the pull) to the guest's power-off.
# Each mode but record runs --repeat times (default 3), the fastest total is kept with its
# counters. With --latency-ms, obd reaches the registry through obd-latency-proxy (the
# tests' FaultProxy on 127.0.0.1: each request waits that long before it is forwarded,
# one connection per request), as a registry that is not on the same machine; the default
# runs every mode without and with 20 ms. Writes benchmarks/results/boot-latest.md.
#   benchmarks/boot-bench.sh [--repeat N] [--latency-ms "0 20"]
# OBD=/path/to/obd (and LATENCY_PROXY=/path/to/obd-latency-proxy) skip the build.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=3 LATENCIES="0 20"
while [ $# -gt 0 ]; do
  case $1 in
    --repeat) REPEAT=$2; shift 2 ;;
    --latency-ms) LATENCIES=$2; shift 2 ;;
    *) echo "usage: benchmarks/boot-bench.sh [--repeat N] [--latency-ms \"0 20\"]" >&2; exit 2 ;;
  esac
done
if [ -z "${OBD:-}" ]; then
  tools/install-deps.sh >/dev/null
  swift build -c release --product obd 2>&1 | tail -1
  OBD=$(swift build -c release --show-bin-path)/obd
fi
if [ -z "${LATENCY_PROXY:-}" ] && [ "$LATENCIES" != 0 ]; then
  swift build -c release --product obd-latency-proxy 2>&1 | tail -1
  LATENCY_PROXY=$(swift build -c release --show-bin-path)/obd-latency-proxy
fi
export PATH=/usr/sbin:/sbin:$PATH
BW=$(mktemp -d /tmp/obd-boot-bench.XXXXXX)
# shellcheck source=tools/vm/boot-lib.sh
source tools/vm/boot-lib.sh
trap 'boot_cleanup; rm -rf "$BW"' EXIT
now() { date +%s.%N; }
sub() { printf "%.2f" "$(echo "$1 - $2" | bc)"; }
ratio() { printf "%.2f" "$(echo "scale=4; $1 / $2" | bc)"; }
lt() { [ "$(echo "$1 < $2" | bc)" = 1 ]; }

boot_image
echo "image: $BOOT_REF, $(wc -l < "$BW/layers.txt") layers, $BOOT_BLOB_BYTES bytes of obd blobs (convert ${BOOT_CONVERT_SECONDS} s)" >&2
REG_DIRECT=$BOOT_REG REF_DIRECT=$BOOT_REF
cp tools/vm/boot-priority.list "$BW/boot.list"
MODES="cold warm eager record replay priority"

declare -A TOTAL VM WL FETCH BYTES MISS WAITS NOTE RUNS
run_boot() { # run_boot MODE NAME T0: boots NAME's export; keeps the run if it is MODE's fastest
  local mode=$1 name=$2 t0=$3
  VM_LOG=$BW/$mode.console tools/vm/boot-vm.sh "$BW/$name.sock" ro > "$BW/$mode.log" 2>&1 \
    || { tail -30 "$BW/$mode.log"; echo "boot-bench: $mode boot failed" >&2; exit 1; }
  local t1; t1=$(now)
  grep -q 'codename=bookworm' "$BW/$mode.log" || { echo "boot-bench: $mode: wrong os-release" >&2; exit 1; }
  local total; total=$(sub "$t1" "$t0")
  local a b; a=$(sed -n 's/^BOOT-ROOT-MOUNTED [a-z]* //p' "$BW/$mode.log"); b=$(sed -n 's/^BOOT-WL-END //p' "$BW/$mode.log")
  local vm wl f by m w
  vm=$(sed -n 's/^BOOT-VM-SECONDS //p' "$BW/$mode.log" | xargs printf '%.2f'); wl=$(sub "$b" "$a")
  f=$(boot_metric obd_registry_fetches_total); by=$(boot_metric obd_registry_fetch_bytes_total)
  m=$(boot_metric obd_cache_misses_total); w=$(boot_metric obd_cache_foreground_waits_total)
  echo "  $mode: total $total s, VM $vm s, workload $wl s, $f fetches, $by bytes, $w foreground network waits" >&2
  KEPT=0
  RUNS[$mode]="${RUNS[$mode]:-}${RUNS[$mode]:+ }$total"
  if [ -z "${TOTAL[$mode]:-}" ] || lt "$total" "${TOTAL[$mode]}"; then
    KEPT=1
    TOTAL[$mode]=$total VM[$mode]=$vm WL[$mode]=$wl FETCH[$mode]=$f BYTES[$mode]=$by MISS[$mode]=$m WAITS[$mode]=$w
  fi
}
prefetch_line() { # prefetch_line NAME: the replay's last log line once it finished (bounded wait)
  boot_wait_for 120 grep -q "prefetch finished" "$BW/$1.serve.log" || { echo "no prefetch end"; return; }
  grep -m1 "prefetch finished" "$BW/$1.serve.log" | sed 's/.*prefetch finished: //'
}

out=benchmarks/results/boot-latest.md
{
  echo "# VM boot from an obd image with remote lowers"
  echo
  echo "Run: $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); command: benchmarks/boot-bench.sh --repeat $REPEAT --latency-ms \"$LATENCIES\""
  echo
  echo "Debian bookworm minbase converted by obd convert (2 LZ4 ZFile layers, $BOOT_BLOB_BYTES bytes) in docker-registry on"
  echo "127.0.0.1; QEMU TCG guest, 2 vCPUs, root file system /dev/vda = QEMU's NBD client on \`obd serve nbd --read-only\`"
  echo "(unix socket). Seconds, the fastest of $REPEAT runs per mode (record: one run) with that run's counters."
  echo "*total*: from starting obd serve nbd (eager: the pull) to the guest's power-off; *VM*: QEMU start to exit"
  echo "(kernel boot under TCG included, ~5 s); *workload*: guest uptime from mounting / to the workload's end."
  echo "Counters from obd's Prometheus endpoint during the boot (prefetch included): *registry requests*"
  echo "(obd_registry_fetches_total), *bytes fetched*, *cache misses* (refill runs fetched, foreground and"
  echo "background), *foreground network waits* (obd_cache_foreground_waits_total: runs of missing cache units a"
  echo "foreground read fetched or waited for; prefetch and readahead are not counted). *replay*: the trace recorded"
  echo "by *record*; *priority*: tools/vm/boot-priority.list ($(grep -c . tools/vm/boot-priority.list) paths) as"
  echo "the recordTracePath content. A full sequential read of an image is measured by \`benchmarks/run.sh lazy\`"
  echo "(results/lazy-latest.md), not here. The machine's 2 cores are shared with the registry, obd and the"
  echo "guest's 2 vCPUs (and whatever else runs): the last column shows the spread between runs."
} > "$BW/report.md"

for lat in $LATENCIES; do
  PPID_=""
  BOOT_REG=$REG_DIRECT BOOT_REF=$REF_DIRECT
  if [ "$lat" -gt 0 ]; then
    rm -f "$BW/proxy.info"
    "$LATENCY_PROXY" "${REG_DIRECT#*:}" "$lat" "$BW/proxy.info" > "$BW/proxy.out" 2>&1 &
    PPID_=$!; BOOT_PIDS+=($PPID_)
    boot_wait_for 20 test -f "$BW/proxy.info" || { cat "$BW/proxy.out"; echo "boot-bench: latency proxy did not start" >&2; exit 1; }
    BOOT_REG=127.0.0.1:$(sed -n 's/^port=//p' "$BW/proxy.info") BOOT_REF=$BOOT_REG/${REF_DIRECT#*/}
  fi
  echo "== registry latency $lat ms (obd talks to $BOOT_REG)" >&2
  TOTAL=() VM=() WL=() FETCH=() BYTES=() MISS=() WAITS=() NOTE=() RUNS=()
  # record once (a trace of a cold boot), then the other modes $REPEAT times each
  boot_global rec; boot_config rec ro
  "$OBD" trace record -f "$BW/rec.json" --trace "$BW/boot.trace" > /dev/null
  t0=$(now); boot_serve rec --read-only; run_boot record rec "$t0"
  timeout 90 "$OBD" trace stop "$BW/rec.json" --timeout 60 > "$BW/trace-stop.log"; boot_stop_server
  NOTE[record]=$(sed "s|$BW/||" "$BW/trace-stop.log")
  for ((i = 1; i <= REPEAT; i++)); do
    boot_global cold; boot_config cold ro
    t0=$(now); boot_serve cold --read-only; run_boot cold cold "$t0"; boot_stop_server
    t0=$(now); boot_serve cold --read-only; run_boot warm cold "$t0"; boot_stop_server
    boot_global eager; boot_config eager ro
    t0=$(now)
    timeout 300 "$OBD" pull --prefetch-all --plain-http --config "$BW/eager.obd.json" "$BOOT_REF" > "$BW/pull.log" 2>&1 || { cat "$BW/pull.log"; exit 1; }
    pull=$(sub "$(now)" "$t0")
    boot_serve eager --read-only; run_boot eager eager "$t0"; boot_stop_server
    [ "$KEPT" = 1 ] && NOTE[eager]="obd pull --prefetch-all took $pull s of its total"
    boot_global rep; boot_config rep ro "\"recordTracePath\":\"$BW/boot.trace\""
    t0=$(now); boot_serve rep --read-only; run_boot replay rep "$t0"
    NOTE[replay]="prefetch $(prefetch_line rep)"; boot_stop_server
    boot_global pri; boot_config pri ro "\"recordTracePath\":\"$BW/boot.list\""
    t0=$(now); boot_serve pri --read-only; run_boot priority pri "$t0"
    NOTE[priority]="$(grep -m1 'priority list of' "$BW/pri.serve.log" | sed 's/.*priority list of /list of /; s/ of the merged lowers.*//'); prefetch $(prefetch_line pri)"
    boot_stop_server
  done
  if [ -n "$PPID_" ]; then
    kill -TERM "$PPID_"; wait "$PPID_" || true
    PROXY_STATS=$(cat "$BW/proxy.out")
  fi
  {
    echo
    if [ "$lat" -gt 0 ]; then
      echo "## Registry behind obd-latency-proxy, $lat ms per request"
    else
      echo "## Registry on loopback, no added latency"
    fi
    echo
    echo "| mode | total | VM | workload | foreground network waits | registry requests | bytes fetched | cache misses | total / cold | total / warm | workload / warm | totals of all runs |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for m in $MODES; do
      echo "| $m | ${TOTAL[$m]} | ${VM[$m]} | ${WL[$m]} | ${WAITS[$m]} | ${FETCH[$m]} | ${BYTES[$m]} | ${MISS[$m]} | $(ratio "${TOTAL[$m]}" "${TOTAL[cold]}") | $(ratio "${TOTAL[$m]}" "${TOTAL[warm]}") | $(ratio "${WL[$m]}" "${WL[warm]}") | ${RUNS[$m]} |"
    done
    echo
    echo "- eager (fastest run): ${NOTE[eager]}"
    echo "- record: ${NOTE[record]}"
    echo "- replay: ${NOTE[replay]} (last run)"
    echo "- priority: ${NOTE[priority]} (last run)"
    [ -n "$PPID_" ] && echo "- latency proxy, whole section: $PROXY_STATS"
    wr() { [ "${WAITS[$1]}" -gt 0 ] && ratio "${WAITS[cold]}" "${WAITS[$1]}" || echo "inf"; }
    echo
    echo "Goals: replay / warm $(ratio "${TOTAL[replay]}" "${TOTAL[warm]}") (goal <= 1.3; workload alone $(ratio "${WL[replay]}" "${WL[warm]}")), priority / warm $(ratio "${TOTAL[priority]}" "${TOTAL[warm]}");"
    echo "foreground network waits cold / replay $(wr replay), cold / priority $(wr priority) (goal >= 5)."
    echo "Also: cold / warm $(ratio "${TOTAL[cold]}" "${TOTAL[warm]}"), eager / warm $(ratio "${TOTAL[eager]}" "${TOTAL[warm]}")."
  } >> "$BW/report.md"
done
mkdir -p benchmarks/results
tee "$out" < "$BW/report.md"
