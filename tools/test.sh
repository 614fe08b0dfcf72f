#!/usr/bin/env bash
# Runs every test: installs dependencies, builds (debug and release, failing on any
# warning in obd's own code), runs the unit, reference, crash and CLI tests, then
# runs the VM integration tests (tools/vm-test.sh) and each fuzz target for a bounded time.
#
# Environment: CI=true makes missing reference files a failure (they are read from
# ../shared/testdata/overlaybd-ref, or $OBD_REFERENCE_DIR).
# FUZZ_SECONDS (default 30) bounds each fuzz target; 0 skips fuzzing (loudly).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

tools/install-deps.sh

REF=${OBD_REFERENCE_DIR:-$ROOT/../shared/testdata/overlaybd-ref}
if [ ! -f "$REF/SHA256SUMS" ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "test.sh: FAIL: overlaybd reference files not found at $REF" >&2
    exit 1
  fi
  echo "test.sh: WARNING: reference files not found at $REF; tests that need them are skipped" >&2
fi

check_warnings() {
  # Our own sources must build without warnings (dependencies are not ours to fix).
  if grep -E "^$ROOT/(Sources|Tests)/.*warning:" "$1"; then
    echo "test.sh: FAIL: compiler warnings in obd's code (above)" >&2
    exit 1
  fi
}

echo "== release build"
swift build -c release 2>&1 | tee /tmp/obd-build-release.log
check_warnings /tmp/obd-build-release.log

echo "== debug build with tests"
swift build --build-tests 2>&1 | tee /tmp/obd-build-debug.log
check_warnings /tmp/obd-build-debug.log

echo "== set-up: Debian minbase root file system for the convert tests (cached outside the repo)"
tools/make-debian-rootfs.sh

echo "== tests"
swift test --skip-build 2>&1 | tee /tmp/obd-test.log
grep -qE "Test run with [0-9]+ tests? .*passed" /tmp/obd-test.log || { echo "test.sh: FAIL: tests did not pass" >&2; exit 1; }

echo "== VM integration tests (real kernel in a QEMU guest)"
tools/vm-test.sh

echo "== fuzzing"
tools/fuzz.sh "${FUZZ_SECONDS:-30}"

echo "test.sh: all tests passed"
