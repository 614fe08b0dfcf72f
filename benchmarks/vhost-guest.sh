# Runs inside the benchmark guest of benchmarks/vhost-bench.sh (tools/vm/run.sh: the host
# root over 9p, so fio is the host's):  vhost-guest.sh DIR RUNTIME
# The three disks are found by their PCI slot (set by vhost-bench.sh): 00:10.0 obd
# vhost-user-blk, 00:11.0 qemu-storage-daemon vhost-user-blk, 00:12.0 obd NBD via QEMU's
# NBD client. Each point runs RUNTIME s (after 2 s of ramp) on each disk in turn, fio JSON
# to DIR/NAME-POINT.json; prints GUEST-BENCH-OK at the end.
set -u
DIR=$1 RT=$2
fail() { echo "GUEST-FAIL: $*"; exit 1; }
modprobe virtio_blk || true
for _ in $(seq 100); do [ "$(ls -d /sys/block/vd* 2>/dev/null | wc -l)" -ge 3 ] && break; sleep 0.1; done
dev_of() { # PCI slot -> /dev/vdX
  for b in /sys/block/vd*; do
    case "$(readlink -f "$b")" in *"0000:00:$1/"*) echo "/dev/$(basename "$b")"; return 0 ;; esac
  done
  return 1
}
OBD=$(dev_of 10.0) || fail "no obd vhost-user-blk disk"
QSD=$(dev_of 11.0) || fail "no qemu-storage-daemon disk"
NBD=$(dev_of 12.0) || fail "no NBD disk"
for d in $OBD $QSD $NBD; do
  echo "GUEST-DISK $d size=$(cat /sys/block/${d#/dev/}/size) queues=$(ls /sys/block/${d#/dev/}/mq | wc -l) ro=$(cat /sys/block/${d#/dev/}/ro)"
done
run() { # NAME DEV POINT fio-args...
  local name=$1 dev=$2 point=$3; shift 3
  fio --name=b --filename="$dev" --direct=1 --ioengine=libaio --readonly --time_based --runtime="$RT" --ramp_time=2 \
      --output-format=json --output="$DIR/$name-$point.json" "$@" || fail "fio $name $point"
  echo "GUEST-POINT $name $point done"
}
for point in qd1 qd32 seq; do
  for pair in "obd $OBD" "qsd $QSD" "nbd $NBD"; do
    set -- $pair
    case $point in
      qd1) run "$1" "$2" qd1 --rw=randread --bs=4k --iodepth=1 ;;
      qd32) run "$1" "$2" qd32 --rw=randread --bs=4k --iodepth=32 ;;
      seq) run "$1" "$2" seq --rw=read --bs=1m --iodepth=4 ;;
    esac
  done
done
echo "GUEST-BENCH-OK"
