#!/usr/bin/env bash
# Builds the fixture source image (plain-tar base layer, gzip update layer), pushes it as
# obd/turbo:v1 into a docker-registry storage folder and converts it there with
# `obd convert --turbo-oci` into obd/turbo:turbo (the same repository: the original layers
# stay, only the turbo blobs are added), through a registry started on the host's
# loopback for this only (stopped by PID). Writes OUT/image-tmpl.json (lowers = the turbo
# blobs with their targetDigest, repoBlobUrl host @HOST@) and OUT/model.tsv.
#   push-turbo-image.sh OBD LAYERS-PY OUT
set -euo pipefail
OBD=$1 PY=$2 R=$3
mkdir -p "$R/regdata"
python3 "$PY" make "$R/layers" >/dev/null
python3 "$PY" oci "$R/src" "$R/layers/base.tar" "$R/layers/update.tar.gz"
python3 "$PY" model "$R/layers/base.tar" "$R/layers/update.tar.gz" > "$R/model.tsv"
port=$((20000 + RANDOM % 20000))
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n  secret: obd-push\n' "$R/regdata" "$port" > "$R/push.yml"
docker-registry serve "$R/push.yml" > "$R/push.log" 2>&1 &
rpid=$!
trap 'kill $rpid 2>/dev/null; wait $rpid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && break; sleep 0.1; done
skopeo copy --quiet --dest-tls-verify=false --preserve-digests "oci:$R/src:v1" "docker://127.0.0.1:$port/obd/turbo:v1"
"$OBD" convert --turbo-oci --vsize 4 --plain-http --cache-dir none -d "$R/work" "127.0.0.1:$port/obd/turbo:v1" "127.0.0.1:$port/obd/turbo:turbo" > "$R/convert.log"
curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://127.0.0.1:$port/v2/obd/turbo/manifests/turbo" | python3 -c '
import json, sys
m = json.load(sys.stdin)
lowers = [{"digest": l["digest"], "size": l["size"],
           "targetDigest": l["annotations"]["containerd.io/snapshot/overlaybd/turbo-oci/target-digest"]} for l in m["layers"]]
print(json.dumps({"repoBlobUrl": "http://@HOST@/v2/obd/turbo/blobs", "lowers": lowers, "resultFile": sys.argv[1]}))' "$R/result" > "$R/image-tmpl.json"
