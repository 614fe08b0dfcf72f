# Runs inside the guest (tools/vm/run.sh): obd-tcmu is killed with SIGKILL while fio
# writes (and later verifies) through a tcm_loop LUN, and restarted; the commands the
# dead process left in the ring must come back to the initiator as retries, never as
# errors or a hang, and no write may be lost.
#   guest-tcmu-crash.sh OBD-TCMU WORK
set -u
TCMU=$1 W=$2
fail() { echo "GUEST-FAIL: $*"; tail -20 "$W/tcmu.log" 2>/dev/null; tail -20 "$W/fio.log" 2>/dev/null; dmesg | tail -20; exit 1; }
for m in target_core_user tcm_loop sd_mod ext4; do modprobe $m || fail "modprobe $m"; done
. "$(dirname "$0")/tcmu-lib.sh"
LOG=$W/tcmu.log
: > "$LOG"
STARTS=0
start_tcmu() { # starts obd-tcmu and waits (bounded) for its ready line
  "$TCMU" 2>> "$LOG" &
  TPID=$!
  STARTS=$((STARTS + 1))
  for _ in $(seq 300); do
    [ "$(grep -c "obd-tcmu: ready" "$LOG")" -ge $STARTS ] && return 0
    kill -0 $TPID 2>/dev/null || fail "obd-tcmu exited during start $STARTS"
    sleep 0.1
  done
  fail "obd-tcmu not ready (start $STARTS)"
}
size() { stat -c %s "$W/upper_data"; }
wait_growth() { # wait_growth BYTES: until the upper has grown that much (bounded, fio alive)
  want=$(( $(size) + $1 ))
  for _ in $(seq 1200); do
    [ "$(size)" -ge $want ] && return 0
    kill -0 $FIO 2>/dev/null || fail "fio ended before the crash point"
    sleep 0.1
  done
  fail "the upper did not grow by $1 bytes in 120 s"
}
crash() { # crash N [idle]: SIGKILL obd-tcmu, restart it, check that it took the ring over
  kill -KILL $TPID; wait $TPID 2>/dev/null
  before=$(grep -c "handed back to the kernel" "$LOG")
  start_tcmu
  [ "$(grep -c "handed back to the kernel" "$LOG")" -gt "$before" ] || fail "no ring takeover logged after crash $1"
  n=$(grep "handed back to the kernel" "$LOG" | tail -1 | sed -E 's/.*ring reset, ([0-9]+) command.*/\1/')
  echo "TCMU-CRASH $1: obd-tcmu killed and restarted; $n command(s) left in the ring were handed back as BUSY"
  # Under fio's queue depth of 16 the ring is never empty when the process dies.
  [ "$2" = idle ] || [ "$n" -ge 1 ] || fail "crash $1 under I/O left no command in the ring"
  RECOVERED="$RECOVERED $n"
}
RECOVERED=""
FIOJOB="--name=crash --filename=/run/t/fio.dat --size=32M --rw=randwrite --bs=4k --ioengine=libaio --iodepth=16 --direct=1 --verify=crc32c --verify_fatal=1 --randseed=7 --eta=never"

start_tcmu
attach 1 "$W/rw.json" || fail "enable dev_1: $(cat "$W/result" 2>/dev/null)"
echo "TCMU device is $DEV ($(blockdev --getsize64 "$DEV") bytes)"
mkdir -p /run/t && mount "$DEV" /run/t || fail "mount"
echo "flushed before the crashes" > /run/t/marker.txt
sync

echo "== fio randwrite with crc32c verification; obd-tcmu killed twice under it"
timeout 600 fio $FIOJOB --do_verify=1 --end_fsync=1 --output="$W/fio.log" &
FIO=$!
wait_growth $((4 << 20))
crash 1 busy
wait_growth $((6 << 20))
crash 2 busy
for _ in $(seq 6000); do kill -0 $FIO 2>/dev/null || break; sleep 0.1; done
kill -0 $FIO 2>/dev/null && fail "fio did not finish within 600 s"
wait $FIO; rc=$?
grep -E "err=|verify|write: IOPS|read: IOPS" "$W/fio.log" | sed 's/^ */fio: /'
[ $rc -eq 0 ] || fail "fio exit status $rc"
grep -q " err= 0" "$W/fio.log" || fail "fio reported an error"
dmesg | grep -E "I/O error|ring is broken|critical medium|Buffer I/O" > "$W/dmesg-errors.txt"
[ -s "$W/dmesg-errors.txt" ] && { cat "$W/dmesg-errors.txt"; fail "the kernel logged I/O errors"; }
echo "TCMU-FIO verification passed after the crashes; the kernel logged no I/O error"

echo "== a third crash after everything was flushed; nothing flushed may be lost"
umount /run/t || fail "umount"
e2fsck -fn "$DEV" > "$W/cfsck1.log" 2>&1; rc=$?; echo "e2fsck -fn exit $rc"; [ $rc -eq 0 ] || { cat "$W/cfsck1.log"; fail "e2fsck $rc"; }
crash 3 idle
echo 3 > /proc/sys/vm/drop_caches
e2fsck -fn "$DEV" > "$W/cfsck2.log" 2>&1; rc=$?; echo "e2fsck -fn exit $rc (after the third crash)"; [ $rc -eq 0 ] || { cat "$W/cfsck2.log"; fail "e2fsck $rc"; }
mount "$DEV" /run/t || fail "mount after the third crash"
[ "$(cat /run/t/marker.txt)" = "flushed before the crashes" ] || fail "marker file"
timeout 600 fio $FIOJOB --verify_only --output="$W/fio-verify.log" || { cat "$W/fio-verify.log"; fail "fio --verify_only after the third crash"; }
grep -q " err= 0" "$W/fio-verify.log" || fail "fio --verify_only reported an error"
echo "TCMU-DURABLE every fio block verifies again after a restart; marker intact"
umount /run/t
detach 1
kill -TERM $TPID; wait $TPID; rc=$?
[ $rc -eq 0 ] || fail "obd-tcmu exit status $rc"
echo "TCMU-RECOVERED commands per crash:$RECOVERED"
echo "GUEST-TCMU-CRASH-OK"
