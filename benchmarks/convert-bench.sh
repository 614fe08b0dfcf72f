#!/usr/bin/env bash
# obd convert of a Debian minbase image against the physical floor of this machine,
# measured in the same run (issue 5):
#   floor = gzip -dc layer.tar.gz > /dev/null
#         + mkfs.ext4 -q -F -O ^has_journal -d <tree unpacked on tmpfs> <new sparse 4 GiB file>
#         + lz4 -1 -c layer.tar > /dev/null
#   obd   = obd convert oci:src oci:out (one gzip layer: download = local blob, apply, commit, write)
# The minbase root file system comes from tools/make-debian-rootfs.sh (cached).
# Writes benchmarks/results/convert-latest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh >/dev/null
swift build -c release --product obd 2>&1 | tail -1
OBD=$(swift build -c release --show-bin-path)/obd
CACHE=$(tools/make-debian-rootfs.sh)
W=$(mktemp -d /tmp/obd-convert-bench.XXXXXX)
T=$(mktemp -d /dev/shm/obd-convert-bench.XXXXXX)
trap 'rm -rf "$W" "$T"' EXIT
# One layer: the whole minbase tree.
mkdir -p "$T/tree"
tar -C "$T/tree" -xf "$CACHE/layer1.tar"
tar -C "$T/tree" -xf "$CACHE/layer2.tar"
rm -f "$T/tree/etc/.wh.motd"
tar --numeric-owner --xattrs --xattrs-include='*' -C "$T/tree" -cf "$W/layer.tar" .
gzip -6 -n -c "$W/layer.tar" > "$W/layer.tar.gz"
size_tar=$(stat -c %s "$W/layer.tar"); size_gz=$(stat -c %s "$W/layer.tar.gz")
# The source image (OCI layout).
mkdir -p "$W/src/blobs/sha256"
h=$(sha256sum "$W/layer.tar.gz" | cut -d' ' -f1); cp "$W/layer.tar.gz" "$W/src/blobs/sha256/$h"
u=$(sha256sum "$W/layer.tar" | cut -d' ' -f1)
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$u" > "$W/c.json"
hc=$(sha256sum "$W/c.json" | cut -d' ' -f1); cp "$W/c.json" "$W/src/blobs/sha256/$hc"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
  "$hc" "$(stat -c %s "$W/c.json")" "$h" "$size_gz" > "$W/m.json"
hm=$(sha256sum "$W/m.json" | cut -d' ' -f1); cp "$W/m.json" "$W/src/blobs/sha256/$hm"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' "$hm" "$(stat -c %s "$W/m.json")" > "$W/src/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$W/src/oci-layout"
now() { date +%s.%N; }
best() { # best N CMD...: shortest wall time of N runs
  local n=$1; shift; local b=999999
  for _ in $(seq "$n"); do sync; local t0; t0=$(now); "$@" >/dev/null 2>&1; local t; t=$(echo "$(now) - $t0" | bc); b=$(echo "if ($t < $b) $t else $b" | bc); done
  echo "$b"
}
g=$(best 3 sh -c "gzip -dc '$W/layer.tar.gz' > /dev/null")
m=$(best 3 sh -c "rm -f '$W/fs.img'; truncate -s 4G '$W/fs.img'; mkfs.ext4 -q -F -O ^has_journal -d '$T/tree' '$W/fs.img'")
l=$(best 3 sh -c "lz4 -1 -c '$W/layer.tar' > /dev/null")
floor=$(echo "$g + $m + $l" | bc)
o=$(best 3 sh -c "rm -rf '$W/out' '$W/work'; '$OBD' convert --cache-dir none -d '$W/work' 'oci:$W/src:v1' 'oci:$W/out:v1'")
ratio=$(echo "scale=2; $o / $floor" | bc)
out=benchmarks/results/convert-latest.md
{
  echo "# obd convert benchmark"
  echo
  echo "Run: $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); command: benchmarks/convert-bench.sh"
  echo
  echo "Debian bookworm minbase as one layer: $size_tar bytes of tar, $size_gz gzipped. Best of 3, seconds."
  echo
  echo "| step | seconds |"
  echo "|---|---|"
  echo "| gzip -dc layer.tar.gz > /dev/null | $g |"
  echo "| mkfs.ext4 -q -F -O ^has_journal -d tree (tmpfs) 4 GiB sparse file | $m |"
  echo "| lz4 -1 -c layer.tar > /dev/null | $l |"
  echo "| **physical floor (sum)** | **$floor** |"
  echo "| **obd convert oci:src oci:out** | **$o** |"
  echo "| ratio obd / floor (goal <= 1.1) | $ratio |"
} | tee "$out"
