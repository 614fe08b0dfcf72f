# Runs inside the guest: the disk is QEMU's vhost-user-blk device (num-queues=2) served
# by `obd serve vhost-user` on the host. MODE ro: mount read-only and check file hashes;
# rw: also write a file, remount and read it back; check: the file of an earlier rw boot is there;
# reconnect: after the first hashes, write DIR/phase1 and wait for DIR/phase2 (the host restarts
# obd in between and QEMU reconnects), then drop the caches and hash again.
# fio: writes and verifies the raw disk with fio (libaio, queue depth 16), writing DIR/phase1
# once it runs, while the host kills and restarts obd; fio must finish with no error.
set -u
fail() { echo "GUEST-FAIL: $*"; exit 1; }
MODE=${1:-ro}
DIR=${2:-}
if [ "$MODE" = fio ]; then
  modprobe virtio_blk || true
  for _ in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.2; done
  [ -b /dev/vda ] || fail "no /dev/vda"
  ( sleep 2; touch "$DIR/phase1" ) &
  fio --name=verify --filename=/dev/vda --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite --bs=4k \
      --size=128M --verify=crc32c --verify_fatal=1 --do_verify=1 --randrepeat=1 --output="$DIR/fio.out" \
      || { cat "$DIR/fio.out"; fail "fio"; }
  grep -q "err= 0" "$DIR/fio.out" || { cat "$DIR/fio.out"; fail "fio reported errors"; }
  [ -f "$DIR/phase2" ] || fail "fio finished before the back-end was restarted"
  echo "GUEST-VHOST-OK"
  exit 0
fi
modprobe virtio_blk || true
modprobe ext4 || true
for _ in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.2; done
[ -b /dev/vda ] || fail "no /dev/vda"
echo "GUEST-VHOST-QUEUES=$(ls /sys/block/vda/mq | wc -l) SIZE=$(cat /sys/block/vda/size) RO=$(cat /sys/block/vda/ro)"
mkdir -p /run/v
if [ "$MODE" = ro ] || [ "$MODE" = reconnect ]; then
  mount -o ro /dev/vda /run/v || fail "mount /dev/vda"
else
  mount /dev/vda /run/v || fail "mount /dev/vda read-write"
fi
[ "$(sha256sum /run/v/etc/hostname | cut -d' ' -f1)" = bd607dabacbe9bd67879ded5ed46737fff50602d8c59ab897419b02e334cb2ca ] || fail "hostname"
[ "$(sha256sum /run/v/data/random.bin | cut -d' ' -f1)" = 40632c5e9c81d484001dfe5949a62acb3a4bd954517dd881bc4187349301c017 ] || fail "random.bin"
case "$MODE" in
  rw)
    head -c 3000000 /dev/urandom > /run/v/vhost.bin || fail "write"
    sum=$(sha256sum /run/v/vhost.bin | cut -d' ' -f1)
    sync
    umount /run/v
    echo 3 > /proc/sys/vm/drop_caches
    mount /dev/vda /run/v || fail "remount"
    [ "$(sha256sum /run/v/vhost.bin | cut -d' ' -f1)" = "$sum" ] || fail "read back"
    echo "$sum" > /run/v/vhost.sum
    sync
    ;;
  reconnect)
    touch "$DIR/phase1"
    for _ in $(seq 600); do [ -f "$DIR/phase2" ] && break; sleep 0.1; done
    [ -f "$DIR/phase2" ] || fail "the host did not restart obd"
    echo 3 > /proc/sys/vm/drop_caches
    [ "$(sha256sum /run/v/data/random.bin | cut -d' ' -f1)" = 40632c5e9c81d484001dfe5949a62acb3a4bd954517dd881bc4187349301c017 ] || fail "random.bin after the reconnect"
    ;;
  check)
    [ "$(sha256sum /run/v/vhost.bin | cut -d' ' -f1)" = "$(cat /run/v/vhost.sum)" ] || fail "file of the earlier boot"
    ;;
esac
umount /run/v
[ "$MODE" = ro ] || [ "$MODE" = reconnect ] || { e2fsck -fn /dev/vda > /dev/null 2>&1 || fail "e2fsck"; echo "GUEST-VHOST-E2FSCK-OK"; }
echo "GUEST-VHOST-OK"
