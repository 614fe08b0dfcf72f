#!/usr/bin/env bash
# Builds the libFuzzer targets (ZFile header/jump table/tar wrapper, LSMT header/index,
# configs, layer tar streams applied to ext4 (natively, metadata-only and as tar-meta), registry JSON/references, trace files, vhost-user
# messages and descriptor chains, gzip indexes, control API requests) with address sanitizer and runs each for SECONDS (default 30).
# Seeds are made fresh with the obd CLI; crashes are kept in fuzz-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-30}
if [ "$SECONDS_EACH" = "0" ]; then
  echo "fuzz.sh: SKIPPED (0 seconds requested)"
  exit 0
fi
SCRATCH=.build-fuzz
export OBD_FUZZ=1
for t in zfile lsmt config tar registry trace vhost-user gzip-index control-api; do
  swift build --scratch-path "$SCRATCH" -c debug --product "fuzz-$t" \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library 2>&1 | tail -1
done
BIN=$(swift build --scratch-path "$SCRATCH" -c debug --show-bin-path)

swift build -c debug --product obd >/dev/null
OBD=$(swift build -c debug --show-bin-path)/obd
WORK=$(mktemp -d /tmp/obd-fuzz.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"/{zfile,lsmt,config,tar,registry,trace,vhost-user} fuzz-artifacts
# Seeds: small valid inputs of each kind.
head -c 9000 /dev/urandom > "$WORK/in.bin"; head -c 9000 /dev/zero | tr '\0' 'o' >> "$WORK/in.bin"
"$OBD" zfile --bs 4 "$WORK/in.bin" "$WORK/zfile/a.zfile"
"$OBD" zfile --algorithm zstd --bs 8 -t "$WORK/in.bin" "$WORK/zfile/b.zfile.tar"
"$OBD" create "$WORK/d" "$WORK/i" 1
"$OBD" commit "$WORK/d" "$WORK/i" "$WORK/lsmt/empty.commit"
printf '{"lowers":[{"file":"a"},{"dir":"b"}],"upper":{"data":"d","index":"i"},"resultFile":"r"}' > "$WORK/config/c.json"
printf '{"cacheConfig":{"cacheDir":"/c","cacheSizeGB":1},"ioEngine":0,"logConfig":{"logLevel":1}}' > "$WORK/config/g.json"
python3 Tests/ConvertTests/Fixtures/layers.py make "$WORK/layers" >/dev/null
cp "$WORK/layers/update.tar.gz" "$WORK/layers/hostile/traversal.tar" "$WORK/layers/hostile/badlink.tar" "$WORK/tar/"
head -c 12000 "$WORK/layers/base.tar" > "$WORK/tar/base-head.tar"
"$OBD" apply --turbo-oci --export "$WORK/layers/base.tar" "$WORK/tar/base.tarmeta" >/dev/null
printf '{"auths":{"r.example/a":{"auth":"dTpw"},"r.example":{"username":"u","password":"p"}}}' > "$WORK/registry/cred.json"
printf '{"schemaVersion":2,"manifests":[{"digest":"sha256:00","platform":{"os":"linux","architecture":"amd64"}}]}' > "$WORK/registry/index.json"
printf 'localhost:5000/a/b:tag@sha256:%064d' 0 > "$WORK/registry/ref.txt"
# Traces: two records (layer 0 [0,+4096), layer 1 [8192,+512)) with their raw CRC-32C, and an empty one.
python3 - "$WORK/trace" <<'PY'
import struct, sys
def crc32c_raw(data, crc=0):
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc
for name, recs in (("two.trace", [(0, 4096, 0), (1, 512, 8192)]), ("empty.trace", [])):
    body = b"".join(struct.pack("<B3xIQq", ord("R"), l, c, o) for l, c, o in recs)
    open(sys.argv[1] + "/" + name, "wb").write(struct.pack("<I4xQI4x", 0xC2EF1820, len(body), crc32c_raw(body)) + body)
PY
# Priority lists (no magic): paths, directory lines, junk lines.
printf '/usr/bin/\n  /etc/passwd \r\n/usr/lib/*\nrelative\n/a/../../b\n' > "$WORK/trace/list.txt"
# vhost-user: fd count, queue-size exponent, chain head, a message, then guest memory holding a
# 3-descriptor chain (header, data, status) at guest address 0x1000 and an indirect table.
python3 - "$WORK/vhost-user" <<'PY'
import struct, sys
def msg(req, payload, fds=0): return bytes([fds, 3, 0, 0]) + struct.pack("<III", req, 1, len(payload)) + payload
desc = struct.pack("<QIHH", 0x1000 + 256, 16, 1, 1) + struct.pack("<QIHH", 0x1000 + 512, 512, 3, 2) \
     + struct.pack("<QIHH", 0x1000 + 1024, 1, 2, 0) + struct.pack("<QIHH", 0x1000 + 128, 32, 4, 0)
desc += bytes(128 - len(desc)) + struct.pack("<QIHH", 0x1000 + 256, 16, 1, 1) + struct.pack("<QIHH", 0x1000 + 1024, 1, 2, 0)
mem = desc + bytes(256 - len(desc)) + struct.pack("<IIQ", 0, 0, 1) + bytes(1100 - 272)
open(sys.argv[1] + "/features", "wb").write(msg(1, b"") + mem)
table = struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 1 << 20, 0x7f0000000000, 0)
open(sys.argv[1] + "/memtable", "wb").write(msg(5, table, 1) + mem)
open(sys.argv[1] + "/kick", "wb").write(msg(12, struct.pack("<Q", 1), 1) + mem)
PY

# Gzip indexes: edits (u16 offset, xor byte) of the fuzz target's own valid index (none,
# one in the header, one in the entry table), and a bare magic.
mkdir -p "$WORK/gzip-index"
printf 'x' > "$WORK/gzip-index/none"
printf '\x10\x00\x01' > "$WORK/gzip-index/header"
printf '\xf0\x0f\x40\x00\x02\x80' > "$WORK/gzip-index/body"
printf 'ddgzidx\0' > "$WORK/gzip-index/magic"

# Control API: method byte, request target, newline, body.
mkdir -p "$WORK/control-api"
printf '\001/v1/disks\n{"id":"d1","config":"/i/config.v1.json","mode":"writable","upper":"/u/d1","frontend":{"type":"vhost-user-blk","socket":"/run/d1.sock","queues":2}}' > "$WORK/control-api/add"
printf '\001/v1/disks\n{"id":"d2","config":"/i/c.json","mode":"read-only","frontend":{"type":"nbd","socket":"/run/d2.sock"},"x":1}' > "$WORK/control-api/unknown"
printf '\000/v1/disks/d1/stats\n' > "$WORK/control-api/stats"
printf '\002/v1/disks/d1' > "$WORK/control-api/delete"
printf '\000/v1/health?x=1\n' > "$WORK/control-api/health"

status=0
for t in zfile lsmt config tar registry trace vhost-user gzip-index control-api; do
  echo "== fuzz-$t for ${SECONDS_EACH}s"
  if ! "$BIN/fuzz-$t" -max_total_time="$SECONDS_EACH" -max_len=16384 -timeout=10 -rss_limit_mb=4096 \
       -artifact_prefix=fuzz-artifacts/ -print_final_stats=1 "$WORK/$t" 2>"$WORK/$t.log"; then
    tail -40 "$WORK/$t.log"
    echo "fuzz.sh: FAIL: fuzz-$t found a problem (input in fuzz-artifacts/)" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|Done" "$WORK/$t.log" | head -2
  fi
done
exit $status
