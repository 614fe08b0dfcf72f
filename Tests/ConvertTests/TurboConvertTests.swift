import BlockIO
import Convert
import Ext4
import Glibc
import Image
import LSMT
import Registry
import Testing
import TestSupport

/// `obd convert --turbo-oci` through docker-registry on loopback: the turbo layer blobs and
/// manifest as ACI writes them, the original layers referenced (mounted, never uploaded to
/// the registry they are in), and the image read lazily from the registry through obd's
/// stack (warp lowers over the original blobs): the same tree as the native conversion and
/// the model (or umoci's unpack), e2fsck clean.
@Suite("obd convert --turbo-oci", .serialized,
       .enabled(if: access("/usr/sbin/mke2fs", X_OK) == 0 && (LocalRegistry.available || ReferenceFiles.isCI)))
struct TurboConvertTests {
    let obd = builtProduct("obd")

    func summary(_ out: String) -> JSONValue? {
        out.split(separator: "\n").compactMap { try? JSONValue.parse(Array($0.utf8)) }.first { $0["event"]?.string == "summary" }
    }

    /// The fixture's plain-tar base layer and gzip update layer (TurboOCI cannot take the
    /// zstd layer with its sparse file: those are refused).
    static func source(_ dir: TemporaryDirectory) throws -> SourceImage {
        _ = try ConvertImageTests.makeLayers(dir)
        return try SourceImage(dir: dir.file("src-turbo"), tag: "v1", layers: [
            (dir.file("layers/base.tar"), "application/vnd.oci.image.layer.v1.tar", dir.file("layers/base.tar")),
            (dir.file("layers/update.tar.gz"), "application/vnd.oci.image.layer.v1.tar+gzip", dir.file("layers/update.tar")),
        ])
    }

    /// Writes an overlaybd.json (registry cache, gzip cache) and a config.v1.json whose
    /// lowers are the manifest's layers read remotely; returns the opened image.
    static func remoteImage(_ m: ImageManifest, repository: String, reg: LocalRegistry, dir: TemporaryDirectory, name: String) throws -> Image {
        try LocalRegistry.write(dir.file(name + "-overlaybd.json"), #"{"cacheConfig": {"cacheType": "file", "cacheDir": "\#(dir.file(name + "-rcache"))", "cacheSizeGB": 1}, "gzipCacheConfig": {"enable": true, "cacheDir": "\#(dir.file(name + "-gzcache"))", "cacheSizeGB": 1}}"#)
        let lowers = m.layers.map { l in
            let target = l.annotations?["containerd.io/snapshot/overlaybd/turbo-oci/target-digest"]
            return #"{"digest": "\#(l.digest)", "size": \#(l.size)\#(target.map { #", "targetDigest": "\#($0)""# } ?? "")}"#
        }.joined(separator: ", ")
        try LocalRegistry.write(dir.file(name + "-config.v1.json"), #"{"repoBlobUrl": "http://\#(reg.host)/v2/\#(repository)/blobs", "lowers": [\#(lowers)]}"#)
        return try Image.open(configPath: dir.file(name + "-config.v1.json"), global: GlobalConfig.load(from: dir.file(name + "-overlaybd.json")))
    }

    @Test("fixture layers: turbo blobs and annotations as ACI writes them, originals mounted (never uploaded), the remote image's tree equals the native conversion's and the model, e2fsck clean; a target too short for its warp layer is refused")
    func fixtureThroughRegistry() throws {
        let dir = TemporaryDirectory("obd-turbo-reg")
        defer { dir.remove() }
        let reg = try LocalRegistry()
        let src = try Self.source(dir)
        let copy = run(["/usr/bin/skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests",
                        "oci:\(src.dir):v1", "docker://\(reg.host)/src/app:v1"])
        #expect(copy.status == 0, "\(copy.err)")
        let native = run([obd, "convert", "--vsize", "4", "--plain-http", "--cache-dir", "none", "-d", dir.file("wn"), "--json",
                          "\(reg.host)/src/app:v1", "\(reg.host)/obd/native:v1"])
        #expect(native.status == 0, "\(native.err)")
        // Into another repository of the registry: the two turbo blobs uploaded, the two originals mounted.
        let turbo = run([obd, "convert", "--turbo-oci", "--vsize", "4", "--plain-http", "--cache-dir", "none", "-d", dir.file("wt"), "--json",
                         "\(reg.host)/src/app:v1", "\(reg.host)/obd/turbo:v1"])
        #expect(turbo.status == 0, "\(turbo.err)")
        let st = try #require(summary(turbo.out))
        #expect(st["built"]?.int == 2 && st["uploaded"]?.int == 2 && st["mounted"]?.int == 2 && st["present"]?.int == 0, "\(turbo.out)")
        // Into the source repository: the originals are already there.
        let same = run([obd, "convert", "--turbo-oci", "--vsize", "4", "--plain-http", "--cache-dir", "none", "-d", dir.file("ws"), "--json",
                        "\(reg.host)/src/app:v1", "\(reg.host)/src/app:turbo"])
        #expect(same.status == 0, "\(same.err)")
        #expect(summary(same.out)?["present"]?.int == 2 && summary(same.out)?["mounted"]?.int == 0, "\(same.out)")

        let client = RegistryClient(host: reg.host, options: RegistryOptions(plainHTTP: true))
        let m = try client.imageManifest(repository: "obd/turbo", reference: "v1")
        #expect(m.mediaType == MediaType.dockerManifest)
        #expect(m.layers.count == 2)
        let wantTypes = ["application/vnd.docker.image.rootfs.diff.tar", "application/vnd.docker.image.rootfs.diff.tar.gzip"]
        for (k, l) in m.layers.enumerated() {
            let a = l.annotations ?? [:]
            #expect(l.mediaType == "application/vnd.docker.image.rootfs.diff.tar.gzip")
            #expect(a["containerd.io/snapshot/overlaybd/blob-digest"] == l.digest && a["containerd.io/snapshot/overlaybd/blob-size"] == "\(l.size)")
            #expect(a["containerd.io/snapshot/overlaybd/version"] == "0.1.0-turbo.ociv1")
            #expect(a["containerd.io/snapshot/overlaybd/turbo-oci/target-digest"] == src.layerDigests[k])
            #expect(a["containerd.io/snapshot/overlaybd/turbo-oci/target-media-type"] == wantTypes[k])
            // The blob: gzip(tar{ext4.fs.meta, .turbo.ociv1, gzip.meta for a gzip original}); diff ID = sha256 of the tar.
            let path = dir.file("blob\(k).tar.gz")
            try client.blob(repository: "obd/turbo", digest: l.digest).withUnsafeBytes { b in
                try LocalFile(path: path, mode: .createTruncate).write(b, at: 0)
            }
            let names = run(["/bin/tar", "-tzf", path]).out.split(separator: "\n").map(String.init)
            #expect(names == ["ext4.fs.meta", ".turbo.ociv1"] + (k == 1 ? ["gzip.meta"] : []))
            let diff = run(["/bin/sh", "-c", "gzip -dc \(path) | sha256sum"]).out.prefix(64)
            let config = try JSONValue.parse(client.blob(repository: "obd/turbo", digest: m.config.digest))
            #expect(config["rootfs"]?["diff_ids"]?.array?[k].string == "sha256:" + diff)
        }
        // Lazily from the registry: the same tree as the native conversion and as the model.
        let image = try Self.remoteImage(m, repository: "obd/turbo", reg: reg, dir: dir, name: "turbo")
        #expect(image.hasRemoteLowers)
        let fs = try Ext4Filesystem(file: image.stack, epoch: 1, writable: false)
        let ours = try ConvertImageTests.rows(fs)
        try fs.close()
        let nm = try client.imageManifest(repository: "obd/native", reference: "v1")
        let nativeImage = try Self.remoteImage(nm, repository: "obd/native", reg: reg, dir: dir, name: "native")
        let nfs = try Ext4Filesystem(file: nativeImage.stack, epoch: 1, writable: false)
        let theirs = try ConvertImageTests.rows(nfs)
        try nfs.close()
        let model = run(["/usr/bin/env", "python3", ConvertImageTests.fixtures + "/layers.py", "model",
                         dir.file("layers/base.tar"), dir.file("layers/update.tar.gz")])
        let want = model.out.split(separator: "\n").map(String.init)
        #expect(want.count > 10)
        #expect(ours == want, "\(Set(ours).symmetricDifference(want).sorted())")
        #expect(ours == theirs)
        let (rc, text) = try ApplyReferenceTests.fsck(image.stack, dir)
        #expect(rc == 0, "\(text)")
        image.close()
        // Decompressed target data went through the gzip cache.
        #expect(!run(["/bin/ls", dir.file("turbo-gzcache")]).out.isEmpty)

        // Locally: the blob unpacked into a folder (dir/ext4.fs.meta, dir/gzip.meta), the
        // original as targetFile. A plain-tar target cut short is refused at open.
        _ = run(["/bin/sh", "-c", "mkdir -p \(dir.file("l0")) \(dir.file("l1")) && tar -xzf \(dir.file("blob0.tar.gz")) -C \(dir.file("l0")) && tar -xzf \(dir.file("blob1.tar.gz")) -C \(dir.file("l1"))"])
        let t0 = src.dir + "/blobs/sha256/" + src.layerDigests[0].dropFirst(7)
        let t1 = src.dir + "/blobs/sha256/" + src.layerDigests[1].dropFirst(7)
        try LocalRegistry.write(dir.file("local.json"), #"{"lowers": [{"dir": "l0", "targetFile": "\#(t0)"}, {"dir": "l1", "targetFile": "\#(t1)"}]}"#)
        let local = try Image.open(configPath: dir.file("local.json"))
        let lfs = try Ext4Filesystem(file: local.stack, epoch: 1, writable: false)
        #expect(try ConvertImageTests.rows(lfs) == want)
        try lfs.close()
        let base = try LocalFile(path: t0)
        let short = try LocalFile(path: dir.file("short.tar"), mode: .createTruncate)
        try short.writeBytes(base.readBytes(at: 0, count: Int(base.size / 2 / 512 * 512)), at: 0)
        try LocalRegistry.write(dir.file("short.json"), #"{"lowers": [{"dir": "l0", "targetFile": "short.tar"}]}"#)
        do {
            _ = try Image.open(configPath: dir.file("short.json"))
            Issue.record("a warp layer over a truncated target opened")
        } catch let e as ImageError {
            #expect("\(e)".contains("leaves the target"), "\(e)")
        }
    }

    @Test("the building blocks as overlaybd's tools chain them: obd create --turbo-oci, obd apply --turbo-oci over the layers below, obd commit --turbo-oci -z; the config of the two warp lowers (file, targetFile, gzipIndex) shows the model's tree, e2fsck clean")
    func cliChain() throws {
        let dir = TemporaryDirectory("obd-turbo-cli")
        defer { dir.remove() }
        _ = try Self.source(dir)
        var lowers: [String] = []
        for (k, layer) in ["layers/base.tar", "layers/update.tar.gz"].enumerated() {
            let c = run([obd, "create", "--turbo-oci", dir.file("fsmeta\(k)"), dir.file("index\(k)"), "4"])
            #expect(c.status == 0, "\(c.err)")
            try LocalRegistry.write(dir.file("apply\(k).json"), #"{"lowers": [\#(lowers.joined(separator: ","))], "upper": {"data": "fsmeta\#(k)", "index": "index\#(k)", "target": "\#(dir.file(layer))", "gzipIndex": "gzip\#(k).meta"}}"#)
            let a = run([obd, "apply", "--turbo-oci"] + (k == 0 ? ["--mkfs"] : []) + [dir.file(layer), dir.file("apply\(k).json")])
            #expect(a.status == 0, "\(a.err)")
            let m = run([obd, "commit", "--turbo-oci", "-z", dir.file("fsmeta\(k)"), dir.file("index\(k)"), dir.file("ext4-\(k).fs.meta")])
            #expect(m.status == 0, "\(m.err)")
            let gz = layer.hasSuffix(".gz") ? #", "gzipIndex": "\#(dir.file("gzip\(k).meta"))""# : ""
            lowers.append(#"{"file": "\#(dir.file("ext4-\(k).fs.meta"))", "targetFile": "\#(dir.file(layer))"\#(gz)}"#)
        }
        // The committed layer: header 0x07, index not padded (it is a warp layer, not a native one).
        let meta = try LayerOpener.unwrap(LocalFile(path: dir.file("ext4-1.fs.meta"))).0
        #expect(throws: LSMTError.self) { _ = try ReadOnlyLayer(file: meta) }
        try LocalRegistry.write(dir.file("image.json"), #"{"lowers": [\#(lowers.joined(separator: ","))]}"#)
        let image = try Image.open(configPath: dir.file("image.json"))
        let fs = try Ext4Filesystem(file: image.stack, epoch: 1, writable: false)
        let ours = try ConvertImageTests.rows(fs)
        try fs.close()
        let model = run(["/usr/bin/env", "python3", ConvertImageTests.fixtures + "/layers.py", "model",
                         dir.file("layers/base.tar"), dir.file("layers/update.tar.gz")])
        #expect(ours == model.out.split(separator: "\n").map(String.init))
        let (rc, text) = try ApplyReferenceTests.fsck(image.stack, dir)
        #expect(rc == 0, "\(text)")
        // An image cannot open a warp upper.
        do {
            _ = try Image.open(configPath: dir.file("apply1.json"))
            Issue.record("an image opened a TurboOCI upper")
        } catch {
            #expect("\(error)".contains("upper.target"), "\(error)")
        }
    }

    @Test("hostile TurboOCI lowers: a gzip index of another blob, a zstd target, a missing target, a bad targetDigest, gzipIndex without a target: clear errors naming the layer")
    func hostileLowers() throws {
        let dir = TemporaryDirectory("obd-turbo-hostile")
        defer { dir.remove() }
        let src = try Self.source(dir)
        let c = run([obd, "convert", "--turbo-oci", "--vsize", "4", "--cache-dir", "none", "-d", dir.file("w"), "--reserve",
                     "oci:\(src.dir):v1", "oci:\(dir.file("out")):v1"])
        #expect(c.status == 0, "\(c.err)")
        let meta1 = try #require(run(["/bin/sh", "-c", "ls \(dir.file("w"))/layers/*/1/ext4.fs.meta"]).out.split(separator: "\n").first.map(String.init))
        let index1 = String(meta1.dropLast("ext4.fs.meta".count)) + "gzip.meta"
        let t1 = src.dir + "/blobs/sha256/" + src.layerDigests[1].dropFirst(7)
        // The good local layer opens and reads.
        func open(_ lower: String) throws -> Image {
            try LocalRegistry.write(dir.file("c.json"), #"{"lowers": [\#(lower)]}"#)
            return try Image.open(configPath: dir.file("c.json"))
        }
        _ = try open(#"{"file": "\#(meta1)", "gzipIndex": "\#(index1)", "targetFile": "\#(t1)"}"#)
        func expectError(_ lower: String, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
            do {
                _ = try open(lower)
                Issue.record("opened: \(lower)", sourceLocation: sourceLocation)
            } catch {
                #expect("\(error)".contains(text), "\(error)", sourceLocation: sourceLocation)
            }
        }
        // An index made for another gzip file of the same tar (gzip -1): its sizes do not match.
        _ = run(["/bin/sh", "-c", "gzip -1 -n -c \(dir.file("layers/update.tar")) > \(dir.file("other.tar.gz"))"])
        _ = run([obd, "apply", "--turbo-oci", "--export", "--gz-index-path", dir.file("other.meta"), dir.file("other.tar.gz"), dir.file("other.tarmeta")])
        expectError(#"{"file": "\#(meta1)", "gzipIndex": "\#(dir.file("other.meta"))", "targetFile": "\#(t1)"}"#, "lowers[0]")
        expectError(#"{"file": "\#(meta1)", "targetFile": "\#(dir.file("layers/sparse.tar.zst"))"}"#, "zstd")
        expectError(#"{"file": "\#(meta1)", "targetFile": "\#(dir.file("missing.tar"))"}"#, "TurboOCI target not found")
        expectError(#"{"file": "\#(meta1)", "targetDigest": "sha256:00"}"#, "'targetDigest'")
        expectError(#"{"file": "\#(meta1)", "gzipIndex": "\#(index1)"}"#, "needs a TurboOCI target")
        expectError(#"{"file": "\#(meta1)", "gzipIndex": "\#(dir.file("nope.meta"))", "targetFile": "\#(t1)"}"#, "not found")
    }

    @Test("Debian minbase (gzip + plain tar) converted with --turbo-oci through the registry: the remote image's tree equals umoci's unpack, e2fsck -fn is clean, and the turbo blobs are a few percent of the source",
          .enabled(if: DebianImageTests.present || ReferenceFiles.isCI))
    func debianMinbase() throws {
        try #require(DebianImageTests.present, "Debian minbase not found in \(DebianImageTests.cache): run tools/make-debian-rootfs.sh")
        try #require(access("/usr/bin/umoci", X_OK) == 0, "umoci is missing: run tools/install-deps.sh")
        let dir = TemporaryDirectory("obd-turbo-debian")
        defer { dir.remove() }
        try DebianImageTests.prepareSource(dir)
        let reg = try LocalRegistry()
        let push = run(["/usr/bin/skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests",
                        "oci:\(dir.file("src")):v1", "docker://\(reg.host)/debian/minbase:bookworm"])
        #expect(push.status == 0, "\(push.err)")
        let c = run([obd, "convert", "--turbo-oci", "--vsize", "8", "--plain-http", "--cache-dir", "none", "-d", dir.file("w"), "--json",
                     "\(reg.host)/debian/minbase:bookworm", "\(reg.host)/debian/turbo:v1"])
        #expect(c.status == 0, "\(c.err)")
        #expect(summary(c.out)?["mounted"]?.int == 2, "\(c.out)")
        let client = RegistryClient(host: reg.host, options: RegistryOptions(plainHTTP: true))
        let m = try client.imageManifest(repository: "debian/turbo", reference: "v1")
        let source = try client.imageManifest(repository: "debian/minbase", reference: "bookworm")
        let turboBytes = m.layers.reduce(0) { $0 + $1.size }, sourceBytes = source.layers.reduce(0) { $0 + $1.size }
        #expect(turboBytes * 20 < sourceBytes, "turbo blobs \(turboBytes) bytes for \(sourceBytes) bytes of source layers")
        let image = try Self.remoteImage(m, repository: "debian/turbo", reg: reg, dir: dir, name: "turbo")
        let fs = try Ext4Filesystem(file: image.stack, epoch: 1, writable: false)
        let ours = try ConvertImageTests.rows(fs)
        try fs.close()
        let want = try DebianImageTests.umociRows(dir)
        #expect(want.count > 3000)
        #expect(ours == want, "\(Set(ours).symmetricDifference(want).sorted().prefix(20))")
        let (rc, text) = try ApplyReferenceTests.fsck(image.stack, dir)
        #expect(rc == 0, "\(text)")
        image.close()
    }
}
