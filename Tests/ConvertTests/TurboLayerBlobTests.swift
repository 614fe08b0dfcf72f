import BlockIO
import Convert
import Glibc
import Testing
import TestSupport

@Suite("TurboOCI layer blob")
struct TurboLayerBlobTests {
    @Test("gzip(tar{ext4.fs.meta, .turbo.ociv1, gzip.meta}): names, order, sizes and bytes; headers carry only name, mode, size, type; diff ID is the tar's sha256; the same files give the same blob")
    func layout() throws {
        let dir = TemporaryDirectory("obd-turbo-blob")
        defer { dir.remove() }
        let meta = MemoryFile(bytes: (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }, name: "meta")
        let index = MemoryFile(bytes: Array("ddgzidx-ish".utf8), name: "index")
        let a = try TurboLayerBlob.write(fsMeta: meta, gzipIndex: index, to: dir.file("a.tar.gz"))
        let b = try TurboLayerBlob.write(fsMeta: meta, gzipIndex: index, to: dir.file("b.tar.gz"))
        #expect(a == b)
        let plain = try TurboLayerBlob.write(fsMeta: meta, gzipIndex: nil, to: dir.file("c.tar.gz"))
        #expect(plain.digest != a.digest)
        let script = """
            import gzip, hashlib, sys, tarfile, io
            raw = gzip.decompress(open(sys.argv[1], 'rb').read())
            print('sha256:' + hashlib.sha256(raw).hexdigest())
            print(len(raw) % 512, raw[-1024:] == bytes(1024))
            for m in tarfile.open(fileobj=io.BytesIO(raw)):
                print(m.name, oct(m.mode), m.size, m.type.decode(), m.uid, m.gid, m.mtime, repr(m.uname), repr(m.gname), m.devmajor, m.devminor)
            """
        let r = run(["/usr/bin/env", "python3", "-c", script, dir.file("a.tar.gz")])
        #expect(r.status == 0, "\(r.err)")
        let lines = r.out.split(separator: "\n").map(String.init)
        #expect(lines == [a.diffID, "0 True",
                          "ext4.fs.meta 0o644 70000 0 0 0 0 '' '' 0 0",
                          ".turbo.ociv1 0o644 0 0 0 0 0 '' '' 0 0",
                          "gzip.meta 0o644 11 0 0 0 0 '' '' 0 0"])
        let x = run(["/bin/sh", "-c", "mkdir -p \(dir.file("x")) && tar -xzf \(dir.file("a.tar.gz")) -C \(dir.file("x")) "])
        #expect(x.status == 0, "\(x.err)")
        let got = try LocalFile(path: dir.file("x/ext4.fs.meta"))
        #expect(try got.readBytes(at: 0, count: Int(got.size)) == meta.bytes)
        let gi = try LocalFile(path: dir.file("x/gzip.meta"))
        #expect(try gi.readBytes(at: 0, count: Int(gi.size)) == index.bytes)
    }
}
