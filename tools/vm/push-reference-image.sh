#!/usr/bin/env bash
# Pushes overlaybd's reference layers 1 and 2 (ZFile, the first tar-wrapped) as the
# image obd/ref:v1 (overlaybd layer annotations) into a docker-registry storage folder, with skopeo through a
# registry started on the host's loopback for the push only (stopped by PID).
#   push-reference-image.sh LSMT-REF-DIR OUT     -> OUT/regdata, OUT/digests.env
set -euo pipefail
L=$1 R=$2
mkdir -p "$R/oci/blobs/sha256" "$R/regdata"
blob() { # blob FILE -> prints hex, stores the blob
  h=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" "$R/oci/blobs/sha256/$h"; echo "$h"
}
L1=$L/l1/layer1.commit.lz4.zfile.tar L2=$L/l2/layer2.commit.lz4.zfile
h1=$(blob "$L1") h2=$(blob "$L2")
# A layer descriptor with overlaybd's annotations, as obd convert and ACI write them.
layer() { # layer HEX SIZE
  printf '{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s,"annotations":{"containerd.io/snapshot/overlaybd/version":"0.1.0","containerd.io/snapshot/overlaybd/blob-digest":"sha256:%s","containerd.io/snapshot/overlaybd/blob-size":"%s"}}' "$1" "$2" "$1" "$2"
}
s1=$(stat -c %s "$L1") s2=$(stat -c %s "$L2")
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s","sha256:%s"]}}' "$h1" "$h2" > "$R/config.json"
hc=$(blob "$R/config.json") sc=$(stat -c %s "$R/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s,%s]}' \
  "$hc" "$sc" "$(layer "$h1" "$s1")" "$(layer "$h2" "$s2")" > "$R/manifest.json"
hm=$(blob "$R/manifest.json") sm=$(stat -c %s "$R/manifest.json")
printf '{"imageLayoutVersion":"1.0.0"}' > "$R/oci/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' "$hm" "$sm" > "$R/oci/index.json"
port=$((20000 + RANDOM % 20000))
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n  secret: obd-push\n' "$R/regdata" "$port" > "$R/push.yml"
docker-registry serve "$R/push.yml" > "$R/push.log" 2>&1 &
rpid=$!
trap 'kill $rpid 2>/dev/null; wait $rpid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && break; sleep 0.1; done
skopeo copy --quiet --dest-tls-verify=false --preserve-digests "oci:$R/oci:v1" "docker://127.0.0.1:$port/obd/ref:v1"
printf 'D1=sha256:%s\nS1=%s\nD2=sha256:%s\nS2=%s\n' "$h1" "$s1" "$h2" "$s2" > "$R/digests.env"
