# Runs inside the guest (tools/vm/run.sh): obd-tcmu driven through configfs exactly as
# the accelerated-container-image snapshotter does it, with tcm_loop LUNs.
#   guest-tcmu.sh OBD-TCMU OBD WORK REF
set -u
TCMU=$1 OBD=$2 W=$3 REF=$4
fail() { echo "GUEST-FAIL: $*"; cat "$W/tcmu.log" 2>/dev/null | tail -20; exit 1; }
for m in target_core_user tcm_loop sd_mod ext4; do modprobe $m || fail "modprobe $m"; done
H_HOSTNAME=bd607dabacbe9bd67879ded5ed46737fff50602d8c59ab897419b02e334cb2ca
H_LAYER2=1538eca77d28ce19d698689a4dd64cf0dd497f6d3601ab8ed87b39bdeee032ba
H_RANDOM=40632c5e9c81d484001dfe5949a62acb3a4bd954517dd881bc4187349301c017
hashof() { sha256sum "$1" | cut -d' ' -f1; }
. "$(dirname "$0")/tcmu-lib.sh"

"$TCMU" 2> "$W/tcmu.log" &
TPID=$!
for _ in $(seq 100); do grep -q "obd-tcmu: ready" "$W/tcmu.log" && break; sleep 0.2; done
grep -q "obd-tcmu: ready" "$W/tcmu.log" || fail "obd-tcmu not ready"

echo "== 1. read-only reference stack"
attach 1 "$W/ro.json" || fail "enable dev_1: $(cat "$W/result-ro" 2>/dev/null)"
[ "$(cat "$W/result-ro")" = success ] || fail "result file of dev_1"
echo "TCMU dev_1 is $DEV ($(blockdev --getsize64 "$DEV") bytes, ro=$(blockdev --getro "$DEV"))"
mkdir -p /run/t && mount -o ro "$DEV" /run/t || fail "mount ro"
[ "$(hashof /run/t/etc/hostname)" = "$H_HOSTNAME" ] || fail "hostname"
[ "$(hashof /run/t/data/layer2.bin)" = "$H_LAYER2" ] || fail "layer2.bin"
[ "$(hashof /run/t/data/random.bin)" = "$H_RANDOM" ] || fail "random.bin"
echo "TCMU-RO hashes OK"
umount /run/t
e2fsck -fn "$DEV" > "$W/tfsck1.log" 2>&1; rc=$?; echo "e2fsck -fn exit $rc"; [ $rc -le 4 ] || fail "e2fsck $rc"
# Restart the service: it re-attaches the device that is still configured.
kill -TERM $TPID; wait $TPID || fail "obd-tcmu exit status on restart"
"$TCMU" 2>> "$W/tcmu.log" &
TPID=$!
for _ in $(seq 100); do [ "$(grep -c "obd-tcmu: ready" "$W/tcmu.log")" -ge 2 ] && break; sleep 0.2; done
grep -q "re-attaching" "$W/tcmu.log" || fail "device not re-attached after restart"
echo 3 > /proc/sys/vm/drop_caches
mount -o ro "$DEV" /run/t || fail "mount after restart"
[ "$(hashof /run/t/data/random.bin)" = "$H_RANDOM" ] || fail "random.bin after restart"
umount /run/t
echo "TCMU-RESTART device re-attached and serving"
sg=$(dd if="$DEV" bs=512 count=1 skip=$(( $(blockdev --getsz "$DEV") )) 2>&1 >/dev/null | head -1)
echo "read past the end: ${sg:-no error?}"
RODEV=$DEV

echo "== 2. a bad config fails enable with a result file; the service keeps serving"
attach 2 "$W/bad.json" && fail "enable of a bad config succeeded"
echo "bad config: $(cat "$W/result-bad")"
grep -q '^failed:' "$W/result-bad" || fail "result file of the bad device"
rmdir "$CORE/dev_2"

echo "== 3. writable image: write, sync, discard, e2fsck, remove, commit, reopen"
attach 3 "$W/rw.json" || fail "enable dev_3: $(cat "$W/result" 2>/dev/null)"
mount "$DEV" /run/t || fail "mount rw"
echo "written through obd-tcmu" > /run/t/data/tcmu.txt
head -c 500000 /dev/urandom > /run/t/data/blob.bin
BLOB=$(hashof /run/t/data/blob.bin)
rm /run/t/etc/hostname
sync
umount /run/t
e2fsck -fn "$DEV" > "$W/tfsck3.log" 2>&1; rc=$?; echo "e2fsck -fn exit $rc (after writes)"; [ $rc -le 4 ] || { cat "$W/tfsck3.log"; fail "e2fsck $rc"; }
dd if=/dev/urandom of="$DEV" bs=1M seek=950 count=2 oflag=direct 2>/dev/null || fail "dd"
blkdiscard -f -o $((950 * 1048576)) -l $((2 * 1048576)) "$DEV" || fail "blkdiscard"
cmp -n $((2 * 1048576)) -i $((950 * 1048576)):0 "$DEV" /dev/zero || fail "discarded range is not zeros"
echo "TCMU-RW blkdiscard reads back zeros"
detach 3
"$OBD" commit -z "$W/upper_data" "$W/upper_index" "$W/new.commit" || fail "commit"
attach 4 "$W/after.json" || fail "enable dev_4"
mount -o ro "$DEV" /run/t || fail "mount after commit"
[ "$(cat /run/t/data/tcmu.txt)" = "written through obd-tcmu" ] || fail "tcmu.txt after commit"
[ "$(hashof /run/t/data/blob.bin)" = "$BLOB" ] || fail "blob after commit"
[ ! -e /run/t/etc/hostname ] || fail "deleted file came back"
umount /run/t
echo "TCMU-COMMIT new stack shows the files"
detach 4
# dev_1 served all along, next to the others.
mount -o ro "$RODEV" /run/t || fail "mount dev_1 at the end"
[ "$(hashof /run/t/data/layer2.bin)" = "$H_LAYER2" ] || fail "dev_1 at the end"
umount /run/t
detach 1
echo "TCMU-MULTI dev_1 kept serving while other devices came and went"

kill -TERM $TPID; wait $TPID; rc=$?
[ $rc -eq 0 ] || fail "obd-tcmu exit status $rc"
echo "GUEST-TCMU-OK"
