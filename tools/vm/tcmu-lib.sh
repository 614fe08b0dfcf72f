# Shared by the TCMU guest scripts (sourced): configfs paths and attach/detach of
# tcm_loop LUNs, done as the accelerated-container-image snapshotter does it.
# Needs: fail(), W.
CORE=/sys/kernel/config/target/core/user_999999999
LOOP=/sys/kernel/config/target/loopback

attach() { # attach N CONFIG -> sets DEV; returns 1 if enable fails
  n=$1 cfg=$2
  C=$CORE/dev_$n
  mkdir -p "$C"
  echo -n "dev_config=overlaybd/$cfg;$n" > "$C/control"
  echo -n "max_data_area_mb=4" > "$C/control"
  echo -n 1 > "$C/enable" 2>/dev/null || return 1
  echo -n 2147483 > "$C/attrib/cmd_time_out"
  naa=$(printf 'naa.199%013d' "$n")
  mkdir -p "$LOOP/$naa/tpgt_1/lun/lun_0"
  echo -n "$naa" > "$LOOP/$naa/tpgt_1/nexus"
  ln -s "$C" "$LOOP/$naa/tpgt_1/lun/lun_0/dev_$n"
  DEV=""
  for _ in $(seq 100); do
    a=$(cat "$LOOP/$naa/tpgt_1/address" 2>/dev/null)
    DEV=$(ls "/sys/class/scsi_device/$a:0/device/block/" 2>/dev/null | head -1)
    [ -n "$DEV" ] && [ -b "/dev/$DEV" ] && break
    sleep 0.1
  done
  [ -n "$DEV" ] || fail "no SCSI disk for dev_$n"
  echo 2147483 > "/sys/block/$DEV/device/timeout"
  DEV=/dev/$DEV
}
detach() { # detach N
  n=$1; naa=$(printf 'naa.199%013d' "$n")
  rm -f "$LOOP/$naa/tpgt_1/lun/lun_0/dev_$n"
  rmdir "$LOOP/$naa/tpgt_1/lun/lun_0" "$LOOP/$naa/tpgt_1" "$LOOP/$naa" 2>/dev/null
  rmdir "$CORE/dev_$n" || fail "rmdir dev_$n"
}

