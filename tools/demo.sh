#!/usr/bin/env bash
# The obd demo: builds a layered, compressed image from scratch with the CLI, reads it
# back and shows what it did. Needs no root, loop device or kernel module.
#
#   layer 1: an ext4 filesystem (made in userspace by mke2fs -d from sample files)
#            written into a writable layer, committed as LZ4 ZFile in a tar wrapper
#   layer 2: the same filesystem with a file changed and one added (debugfs -w),
#            written on top (only changed blocks land), committed as zstd ZFile
#   then:    the two-layer stack is exported, and files are read back out of it
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
tools/install-deps.sh >/dev/null
echo "== building obd (release)"
swift build -c release --product obd 2>&1 | tail -1
OBD=$(swift build -c release --show-bin-path)/obd
export PATH=/usr/sbin:/sbin:$PATH

W=${DEMO_DIR:-$(mktemp -d /tmp/obd-demo.XXXXXX)}
mkdir -p "$W"
echo "== working in $W"
step() { echo; echo "\$ $*"; "$@"; }

# Sample files: text, a binary and a little tree.
mkdir -p "$W/rootfs/etc" "$W/rootfs/usr/share/doc" "$W/rootfs/data"
echo "obd-demo" > "$W/rootfs/etc/hostname"
for i in $(seq 1 4000); do echo "$i: obd stores images as block-level layers, compressed with random access."; done > "$W/rootfs/usr/share/doc/README.txt"
head -c 1048576 /dev/urandom > "$W/rootfs/data/random.bin"
cp "$OBD" "$W/rootfs/usr/obd-binary"

echo; echo "== layer 1: an ext4 image made in userspace"
rm -f "$W/base.ext4"
mke2fs -q -t ext4 -b 4096 -O ^has_journal -E root_owner=0:0 -d "$W/rootfs" "$W/base.ext4" 64M
rm -rf "$W/l1" "$W/l2" && mkdir -p "$W/l1" "$W/l2"
step "$OBD" create "$W/l1/data" "$W/l1/index" 1
printf '{"lowers":[],"upper":{"data":"data","index":"index"}}\n' > "$W/l1/config.v1.json"
step "$OBD" write "$W/l1/config.v1.json" "$W/base.ext4"
step "$OBD" commit -z -t --uuid 11111111-0000-0000-0000-000000000001 -m "demo layer 1" "$W/l1/data" "$W/l1/index" "$W/l1/layer.tar"

echo; echo "== layer 2: change a file, add one; write only the changed blocks on top"
cp "$W/base.ext4" "$W/next.ext4"
echo "obd-demo, layer 2" > "$W/hostname2"
echo "added in layer 2" > "$W/added.txt"
debugfs -w "$W/next.ext4" -R "rm /etc/hostname" >/dev/null 2>&1
debugfs -w "$W/next.ext4" -R "write $W/hostname2 /etc/hostname" >/dev/null 2>&1
debugfs -w "$W/next.ext4" -R "write $W/added.txt /data/added.txt" >/dev/null 2>&1
step "$OBD" create -u 11111111-0000-0000-0000-000000000001 "$W/l2/data" "$W/l2/index" 0
printf '{"lowers":[{"file":"../l1/layer.tar"}],"upper":{"data":"data","index":"index"}}\n' > "$W/l2/config.v1.json"
step "$OBD" write "$W/l2/config.v1.json" "$W/next.ext4"
step "$OBD" commit -z --algorithm zstd --bs 16 --uuid 11111111-0000-0000-0000-000000000002 -m "demo layer 2" "$W/l2/data" "$W/l2/index" "$W/l2/layer.zfile"

echo; echo "== the image: two lowers, bottom first"
printf '{"lowers":[{"file":"l1/layer.tar"},{"file":"l2/layer.zfile"}]}\n' > "$W/image.json"
step "$OBD" inspect "$W/l2/layer.zfile"
step "$OBD" export "$W/image.json" -o "$W/disk.raw"

echo; echo "== reading files back out of the exported disk"
got=$(debugfs -R "cat /etc/hostname" "$W/disk.raw" 2>/dev/null)
added=$(debugfs -R "cat /data/added.txt" "$W/disk.raw" 2>/dev/null)
debugfs -R "dump /data/random.bin $W/random.out" "$W/disk.raw" >/dev/null 2>&1
echo "/etc/hostname   -> $got"
echo "/data/added.txt -> $added"
want=$(sha256sum < "$W/rootfs/data/random.bin" | cut -c1-64)
have=$(sha256sum < "$W/random.out" | cut -c1-64)
echo "/data/random.bin sha256 $have (original $want)"
[ "$got" = "obd-demo, layer 2" ] && [ "$added" = "added in layer 2" ] && [ "$want" = "$have" ] || { echo "demo: FAILED: content differs" >&2; exit 1; }
e2fsck -fn "$W/disk.raw" >/dev/null 2>&1 && echo "e2fsck: the filesystem inside the image is clean"

echo; echo "== what it took"
raw=$(stat -c %s "$W/base.ext4")
printf "%-34s %12s bytes\n" "ext4 image (layer 1 input)" "$raw" \
  "layer 1 (LZ4 ZFile, tar-wrapped)" "$(stat -c %s "$W/l1/layer.tar")" \
  "layer 2 (zstd ZFile, only changes)" "$(stat -c %s "$W/l2/layer.zfile")" \
  "exported disk, apparent size" "$(stat -c %s "$W/disk.raw")" \
  "exported disk, allocated" "$(( $(stat -c %b "$W/disk.raw") * 512 ))"
echo; echo "demo: OK (files in $W)"
