# Runs inside the guest (tools/vm/run.sh): images whose lowers are all remote, served
# by obd-tcmu from a docker-registry started here on the guest's own loopback (the
# guest reaches nothing else), in each auth mode: anonymous, htpasswd Basic, token.
#   guest-remote.sh OBD-TCMU OBD-TOKEN-SERVER WORK
# WORK holds regdata/ (registry storage with obd/ref:v1 pushed by the host) and
# digests.env (D1 S1 D2 S2: the two layer blobs).
set -u
TCMU=$1 TOKEN=$2 W=$3
fail() { echo "GUEST-FAIL: $*"; tail -20 "$W"/tcmu-*.log 2>/dev/null; exit 1; }
for m in target_core_user tcm_loop sd_mod ext4; do modprobe $m || fail "modprobe $m"; done
. "$(dirname "$0")/tcmu-lib.sh"
. "$W/digests.env"
H_HOSTNAME=bd607dabacbe9bd67879ded5ed46737fff50602d8c59ab897419b02e334cb2ca
H_LAYER2=1538eca77d28ce19d698689a4dd64cf0dd497f6d3601ab8ed87b39bdeee032ba
H_RANDOM=40632c5e9c81d484001dfe5949a62acb3a4bd954517dd881bc4187349301c017
hashof() { sha256sum "$1" | cut -d' ' -f1; }
U=obd-user P=vm-S3cret-pass BAD=vm-Wrong-pass
REG=127.0.0.1:5000

wait_http() { # wait_http URL
  for _ in $(seq 150); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$1" 2>/dev/null)
    [ "$code" != "000" ] && return 0
    sleep 0.2
  done
  return 1
}
creds() { printf '{"auths": {"%s": {"username": "%s", "password": "%s"}}}\n' "$REG/obd" "$U" "$1" > "$W/cred.json"; }

n=0
for mode in anonymous basic token; do
  echo "== remote lowers, $mode"
  TPID=""
  { printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n'
    printf 'storage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n  secret: obd-vm-secret\n' "$W/regdata" "$REG"; } > "$W/reg-$mode.yml"
  case $mode in
    basic)
      htpasswd -Bbn "$U" "$P" > "$W/htpasswd" || fail "htpasswd"
      printf 'auth:\n  htpasswd:\n    realm: obd-vm\n    path: %s\n' "$W/htpasswd" >> "$W/reg-$mode.yml" ;;
    token)
      rm -f "$W/token.info"
      "$TOKEN" "$U" "$P" 5001 "$W/token.info" > "$W/token.log" 2>&1 &
      TPID=$!
      for _ in $(seq 150); do [ -f "$W/token.info" ] && break; sleep 0.2; done
      [ -f "$W/token.info" ] || fail "token server: $(cat "$W/token.log")"
      . "$W/token.info"
      printf 'auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n' "$realm" "$service" "$issuer" "$ca" >> "$W/reg-$mode.yml" ;;
  esac
  docker-registry serve "$W/reg-$mode.yml" > "$W/reg-$mode.log" 2>&1 &
  RPID=$!
  wait_http "http://$REG/v2/" || fail "registry ($mode) did not start: $(cat "$W/reg-$mode.log")"
  printf '{"cacheConfig": {"cacheType": "file", "cacheDir": "%s", "cacheSizeGB": 1},
    "credentialConfig": {"mode": "file", "path": "%s"}, "registryConfig": {"timeoutSeconds": 20},
    "exporterConfig": {"enable": true, "port": 9863, "address": "127.0.0.1"}}\n' \
    "$W/cache-$mode" "$W/cred.json" > "$W/overlaybd-$mode.json"
  printf '{"repoBlobUrl": "http://%s/v2/obd/ref/blobs", "lowers": [{"digest": "%s", "size": %s}, {"digest": "%s", "size": %s}], "resultFile": "%s"}\n' \
    "$REG" "$D1" "$S1" "$D2" "$S2" "$W/result-$mode" > "$W/config-$mode.json"
  "$TCMU" "$W/overlaybd-$mode.json" 2> "$W/tcmu-$mode.log" &
  SPID=$!
  for _ in $(seq 100); do grep -q "obd-tcmu: ready" "$W/tcmu-$mode.log" && break; sleep 0.2; done
  grep -q "obd-tcmu: ready" "$W/tcmu-$mode.log" || fail "obd-tcmu not ready ($mode)"
  if [ $mode != anonymous ]; then
    # Wrong credentials first: enable fails, the result file says why, no secret anywhere.
    creds "$BAD"
    n=$((n + 1))
    attach $n "$W/config-$mode.json" && fail "enable with wrong credentials succeeded ($mode)"
    rmdir "$CORE/dev_$n" 2>/dev/null
    echo "wrong credentials ($mode): $(cat "$W/result-$mode")"
    grep -q "Authentication failed" "$W/result-$mode" || fail "result file without 'Authentication failed'"
  fi
  creds "$P"
  n=$((n + 1))
  attach $n "$W/config-$mode.json" || fail "enable ($mode): $(cat "$W/result-$mode" 2>/dev/null)"
  [ "$(cat "$W/result-$mode")" = success ] || fail "result file ($mode)"
  mkdir -p /run/t && mount -o ro "$DEV" /run/t || fail "mount ($mode)"
  [ "$(hashof /run/t/etc/hostname)" = "$H_HOSTNAME" ] || fail "hostname ($mode)"
  [ "$(hashof /run/t/data/layer2.bin)" = "$H_LAYER2" ] || fail "layer2.bin ($mode)"
  [ "$(hashof /run/t/data/random.bin)" = "$H_RANDOM" ] || fail "random.bin ($mode)"
  umount /run/t
  e2fsck -fn "$DEV" > "$W/fsck-$mode.log" 2>&1; rc=$?; [ $rc -le 4 ] || fail "e2fsck $rc ($mode)"
  # obd-tcmu's Prometheus endpoint saw this device's reads and the registry fetches.
  curl -s http://127.0.0.1:9863/metrics > "$W/metrics-$mode.txt" || fail "metrics endpoint ($mode)"
  grep -q "^obd_device_read_bytes_total{device=\"dev_$n\"} [1-9]" "$W/metrics-$mode.txt" || fail "no device read bytes in the metrics ($mode)"
  grep -q "^obd_registry_fetches_total [1-9]" "$W/metrics-$mode.txt" || fail "no registry fetches in the metrics ($mode)"
  echo "REMOTE-$mode: TCMU device $DEV from http://$REG reads the reference files; e2fsck -fn exit $rc; metrics: $(grep -c '^obd_' "$W/metrics-$mode.txt") samples"
  detach $n
  kill -TERM $SPID; wait $SPID || fail "obd-tcmu exit status ($mode)"
  if grep -q -e "$P" -e "$BAD" "$W/tcmu-$mode.log" "$W/result-$mode"; then fail "a secret appears in the log ($mode)"; fi
  kill $RPID; wait $RPID 2>/dev/null
  [ -n "$TPID" ] && { kill $TPID; wait $TPID 2>/dev/null; }
done
echo "GUEST-REMOTE-OK"
