#!/usr/bin/env bash
# The obd demo: convert a real OCI image and serve it, with no root, loop device or
# kernel module.
#
#   1. a sample image (two tar.gz layers built from sample files; the second changes a
#      file and deletes one with an OCI whiteout) is pushed with skopeo into Debian's
#      docker-registry, started here on loopback with its own config
#   2. obd convert pulls it, applies each layer to an ext4 in userspace, commits obd
#      layers (LZ4 ZFile, tar-wrapped) and pushes the converted image to the registry
#   3. an image config with remote lowers (digest + repoBlobUrl) reads the converted
#      image lazily from the registry through obd's cache; files are read back out
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh >/dev/null
echo "== building obd (release)"
swift build -c release --product obd 2>&1 | tail -1
OBD=$(swift build -c release --show-bin-path)/obd
export PATH=/usr/sbin:/sbin:$PATH

W=${DEMO_DIR:-$(mktemp -d /tmp/obd-demo.XXXXXX)}
mkdir -p "$W"
echo "== working in $W"
step() { echo; echo "\$ $*"; "$@"; }

# 1. The sample image.
mkdir -p "$W/l1/etc" "$W/l1/usr/share/doc" "$W/l1/data" "$W/l2/etc" "$W/l2/data"
echo "obd-demo" > "$W/l1/etc/hostname"
echo "temporary" > "$W/l1/data/obsolete.txt"
for i in $(seq 1 4000); do echo "$i: obd stores images as block-level layers, compressed with random access."; done > "$W/l1/usr/share/doc/README.txt"
head -c 1048576 /dev/urandom > "$W/l1/data/random.bin"
cp "$OBD" "$W/l1/data/obd-binary"
echo "obd-demo, layer 2" > "$W/l2/etc/hostname"
echo "added in layer 2" > "$W/l2/data/added.txt"
touch "$W/l2/data/.wh.obsolete.txt"
mkdir -p "$W/src/blobs/sha256"
put() { h=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" "$W/src/blobs/sha256/$h"; echo "$h"; }
diffs="" layers=""
for n in 1 2; do
  tar --numeric-owner --owner=0 --group=0 -C "$W/l$n" -cf "$W/layer$n.tar" .
  gzip -n -c "$W/layer$n.tar" > "$W/layer$n.tar.gz"
  h=$(put "$W/layer$n.tar.gz")
  diffs="$diffs${diffs:+,}\"sha256:$(sha256sum "$W/layer$n.tar" | cut -d' ' -f1)\""
  layers="$layers${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$h\",\"size\":$(stat -c %s "$W/layer$n.tar.gz")}"
done
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$diffs" > "$W/config.json"
hc=$(put "$W/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
  "$hc" "$(stat -c %s "$W/config.json")" "$layers" > "$W/manifest.json"
hm=$(put "$W/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
  "$hm" "$(stat -c %s "$W/manifest.json")" > "$W/src/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$W/src/oci-layout"

echo; echo "== a local registry (docker-registry on 127.0.0.1, its own config)"
port=$((20000 + RANDOM % 20000))
printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n  secret: obd-demo\n' "$W/registry" "$port" > "$W/registry.yml"
docker-registry serve "$W/registry.yml" > "$W/registry.log" 2>&1 &
rpid=$!
trap 'kill $rpid 2>/dev/null; wait $rpid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && break; sleep 0.1; done
R=127.0.0.1:$port
step skopeo copy --quiet --dest-tls-verify=false "oci:$W/src:v1" "docker://$R/demo/app:v1"

echo; echo "== convert it (userspace ext4, ZFile layers, pushed back)"
step "$OBD" convert --plain-http --cache-dir "$W/convert-cache" -d "$W/work" "$R/demo/app:v1" "$R/demo/app:v1-obd"

echo; echo "== serve the converted image lazily from the registry"
echo; echo "\$ $OBD pull --plain-http $R/demo/app:v1-obd     # lists the converted layers"
"$OBD" pull --plain-http "$R/demo/app:v1-obd" | tee "$W/layers.txt"
lowers=$(awk '{printf "%s{\"digest\":\"%s\",\"size\":%s}", (n++?",":""), $1, $2}' "$W/layers.txt")
printf '{"repoBlobUrl":"http://%s/v2/demo/app/blobs","lowers":[%s]}\n' "$R" "$lowers" > "$W/config.v1.json"
printf '{"cacheConfig":{"cacheType":"file","cacheDir":"%s","cacheSizeGB":1}}\n' "$W/cache" > "$W/overlaybd.json"
step cat "$W/config.v1.json"
step "$OBD" export "$W/config.v1.json" --config "$W/overlaybd.json" -o "$W/disk.raw"

echo; echo "== files read back out of the converted image"
got=$(debugfs -R "cat /etc/hostname" "$W/disk.raw" 2>/dev/null)
added=$(debugfs -R "cat /data/added.txt" "$W/disk.raw" 2>/dev/null)
gone=$(debugfs -R "ls /data" "$W/disk.raw" 2>/dev/null | grep -c obsolete || true)
debugfs -R "dump /data/random.bin $W/random.out" "$W/disk.raw" >/dev/null 2>&1
echo "/etc/hostname   -> $got"
echo "/data/added.txt -> $added"
echo "/data/obsolete.txt (whited out in layer 2): $([ "$gone" = 0 ] && echo gone || echo STILL THERE)"
want=$(sha256sum < "$W/l1/data/random.bin" | cut -c1-64)
have=$(sha256sum < "$W/random.out" | cut -c1-64)
echo "/data/random.bin sha256 $have (original $want)"
[ "$got" = "obd-demo, layer 2" ] && [ "$added" = "added in layer 2" ] && [ "$gone" = 0 ] && [ "$want" = "$have" ] \
  || { echo "demo: FAILED: content differs" >&2; exit 1; }
e2fsck -fn "$W/disk.raw" >/dev/null 2>&1 && echo "e2fsck: the filesystem inside the converted image is clean"

echo; echo "== what it took"
printf "%-40s %12s bytes\n" "source layers (tar.gz)" "$(( $(stat -c %s "$W/layer1.tar.gz") + $(stat -c %s "$W/layer2.tar.gz") ))" \
  "converted obd layers (LZ4 ZFile)" "$(awk '{s+=$2} END {print s}' "$W/layers.txt")" \
  "registry cache used by the lazy reads" "$(du -sb "$W/cache" | cut -f1)"
echo; echo "demo: OK (files in $W)"
