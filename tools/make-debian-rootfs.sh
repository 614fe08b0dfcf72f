#!/usr/bin/env bash
# Set-up step for the convert tests and benchmark: a Debian bookworm minbase root file
# system made with debootstrap (from the Debian package mirror apt uses), packed as two
# OCI layer tars: the base (everything but /usr/share) and a second layer
# (/usr/share, plus a whiteout and a changed file, so the chain has real layering).
# The result is cached outside the repo and reused:
#   ~/.cache/obd-test/debian-minbase/{layer1.tar,layer2.tar,rootfs.done}
# Prints the cache folder. Needs root (debootstrap) the first time.
set -euo pipefail
CACHE=${OBD_TEST_CACHE:-$HOME/.cache/obd-test}/debian-minbase
if [ -f "$CACHE/rootfs.done" ]; then echo "$CACHE"; exit 0; fi
mkdir -p "$CACHE"
MIRROR=${OBD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$CACHE/rootfs
rm -rf "$root"
echo "make-debian-rootfs: debootstrap --variant=minbase bookworm from $MIRROR (cached in $CACHE)" >&2
debootstrap --variant=minbase bookworm "$root" "$MIRROR" >&2
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
# Layer 1: all but /usr/share. Layer 2: /usr/share, a whiteout and a changed file.
tar --numeric-owner --xattrs --xattrs-include='*' -C "$root" --exclude=./usr/share -cf "$CACHE/layer1.tar" .
l2=$CACHE/l2
rm -rf "$l2"; mkdir -p "$l2/usr" "$l2/etc"
cp -a "$root/usr/share" "$l2/usr/"
echo "obd-test" > "$l2/etc/hostname"
touch "$l2/etc/.wh.motd"
tar --numeric-owner --xattrs --xattrs-include='*' -C "$l2" -cf "$CACHE/layer2.tar" .
rm -rf "$l2" "$root"
touch "$CACHE/rootfs.done"
echo "$CACHE"
