# Runs inside the guest (tools/vm/run.sh). The kernel NBD client attached to
# `obd serve nbd` on the guest's own loopback: read-only reference image, then a
# writable image (write, sync, discard, e2fsck, commit, reopen).
#   guest-nbd.sh OBD WORK REF
set -u
OBD=$1 W=$2 REF=$3
fail() { echo "GUEST-FAIL: $*"; exit 1; }
modprobe nbd nbds_max=4 || fail "modprobe nbd"
modprobe ext4 || true
H_HOSTNAME=bd607dabacbe9bd67879ded5ed46737fff50602d8c59ab897419b02e334cb2ca
H_LAYER2=1538eca77d28ce19d698689a4dd64cf0dd497f6d3601ab8ed87b39bdeee032ba
H_RANDOM=40632c5e9c81d484001dfe5949a62acb3a4bd954517dd881bc4187349301c017

serve() { # serve CONFIG LOG ARGS...: starts obd serve nbd, waits until it is ready
  cfg=$1 log=$2; shift 2
  "$OBD" serve nbd "$cfg" "$@" 2> "$log" &
  SERVER=$!
  for _ in $(seq 100); do grep -q serving "$log" && return 0; sleep 0.2; done
  cat "$log"; fail "server not ready"
}
stop() { kill -TERM "$SERVER"; wait "$SERVER" || fail "server exit status $?"; }
hashof() { sha256sum "$1" | cut -d' ' -f1; }

echo "== 1. read-only reference stack over TCP"
serve "$W/ro.json" "$W/s1.log" --listen 127.0.0.1:10809
nbd-client -N "" -b 512 127.0.0.1 10809 /dev/nbd0 || fail "nbd-client connect"
mkdir -p /run/m && mount -o ro /dev/nbd0 /run/m || fail "mount ro"
[ "$(hashof /run/m/etc/hostname)" = "$H_HOSTNAME" ] || fail "hostname hash"
[ "$(hashof /run/m/data/layer2.bin)" = "$H_LAYER2" ] || fail "layer2.bin hash"
[ "$(hashof /run/m/data/random.bin)" = "$H_RANDOM" ] || fail "random.bin hash"
[ ! -e /run/m/remove-me.txt ] || fail "whiteout not applied"
echo "NBD-RO hashes OK"
umount /run/m
e2fsck -fn /dev/nbd0 > "$W/fsck1.log" 2>&1; rc=$?
echo "e2fsck -fn exit $rc (read-only reference image)"; [ $rc -le 4 ] || fail "e2fsck $rc"
nbd-client -d /dev/nbd0
stop

echo "== 2. writable image over a unix socket"
serve "$W/rw.json" "$W/s2.log" --socket /run/obd-nbd.sock   # unix sockets cannot live on 9p
nbd-client -N "" -b 512 -u /run/obd-nbd.sock /dev/nbd1 || fail "nbd-client unix"
mount /dev/nbd1 /run/m || fail "mount rw"
echo "written through obd over nbd" > /run/m/data/new.txt
head -c 300000 /dev/urandom > /run/m/data/blob.bin
BLOB=$(hashof /run/m/data/blob.bin)
rm /run/m/etc/hostname
sync
umount /run/m
e2fsck -fn /dev/nbd1 > "$W/fsck2.log" 2>&1; rc=$?
echo "e2fsck -fn exit $rc (after writes)"; [ $rc -le 4 ] || { cat "$W/fsck2.log"; fail "e2fsck $rc"; }
# Discard a range that the filesystem does not use (beyond 900 MiB) after filling it.
dd if=/dev/urandom of=/dev/nbd1 bs=1M seek=950 count=2 oflag=direct 2>/dev/null || fail "dd"
blkdiscard -f -o $((950 * 1048576)) -l $((2 * 1048576)) /dev/nbd1 || fail "blkdiscard"
cmp -n $((2 * 1048576)) -i $((950 * 1048576)):0 /dev/nbd1 /dev/zero || fail "discarded range is not zeros"
echo "NBD-RW blkdiscard reads back zeros"
nbd-client -d /dev/nbd1
stop

echo "== 3. commit the upper and open the new stack"
"$OBD" commit -z "$W/upper_data" "$W/upper_index" "$W/new.commit" || fail "commit"
serve "$W/after.json" "$W/s3.log" --listen 127.0.0.1:10810
nbd-client -N "" -b 512 127.0.0.1 10810 /dev/nbd2 || fail "nbd-client 3"
mount -o ro /dev/nbd2 /run/m || fail "mount after commit"
[ "$(cat /run/m/data/new.txt)" = "written through obd over nbd" ] || fail "new.txt after commit"
[ "$(hashof /run/m/data/blob.bin)" = "$BLOB" ] || fail "blob after commit"
[ ! -e /run/m/etc/hostname ] || fail "deleted file came back"
[ "$(hashof /run/m/data/layer2.bin)" = "$H_LAYER2" ] || fail "lower file after commit"
umount /run/m
nbd-client -d /dev/nbd2
stop
echo "GUEST-NBD-OK"
