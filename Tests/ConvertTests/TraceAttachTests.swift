import BlockIO
import Convert
import Glibc
import Image
import Registry
import Testing
import TestSupport
import Trace

/// `obd trace attach` and `obd convert --trace/--priority-list`: ACI's acceleration layer,
/// checked field by field, then opened with `accelerationLayer: true`.
@Suite("obd trace attach", .serialized, .enabled(if: access("/usr/sbin/mke2fs", X_OK) == 0))
struct TraceAttachTests {
    let obd = builtProduct("obd")
    static let created = "2024-01-02T03:04:05Z"
    static let list = "/big.bin\n/usr/lib/\n/nope\n"

    func convertSource(_ dir: TemporaryDirectory, extra: [String] = []) throws -> SourceImage {
        let src = try ConvertImageTests.makeLayers(dir)
        let r = run([obd, "convert", "--vsize", "4", "--cache-dir", "none", "-d", dir.file("w")] + extra + ["oci:\(src.dir):v1", "oci:\(dir.file("obd")):v1"])
        guard r.status == 0 else { throw ConvertImageTests.Failure("convert: \(r.err)") }
        return src
    }

    /// Manifest and config of a layout's tag.
    func image(_ path: String, _ tag: String) throws -> (manifest: JSONValue, config: JSONValue, configBytes: [UInt8]) {
        let store = LayoutStore(path: path, tag: tag)
        let m = try JSONValue.parse(store.root().bytes)
        let digest = try #require(m["config"]?["digest"]?.string)
        let bytes = try store.small(digest)
        return (m, try JSONValue.parse(bytes), bytes)
    }

    /// Every field ACI sets, compared with the source image.
    func checkAttached(old: (manifest: JSONValue, config: JSONValue, configBytes: [UInt8]),
                       new: (manifest: JSONValue, config: JSONValue, configBytes: [UInt8]), blob: [UInt8]) throws {
        let oldLayers = old.manifest["layers"]?.array ?? []
        let layers = try #require(new.manifest["layers"]?.array)
        #expect(layers.count == oldLayers.count + 1)
        #expect(Array(layers.dropLast()) == oldLayers, "the old layers are unchanged")
        #expect(new.manifest["mediaType"] == old.manifest["mediaType"] && new.manifest["schemaVersion"] == old.manifest["schemaVersion"])
        let top = try #require(layers.last)
        let digest = "sha256:" + Digest.sha256(blob)
        let oci = new.manifest["mediaType"]?.string == "application/vnd.oci.image.manifest.v1+json"
        #expect(top["mediaType"]?.string == (oci ? "application/vnd.oci.image.layer.v1.tar" : "application/vnd.docker.image.rootfs.diff.tar"))
        #expect(top["digest"]?.string == digest && top["size"]?.int == Int64(blob.count))
        #expect(top["annotations"] == .object([
            "containerd.io/snapshot/overlaybd/version": .string("0.1.0"),
            "containerd.io/snapshot/overlaybd/blob-digest": .string(digest),
            "containerd.io/snapshot/overlaybd/blob-size": .string("\(blob.count)"),
            "containerd.io/snapshot/overlaybd/acceleration-layer": .string("yes"),
        ]))
        // Config descriptor and config.
        #expect(new.manifest["config"]?["digest"]?.string == "sha256:" + Digest.sha256(new.configBytes))
        #expect(new.manifest["config"]?["size"]?.int == Int64(new.configBytes.count))
        #expect(new.manifest["config"]?["mediaType"] == old.manifest["config"]?["mediaType"])
        let oldDiffs = old.config["rootfs"]?["diff_ids"]?.array ?? []
        #expect(new.config["rootfs"]?["diff_ids"]?.array == oldDiffs + [.string(digest)])
        let history = try #require(new.config["history"]?.array)
        #expect(history.first == .object(["created": .string(Self.created), "created_by": .string("Acceleration Layer")]))
        #expect(Array(history.dropFirst()) == old.config["history"]?.array ?? [])
        #expect(new.config["created"]?.string == Self.created)
        #expect(new.config["config"] == old.config["config"] && new.config["architecture"] == old.config["architecture"])
    }

    /// The layer blob, listed by GNU tar: one regular file `trace`, mode 0444, root-owned.
    func checkTar(_ blobPath: String, content: [UInt8], dir: TemporaryDirectory) throws {
        let listing = run(["/bin/tar", "--numeric-owner", "-tvf", blobPath])
        #expect(listing.status == 0, "\(listing.err)")
        let rows = listing.out.split(separator: "\n")
        #expect(rows.count == 1 && rows[0].hasPrefix("-r--r--r-- 0/0") && rows[0].hasSuffix(" trace"), "\(listing.out)")
        _ = run(["/bin/mkdir", "-p", dir.file("x")])
        #expect(run(["/bin/tar", "-xf", blobPath, "-C", dir.file("x")]).status == 0)
        let f = try LocalFile(path: dir.file("x/trace"))
        #expect(try f.readBytes(at: 0, count: Int(f.size)) == content)
    }

    @Test("attach a priority list on an oci: layout: manifest, config, annotations, history and the tar checked; the image opens with accelerationLayer and prefetches")
    func attachLayout() throws {
        let dir = TemporaryDirectory("obd-attach")
        defer { dir.remove() }
        _ = try convertSource(dir)
        try LocalRegistry.write(dir.file("list"), Self.list)
        let r = run([obd, "trace", "attach", "--created", Self.created, "oci:\(dir.file("obd")):v1", dir.file("list"), "oci:\(dir.file("accel")):v1"])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.contains("attached priority list of 3 paths"), "\(r.out)")
        let old = try image(dir.file("obd"), "v1"), new = try image(dir.file("accel"), "v1")
        let top = try #require(new.manifest["layers"]?.array?.last)
        let blobPath = dir.file("accel/blobs/sha256/" + (top["digest"]?.string ?? "").dropFirst(7))
        let blobFile = try LocalFile(path: blobPath)
        let blob = try blobFile.readBytes(at: 0, count: Int(blobFile.size))
        try checkAttached(old: old, new: new, blob: blob)
        try checkTar(blobPath, content: Array(Self.list.utf8), dir: dir)
        // Every blob the manifest names is in the target layout.
        for l in new.manifest["layers"]?.array ?? [] {
            #expect(access(dir.file("accel/blobs/sha256/" + (l["digest"]?.string ?? "").dropFirst(7)), F_OK) == 0)
        }
        // The image opens with its layers; the acceleration layer unpacked as the snapshotter does (dir/trace).
        let layers = (new.manifest["layers"]?.array ?? []).dropLast().map { dir.file("accel/blobs/sha256/" + ($0["digest"]?.string ?? "").dropFirst(7)) }
        _ = run(["/bin/mkdir", "-p", dir.file("accel-dir")])
        #expect(run(["/bin/tar", "-xf", blobPath, "-C", dir.file("accel-dir")]).status == 0)
        let lowers = (layers.map { #"{"file": "\#($0)"}"# } + [#"{"dir": "accel-dir"}"#]).joined(separator: ", ")
        try LocalRegistry.write(dir.file("config.v1.json"), #"{"lowers": [\#(lowers)], "accelerationLayer": true}"#)
        let img = try Image.open(configPath: dir.file("config.v1.json"))
        defer { img.close() }
        #expect(img.lowerFiles.count == layers.count)
        let p = try #require(img.prefetcher)
        #expect(p.wait(seconds: 60) && p.target == .mergedLowers)
        #expect(p.priorityList?.missing == ["/nope"] && p.priorityList?.files == 3, "\(String(describing: p.priorityList))")
        #expect(p.progress.failures == 0 && p.progress.bytes >= 3 << 20)

        // A second acceleration layer is refused, and nothing is written.
        let again = run([obd, "trace", "attach", "oci:\(dir.file("accel")):v1", dir.file("list"), "oci:\(dir.file("twice")):v1"])
        #expect(again.status == 1 && again.err.contains("already is an acceleration layer"), "\(again.err)")
        #expect(access(dir.file("twice/index.json"), F_OK) != 0)
        // Not an obd image (no blob-digest annotation): refused.
        let plain = run([obd, "trace", "attach", "oci:\(dir.file("src")):v1", dir.file("list"), "oci:\(dir.file("plain")):v1"])
        #expect(plain.status == 1 && plain.err.contains("not an obd (overlaybd) image"), "\(plain.err)")
        // Hostile or wrong inputs: refused before anything is written.
        try LocalRegistry.write(dir.file("big"), String(repeating: "/a\n", count: 30000))
        let big = run([obd, "trace", "attach", "oci:\(dir.file("obd")):v1", dir.file("big"), "oci:\(dir.file("bad")):v1"])
        #expect(big.status == 1 && big.err.contains("over the limit of 65536 bytes"), "\(big.err)")
        var corrupt = TraceFormat.encode([TraceRecord(layerIndex: 0, count: 4096, offset: 0)])
        corrupt[30] ^= 1
        try LocalFile(path: dir.file("corrupt"), mode: .createTruncate).writeBytes(corrupt, at: 0)
        let bad = run([obd, "trace", "attach", "oci:\(dir.file("obd")):v1", dir.file("corrupt"), "oci:\(dir.file("bad")):v1"])
        #expect(bad.status == 1 && bad.err.contains("checksum"), "\(bad.err)")
        try LocalRegistry.write(dir.file("junk"), "not a path\n")
        let junk = run([obd, "trace", "attach", "oci:\(dir.file("obd")):v1", dir.file("junk"), "oci:\(dir.file("bad")):v1"])
        #expect(junk.status == 1 && junk.err.contains("no usable path"), "\(junk.err)")
        #expect(access(dir.file("bad/index.json"), F_OK) != 0)
    }

    @Test("obd convert --trace and --priority-list append the same layer obd trace attach does")
    func convertWithTrace() throws {
        let dir = TemporaryDirectory("obd-attach")
        defer { dir.remove() }
        let src = try convertSource(dir)
        let records = [TraceRecord(layerIndex: 0, count: 4096, offset: 0), TraceRecord(layerIndex: 2, count: 512, offset: 8192)]
        try TraceFormat.write(records, to: dir.file("trace"))
        let a = run([obd, "trace", "attach", "--created", Self.created, "oci:\(dir.file("obd")):v1", dir.file("trace"), "oci:\(dir.file("attached")):v1"])
        #expect(a.status == 0 && a.out.contains("trace of 2 records"), "\(a.err)")
        let c = run([obd, "convert", "--vsize", "4", "--cache-dir", "none", "-d", dir.file("w2"), "--trace", dir.file("trace"),
                     "oci:\(src.dir):v1", "oci:\(dir.file("converted")):v1"])
        #expect(c.status == 0, "\(c.err)")
        let attached = try image(dir.file("attached"), "v1"), converted = try image(dir.file("converted"), "v1")
        #expect(attached.manifest["layers"] == converted.manifest["layers"], "same layers, the same acceleration layer blob")
        #expect(converted.config["history"]?.array?.first?["created_by"]?.string == "Acceleration Layer")
        #expect(converted.config["rootfs"] == attached.config["rootfs"])
        // The flags insist on the kind.
        try LocalRegistry.write(dir.file("list"), Self.list)
        let wrong = run([obd, "convert", "--vsize", "4", "--cache-dir", "none", "-d", dir.file("w3"), "--trace", dir.file("list"),
                         "oci:\(src.dir):v1", "oci:\(dir.file("never")):v1"])
        #expect(wrong.status == 1 && wrong.err.contains("not a binary trace"), "\(wrong.err)")
        let wrong2 = run([obd, "convert", "--vsize", "4", "--cache-dir", "none", "-d", dir.file("w4"), "--priority-list", dir.file("trace"),
                          "oci:\(src.dir):v1", "oci:\(dir.file("never")):v1"])
        #expect(wrong2.status == 1 && wrong2.err.contains("a binary trace, not a priority list"), "\(wrong2.err)")
        let pl = run([obd, "convert", "--vsize", "4", "--cache-dir", "none", "-d", dir.file("w5"), "--priority-list", dir.file("list"),
                      "oci:\(src.dir):v1", "oci:\(dir.file("listed")):v1"])
        #expect(pl.status == 0, "\(pl.err)")
        let listed = try image(dir.file("listed"), "v1")
        #expect(AccelerationLayer.isAccelerationLayer(listed.manifest["layers"]?.array?.last))
        #expect(access(dir.file("never/index.json"), F_OK) != 0)
    }

    @Test("through the registry: attach between repositories (blobs mounted), skopeo inspect shows the layer, the remote image replays its acceleration layer",
          .enabled(if: LocalRegistry.available))
    func attachRegistry() throws {
        let dir = TemporaryDirectory("obd-attach-reg")
        defer { dir.remove() }
        let reg = try LocalRegistry()
        let src = try ConvertImageTests.makeLayers(dir)
        let conv = run([obd, "convert", "--vsize", "4", "--oci", "--cache-dir", "none", "--plain-http", "-d", dir.file("w"),
                        "oci:\(src.dir):v1", "\(reg.host)/obd/app:v1"])
        #expect(conv.status == 0, "\(conv.err)")
        try LocalRegistry.write(dir.file("list"), Self.list)
        let r = run([obd, "trace", "attach", "--plain-http", "--json", "--created", Self.created,
                     "\(reg.host)/obd/app:v1", dir.file("list"), "\(reg.host)/obd/accel:v1"])
        #expect(r.status == 0, "\(r.err)")
        let summary = try JSONValue.parse(Array(r.out.utf8))
        #expect(summary["mounted"]?.int == 3 && summary["uploaded"]?.int == 2, "three layers mounted; the new layer and config uploaded: \(r.out)")
        let client = RegistryClient(host: reg.host, options: RegistryOptions(plainHTTP: true))
        let m = try client.imageManifest(repository: "obd/accel", reference: "v1")
        let old = try client.imageManifest(repository: "obd/app", reference: "v1")
        let newConfig = try client.blob(repository: "obd/accel", digest: m.config.digest)
        let oldConfig = try client.blob(repository: "obd/app", digest: old.config.digest)
        let mb = try client.manifest(repository: "obd/accel", reference: "v1").bytes
        let ob = try client.manifest(repository: "obd/app", reference: "v1").bytes
        let top = try #require(m.layers.last)
        let blob = try client.blob(repository: "obd/accel", digest: top.digest)
        try checkAttached(old: (try JSONValue.parse(ob), try JSONValue.parse(oldConfig), oldConfig),
                          new: (try JSONValue.parse(mb), try JSONValue.parse(newConfig), newConfig), blob: blob)
        // skopeo (1.9: no LayersData) parses it: four layers; --raw shows the annotations, --config the history.
        let inspect = run(["/usr/bin/skopeo", "inspect", "--tls-verify=false", "docker://\(reg.host)/obd/accel:v1"])
        #expect(inspect.status == 0, "\(inspect.err)")
        let info = try JSONValue.parse(Array(inspect.out.utf8))
        #expect(info["Layers"]?.array?.compactMap(\.string) == m.layers.map(\.digest) && m.layers.count == 4, "\(inspect.out)")
        let raw = run(["/usr/bin/skopeo", "inspect", "--raw", "--tls-verify=false", "docker://\(reg.host)/obd/accel:v1"])
        let rawLayers = try JSONValue.parse(Array(raw.out.utf8))["layers"]?.array
        #expect(rawLayers?.last?["annotations"]?["containerd.io/snapshot/overlaybd/acceleration-layer"]?.string == "yes")
        #expect(rawLayers?.last?["mediaType"]?.string == "application/vnd.oci.image.layer.v1.tar")
        let cfg = run(["/usr/bin/skopeo", "inspect", "--config", "--tls-verify=false", "docker://\(reg.host)/obd/accel:v1"])
        #expect(try JSONValue.parse(Array(cfg.out.utf8))["history"]?.array?.first?["created_by"]?.string == "Acceleration Layer", "\(cfg.err)")
        // The remote image with all its layers as lowers and accelerationLayer: the tar is fetched and the list prefetched.
        try LocalRegistry.write(dir.file("overlaybd.json"), #"{"cacheConfig": {"cacheType": "file", "cacheDir": "\#(dir.file("rcache"))", "cacheSizeGB": 1}}"#)
        let lowers = m.layers.map { #"{"digest": "\#($0.digest)", "size": \#($0.size)}"# }.joined(separator: ", ")
        try LocalRegistry.write(dir.file("config.v1.json"), #"{"repoBlobUrl": "http://\#(reg.host)/v2/obd/accel/blobs", "lowers": [\#(lowers)], "accelerationLayer": true}"#)
        let img = try Image.open(configPath: dir.file("config.v1.json"), global: GlobalConfig.load(from: dir.file("overlaybd.json")))
        defer { img.close() }
        #expect(img.remoteLayers.count == 3 && img.lowerFiles.count == 3)
        let p = try #require(img.prefetcher)
        #expect(p.source.hasSuffix(top.digest + " (trace)"))
        #expect(p.wait(seconds: 120), "\(p.progress)")
        #expect(p.priorityList?.files == 3 && p.progress.failures == 0 && p.progress.bytes >= 3 << 20)
    }
}
