# Runs inside the guest: the image is QEMU's virtio-blk disk, backed by obd's NBD
# export on the host (the VM-runtime path). Mounts it and checks file hashes.
set -u
fail() { echo "GUEST-FAIL: $*"; exit 1; }
modprobe virtio_blk || true
modprobe ext4 || true
for _ in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.2; done
mkdir -p /run/v && mount -o ro /dev/vda /run/v || fail "mount /dev/vda"
[ "$(sha256sum /run/v/etc/hostname | cut -d' ' -f1)" = bd607dabacbe9bd67879ded5ed46737fff50602d8c59ab897419b02e334cb2ca ] || fail "hostname"
[ "$(sha256sum /run/v/data/random.bin | cut -d' ' -f1)" = 40632c5e9c81d484001dfe5949a62acb3a4bd954517dd881bc4187349301c017 ] || fail "random.bin"
umount /run/v
echo "GUEST-VIRTIO-OK"
