# Runs inside the guest (tools/vm/run.sh): trace record and replay through obd-tcmu,
# with tcm_loop LUNs as the accelerated-container-image snapshotter makes them, over an
# image whose lowers are all remote (the reference layers, served by a docker-registry
# started here on the guest's own loopback).
#   guest-trace.sh OBD-TCMU OBD WORK
# WORK holds regdata/ (registry storage with obd/ref:v1 pushed by the host) and
# digests.env (D1 S1 D2 S2: the two layer blobs).
#  1. record: recordTracePath is an empty file (obd trace record); the device creates
#     <trace>.lock when it opens; the guest reads two files; obd trace stop removes the
#     lock while the device is still attached and waits for <trace>.ok; obd trace inspect
#     says the checksum holds;
#  2. replay: a second obd-tcmu with an empty cache opens a device whose recordTracePath
#     is that trace; its prefetch finishes (every range, no failure, registry fetches
#     counted); the same reads then find every block in the cache: no foreground read
#     waits for the network (obd_cache_foreground_waits_total does not move);
#  3. acceleration layer: obd trace attach appends that trace to obd/ref:v1 as ACI's
#     acceleration layer (pushed to the same registry); skopeo sees its annotations; a
#     device with the three remote lowers and accelerationLayer: true replays it into an
#     empty cache when it opens, and the files read back right with no network wait.
# The cache refills in 16 KiB units, so the 240 KB blobs are not fetched whole by the
# first read and the replay has something to cover.
set -u
TCMU=$1 OBD=$2 W=$3
fail() { echo "GUEST-FAIL: $*"; tail -20 "$W"/tcmu-*.log 2>/dev/null; exit 1; }
for m in target_core_user tcm_loop sd_mod ext4; do modprobe $m || fail "modprobe $m"; done
. "$(dirname "$0")/tcmu-lib.sh"
. "$W/digests.env"
H_HOSTNAME=bd607dabacbe9bd67879ded5ed46737fff50602d8c59ab897419b02e334cb2ca
H_LAYER2=1538eca77d28ce19d698689a4dd64cf0dd497f6d3601ab8ed87b39bdeee032ba
H_RANDOM=40632c5e9c81d484001dfe5949a62acb3a4bd954517dd881bc4187349301c017
hashof() { sha256sum "$1" | cut -d' ' -f1; }
REG=127.0.0.1:5000 MPORT=9863
TRACE=$W/ref.trace
TPID="" RPID=""
stop_all() { [ -n "$TPID" ] && kill -TERM $TPID 2>/dev/null; [ -n "$RPID" ] && kill $RPID 2>/dev/null; }
trap stop_all EXIT

wait_for() { # wait_for SECONDS CMD...: polls CMD every 0.2 s, at most SECONDS
  n=$(( $1 * 5 )); shift
  for _ in $(seq "$n"); do "$@" && return 0; sleep 0.2; done
  return 1
}
metric() { # metric NAME: a counter of the running obd-tcmu (sum over its dimensions)
  curl -sf --max-time 10 "http://127.0.0.1:$MPORT/metrics" |
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 {s += $2} END {printf "%d\n", s}'
}
global() { # global NAME: overlaybd.json with an empty cache W/cache-NAME, 16 KiB refills
  rm -rf "$W/cache-$1"
  printf '{"cacheConfig": {"cacheType": "file", "cacheDir": "%s", "cacheSizeGB": 1, "refillSize": 16384},
    "registryConfig": {"timeoutSeconds": 20}, "exporterConfig": {"enable": true, "port": %s, "address": "127.0.0.1"}}\n' \
    "$W/cache-$1" "$MPORT" > "$W/overlaybd-$1.json"
}
start_tcmu() { # start_tcmu NAME
  "$TCMU" "$W/overlaybd-$1.json" 2> "$W/tcmu-$1.log" &
  TPID=$!
  wait_for 20 grep -q "obd-tcmu: ready" "$W/tcmu-$1.log" || fail "obd-tcmu not ready ($1)"
}
stop_tcmu() { kill -TERM $TPID; wait $TPID || fail "obd-tcmu exit status"; TPID=""; }
wait_prefetch() { # wait_prefetch NAME: the device's replay finished every range, none failed
  wait_for 120 grep -q "prefetch finished" "$W/tcmu-$1.log" || fail "no 'prefetch finished' in 120 s ($1): $(grep prefetch "$W/tcmu-$1.log")"
  line=$(grep -m1 "prefetch finished" "$W/tcmu-$1.log")
  done_=$(echo "$line" | sed -n 's/.*finished: \([0-9]*\) of \([0-9]*\) ranges.*/\1/p')
  total=$(echo "$line" | sed -n 's/.*finished: \([0-9]*\) of \([0-9]*\) ranges.*/\2/p')
  [ -n "$total" ] && [ "$total" -gt 0 ] && [ "$done_" = "$total" ] || fail "prefetch incomplete ($1): $line"
  echo "$line" | grep -q failed && fail "prefetch failures ($1): $line"
  PREFETCH_LINE=${line#*prefetch }
}
read_recorded() { # the workload recorded: two of the three files
  [ "$(hashof /run/t/etc/hostname)" = "$H_HOSTNAME" ] || fail "hostname ($1)"
  [ "$(hashof /run/t/data/layer2.bin)" = "$H_LAYER2" ] || fail "layer2.bin ($1)"
}

printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n  secret: obd-vm-secret\n' \
  "$W/regdata" "$REG" > "$W/reg.yml"
docker-registry serve "$W/reg.yml" > "$W/reg.log" 2>&1 &
RPID=$!
wait_for 30 curl -sf -o /dev/null "http://$REG/v2/" || fail "registry did not start: $(cat "$W/reg.log")"
LOWERS=$(printf '{"digest": "%s", "size": %s}, {"digest": "%s", "size": %s}' "$D1" "$S1" "$D2" "$S2")
image_config() { # image_config NAME LOWERS [JSON-MEMBERS]
  printf '{"repoBlobUrl": "http://%s/v2/obd/ref/blobs", "lowers": [%s], "resultFile": "%s"%s}\n' \
    "$REG" "$2" "$W/result-$1" "${3:+, $3}" > "$W/$1.json"
}

echo "== 1. record a trace on a running obd-tcmu device"
global rec; image_config rec "$LOWERS"
"$OBD" trace record "$W/rec.json" --trace "$TRACE" > /dev/null || fail "obd trace record"
[ -f "$TRACE" ] && [ ! -s "$TRACE" ] || fail "obd trace record did not leave an empty trace file"
start_tcmu rec
attach 1 "$W/rec.json" || fail "enable dev_1: $(cat "$W/result-rec" 2>/dev/null)"
[ "$(cat "$W/result-rec")" = success ] || fail "result file of dev_1"
[ -f "$TRACE.lock" ] || fail "no $TRACE.lock while the device is open"
mkdir -p /run/t && mount -o ro "$DEV" /run/t || fail "mount (record)"
read_recorded record
umount /run/t
REC_FETCHES=$(metric obd_registry_fetches_total) REC_WAITS=$(metric obd_cache_foreground_waits_total)
[ -f "$TRACE.ok" ] && fail "$TRACE.ok before the lock was removed"
# The device stays attached: the recording must end because the lock is gone.
timeout 90 "$OBD" trace stop "$W/rec.json" --timeout 60 > "$W/trace-stop.txt" || fail "obd trace stop: $(cat "$W/trace-stop.txt")"
[ -f "$TRACE.ok" ] && [ ! -e "$TRACE.lock" ] || fail "after obd trace stop: .ok $(ls "$TRACE".* 2>&1)"
grep -q "trace recording ended" "$W/tcmu-rec.log" || fail "obd-tcmu did not log the end of the recording"
"$OBD" trace inspect --no-records "$TRACE" > "$W/inspect.txt" || fail "obd trace inspect: $(cat "$W/inspect.txt")"
grep -q '^checksum: .* holds$' "$W/inspect.txt" || fail "the checksum does not hold: $(cat "$W/inspect.txt")"
grep -q '^layer 0: ' "$W/inspect.txt" && grep -q '^layer 1: ' "$W/inspect.txt" || fail "trace without both layers: $(cat "$W/inspect.txt")"
sed 's/^/  /' "$W/inspect.txt"
echo "TRACE-RECORD $(cat "$W/trace-stop.txt") (device still attached; cold reads: $REC_FETCHES registry fetches, $REC_WAITS foreground waits)"
detach 1
stop_tcmu

echo "== 2. replay that trace into an empty cache on a second device"
global rep; image_config rep "$LOWERS" "\"recordTracePath\": \"$TRACE\""
start_tcmu rep
attach 2 "$W/rep.json" || fail "enable dev_2: $(cat "$W/result-rep" 2>/dev/null)"
wait_prefetch rep
F0=$(metric obd_registry_fetches_total) W0=$(metric obd_cache_foreground_waits_total)
[ "$F0" -gt 0 ] || fail "the replay fetched nothing from the registry"
[ ! -e "$TRACE.lock" ] || fail "a replay created $TRACE.lock"
mount -o ro "$DEV" /run/t || fail "mount (replay)"
read_recorded replay
F1=$(metric obd_registry_fetches_total) W1=$(metric obd_cache_foreground_waits_total)
[ "$W1" -eq "$W0" ] || fail "after the replay the recorded reads waited $((W1 - W0)) times for the network (fetches $F0 -> $F1)"
[ "$(hashof /run/t/data/random.bin)" = "$H_RANDOM" ] || fail "random.bin (replay)"
umount /run/t
echo "TRACE-REPLAY $PREFETCH_LINE; $F0 registry fetches before the reads; the recorded reads: $((W1 - W0)) foreground waits, $((F1 - F0)) registry fetches"
detach 2
stop_tcmu
echo "== 3. the trace as an acceleration layer of the image, opened with accelerationLayer: true"
timeout 300 "$OBD" trace attach --plain-http -d "$W/attach-work" "$REG/obd/ref:v1" "$TRACE" "$REG/obd/ref:v1-acc" > "$W/attach.txt" 2>&1 \
  || fail "obd trace attach: $(cat "$W/attach.txt")"
skopeo inspect --raw --tls-verify=false "docker://$REG/obd/ref:v1-acc" > "$W/acc-manifest.json" || fail "skopeo inspect"
ACC=$(python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
l = m["layers"]
top = l[-1]; a = top.get("annotations", {})
assert len(l) == 3, "%d layers" % len(l)
assert a.get("containerd.io/snapshot/overlaybd/acceleration-layer") == "yes", a
assert top["mediaType"] == "application/vnd.oci.image.layer.v1.tar", top["mediaType"]
print(top["digest"], top["size"], l[0]["digest"], l[1]["digest"])' "$W/acc-manifest.json") || fail "acceleration layer manifest: $(cat "$W/acc-manifest.json")"
set -- $ACC
[ "$3" = "$D1" ] && [ "$4" = "$D2" ] || fail "the lower layers changed: $ACC"
echo "TRACE-ATTACH $REG/obd/ref:v1-acc: acceleration layer $1 ($2 bytes), annotation acceleration-layer: yes"
global acc
image_config acc "$LOWERS, {\"digest\": \"$1\", \"size\": $2}" '"accelerationLayer": true'
start_tcmu acc
attach 3 "$W/acc.json" || fail "enable dev_3: $(cat "$W/result-acc" 2>/dev/null)"
[ "$(cat "$W/result-acc")" = success ] || fail "result file of dev_3"
wait_prefetch acc
F0=$(metric obd_registry_fetches_total) W0=$(metric obd_cache_foreground_waits_total)
mount -o ro "$DEV" /run/t || fail "mount (acceleration layer)"
read_recorded acceleration
F1=$(metric obd_registry_fetches_total) W1=$(metric obd_cache_foreground_waits_total)
[ "$W1" -eq "$W0" ] || fail "with the acceleration layer the recorded reads waited $((W1 - W0)) times for the network"
[ "$(hashof /run/t/data/random.bin)" = "$H_RANDOM" ] || fail "random.bin (acceleration layer)"
umount /run/t
e2fsck -fn "$DEV" > "$W/fsck-acc.log" 2>&1; rc=$?; [ $rc -le 4 ] || fail "e2fsck $rc (acceleration layer)"
echo "TRACE-ACCEL $PREFETCH_LINE; $F0 registry fetches before the reads (acceleration layer included); the recorded reads: $((W1 - W0)) foreground waits; e2fsck -fn exit $rc"
detach 3
stop_tcmu
echo "GUEST-TRACE-OK"
