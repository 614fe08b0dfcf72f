#!/usr/bin/env bash
# VM integration tests with a real kernel (QEMU guest, TCG): see tools/vm/.
#   tools/vm-test.sh [nbd] [virtio] [vhost] [tcmu] [tcmu-crash] [remote] [trace] [convert] [turbo] [boot] [daemon]     (default: all)
# Needs the reference files (../shared/testdata/overlaybd-ref or $OBD_REFERENCE_DIR).
# VM tests run one at a time (2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REF=${OBD_REFERENCE_DIR:-$ROOT/../shared/testdata/overlaybd-ref}
REF=$(readlink -f "$REF")
[ -f "$REF/SHA256SUMS" ] || { echo "vm-test: FAIL: reference files not found at $REF" >&2; exit 1; }
swift build -c release --product obd 2>&1 | tail -1
swift build -c release --product obd-tcmu 2>&1 | tail -1
swift build -c release --product obd-token-server 2>&1 | tail -1
OBD=$(swift build -c release --show-bin-path)/obd
TCMU=$(swift build -c release --show-bin-path)/obd-tcmu
TOKENSRV=$(swift build -c release --show-bin-path)/obd-token-server
W=$(mktemp -d /tmp/obd-vmtest.XXXXXX)
trap 'rm -rf "$W"' EXIT
L=$REF/lsmt
printf '{"lowers":[{"file":"%s"},{"file":"%s"}]}\n' "$L/l1/layer1.commit.lz4.zfile.tar" "$L/l2/layer2.commit.lz4.zfile" > "$W/ro.json"
"$OBD" create "$W/upper_data" "$W/upper_index" 0
printf '{"lowers":[{"file":"%s"},{"file":"%s"}],"upper":{"data":"upper_data","index":"upper_index"},"resultFile":"result"}\n' \
  "$L/l1/layer1.commit.lz4.zfile.tar" "$L/l2/layer2.commit" > "$W/rw.json"
printf '{"lowers":[{"file":"%s"},{"file":"%s"},{"file":"new.commit"}]}\n' \
  "$L/l1/layer1.commit.lz4.zfile.tar" "$L/l2/layer2.commit" > "$W/after.json"
# Same stacks with result files, for TCMU.
printf '{"lowers":[{"file":"%s"},{"file":"%s"}],"resultFile":"result-ro"}\n' "$L/l1/layer1.commit.lz4.zfile.tar" "$L/l2/layer2.commit.lz4.zfile" > "$W/ro.json"
printf '{"lowers":[{"file":"%s"},{"file":"missing.commit"}],"resultFile":"result-bad"}\n' "$L/l1/layer1.commit" > "$W/bad.json"

# vhost_kill_and_restart CONFIG MODE: serves CONFIG over vhost-user, boots the guest in
# MODE (guest-vhost.sh) with reconnect=1, SIGKILLs obd once the guest says phase1,
# restarts it, lets the guest go on once QEMU has reconnected, and waits for the guest.
# Output: $W/vh-MODE.out, the logs $W/vh.log and $W/vh2.log.
vhost_kill_and_restart() {
  local config=$1 mode=$2 spid vpid
  "$OBD" serve vhost-user "$config" --socket "$W/vh.sock" --queues 2 2> "$W/vh.log" &
  spid=$!
  for _ in $(seq 100); do grep -q serving "$W/vh.log" && break; sleep 0.1; done
  (VM_LOG=$W/console-vhost-$mode.log VM_MEM=512 VM_EXTRA="-object memory-backend-memfd,id=mem,size=512M,share=on \
     -numa node,memdev=mem -chardev socket,id=vhc,path=$W/vh.sock,reconnect=1 -device vhost-user-blk-pci,chardev=vhc,num-queues=2" \
     tools/vm/run.sh tools/vm/guest-vhost.sh "$mode" "$W" > "$W/vh-$mode.out" 2>&1 || true) &
  vpid=$!
  for _ in $(seq 1200); do [ -f "$W/phase1" ] && break; sleep 0.1; done
  kill -KILL "$spid"; wait "$spid" 2>/dev/null || true
  "$OBD" serve vhost-user "$config" --socket "$W/vh.sock" --queues 2 2> "$W/vh2.log" &
  spid=$!
  for _ in $(seq 100); do grep -q "front-end connected" "$W/vh2.log" && break; sleep 0.1; done
  touch "$W/phase2"
  wait "$vpid" || true
  kill -TERM "$spid"; wait "$spid" || true
}

tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(nbd virtio vhost tcmu tcmu-crash remote trace convert turbo boot daemon)
status=0
for t in "${tests[@]}"; do
  echo "== vm test: $t"
  case $t in
    nbd)
      out=$(VM_LOG=$W/console-nbd.log tools/vm/run.sh tools/vm/guest-nbd.sh "$OBD" "$W" "$REF" 2>&1) || true
      echo "$out" | grep -E "^(==|NBD-|e2fsck|GUEST-)" || true
      echo "$out" | grep -q GUEST-NBD-OK || { echo "$out" | tail -30; echo "vm-test: FAIL: nbd"; status=1; }
      ;;
    virtio)
      "$OBD" serve nbd "$W/ro.json" --socket "$W/q.sock" 2> "$W/q.log" &
      spid=$!
      for _ in $(seq 100); do grep -q serving "$W/q.log" && break; sleep 0.1; done
      out=$(VM_LOG=$W/console-virtio.log VM_EXTRA="-drive file=nbd:unix:$W/q.sock,if=virtio,format=raw,readonly=on" \
            tools/vm/run.sh tools/vm/guest-virtio.sh 2>&1) || true
      kill -TERM "$spid"; wait "$spid" || true
      echo "$out" | grep -E "^GUEST-" || true
      echo "$out" | grep -q GUEST-VIRTIO-OK || { echo "$out" | tail -30; echo "vm-test: FAIL: virtio"; status=1; }
      ;;
    vhost)
      # obd serve vhost-user with QEMU's vhost-user-blk-pci (2 queues, shared memfd guest memory):
      # a read-only boot checks hashes; a writable boot writes a file into a fresh upper
      # (e2fsck clean); a second boot of the same disk finds it.
      rm -f "$W/upper_data" "$W/upper_index" "$W/result"; "$OBD" create "$W/upper_data" "$W/upper_index" 0
      for mode in ro rw check; do
        cfg=$W/rw.json; [ "$mode" = ro ] && cfg=$W/ro.json
        rm -f "$W/vh.sock"
        "$OBD" serve vhost-user "$cfg" --socket "$W/vh.sock" --queues 2 2> "$W/vh.log" &
        spid=$!
        for _ in $(seq 100); do grep -q serving "$W/vh.log" && break; sleep 0.1; done
        out=$(VM_LOG=$W/console-vhost-$mode.log VM_MEM=512 VM_EXTRA="-object memory-backend-memfd,id=mem,size=512M,share=on \
              -numa node,memdev=mem -chardev socket,id=vhc,path=$W/vh.sock -device vhost-user-blk-pci,chardev=vhc,num-queues=2" \
              tools/vm/run.sh tools/vm/guest-vhost.sh "$mode" 2>&1) || true
        kill -TERM "$spid"; wait "$spid" || true
        echo "$out" | grep -aoE "GUEST-.*" | sed "s/^/$mode: /" || true
        echo "$out" | grep -aq "GUEST-VHOST-QUEUES=2" || { echo "vm-test: FAIL: vhost $mode: the guest does not see 2 queues"; status=1; }
        echo "$out" | grep -aq GUEST-VHOST-OK || { echo "$out" | tail -30; cat "$W/vh.log"; echo "vm-test: FAIL: vhost $mode"; status=1; }
      done
      # Reconnection: obd is SIGKILLed while the guest has the disk mounted and restarted;
      # QEMU (reconnect=1) connects again and the guest reads the disk afresh.
      rm -f "$W/vh.sock" "$W/phase1" "$W/phase2"
      vhost_kill_and_restart "$W/ro.json" reconnect
      grep -aoE "GUEST-.*" "$W/vh-reconnect.out" | sed "s/^/reconnect: /" || true
      grep -q "front-end connected" "$W/vh2.log" || { echo "vm-test: FAIL: vhost reconnect: QEMU did not reconnect"; status=1; }
      grep -aq GUEST-VHOST-OK "$W/vh-reconnect.out" || { tail -30 "$W/vh-reconnect.out"; cat "$W/vh2.log"; echo "vm-test: FAIL: vhost reconnect"; status=1; }
      # Restart under load: obd SIGKILLed while fio writes (libaio, depth 16) with verification
      # to a fresh writable disk; restarted, QEMU reconnects (in-flight area handed over) and
      # fio must finish with no error and no verification failure.
      rm -f "$W/upper_data" "$W/upper_index" "$W/result" "$W/vh.sock" "$W/phase1" "$W/phase2"
      "$OBD" create "$W/upper_data" "$W/upper_index" 0
      vhost_kill_and_restart "$W/rw.json" fio
      grep -aoE "GUEST-.*" "$W/vh-fio.out" | sed "s/^/fio restart: /" || true
      grep -E "err=" "$W/fio.out" 2>/dev/null | sed "s/^/fio restart: /" || true
      grep -q "in-flight area .* handed over" "$W/vh2.log" || { echo "vm-test: FAIL: vhost fio restart: no in-flight area after the reconnect"; status=1; }
      grep -aq GUEST-VHOST-OK "$W/vh-fio.out" || { tail -30 "$W/vh-fio.out"; cat "$W/vh2.log"; echo "vm-test: FAIL: vhost fio restart"; status=1; }
      ;;
    tcmu)
      rm -f "$W"/result*
      rm -f "$W/upper_data" "$W/upper_index" "$W/new.commit"; "$OBD" create "$W/upper_data" "$W/upper_index" 0
      out=$(VM_LOG=$W/console-tcmu.log tools/vm/run.sh tools/vm/guest-tcmu.sh "$TCMU" "$OBD" "$W" "$REF" 2>&1) || true
      echo "$out" | grep -E "^(==|TCMU|e2fsck|bad config|read past|GUEST-)" || true
      echo "$out" | grep -q GUEST-TCMU-OK || { echo "$out" | tail -30; echo "vm-test: FAIL: tcmu"; status=1; }
      ;;
    tcmu-crash)
      # obd-tcmu SIGKILLed under fio (with verification) and restarted, three times.
      rm -f "$W"/result*
      rm -f "$W/upper_data" "$W/upper_index"; "$OBD" create "$W/upper_data" "$W/upper_index" 0
      out=$(VM_TIMEOUT=900 VM_LOG=$W/console-tcmu-crash.log tools/vm/run.sh tools/vm/guest-tcmu-crash.sh "$TCMU" "$W" 2>&1) || true
      echo "$out" | grep -E "^(==|TCMU|e2fsck|fio:|GUEST-)" || true
      echo "$out" | grep -q GUEST-TCMU-CRASH-OK || { echo "$out" | tail -40; echo "vm-test: FAIL: tcmu-crash"; status=1; }
      ;;
    remote)
      # Push the two reference layers into a registry storage folder on the host; the
      # guest serves that folder with its own docker-registry on its loopback.
      R=$W/remote
      tools/vm/push-reference-image.sh "$L" "$R"
      out=$(VM_LOG=$W/console-remote.log tools/vm/run.sh tools/vm/guest-remote.sh "$TCMU" "$TOKENSRV" "$R" 2>&1) || true
      echo "$out" | grep -E "^(==|REMOTE-|wrong credentials|GUEST-)" || true
      echo "$out" | grep -q GUEST-REMOTE-OK || { echo "$out" | tail -30; echo "vm-test: FAIL: remote"; status=1; }
      ;;
    trace)
      # Trace record -> obd trace stop (lock removed) -> .ok on a running obd-tcmu device whose
      # lowers come from a docker-registry on the guest's loopback; replay of that trace into an
      # empty cache by a second device; then the trace attached (obd trace attach) as an
      # acceleration layer, opened with accelerationLayer: true (tools/vm/guest-trace.sh).
      R=$W/trace
      tools/vm/push-reference-image.sh "$L" "$R"
      out=$(VM_LOG=$W/console-trace.log tools/vm/run.sh tools/vm/guest-trace.sh "$TCMU" "$OBD" "$R" 2>&1) || true
      echo "$out" | grep -E "^(==|TRACE-|  checksum|  layer|GUEST-)" || true
      echo "$out" | grep -q GUEST-TRACE-OK || { echo "$out" | tail -30; echo "vm-test: FAIL: trace"; status=1; }
      ;;
    convert)
      # obd convert of the fixture layers; the guest mounts the result with its ext4.
      C=$W/convert PY=$ROOT/Tests/ConvertTests/Fixtures/layers.py
      mkdir -p "$C"
      python3 "$PY" make "$C/layers" >/dev/null
      python3 "$PY" oci "$C/src" "$C/layers/base.tar" "$C/layers/update.tar.gz" "$C/layers/sparse.tar.zst"
      "$OBD" convert --vsize 4 --cache-dir none -d "$C/work" "oci:$C/src:v1" "oci:$C/out:v1" > "$C/convert.log" 2>&1 \
        || { cat "$C/convert.log"; echo "vm-test: FAIL: convert"; status=1; continue; }
      python3 "$PY" model "$C/layers/base.tar" "$C/layers/update.tar.gz" "$C/layers/sparse.tar.zst" > "$C/model.tsv"
      lowers=$(grep '^layer ' "$C/convert.log" | awk -v d="$C/out/blobs/sha256/" '{sub("sha256:","",$2); printf "%s{\"file\":\"%s%s\"}", (n++?",":""), d, $2}')
      printf '{"lowers":[%s],"resultFile":"result"}\n' "$lowers" > "$C/image.json"
      out=$(VM_LOG=$W/console-convert.log tools/vm/run.sh tools/vm/guest-convert.sh "$TCMU" "$C" "$PY" 2>&1) || true
      echo "$out" | grep -E "^(CONVERT-|e2fsck|GUEST-)" || true
      echo "$out" | grep -q GUEST-CONVERT-OK || { echo "$out" | tail -30; echo "vm-test: FAIL: convert"; status=1; }
      ;;
    turbo)
      # obd convert --turbo-oci of the fixture layers in a registry storage folder; the guest
      # serves it on its loopback, obd-tcmu reads it lazily, the kernel mounts it.
      C=$W/turbo
      tools/vm/push-turbo-image.sh "$OBD" "$ROOT/Tests/ConvertTests/Fixtures/layers.py" "$C" \
        || { cat "$C/convert.log" 2>/dev/null; echo "vm-test: FAIL: turbo (conversion)"; status=1; continue; }
      out=$(VM_LOG=$W/console-turbo.log tools/vm/run.sh tools/vm/guest-turbo.sh "$TCMU" "$C" "$ROOT/Tests/ConvertTests/Fixtures/layers.py" 2>&1) || true
      echo "$out" | grep -E "^(TURBO-|e2fsck|GUEST-)" || true
      echo "$out" | grep -q GUEST-TURBO-OK || { echo "$out" | tail -30; echo "vm-test: FAIL: turbo"; status=1; }
      ;;
    boot)
      # The guest's root file system is an obd image with remote lowers (Debian minbase,
      # obd convert, docker-registry on host loopback), served lazily by obd serve nbd and
      # attached by QEMU as virtio-blk; the whole check runs in tools/vm/boot-test.sh.
      out=$(timeout 900 tools/vm/boot-test.sh "$OBD" "$W/boot" 2>&1) || true
      echo "$out" | grep -E "^(==|BOOT-|  BOOT-OS|  BOOT-STAMP|e2fsck)" || true
      echo "$out" | grep -q BOOT-TEST-OK || { echo "$out" | tail -30; echo "vm-test: FAIL: boot"; status=1; }
      ;;
    daemon)
      # One obd daemon serving guests' root disks (Debian minbase, remote lowers) added through
      # its control API: vhost-user-blk and NBD boots, two VMs at once with their own uppers,
      # e2fsck of each disk, SIGKILL and restart under guest fio; all in tools/vm/daemon-test.sh.
      out=$(timeout 900 tools/vm/daemon-test.sh "$OBD" "$W/daemon" 2>&1) || true
      echo "$out" | grep -E "^(==|DAEMON-|  vm|  fio)" || true
      echo "$out" | grep -q DAEMON-TEST-OK || { echo "$out" | tail -30; echo "vm-test: FAIL: daemon"; status=1; }
      ;;
    *) echo "vm-test: unknown test $t"; status=1 ;;
  esac
done
[ $status -eq 0 ] && echo "vm-test: all passed"
exit $status
