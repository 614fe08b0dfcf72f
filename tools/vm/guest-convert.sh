# Runs inside the guest (tools/vm/run.sh): an image made by `obd convert` (fixture
# layers with every entry type) attached through obd-tcmu, mounted by the kernel's
# ext4, and its tree compared with the independent model of the source layers.
#   guest-convert.sh OBD-TCMU WORK LAYERS-PY
# WORK holds image.json (lowers = the converted blobs) and model.tsv.
set -u
TCMU=$1 W=$2 PY=$3
fail() { echo "GUEST-FAIL: $*"; tail -20 "$W/tcmu.log" 2>/dev/null; exit 1; }
for m in target_core_user tcm_loop sd_mod ext4; do modprobe $m || fail "modprobe $m"; done
. "$(dirname "$0")/tcmu-lib.sh"
"$TCMU" 2> "$W/tcmu.log" &
TPID=$!
for _ in $(seq 100); do grep -q "obd-tcmu: ready" "$W/tcmu.log" && break; sleep 0.2; done
attach 1 "$W/image.json" || fail "enable: $(cat "$W/result" 2>/dev/null)"
mkdir -p /run/c && mount -o ro "$DEV" /run/c || fail "mount the converted image"
python3 "$PY" walk /run/c > "$W/guest.tsv" || fail "walk"
umount /run/c
if ! diff "$W/model.tsv" "$W/guest.tsv" > "$W/diff.txt"; then head -20 "$W/diff.txt"; fail "the mounted tree differs from the model"; fi
echo "CONVERT-TREE $(wc -l < "$W/guest.tsv") paths equal the model (kernel ext4 mount through obd-tcmu)"
e2fsck -fn "$DEV" > "$W/fsck.log" 2>&1; rc=$?; echo "e2fsck -fn exit $rc"; [ $rc -eq 0 ] || fail "e2fsck $rc"
detach 1
kill -TERM $TPID; wait $TPID || fail "obd-tcmu exit status"
echo "GUEST-CONVERT-OK"
