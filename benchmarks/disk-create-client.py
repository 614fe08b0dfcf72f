#!/usr/bin/env python3
"""Client side of benchmarks/disk-create-bench.sh: makes N writable disks at once over one
already-open image and times each until its first 4 KiB read over NBD (unix socket) is
answered, with the bytes compared to the flat image.

  disk-create-client.py obd  CTL_SOCK CONFIG WORKDIR BASE_RAW N
      POST /v1/disks (writable, nbd frontend, new upper WORKDIR/u-I) to obd daemon, one
      connection and thread per disk, then NBD read on WORKDIR/s-I.sock; the disks are
      removed afterwards (not timed).
  disk-create-client.py qsd  QMP_SOCK NBD_SOCK WORKDIR BASE_RAW N
      per disk: qemu-img create -f qcow2 -b BASE_RAW -F raw WORKDIR/o-I.qcow2, QMP
      blockdev-add (qcow2 over a file node, backing = the already open node "base") and
      block-export-add (nbd, writable, name dI) on one qemu-storage-daemon, then NBD read
      of export dI on NBD_SOCK; exports and nodes deleted afterwards (not timed).

Prints one JSON line: {"n": N, "total_ms": ..., "per_disk_ms": [...]} where per_disk_ms is
each disk's time from the start of the round to its first read answered."""
import json, os, socket, struct, subprocess, sys, threading, time

NBD_MAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise IOError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


def nbd_read(path, name, offset, length, timeout=30):
    """Newstyle fixed handshake with NBD_OPT_GO (or EXPORT_NAME if GO is not supported),
    then one NBD_CMD_READ with a simple reply."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        hello = recv_exact(s, 18)
        if hello[:8] != NBD_MAGIC or struct.unpack(">Q", hello[8:16])[0] != IHAVEOPT:
            raise IOError("not an NBD newstyle server")
        hflags = struct.unpack(">H", hello[16:18])[0]
        no_zeroes = hflags & 2
        s.sendall(struct.pack(">I", 1 | (2 if no_zeroes else 0)))
        data = struct.pack(">I", len(name)) + name.encode() + struct.pack(">H", 0)
        s.sendall(struct.pack(">QII", IHAVEOPT, 7, len(data)) + data)
        while True:
            magic, opt, rtype, rlen = struct.unpack(">QIII", recv_exact(s, 20))
            if magic != REPLY_MAGIC:
                raise IOError("bad option reply magic")
            payload = recv_exact(s, rlen) if rlen else b""
            if rtype == 1:  # ACK
                break
            if rtype == 3:  # INFO
                continue
            if rtype == (1 << 31) + 1:  # ERR_UNSUP: old server, EXPORT_NAME
                s.sendall(struct.pack(">QII", IHAVEOPT, 1, len(name)) + name.encode())
                recv_exact(s, 10 if no_zeroes else 134)
                break
            raise IOError("NBD option error %#x: %r" % (rtype, payload))
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 0x1234, offset, length))
        magic, err, handle = struct.unpack(">IIQ", recv_exact(s, 16))
        if magic != 0x67446698 or err != 0 or handle != 0x1234:
            raise IOError("NBD read failed: magic %#x error %d" % (magic, err))
        data = recv_exact(s, length)
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 0x1235, 0, 0))  # DISC
        return data
    finally:
        s.close()


def http(sock_path, method, target, body=None, timeout=130):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        b = json.dumps(body).encode() if body is not None else b""
        head = "%s %s HTTP/1.1\r\nHost: obd\r\nConnection: close\r\n" % (method, target)
        if body is not None:
            head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(b)
        s.sendall((head + "\r\n").encode() + b)
        resp = bytearray()
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            resp += chunk
        status = int(resp.split(b" ", 2)[1])
        return status, bytes(resp.split(b"\r\n\r\n", 1)[1])
    finally:
        s.close()


class QMP:
    def __init__(self, path, timeout=60):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.f = self.s.makefile("rb")
        self.lock = threading.Lock()
        json.loads(self.f.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, _command, **args):
        with self.lock:
            self.s.sendall(json.dumps({"execute": _command, "arguments": args}).encode() + b"\n")
            while True:
                r = json.loads(self.f.readline())
                if "return" in r:
                    return r["return"]
                if "error" in r:
                    raise IOError("QMP %s: %s" % (_command, r["error"]))
                # events are skipped


def run(kind, args):
    sock, work, base, n = args[0], args[2], args[3], int(args[4])
    size = os.path.getsize(base)
    blocks = size // 4096
    offsets = [((i * 7919 + 13) % blocks) * 4096 for i in range(n)]
    with open(base, "rb") as f:
        expect = []
        for off in offsets:
            f.seek(off)
            expect.append(f.read(4096))
    done = [None] * n
    errors = []
    qmp = QMP(sock) if kind == "qsd" else None
    start = threading.Event()
    t0 = [0.0]

    def one(i):
        start.wait()
        try:
            if kind == "obd":
                spec = {"id": "d%d" % i, "config": args[1], "mode": "writable", "upper": "%s/u-%d" % (work, i),
                        "frontend": {"type": "nbd", "socket": "%s/s-%d.sock" % (work, i)}}
                st, b = http(sock, "POST", "/v1/disks", spec)
                if st != 201:
                    raise IOError("add d%d: HTTP %d %s" % (i, st, b[:200]))
                data = nbd_read("%s/s-%d.sock" % (work, i), "", offsets[i], 4096)
            else:
                ov = "%s/o-%d.qcow2" % (work, i)
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", ov], check=True)
                qmp.cmd("blockdev-add", driver="qcow2", **{"node-name": "o%d" % i},
                        file={"driver": "file", "filename": ov}, backing="base")
                qmp.cmd("block-export-add", type="nbd", id="e%d" % i, **{"node-name": "o%d" % i}, name="d%d" % i, writable=True)
                data = nbd_read(args[1], "d%d" % i, offsets[i], 4096)
            if data != expect[i]:
                raise IOError("disk %d: first read differs from the image" % i)
            done[i] = (time.monotonic() - t0[0]) * 1000
        except Exception as e:  # noqa
            errors.append("disk %d: %s" % (i, e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    t0[0] = time.monotonic()
    start.set()
    for t in threads:
        t.join(300)
    total = (time.monotonic() - t0[0]) * 1000
    # Clean-up, not timed.
    for i in range(n):
        try:
            if kind == "obd":
                if done[i] is not None or os.path.exists("%s/u-%d" % (work, i)):
                    http(sock, "DELETE", "/v1/disks/d%d" % i)
            else:
                qmp.cmd("block-export-del", id="e%d" % i)
        except Exception:
            pass
    if kind == "qsd":
        for i in range(n):  # the export goes away asynchronously: retry the node deletion briefly
            for _ in range(100):
                try:
                    qmp.cmd("blockdev-del", **{"node-name": "o%d" % i})
                    break
                except IOError:
                    time.sleep(0.01)
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"n": n, "total_ms": round(total, 2), "per_disk_ms": [round(d, 2) for d in done]}))


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2:])
