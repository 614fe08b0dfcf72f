#!/usr/bin/env bash
# obd convert --turbo-oci against the native conversion, measured in the same run
# (issue 12): the Debian bookworm minbase image (two layers: the first gzip, the second a
# plain tar; from tools/make-debian-rootfs.sh, cached) pushed with skopeo into Debian's
# docker-registry on loopback, then converted from there into the same registry:
#   registry bytes added = growth of the registry's blob store (du -sb) by each conversion
#   (turbo: the meta blobs, configs and manifests only; the original layers stay);
#   conversion time      = wall time of `obd convert` (pull, build, push), one run each, beside
#                          the floor of benchmarks/convert-bench.sh measured here for this image
#                          (gzip -dc + mkfs.ext4 -d of the tree + lz4 -1 of the tars) and turbo's
#                          own floor (gzip -dc: the stream is inflated once for its index);
#   cold reads           = obd-bench turbo-read: both images read lazily from this registry
#                          through a counting proxy, empty caches: a full read of every mapped
#                          extent, and 4 KiB random reads of the same file offsets (20 ms added
#                          per request): requests, bytes, time.
# Writes benchmarks/results/turbo-latest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh >/dev/null
swift build -c release --product obd 2>&1 | tail -1
swift build -c release --product obd-bench 2>&1 | tail -1
OBD=$(swift build -c release --show-bin-path)/obd
BENCH=$(swift build -c release --show-bin-path)/obd-bench
CACHE=$(tools/make-debian-rootfs.sh)
W=$(mktemp -d /tmp/obd-turbo-bench.XXXXXX)
T=$(mktemp -d /dev/shm/obd-turbo-bench.XXXXXX)
rpid=
trap '[ -n "$rpid" ] && kill $rpid 2>/dev/null; wait 2>/dev/null; rm -rf "$W" "$T"' EXIT
gzip -6 -n -c "$CACHE/layer1.tar" > "$W/l1.tar.gz"
python3 Tests/ConvertTests/Fixtures/layers.py oci-undated "$W/src" "$W/l1.tar.gz" "$CACHE/layer2.tar"
port=$((20000 + RANDOM % 20000))
printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n  secret: obd-turbo-bench\n' "$W/registry" "$port" > "$W/registry.yml"
docker-registry serve "$W/registry.yml" > "$W/registry.log" 2>&1 &
rpid=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && break; sleep 0.1; done
R=127.0.0.1:$port
skopeo copy --quiet --dest-tls-verify=false --preserve-digests "oci:$W/src:v1" "docker://$R/debian/minbase:bookworm"
blobs() { du -sb --apparent-size "$W/registry/docker/registry/v2/blobs" | cut -f1; }
now() { date +%s.%N; }
src_layers=$(( $(stat -c %s "$W/l1.tar.gz") + $(stat -c %s "$CACHE/layer2.tar") ))
b0=$(blobs)
t0=$(now)
"$OBD" convert --plain-http --cache-dir none -d "$W/work-native" "$R/debian/minbase:bookworm" "$R/debian/minbase:native" > "$W/native.txt"
t_native=$(echo "$(now) - $t0" | bc)
b1=$(blobs)
t0=$(now)
"$OBD" convert --turbo-oci --plain-http --cache-dir none -d "$W/work-turbo" --json "$R/debian/minbase:bookworm" "$R/debian/minbase:turbo" > "$W/turbo.txt"
t_turbo=$(echo "$(now) - $t0" | bc)
b2=$(blobs)
# Into another repository of the same registry: the original layers are mounted, not uploaded.
"$OBD" convert --turbo-oci --plain-http --cache-dir none -d "$W/work-turbo2" --json "$R/debian/minbase:bookworm" "$R/other/minbase:turbo" > "$W/turbo2.txt"
b3=$(blobs)
native_added=$((b1 - b0)); turbo_added=$((b2 - b1)); turbo_other=$((b3 - b2))
# The floors, on this image (best of 3).
best() { # best N CMD...: shortest wall time of N runs
  local n=$1; shift; local b=999999
  for _ in $(seq "$n"); do sync; local t0; t0=$(now); "$@" >/dev/null 2>&1; local t; t=$(echo "$(now) - $t0" | bc); b=$(echo "if ($t < $b) $t else $b" | bc); done
  echo "$b"
}
mkdir -p "$T/tree"
tar -C "$T/tree" -xf "$CACHE/layer1.tar"
tar -C "$T/tree" -xf "$CACHE/layer2.tar"
rm -f "$T/tree/etc/.wh.motd"
f_gz=$(best 3 sh -c "gzip -dc '$W/l1.tar.gz' > /dev/null")
f_mkfs=$(best 3 sh -c "rm -f '$W/fs.img'; truncate -s 4G '$W/fs.img'; mkfs.ext4 -q -F -O ^has_journal -d '$T/tree' '$W/fs.img'")
f_lz4=$(best 3 sh -c "lz4 -1 -c '$CACHE/layer1.tar' > /dev/null; lz4 -1 -c '$CACHE/layer2.tar' > /dev/null")
floor=$(echo "$f_gz + $f_mkfs + $f_lz4" | bc)
rm -f "$W/fs.img"
# Config templates of the two converted images (repoBlobUrl host filled in by obd-bench).
template() { # repo tag out
  curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://$R/v2/$1/manifests/$2" | python3 -c '
import json, sys
m = json.load(sys.stdin)
lowers = []
for l in m["layers"]:
    d = {"digest": l["digest"], "size": l["size"]}
    t = l.get("annotations", {}).get("containerd.io/snapshot/overlaybd/turbo-oci/target-digest")
    if t: d["targetDigest"] = t
    lowers.append(d)
print(json.dumps({"repoBlobUrl": "http://@HOST@/v2/" + sys.argv[1] + "/blobs", "lowers": lowers}))' "$1" > "$3"
}
template debian/minbase native "$W/native.json"
template debian/minbase turbo "$W/turbo.json"
# Regular files of at least 8 KiB in the final tree (layer 2 wins over layer 1).
python3 - "$CACHE/layer1.tar" "$CACHE/layer2.tar" > "$W/files.txt" <<'PY'
import sys, tarfile
files = {}
for t in sys.argv[1:]:
    for m in tarfile.open(t):
        name = "/" + m.name.lstrip("./")
        files[name] = m.isreg() and m.size >= 8192
for name in sorted(files):
    if files[name]: print(name)
PY
reads=${TURBO_READS:-200}
"$BENCH" turbo-read "$port" "native=$W/native.json" "turbo=$W/turbo.json" --files "$W/files.txt" --reads "$reads" > "$W/reads.md"
pct() { echo "scale=2; 100 * $1 / $2" | bc; }
summary2=$(grep '"event":"summary"' "$W/turbo2.txt" || true)
out=benchmarks/results/turbo-latest.md
{
  echo "# obd convert --turbo-oci benchmark"
  echo
  echo "Run: $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); command: benchmarks/turbo-bench.sh"
  echo
  echo "Debian bookworm minbase, two layers ($(stat -c %s "$W/l1.tar.gz") bytes gzip + $(stat -c %s "$CACHE/layer2.tar") bytes plain tar = $src_layers bytes of source layers), in docker-registry on loopback; converted from and pushed to the same registry. Registry bytes added = growth of the blob store (du -sb --apparent-size)."
  echo
  echo "| conversion | registry bytes added | % of the source layers | seconds |"
  echo "|---|---|---|---|"
  echo "| native (\`obd convert\`, LZ4 ZFile layers) | $native_added | $(pct $native_added $src_layers) | $t_native |"
  echo "| **TurboOCI (\`obd convert --turbo-oci\`)** | **$turbo_added** | **$(pct $turbo_added $src_layers)** (goal < 5) | **$t_turbo** |"
  echo "| TurboOCI into another repository (original layers mounted) | $turbo_other | $(pct $turbo_other $src_layers) | - |"
  echo
  echo "Turbo / native: bytes $(echo "scale=3; $turbo_added / $native_added" | bc), time $(echo "scale=2; $t_turbo / $t_native" | bc)."
  echo
  echo "Floors on this image (best of 3, seconds): gzip -dc of the gzip layer $f_gz; mkfs.ext4 -d of the tree (tmpfs, 4 GiB sparse) $f_mkfs; lz4 -1 of both tars $f_lz4."
  echo "The native conversion's floor (as benchmarks/convert-bench.sh defines it) is their sum, $floor s: native / floor $(echo "scale=2; $t_native / $floor" | bc)."
  echo "TurboOCI's floor is the one inflation of the gzip layer ($f_gz s): turbo / that floor $(echo "scale=2; $t_turbo / $f_gz" | bc); turbo / native floor $(echo "scale=2; $t_turbo / $floor" | bc)."
  echo "(Registry conversion times include pulling the source layers from and pushing the results to the registry.)"
  echo
  echo "## Reading the converted images lazily from the registry (obd-bench turbo-read)"
  echo
  cat "$W/reads.md"
  echo
  echo "Second TurboOCI conversion's summary: \`$summary2\`"
} | tee "$out"
