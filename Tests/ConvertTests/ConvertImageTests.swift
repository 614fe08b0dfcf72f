import BlockIO
import Convert
import Ext4
import Glibc
import Image
import LSMT
import Registry
import Testing
import TestSupport

/// An OCI image layout written by the tests from layer files (compressed or not).
struct SourceImage {
    let dir: String
    let tag: String
    var layerDigests: [String] = []

    /// `layers`: (file, media type, uncompressed tar path for the diff ID).
    init(dir: String, tag: String, layers: [(file: String, mediaType: String, tar: String)]) throws {
        self.dir = dir
        self.tag = tag
        _ = run(["/bin/mkdir", "-p", dir + "/blobs/sha256"])
        func put(_ bytes: [UInt8]) throws -> String {
            let hex = Digest.sha256(bytes)
            try LocalFile(path: dir + "/blobs/sha256/" + hex, mode: .createTruncate).writeBytes(bytes, at: 0)
            return hex
        }
        var descs: [String] = [], diffs: [String] = []
        for l in layers {
            let f = try LocalFile(path: l.file)
            let bytes = try f.readBytes(at: 0, count: Int(f.size))
            let hex = try put(bytes)
            layerDigests.append("sha256:" + hex)
            descs.append(#"{"mediaType":"\#(l.mediaType)","digest":"sha256:\#(hex)","size":\#(bytes.count)}"#)
            let t = try LocalFile(path: l.tar)
            diffs.append("\"sha256:" + Digest.sha256(try t.readBytes(at: 0, count: Int(t.size))) + "\"")
        }
        let config = Array(#"{"architecture":"amd64","os":"linux","created":"2023-11-14T22:13:20Z","config":{"Cmd":["/bin/sh"],"Env":["PATH=/usr/bin"]},"rootfs":{"type":"layers","diff_ids":[\#(diffs.joined(separator: ","))]},"history":[{"created_by":"test"}]}"#.utf8)
        let ch = try put(config)
        let manifest = Array(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:\#(ch)","size":\#(config.count)},"layers":[\#(descs.joined(separator: ","))]}"#.utf8)
        let mh = try put(manifest)
        try LocalRegistry.write(dir + "/oci-layout", #"{"imageLayoutVersion":"1.0.0"}"#)
        try LocalRegistry.write(dir + "/index.json", #"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:\#(mh)","size":\#(manifest.count),"annotations":{"org.opencontainers.image.ref.name":"\#(tag)"}}]}"#)
    }
}

@Suite("obd convert", .serialized, .enabled(if: access("/usr/sbin/mke2fs", X_OK) == 0))
struct ConvertImageTests {
    static let fixtures: String = {
        let here = #filePath
        return String(here[..<here.range(of: "/ConvertImageTests.swift")!.lowerBound]) + "/Fixtures"
    }()
    let obd = builtProduct("obd")

    /// Layers made by Tests/ConvertTests/Fixtures/layers.py, and the source image of all three.
    static func makeLayers(_ dir: TemporaryDirectory) throws -> SourceImage {
        let r = run(["/usr/bin/env", "python3", fixtures + "/layers.py", "make", dir.file("layers")])
        guard r.status == 0 else { throw Failure("layers.py make: \(r.err)") }
        _ = run(["/bin/sh", "-c", "gzip -dc \(dir.file("layers/update.tar.gz")) > \(dir.file("layers/update.tar")) && zstd -qdc \(dir.file("layers/sparse.tar.zst")) > \(dir.file("layers/sparse.tar"))"])
        return try SourceImage(dir: dir.file("src"), tag: "v1", layers: [
            (dir.file("layers/base.tar"), "application/vnd.oci.image.layer.v1.tar", dir.file("layers/base.tar")),
            (dir.file("layers/update.tar.gz"), "application/vnd.oci.image.layer.v1.tar+gzip", dir.file("layers/update.tar")),
            (dir.file("layers/sparse.tar.zst"), "application/vnd.oci.image.layer.v1.tar+zstd", dir.file("layers/sparse.tar")),
        ])
    }

    struct Failure: Error, CustomStringConvertible { let description: String; init(_ d: String) { description = d } }

    /// The converted image's layers, bottom first, from an OCI layout output.
    static func convertedStack(_ out: String, tag: String = "v1") throws -> (LayerStack, [String]) {
        let store = LayoutStore(path: out, tag: tag)
        let root = try JSONValue.parse(store.root().bytes)
        let digests = root["layers"]?.array?.compactMap { $0["digest"]?.string } ?? []
        let layers = try digests.map { try LayerOpener.open(path: out + "/blobs/sha256/" + $0.dropFirst(7)) }
        return (try LayerStack(lowers: layers), digests)
    }

    static func rows(_ fs: Ext4Filesystem) throws -> [String] {
        try fs.listing().filter { $0.path != "/lost+found" }.map { e in
            var cols = e.row.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            if e.type == "directory" { cols[5] = "-" }
            return cols.joined(separator: "\t")
        }
    }

    func convert(_ args: [String]) -> (status: Int32, out: String, err: String) {
        run([obd, "convert", "--vsize", "4"] + args)
    }

    @Test("every entry type, whiteouts, opaque dirs, replacements, hard links, xattrs, a 1 GiB sparse file: the tree equals the model; e2fsck is clean; same bytes twice")
    func fullTree() throws {
        let dir = TemporaryDirectory("obd-convert")
        defer { dir.remove() }
        let src = try Self.makeLayers(dir)
        let a = convert(["--cache-dir", "none", "-d", dir.file("w1"), "oci:\(src.dir):v1", "oci:\(dir.file("out1")):v1"])
        #expect(a.status == 0, "\(a.err)")
        let (stack, digests) = try Self.convertedStack(dir.file("out1"))
        #expect(digests.count == 3)
        let fs = try Ext4Filesystem(file: stack, epoch: 1, writable: false)
        let ours = try Self.rows(fs)
        let model = run(["/usr/bin/env", "python3", Self.fixtures + "/layers.py", "model",
                         dir.file("layers/base.tar"), dir.file("layers/update.tar.gz"), dir.file("layers/sparse.tar.zst")])
        #expect(model.status == 0, "\(model.err)")
        let want = model.out.split(separator: "\n").map(String.init)
        #expect(ours == want, "\(Set(ours).symmetricDifference(want).sorted())")
        // Hard-link groups: the same inode.
        let list = try fs.listing()
        let ino = Dictionary(list.map { ($0.path, $0.inode) }, uniquingKeysWith: { a, _ in a })
        #expect(ino["/usr/bin/tool"] == ino["/usr/lib/tool-hardlink"] && ino["/etc/hostname"] == ino["/etc/hostname-link"])
        try fs.close()
        // e2fsck -fn on every layer stack: layer 0 alone, 0+1, 0+1+2.
        for k in 1...digests.count {
            let layers = try digests.prefix(k).map { try LayerOpener.open(path: dir.file("out1") + "/blobs/sha256/" + $0.dropFirst(7)) }
            let (rc, text) = try ApplyReferenceTests.fsck(LayerStack(lowers: layers), dir)
            #expect(rc == 0, "stack of \(k) layer(s): \(text)")
        }
        // The 1 GiB sparse file stays sparse: the top layer holds a few blocks, not 1 GiB.
        let top = try LocalFile(path: dir.file("out1") + "/blobs/sha256/" + digests[2].dropFirst(7))
        #expect(top.size < 1 << 20)
        // Converting again (a new work dir, seconds later) gives the same bytes.
        sleep(1)
        let b = convert(["--cache-dir", "none", "-d", dir.file("w2"), "oci:\(src.dir):v1", "oci:\(dir.file("out2")):v1"])
        #expect(b.status == 0, "\(b.err)")
        let (_, digests2) = try Self.convertedStack(dir.file("out2"))
        #expect(digests2 == digests)
        #expect(readText(dir.file("out1/index.json")) == readText(dir.file("out2/index.json")))
    }

    @Test("as an unprivileged user (setpriv nobody) obd convert produces the same bytes as under root")
    func unprivileged() throws {
        guard getuid() == 0 else { return }   // needs root to drop to nobody
        let dir = TemporaryDirectory("obd-convert")
        defer { dir.remove() }
        let src = try Self.makeLayers(dir)
        _ = run(["/bin/chmod", "-R", "a+rwX", dir.path])
        let root = convert(["--cache-dir", "none", "-d", dir.file("wr"), "oci:\(src.dir):v1", "oci:\(dir.file("out-root")):v1"])
        #expect(root.status == 0, "\(root.err)")
        let user = run(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", obd, "convert", "--vsize", "4",
                        "--cache-dir", "none", "-d", dir.file("wu"), "oci:\(src.dir):v1", "oci:\(dir.file("out-user")):v1"])
        #expect(user.status == 0, "\(user.err)")
        #expect(readText(dir.file("out-root/index.json")) == readText(dir.file("out-user/index.json")))
        #expect(!readText(dir.file("out-user/index.json")).isEmpty)
        // Without --cache-dir and with no writable home: a warning, not a failure.
        let homeless = run(["/usr/bin/env", "HOME=/nonexistent", "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            obd, "convert", "--vsize", "4", "-d", dir.file("wh"), "oci:\(src.dir):v1", "oci:\(dir.file("out-homeless")):v1"])
        #expect(homeless.status == 0 && homeless.err.contains("no conversion cache"), "\(homeless.err)")
        #expect(readText(dir.file("out-root/index.json")) == readText(dir.file("out-homeless/index.json")))
    }

    @Test("hostile tar input fails with a clear error and leaves nothing in the target", arguments: [
        ("badlink.tar", "does not exist in the image"), ("huge.tar", "Truncated tar archive"), ("truncated.tar", "Truncated tar archive"),
        ("digest", "not its digest"),
    ])
    func hostile(name: String, message: String) throws {
        let dir = TemporaryDirectory("obd-convert")
        defer { dir.remove() }
        _ = try Self.makeLayers(dir)
        let file = name == "digest" ? dir.file("layers/base.tar") : dir.file("layers/hostile/" + name)
        let src = try SourceImage(dir: dir.file("bad"), tag: "v1", layers: [(file, "application/vnd.oci.image.layer.v1.tar", file)])
        if name == "digest" {
            // Swap the blob's bytes after the manifest was written: the digest no longer matches.
            let path = dir.file("bad/blobs/sha256/" + src.layerDigests[0].dropFirst(7))
            let f = try LocalFile(path: path, mode: .readWrite)
            try f.writeBytes([0x41], at: 600)
        }
        let r = convert(["--cache-dir", "none", "-d", dir.file("w"), "oci:\(src.dir):v1", "oci:\(dir.file("out")):v1"])
        #expect(r.status != 0)
        let last = r.err.split(separator: "\n").last.map(String.init) ?? ""
        #expect(last.hasPrefix("obd: error:") && last.contains("layer 0") && last.contains(message), "\(r.err)")
        #expect(access(dir.file("out/index.json"), F_OK) != 0, "a failed conversion left an image behind")
    }

    @Test("path traversal and absolute names are cleaned into the image root")
    func traversal() throws {
        let dir = TemporaryDirectory("obd-convert")
        defer { dir.remove() }
        _ = try Self.makeLayers(dir)
        let file = dir.file("layers/hostile/traversal.tar")
        let src = try SourceImage(dir: dir.file("t"), tag: "v1", layers: [(file, "application/vnd.oci.image.layer.v1.tar", file)])
        let r = convert(["--cache-dir", "none", "-d", dir.file("w"), "oci:\(src.dir):v1", "oci:\(dir.file("out")):v1"])
        #expect(r.status == 0, "\(r.err)")
        let (stack, _) = try Self.convertedStack(dir.file("out"))
        let fs = try Ext4Filesystem(file: stack, epoch: 1, writable: false)
        let paths = try fs.listing().map(\.path)
        #expect(paths.contains("/escape.txt") && paths.contains("/abs/path.txt") && paths.contains("/b/c.txt"), "\(paths)")
        try fs.close()
    }

    @Test("a multi-platform index converts every platform (attestations dropped) into an index")
    func index() throws {
        let dir = TemporaryDirectory("obd-convert")
        defer { dir.remove() }
        let src = try Self.makeLayers(dir)
        // Wrap the manifest in an index: amd64 and arm64 (same layers) and an attestation.
        let top = try JSONValue.parse(Array(readText(src.dir + "/index.json").utf8))
        let m = try #require(top["manifests"]?.array?.first)
        func entry(_ arch: String, attestation: Bool = false) -> JSONValue {
            var e = m
            e["annotations"] = attestation ? .object(["vnd.docker.reference.type": .string("attestation-manifest")]) : nil
            e["platform"] = .object(["os": .string(attestation ? "unknown" : "linux"), "architecture": .string(attestation ? "unknown" : arch)])
            return e
        }
        let index = JSONValue.object(["schemaVersion": .int(2), "mediaType": .string("application/vnd.oci.image.index.v1+json"),
                                      "manifests": .array([entry("amd64"), entry("arm64"), entry("", attestation: true)])])
        let bytes = try index.bytes()
        let hex = Digest.sha256(bytes)
        try LocalFile(path: src.dir + "/blobs/sha256/" + hex, mode: .createTruncate).writeBytes(bytes, at: 0)
        try LocalRegistry.write(src.dir + "/index.json", #"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:\#(hex)","size":\#(bytes.count),"annotations":{"org.opencontainers.image.ref.name":"multi"}}]}"#)
        let r = convert(["--cache-dir", "none", "--oci", "--concurrency", "2", "-d", dir.file("w"), "oci:\(src.dir):multi", "oci:\(dir.file("out")):multi"])
        #expect(r.status == 0, "\(r.err)")
        // ACI's spellings, --no-upload and --dump-manifest: nothing written to the target.
        let dry = run([obd, "convert", "--vsize", "4", "--cache-dir", "none", "--oci", "--concurrency-limit", "1", "--dir", dir.file("dry"),
                       "--reserve", "--no-upload", "--dump-manifest", "oci:\(src.dir):multi", "oci:\(dir.file("never")):multi"])
        #expect(dry.status == 0, "\(dry.err)")
        #expect(access(dir.file("never"), F_OK) != 0)
        #expect(readText(dir.file("dry/index.json")) == String(decoding: try LayoutStore(path: dir.file("out"), tag: "multi").root().bytes, as: UTF8.self))
        let out = LayoutStore(path: dir.file("out"), tag: "multi")
        let root = try JSONValue.parse(out.root().bytes)
        #expect(root["mediaType"]?.string == "application/vnd.oci.image.index.v1+json")
        let children = root["manifests"]?.array ?? []
        #expect(children.compactMap { $0["platform"]?["architecture"]?.string } == ["amd64", "arm64"])
        let layerLists = try children.map { c -> [String] in
            let mb = try out.manifest(c["digest"]?.string ?? "")
            let mj = try JSONValue.parse(mb)
            #expect(mj["mediaType"]?.string == "application/vnd.oci.image.manifest.v1+json")
            return mj["layers"]?.array?.compactMap { $0["digest"]?.string } ?? []
        }
        #expect(layerLists.count == 2 && layerLists[0] == layerLists[1] && layerLists[0].count == 3)
    }
}
