# Shared by tools/vm-test.sh boot and benchmarks/boot-bench.sh (sourced, bash):
# the Debian minbase image converted by obd and pushed to a docker-registry on host
# loopback, image configs with remote lowers, and `obd serve nbd` of them.
# Needs OBD (the obd binary) and BW (a work folder) set by the caller.

BOOT_PIDS=()
boot_cleanup() { # stops what boot_* started, by PID
  local p
  for p in "${BOOT_PIDS[@]:-}"; do
    [ -n "$p" ] || continue
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  BOOT_PIDS=()
}

boot_wait_for() { # boot_wait_for SECONDS CMD...: polls CMD every 0.1 s, at most SECONDS
  local n=$(( $1 * 10 )); shift
  local i
  for ((i = 0; i < n; i++)); do "$@" && return 0; sleep 0.1; done
  return 1
}

# boot_image: minbase layers -> OCI layout -> obd convert -> registry. Sets BOOT_REG
# (host:port), BOOT_REF (the converted image), BOOT_LOWERS (JSON lowers, remote).
boot_image() {
  local cache; cache=$(tools/make-debian-rootfs.sh)
  mkdir -p "$BW/src/blobs/sha256"
  local diffs="" layers="" n h
  for n in 1 2; do
    h=$(sha256sum "$cache/layer$n.tar" | cut -d' ' -f1)
    ln -f "$cache/layer$n.tar" "$BW/src/blobs/sha256/$h" 2>/dev/null || cp "$cache/layer$n.tar" "$BW/src/blobs/sha256/$h"
    diffs="$diffs${diffs:+,}\"sha256:$h\""
    layers="$layers${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$h\",\"size\":$(stat -c %s "$cache/layer$n.tar")}"
  done
  printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$diffs" > "$BW/c.json"
  local hc; hc=$(sha256sum "$BW/c.json" | cut -d' ' -f1); cp "$BW/c.json" "$BW/src/blobs/sha256/$hc"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
    "$hc" "$(stat -c %s "$BW/c.json")" "$layers" > "$BW/m.json"
  local hm; hm=$(sha256sum "$BW/m.json" | cut -d' ' -f1); cp "$BW/m.json" "$BW/src/blobs/sha256/$hm"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
    "$hm" "$(stat -c %s "$BW/m.json")" > "$BW/src/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' > "$BW/src/oci-layout"

  local port=$((20000 + RANDOM % 20000))
  printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n  secret: obd-boot\n' \
    "$BW/registry" "$port" > "$BW/registry.yml"
  docker-registry serve "$BW/registry.yml" > "$BW/registry.log" 2>&1 &
  BOOT_PIDS+=($!)
  BOOT_REG=127.0.0.1:$port
  boot_wait_for 20 curl -sf -o /dev/null "http://$BOOT_REG/v2/" || { cat "$BW/registry.log"; echo "boot: registry did not start" >&2; return 1; }
  skopeo copy --quiet --dest-tls-verify=false "oci:$BW/src:v1" "docker://$BOOT_REG/boot/minbase:v1" || return 1
  BOOT_REF=$BOOT_REG/boot/minbase:v1-obd
  local t0; t0=$(date +%s.%N)
  timeout 300 "$OBD" convert --plain-http --vsize 4 --cache-dir none -d "$BW/convert-work" "$BOOT_REG/boot/minbase:v1" "$BOOT_REF" \
    > "$BW/convert.log" 2>&1 || { cat "$BW/convert.log"; echo "boot: convert failed" >&2; return 1; }
  BOOT_CONVERT_SECONDS=$(echo "$(date +%s.%N) - $t0" | bc)
  "$OBD" pull --plain-http "$BOOT_REF" > "$BW/layers.txt" || return 1
  BOOT_LOWERS=$(awk '{printf "%s{\"digest\":\"%s\",\"size\":%s}", (n++?",":""), $1, $2}' "$BW/layers.txt")
  BOOT_BLOB_BYTES=$(awk '{s += $2} END {print s}' "$BW/layers.txt")
}

# boot_global NAME: writes $BW/NAME.obd.json, a global config with an empty cache
# $BW/NAME.cache and a metrics endpoint; sets BOOT_METRICS_PORT.
boot_global() {
  BOOT_METRICS_PORT=$((40000 + RANDOM % 20000))
  rm -rf "$BW/$1.cache"; mkdir -p "$BW/$1.cache"
  printf '{"cacheConfig":{"cacheType":"file","cacheDir":"%s","cacheSizeGB":2},"exporterConfig":{"enable":true,"address":"127.0.0.1","port":%s}}\n' \
    "$BW/$1.cache" "$BOOT_METRICS_PORT" > "$BW/$1.obd.json"
}

# boot_config NAME [upper|ro] [JSON-MEMBERS]: writes $BW/NAME.json, the image config
# (remote lowers), with a fresh writable upper when asked and more members (e.g.
# '"recordTracePath":"/path"') appended.
boot_config() {
  local extra=${3:+,$3}
  if [ "${2:-}" = upper ]; then
    rm -f "$BW/$1.upper_data" "$BW/$1.upper_index"
    "$OBD" create "$BW/$1.upper_data" "$BW/$1.upper_index" 4 >/dev/null
    extra="$extra,\"upper\":{\"data\":\"$1.upper_data\",\"index\":\"$1.upper_index\"}"
  fi
  printf '{"repoBlobUrl":"http://%s/v2/boot/minbase/blobs","lowers":[%s]%s}\n' "$BOOT_REG" "$BOOT_LOWERS" "$extra" > "$BW/$1.json"
}

# boot_serve NAME [--read-only]: obd serve nbd $BW/NAME.json on $BW/NAME.sock with
# the global config $BW/NAME.obd.json; returns once it prints "serving". Sets BOOT_SERVER.
boot_serve() {
  local name=$1; shift
  rm -f "$BW/$name.sock"
  "$OBD" serve nbd "$BW/$name.json" --config "$BW/$name.obd.json" --socket "$BW/$name.sock" "$@" 2> "$BW/$name.serve.log" &
  BOOT_SERVER=$!
  BOOT_PIDS+=($BOOT_SERVER)
  boot_wait_for 60 grep -qs serving "$BW/$name.serve.log" || { cat "$BW/$name.serve.log"; echo "boot: obd serve nbd not ready" >&2; return 1; }
}

boot_stop_server() { # stops BOOT_SERVER; fails when it exits with an error
  kill -TERM "$BOOT_SERVER"
  local rc=0; timeout 60 tail --pid="$BOOT_SERVER" -f /dev/null || true
  wait "$BOOT_SERVER" || rc=$?
  return $rc
}

boot_metric() { # boot_metric NAME: the sum of a Prometheus counter of the running server
  curl -sf --max-time 10 "http://127.0.0.1:$BOOT_METRICS_PORT/metrics" |
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 {s += $2} END {printf "%d\n", s}'
}
