#!/usr/bin/env python3
"""Test layers for obd convert, and an independent model of the tree they unpack to.

  layers.py make OUTDIR      writes base.tar, update.tar.gz, sparse.tar.zst (and hostile/*.tar)
  layers.py oci OUT TAR...   an OCI layout (tag v1) with these layers
  layers.py walk DIR         the rows of a mounted tree (the VM test compares them with the model)
  layers.py model TAR...     prints the tree the layers give, applied in order with OCI
                             whiteouts, one row per path (the columns of obd's Ext4Entry.row;
                             directory sizes shown as "-")
"""
import hashlib, io, os, subprocess, sys, tarfile

MT = 1700000000

def info(name, type=tarfile.REGTYPE, mode=0o644, uid=0, gid=0, mtime=MT, **kw):
    t = tarfile.TarInfo(name)
    t.type, t.mode, t.uid, t.gid, t.mtime = type, mode, uid, gid, mtime
    for k, v in kw.items():
        setattr(t, k, v)
    return t

def add(tf, t, data=None):
    if data is not None:
        t.size = len(data)
        tf.addfile(t, io.BytesIO(data))
    else:
        tf.addfile(t)

def make(out):
    os.makedirs(out + "/hostile", exist_ok=True)
    long = "d" * 120 + "/" + "n" * 200 + ".txt"
    cap = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service, effective
    with tarfile.open(out + "/base.tar", "w", format=tarfile.PAX_FORMAT) as tf:
        for d, m in [("etc", 0o755), ("usr", 0o755), ("usr/bin", 0o755), ("usr/lib", 0o755), ("dev", 0o755),
                     ("run", 0o755), ("tmp", 0o1777), ("home", 0o755), ("home/user", 0o700),
                     ("replace", 0o755), ("replace/dir-to-file", 0o755), ("del", 0o755), ("del/sub", 0o755),
                     ("opq", 0o755), (long.split("/")[0], 0o755)]:
            add(tf, info(d + "/", tarfile.DIRTYPE, m, uid=1000 if d.startswith("home/") else 0,
                         gid=1000 if d.startswith("home/") else 0))
        add(tf, info("etc/hostname"), b"obd-convert-test\n")
        add(tf, info("etc/abs-link", tarfile.SYMTYPE, 0o777, linkname="/etc/hostname"))
        add(tf, info("usr/bin/tool", mode=0o4755), b"#!/bin/sh\necho tool\n" * 50)
        add(tf, info("usr/lib/tool-hardlink", tarfile.LNKTYPE, linkname="usr/bin/tool"))
        add(tf, info("usr/bin/rel-link", tarfile.SYMTYPE, 0o777, linkname="tool"))
        add(tf, info("usr/bin/long-target", tarfile.SYMTYPE, 0o777, linkname="/" + "x" * 150))
        add(tf, info("usr/bin/ping", mode=0o755, pax_headers={"SCHILY.xattr.security.capability": cap.decode("latin-1")}), b"\x7fELF fake ping\n")
        add(tf, info("usr/lib/xattr.txt", pax_headers={"SCHILY.xattr.user.obd": "value-1", "SCHILY.xattr.trusted.obd": "t"}), b"xattrs\n")
        add(tf, info("dev/null", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=3))
        add(tf, info("dev/loop0", tarfile.BLKTYPE, 0o660, gid=6, devmajor=7, devminor=0))
        add(tf, info("dev/bigdev", tarfile.CHRTYPE, 0o600, devmajor=300, devminor=70000))
        add(tf, info("run/fifo", tarfile.FIFOTYPE, 0o600))
        add(tf, info("home/user/owned.txt", mode=0o640, uid=1000, gid=1000, mtime=1600000000), b"owned by 1000\n")
        add(tf, info("home/user/old-date.txt", mtime=100), b"1970\n")
        add(tf, info("home/user/empty"), b"")
        add(tf, info(long), b"long name\n")
        add(tf, info("replace/file-to-dir"), b"a file first\n")
        add(tf, info("replace/dir-to-file/child"), b"child\n")
        add(tf, info("del/a.txt"), b"a\n")
        add(tf, info("del/sub/b.txt"), b"b\n")
        add(tf, info("opq/lower.txt"), b"lower\n")
        add(tf, info("remove-me.txt"), b"bye\n")
        add(tf, info("keep-one-link.txt"), b"two names\n")
        add(tf, info("usr/lib/second-name", tarfile.LNKTYPE, linkname="keep-one-link.txt"))
        add(tf, info("big.bin"), bytes(range(256)) * 4096 * 3)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        add(tf, info("opq/", tarfile.DIRTYPE, 0o755))
        add(tf, info("opq/.wh..wh..opq"), b"")
        add(tf, info("opq/new.txt"), b"upper\n")
        add(tf, info(".wh.remove-me.txt"), b"")
        add(tf, info("del/.wh.sub"), b"")
        add(tf, info("usr/lib/.wh.second-name"), b"")
        add(tf, info("replace/.wh.file-to-dir"), b"")
        add(tf, info("replace/file-to-dir/", tarfile.DIRTYPE, 0o755))
        add(tf, info("replace/file-to-dir/inside.txt"), b"now a directory\n")
        add(tf, info("replace/dir-to-file"), b"now a file\n")
        add(tf, info("etc/hostname", mtime=MT + 5), b"changed in layer 2\n")
        add(tf, info("etc/hostname-link", tarfile.LNKTYPE, linkname="etc/hostname"))
        add(tf, info("home/user/new-dir/", tarfile.DIRTYPE, 0o750, uid=1000, gid=1000))
    import gzip
    with open(out + "/update.tar.gz", "wb") as f:
        f.write(gzip.compress(raw.getvalue(), compresslevel=6, mtime=0))
    # A 1 GiB sparse file packed by GNU tar (PAX sparse), compressed with zstd.
    sd = out + "/sparse-src"
    os.makedirs(sd + "/data", exist_ok=True)
    with open(sd + "/data/sparse.img", "wb") as f:
        f.truncate(1 << 30)
        for off in (0, 512 << 20, (1 << 30) - 8192):
            f.seek(off)
            f.write(b"S" * 4096)
    os.utime(sd + "/data/sparse.img", (MT, MT)); os.utime(sd + "/data", (MT, MT))
    subprocess.run(["tar", "--sparse", "--format=pax", "--numeric-owner", "--owner=0", "--group=0", "--mtime=@%d" % MT,
                    "-C", sd, "-cf", out + "/sparse.tar", "data"], check=True)
    subprocess.run(["zstd", "-q", "-f", "--rm", out + "/sparse.tar", "-o", out + "/sparse.tar.zst"], check=True)
    # Hostile inputs.
    with tarfile.open(out + "/hostile/traversal.tar", "w", format=tarfile.PAX_FORMAT) as tf:
        add(tf, info("../../../escape.txt"), b"climbed\n")
        add(tf, info("/abs/path.txt"), b"absolute\n")
        add(tf, info("a/../../b/./c.txt"), b"cleaned\n")
    with tarfile.open(out + "/hostile/badlink.tar", "w", format=tarfile.PAX_FORMAT) as tf:
        add(tf, info("link", tarfile.LNKTYPE, linkname="../../../etc/shadow-outside"))
    with tarfile.open(out + "/hostile/huge.tar", "w", format=tarfile.PAX_FORMAT) as tf:
        add(tf, info("start.txt"), b"x\n")
    data = open(out + "/hostile/huge.tar", "rb").read()
    t = info("huge.bin"); t.size = 1 << 40
    hdr = t.tobuf(tarfile.PAX_FORMAT)
    open(out + "/hostile/huge.tar", "wb").write(data[:1024] + hdr + b"\0" * 4096)
    whole = open(out + "/base.tar", "rb").read()
    open(out + "/hostile/truncated.tar", "wb").write(whole[:len(whole) // 2 + 100])

def clean(name):
    out = []
    for p in name.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if out:
                out.pop()
            continue
        out.append(p)
    return "/".join(out)

def model(tars):
    # node: dict(type, mode, uid, gid, mtime, content, xattrs, ino)
    nodes, inos, next_ino = {"": {"type": "directory"}}, {}, [1]
    def new_ino():
        next_ino[0] += 1
        return next_ino[0]
    def parent(p):
        return p.rsplit("/", 1)[0] if "/" in p else ""
    def remove(p):
        for k in [k for k in nodes if k == p or k.startswith(p + "/")]:
            del nodes[k]
    def mkparents(p, mtime):
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            q = "/".join(parts[:i])
            if q not in nodes or nodes[q]["type"] != "directory":
                remove(q)
                nodes[q] = dict(type="directory", mode=0o755, uid=0, gid=0, mtime=mtime, content="", xattrs={}, ino=new_ino())
    for path in tars:
        extracted = set()
        if path.endswith(".zst"):  # Python's tarfile has no zstd: decompress with the zstd tool
            opened = tarfile.open(fileobj=io.BytesIO(subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout))
        else:
            opened = tarfile.open(path, "r:*")
        with opened as tf:
            for m in tf:
                p = clean(m.name)
                if not p:
                    continue
                base = p.rsplit("/", 1)[-1]
                if base == ".wh..wh..opq":
                    d = parent(p)
                    for k in [k for k in nodes if d == "" or k.startswith(d + "/")]:
                        if k != d and k not in extracted and k in nodes:
                            remove(k)
                    continue
                if base.startswith(".wh."):
                    victim = (parent(p) + "/" if parent(p) else "") + base[4:]
                    if victim not in extracted:
                        remove(victim)
                    continue
                extracted.add(p)
                q = p
                while "/" in q:
                    q = parent(q); extracted.add(q)
                mkparents(p, m.mtime)
                # Python decodes PAX values as UTF-8 with surrogateescape; binary xattrs come back as latin-1 here.
                xattrs = {}
                for k, v in m.pax_headers.items():
                    if k.startswith("SCHILY.xattr."):
                        try:
                            xattrs[k[13:]] = v.encode("latin-1")
                        except UnicodeEncodeError:
                            xattrs[k[13:]] = v.encode("utf-8", "surrogateescape")
                meta = dict(mode=m.mode & 0o7777, uid=m.uid, gid=m.gid, mtime=int(m.mtime), xattrs=xattrs)
                if m.islnk():
                    target = clean(m.linkname)
                    if p in nodes and nodes[p] is nodes.get(target):
                        continue
                    remove(p)
                    nodes[p] = nodes[target]
                    continue
                if m.isdir():
                    if p in nodes and nodes[p]["type"] == "directory":
                        nodes[p].update(meta)
                        continue
                    remove(p)
                    nodes[p] = dict(type="directory", content="", ino=new_ino(), **meta)
                    continue
                remove(p)
                if m.isreg():
                    h = hashlib.sha256()
                    f = tf.extractfile(m)
                    size = 0
                    while True:
                        b = f.read(1 << 20)
                        if not b:
                            break
                        h.update(b); size += len(b)
                    nodes[p] = dict(type="regular", content="sha256=" + h.hexdigest(), size=size, ino=new_ino(), **meta)
                elif m.issym():
                    meta["mode"] = 0o777
                    nodes[p] = dict(type="symlink", content="target=" + m.linkname, size=len(m.linkname.encode()), ino=new_ino(), **meta)
                elif m.ischr() or m.isblk():
                    nodes[p] = dict(type="chardev" if m.ischr() else "blockdev", content="rdev=%d,%d" % (m.devmajor, m.devminor),
                                    size=0, ino=new_ino(), **meta)
                elif m.isfifo():
                    nodes[p] = dict(type="fifo", content="", size=0, ino=new_ino(), **meta)
    links = {}
    for k, n in nodes.items():
        links[id(n)] = links.get(id(n), 0) + 1
    for k in sorted(nodes):
        if k == "":
            continue
        n = nodes[k]
        if n["type"] == "directory":
            nlink = 2 + sum(1 for c, cn in nodes.items() if c and parent(c) == k and cn["type"] == "directory")
            size = "-"
        else:
            nlink, size = links[id(n)], str(n.get("size", 0))
        xs = []
        for name in sorted(n.get("xattrs", {})):
            v = n["xattrs"][name]
            printable = all(0x20 <= b < 0x7f and b != 0x22 for b in v)
            xs.append(name + "=" + ('"' + v.decode() + '"' if printable else "0x" + v.hex()))
        print("\t".join(["/" + k, n["type"], "%04o" % n["mode"], str(n["uid"]), str(n["gid"]), size, str(nlink),
                         str(n["mtime"]), n.get("content", ""), " ".join(xs)]))

def oci(out, tars, created="2023-11-14T22:13:20Z"):
    """An OCI layout tagged v1 with these layer files (tar, .gz, .zst), bottom first;
    the config's `created` is left out when it is None."""
    import gzip, json
    os.makedirs(out + "/blobs/sha256", exist_ok=True)
    def put(b):
        h = hashlib.sha256(b).hexdigest()
        open(out + "/blobs/sha256/" + h, "wb").write(b)
        return h
    layers, diffs = [], []
    for t in tars:
        b = open(t, "rb").read()
        if t.endswith(".gz"):
            raw, mt = gzip.decompress(b), "application/vnd.oci.image.layer.v1.tar+gzip"
        elif t.endswith(".zst"):
            raw, mt = subprocess.run(["zstd", "-dc", t], check=True, capture_output=True).stdout, "application/vnd.oci.image.layer.v1.tar+zstd"
        else:
            raw, mt = b, "application/vnd.oci.image.layer.v1.tar"
        layers.append({"mediaType": mt, "digest": "sha256:" + put(b), "size": len(b)})
        diffs.append("sha256:" + hashlib.sha256(raw).hexdigest())
    cfg = {"architecture": "amd64", "os": "linux", "created": created, "rootfs": {"type": "layers", "diff_ids": diffs}}
    if created is None:
        del cfg["created"]
    cfg = json.dumps(cfg).encode()
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + put(cfg), "size": len(cfg)},
                      "layers": layers}).encode()
    hm = put(man)
    open(out + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + hm,
               "size": len(man), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}, open(out + "/index.json", "w"))

def walk(root):
    """Rows of a mounted tree, in the model's format (lost+found left out)."""
    import stat
    rows = []
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            rel = "/" + os.path.relpath(p, root)
            if rel == "/lost+found":
                continue
            st = os.lstat(p)
            m = st.st_mode
            content, size = "", str(st.st_size)
            if stat.S_ISDIR(m):
                t, size = "directory", "-"
            elif stat.S_ISREG(m):
                t = "regular"
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    while True:
                        b = f.read(1 << 20)
                        if not b:
                            break
                        h.update(b)
                content = "sha256=" + h.hexdigest()
            elif stat.S_ISLNK(m):
                t, content = "symlink", "target=" + os.readlink(p)
            elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
                t = "chardev" if stat.S_ISCHR(m) else "blockdev"
                content, size = "rdev=%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)), "0"
            elif stat.S_ISFIFO(m):
                t, size = "fifo", "0"
            else:
                t, size = "socket", "0"
            xs = []
            for x in sorted(os.listxattr(p, follow_symlinks=False)):
                v = os.getxattr(p, x, follow_symlinks=False)
                printable = all(0x20 <= b < 0x7f and b != 0x22 for b in v)
                xs.append(x + "=" + ('"' + v.decode() + '"' if printable else "0x" + v.hex()))
            rows.append("\t".join([rel, t, "%04o" % stat.S_IMODE(m), str(st.st_uid), str(st.st_gid), size, str(st.st_nlink),
                                   str(int(st.st_mtime)), content, " ".join(xs)]))
    for r in sorted(rows):
        print(r)

if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif sys.argv[1] == "oci":
        oci(sys.argv[2], sys.argv[3:])
    elif sys.argv[1] == "oci-undated":
        oci(sys.argv[2], sys.argv[3:], created=None)
    elif sys.argv[1] == "walk":
        walk(sys.argv[2])
    else:
        model(sys.argv[2:])
