#!/usr/bin/env bash
# Runs every obd benchmark (release build) and writes the tables to
# benchmarks/results/latest.md. Each table measures obd and its anchor in the same run
# and prints their ratio. `benchmarks/run.sh --quick` uses smaller inputs;
# `benchmarks/run.sh NAME` runs one (zfile-read, zfile-compress, lookup, stack-read, lazy, cache-hit, trace;
# turbo runs benchmarks/turbo-bench.sh, disk-create benchmarks/disk-create-bench.sh, vhost benchmarks/vhost-bench.sh) into benchmarks/results/NAME-latest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh >/dev/null
# Script benchmarks (each writes its own results/NAME-latest.md).
case "${1:-}" in
  turbo) exec benchmarks/turbo-bench.sh ;;
  disk-create) shift; exec benchmarks/disk-create-bench.sh "$@" ;;
  vhost) shift; exec benchmarks/vhost-bench.sh "$@" ;;
esac
swift build -c release --product obd-bench 2>&1 | tail -1
BIN=$(swift build -c release --show-bin-path)/obd-bench
mkdir -p benchmarks/results
OUT=benchmarks/results/latest.md
case "${1:-}" in -*|"") ;; *) OUT=benchmarks/results/$1-latest.md ;; esac
{
  echo "# obd benchmarks"
  echo
  echo "Run: $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); command: benchmarks/run.sh $*"
  echo
  case "${1:-}" in -*|"") "$BIN" all "$@" ;; *) "$BIN" "$@" ;; esac
} | tee "$OUT"
echo "benchmarks: written to $OUT"
