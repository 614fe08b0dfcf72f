# Runs inside the guest (tools/vm/run.sh): a TurboOCI image (obd convert --turbo-oci of the
# fixture layers, pushed by the host into WORK/regdata) served by a docker-registry
# started here on the guest's loopback; obd-tcmu reads its lowers lazily from there (the
# turbo blobs for the ext4 metadata, the original tar and tar.gz layers for the data,
# through the gzip index), the kernel mounts it with ext4, and its tree must equal the
# model of the source layers; e2fsck -fn must pass.
#   guest-turbo.sh OBD-TCMU WORK LAYERS-PY
set -u
TCMU=$1 W=$2 PY=$3
fail() { echo "GUEST-FAIL: $*"; tail -20 "$W/tcmu.log" 2>/dev/null; exit 1; }
for m in target_core_user tcm_loop sd_mod ext4; do modprobe $m || fail "modprobe $m"; done
. "$(dirname "$0")/tcmu-lib.sh"
REG=127.0.0.1:5000
printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n  secret: obd-vm-secret\n' "$W/regdata" "$REG" > "$W/reg.yml"
docker-registry serve "$W/reg.yml" > "$W/reg.log" 2>&1 &
RPID=$!
for _ in $(seq 150); do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$REG/v2/")" != 000 ] && break; sleep 0.2; done
sed "s/@HOST@/$REG/" "$W/image-tmpl.json" > "$W/image.json"
printf '{"cacheConfig": {"cacheType": "file", "cacheDir": "%s", "cacheSizeGB": 1}, "gzipCacheConfig": {"enable": true, "cacheDir": "%s", "cacheSizeGB": 1}}\n' \
  "$W/cache" "$W/gzcache" > "$W/overlaybd.json"
"$TCMU" "$W/overlaybd.json" 2> "$W/tcmu.log" &
TPID=$!
for _ in $(seq 100); do grep -q "obd-tcmu: ready" "$W/tcmu.log" && break; sleep 0.2; done
attach 1 "$W/image.json" || fail "enable: $(cat "$W/result" 2>/dev/null)"
[ "$(cat "$W/result")" = success ] || fail "result file: $(cat "$W/result")"
mkdir -p /run/t && mount -o ro "$DEV" /run/t || fail "mount the TurboOCI image"
python3 "$PY" walk /run/t > "$W/guest.tsv" || fail "walk"
umount /run/t
if ! diff "$W/model.tsv" "$W/guest.tsv" > "$W/diff.txt"; then head -20 "$W/diff.txt"; fail "the mounted tree differs from the model"; fi
echo "TURBO-TREE $(wc -l < "$W/guest.tsv") paths equal the model (kernel ext4 mount through obd-tcmu, lowers from the registry)"
e2fsck -fn "$DEV" > "$W/fsck.log" 2>&1; rc=$?; echo "e2fsck -fn exit $rc"; [ $rc -eq 0 ] || fail "e2fsck $rc"
detach 1
kill -TERM $TPID; wait $TPID || fail "obd-tcmu exit status"
kill $RPID; wait $RPID 2>/dev/null
echo "GUEST-TURBO-OK"
