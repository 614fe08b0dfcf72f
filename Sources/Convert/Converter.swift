import BlockIO
import Ext4
import FoundationEssentials
import Glibc
import Hashing
import Image
import LSMT
import Registry
import Threading
import ZFile

/// How `obd convert` builds layers.
public struct ConvertOptions: Sendable {
    public var vsizeGiB: UInt64 = 64
    public var zfile = ZFileOptions(algorithm: .lz4, blockSize: 4096, verify: true, threads: 2, overwriteHeader: true)
    /// OCI media types (else docker v2, as ACI's convertor does by default).
    public var oci = false
    public var workdir = "obd-convert-work"
    /// Keep the work folder (writable layers, downloaded source blobs).
    public var reserve = false
    /// Write manifest.json / config.json (and index.json) into the work folder.
    public var dumpManifest = false
    /// Conversion cache folder (layer reuse across conversions); nil: no cache.
    public var cacheDir: String?
    /// Platform manifests converted at once (an index's children).
    public var concurrency = 4
    /// An acceleration layer to append (`--trace` / `--priority-list`): the `trace`
    /// file's bytes, its name for errors, and which of the two it must be.
    public var acceleration: (trace: [UInt8], name: String, expect: AccelerationLayer.Content)?
    /// RFC 3339 time of the acceleration layer's history entry (default: now).
    public var created = AccelerationLayer.timestamp(Int64(time(nil)))
    /// TurboOCI (`--turbo-oci`): per layer only the fs metadata (a turbo layer blob); the
    /// original layers stay and are referenced. Every layer gets `vsizeGiB`; no cache.
    public var turboOCI = false

    public init() {}

    /// What makes two conversions of the same source layer chain produce the same blob.
    var fingerprint: String {
        "obd-convert-v1 vsize=\(vsizeGiB) alg=\(zfile.algorithm) bs=\(zfile.blockSize)"
    }
}

/// Progress events (rendered by the CLI as bars, lines or JSON).
public struct ConvertEvent: Sendable {
    public enum Stage: String, Sendable { case download, apply, commit, upload, reuse, done }
    public var manifest: String
    public var layer: Int
    public var layers: Int
    public var stage: Stage
    public var detail: String
}

/// What a conversion did.
public struct ConvertReport: Sendable, Equatable {
    public var rootDigest = ""
    public var rootMediaType = ""
    public var manifests: [String] = []
    public var layersBuilt = 0
    public var layersReused = 0
    public var blobsUploaded = 0
    public var blobsPresent = 0
    public var blobsMounted = 0
    public var layerDigests: [String] = []
}

/// `obd convert`: an OCI/Docker image (tar, tar.gz or tar.zst layers) to an obd image,
/// in userspace. Per manifest, layer i is a new writable layer over the layers
/// converted so far; layer 0 starts with an empty ext4 (`Ext4Maker`); the source tar is
/// applied with `TarApplier` (digest checked while reading); the layer is committed as
/// a ZFile in a tar wrapper with UUIDs from the chain ID (as ACI does), so the same
/// input always gives the same bytes. Nothing is uploaded before every layer of every
/// manifest was built: a failure never leaves a partial image in the target.
public final class Converter: @unchecked Sendable {
    let source: any ImageSource
    let target: (any ImageTarget)?
    let tag: String?
    let options: ConvertOptions
    let progress: @Sendable (ConvertEvent) -> Void
    let cache: ConversionCache?
    private var report = ConvertReport()
    private let lock = ReportLock()

    public init(source: any ImageSource, target: (any ImageTarget)?, tag: String?, options: ConvertOptions,
                progress: @escaping @Sendable (ConvertEvent) -> Void = { _ in }) throws {
        self.source = source
        self.target = target
        self.tag = tag
        self.options = options
        self.progress = progress
        cache = try options.cacheDir.map { try ConversionCache(directory: $0) }
    }

    /// A manifest built but not yet uploaded.
    struct Built {
        var manifest: [UInt8]
        var mediaType: String
        var config: [UInt8]
        var layers: [(digest: String, path: String)]
        /// TurboOCI: the original layers the image references (reused in the target, or
        /// uploaded when the target cannot reach them), with where their bytes are.
        var originals: [(digest: String, path: String)] = []
    }

    public func run() throws -> ConvertReport {
        makeDirectories(options.workdir)
        if let a = options.acceleration { _ = try AccelerationLayer.check(a.trace, path: a.name, expect: a.expect) }
        let root = try source.root()
        let rootJSON = try JSONValue.parse(root.bytes)
        let type = rootJSON["mediaType"]?.string ?? root.mediaType
        var uploads: [Built] = []
        var rootBytes: [UInt8]
        var rootType: String
        if let children = rootJSON["manifests"]?.array, ImageManifest.indexTypes.contains(type) || rootJSON["layers"] == nil {
            // An index: every platform (attestations skipped), a few at a time.
            let wanted = children.enumerated().filter { $0.element["annotations"]?["vnd.docker.reference.type"]?.string != "attestation-manifest" }
            if let a = options.acceleration, case .trace = a.expect, wanted.count > 1 {
                throw ConvertError.options("\(a.name): a binary trace names the layers of one platform, and the source is an index of \(wanted.count) platforms; use a priority list")
            }
            final class Slots: @unchecked Sendable { var built: [Built?]; init(_ n: Int) { built = Array(repeating: nil, count: n) } }
            let slots = Slots(children.count)
            let indexes = wanted.map { $0.offset }
            try parallelForEach(count: indexes.count, threads: options.concurrency) { k in
                let i = indexes[k]
                let d = children[i]
                guard let digest = d["digest"]?.string else { throw ConvertError.source("index entry \(i) has no digest") }
                let b = try self.convertManifest(self.source.manifest(digest), name: "\(i)-" + digest.suffix(12))
                self.lock.run { slots.built[i] = b }
            }
            let built = slots.built
            var entries: [JSONValue] = []
            for (i, child) in children.enumerated() {
                guard let b = built[i] else { continue }
                var entry = child
                entry["mediaType"] = .string(b.mediaType)
                entry["digest"] = .string(Digest.sha256(of: b.manifest).description)
                entry["size"] = .int(Int64(b.manifest.count))
                entries.append(entry)
                uploads.append(b)
            }
            var index = rootJSON
            index["manifests"] = .array(entries)
            if options.oci { index["mediaType"] = .string(MediaType.ociIndex) }
            rootBytes = try index.bytes()
            rootType = index["mediaType"]?.string ?? MediaType.ociIndex
            if options.dumpManifest { try writeAll(options.workdir + "/index.json", rootBytes) }
        } else {
            let b = try convertManifest(root.bytes, name: "manifest")
            uploads.append(b)
            rootBytes = b.manifest
            rootType = b.mediaType
        }
        // Everything built: now upload (blobs, then child manifests, then the root).
        if let target {
            var sent = Set<String>()
            for b in uploads {
                for l in b.layers where !sent.contains(l.digest) {
                    sent.insert(l.digest)
                    progress(ConvertEvent(manifest: "", layer: 0, layers: b.layers.count, stage: .upload, detail: l.digest))
                    // A blob pushed earlier to another repository of this registry is mounted from there.
                    let how = try target.putBlob(l.digest, file: LocalFile(path: l.path), mountFrom: cache?.pushedTo(l.digest))
                    if let at = target.pushLocation { try cache?.recordPush(l.digest, host: at.host, repository: at.repository) }
                    lock.run {
                        switch how {
                        case .uploaded: report.blobsUploaded += 1
                        case .present: report.blobsPresent += 1
                        case .mounted: report.blobsMounted += 1
                        }
                    }
                }
                for o in b.originals where !sent.contains(o.digest) {
                    sent.insert(o.digest)
                    progress(ConvertEvent(manifest: "", layer: 0, layers: b.layers.count, stage: .upload, detail: o.digest))
                    // The original layer stays where it is: found in the target, mounted from
                    // the source repository, or (another registry, a folder) uploaded.
                    var how = try target.reuseBlob(o.digest, mountFrom: sourceLocation)
                    if how == nil { how = try target.putBlob(o.digest, file: LocalFile(path: o.path), mountFrom: nil) }
                    lock.run {
                        switch how {
                        case .uploaded?: report.blobsUploaded += 1
                        case .mounted?: report.blobsMounted += 1
                        default: report.blobsPresent += 1
                        }
                    }
                }
                let configDigest = Digest.sha256(of: b.config).description
                let cfgPath = options.workdir + "/config-" + configDigest.suffix(64)
                try writeAll(cfgPath, b.config)
                _ = try target.putBlob(configDigest, file: LocalFile(path: cfgPath), mountFrom: nil)
                unlink(cfgPath)
                if uploads.count > 1 { try target.putManifest(b.manifest, mediaType: b.mediaType, tag: nil) }
            }
            try target.putManifest(rootBytes, mediaType: rootType, tag: tag)
        }
        report.rootDigest = Digest.sha256(of: rootBytes).description
        report.rootMediaType = rootType
        report.manifests = uploads.map { Digest.sha256(of: $0.manifest).description }
        if !options.reserve { removeTree(options.workdir + "/layers") }
        progress(ConvertEvent(manifest: "", layer: 0, layers: 0, stage: .done, detail: report.rootDigest))
        return report
    }

    /// The source registry repository (for cross-repository mounts), nil for a folder.
    var sourceLocation: (host: String, repository: String)? {
        guard let h = source.registryHost, let r = source.repositoryName else { return nil }
        return (h, r)
    }

    /// Converts one platform's manifest; returns what to upload.
    func convertManifest(_ bytes: [UInt8], name: String) throws -> Built {
        let m = try JSONValue.parse(bytes)
        guard let configDigest = m["config"]?["digest"]?.string, let layers = m["layers"]?.array else {
            throw ConvertError.source("\(name): not an image manifest")
        }
        var config = try JSONValue.parse(source.small(configDigest))
        guard let diffIDs = config["rootfs"]?["diff_ids"]?.array?.compactMap({ $0.string }), diffIDs.count == layers.count else {
            throw ConvertError.source("\(name): config rootfs.diff_ids does not list one diff ID per layer")
        }
        let chain = ChainID.chain(diffIDs)
        let epoch = Self.epoch(config["created"]?.string)
        var outputs: [(digest: String, path: String, size: UInt64)] = []
        var turbo: [TurboLayer] = []
        var lowers: [ReadOnlyLayer] = []
        let dir = options.workdir + "/layers/" + name
        makeDirectories(dir)
        for (i, l) in layers.enumerated() {
            guard let digest = l["digest"]?.string, let size = l["size"]?.int, size >= 0 else {
                throw ConvertError.source("\(name): layer \(i) has no digest or size")
            }
            if options.turboOCI {
                let t = try buildTurboLayer(i, of: layers.count, descriptor: Descriptor(mediaType: l["mediaType"]?.string ?? "", digest: digest, size: UInt64(size)),
                                            lowers: lowers, chain: chain, epoch: epoch, dir: dir + "/\(i)", name: name)
                turbo.append(t)
                outputs.append((t.digest, t.path, t.size))
                lowers.append(t.lower)
                lock.run { report.layersBuilt += 1 }
                continue
            }
            let key = options.fingerprint + " " + chain[i]
            if let hit = cache?.lookup(key) {
                progress(ConvertEvent(manifest: name, layer: i, layers: layers.count, stage: .reuse, detail: hit.digest))
                outputs.append(hit)
                lowers.append(try LayerOpener.open(path: hit.path))
                lock.run { report.layersReused += 1 }
                continue
            }
            let built = try buildLayer(i, of: layers.count, descriptor: Descriptor(mediaType: l["mediaType"]?.string ?? "", digest: digest, size: UInt64(size)),
                                       lowers: lowers, chain: chain, epoch: epoch, dir: dir + "/\(i)", name: name)
            let stored = try cache?.store(key, digest: built.digest, path: built.path) ?? built
            outputs.append(stored)
            lowers.append(try LayerOpener.open(path: stored.path))
            lock.run { report.layersBuilt += 1 }
        }
        lock.run { report.layerDigests += outputs.map(\.digest) }
        // Config: diff IDs are the layer digests (uncompressed tar media type); history kept.
        config["rootfs"]?["diff_ids"] = .array(options.turboOCI ? turbo.map { .string($0.diffID) } : outputs.map { .string($0.digest) })
        let layerType = options.oci ? MediaType.ociLayerTar : MediaType.dockerLayerTar
        var manifest = m
        let manifestType = options.oci ? MediaType.ociManifest : MediaType.dockerManifest
        manifest["mediaType"] = .string(manifestType)
        manifest["layers"] = .array(outputs.map { o in
            .object(["mediaType": .string(layerType), "digest": .string(o.digest), "size": .int(Int64(o.size)),
                     "annotations": .object([
                        "containerd.io/snapshot/overlaybd/blob-digest": .string(o.digest),
                        "containerd.io/snapshot/overlaybd/blob-size": .string("\(o.size)"),
                        "containerd.io/snapshot/overlaybd/version": .string("0.1.0"),
                     ])])
        })
        if options.turboOCI { manifest["layers"] = .array(turbo.map(turboDescriptor)) }
        var uploads = outputs.map { ($0.digest, $0.path) }
        if let a = options.acceleration {
            // The acceleration layer on top, as `obd trace attach` would add it.
            let blob = try AccelerationLayer.blob(trace: a.trace)
            let digest = AccelerationLayer.digest(blob)
            let path = dir + "/acceleration-layer.tar"
            try writeAll(path, blob)
            try AccelerationLayer.append(manifest: &manifest, config: &config, digest: digest, size: UInt64(blob.count),
                                         created: options.created, manifestName: name)
            uploads.append((digest, path))
        }
        let configBytes = try config.bytes()
        manifest["config"] = .object([
            "mediaType": .string(options.oci ? MediaType.ociConfig : MediaType.dockerConfig),
            "digest": .string(Digest.sha256(of: configBytes).description), "size": .int(Int64(configBytes.count)),
        ])
        let manifestBytes = try manifest.bytes()
        if options.dumpManifest {
            try writeAll(dir + "/manifest.json", manifestBytes)
            try writeAll(dir + "/config.json", configBytes)
        }
        return Built(manifest: manifestBytes, mediaType: manifestType, config: configBytes, layers: uploads,
                     originals: turbo.map { ($0.target.digest, $0.targetPath) })
    }

    /// Builds one layer: apply the source tar over `lowers`, commit ZFile + tar.
    func buildLayer(_ i: Int, of n: Int, descriptor: Descriptor, lowers: [ReadOnlyLayer], chain: [String], epoch: Int64,
                    dir: String, name: String) throws -> (digest: String, path: String, size: UInt64) {
        removeTree(dir)
        makeDirectories(dir)
        func fail(_ e: any Error) -> ConvertError { .layer(index: i, digest: descriptor.digest, cause: UnderlyingError(e)) }
        progress(ConvertEvent(manifest: name, layer: i, layers: n, stage: .download, detail: descriptor.digest))
        let blob: any BlockFile
        do { blob = try source.layer(descriptor, scratch: dir) } catch { throw fail(error) }
        let vsize = lowers.last?.header.virtualSize ?? (options.vsizeGiB << 30)
        let uuid = ChainID.uuid(chain[i])
        let parent = i > 0 ? ChainID.uuid(chain[i - 1]) : LayerUUID.null
        let w = try WritableLayer.create(dataPath: dir + "/writable_data", indexPath: dir + "/writable_index",
                                         virtualSize: vsize, parentUUID: parent, uuid: uuid, sparse: true)
        let stack = try LayerStack(lowers: lowers, upper: w, name: "layer \(i)")
        progress(ConvertEvent(manifest: name, layer: i, layers: n, stage: .apply, detail: descriptor.digest))
        do {
            if i == 0 { try Ext4Maker.make(on: stack, uuid: ChainID.uuid(chain[0]).description, epoch: epoch, scratch: dir) }
            let fs = try Ext4Filesystem(file: stack, epoch: epoch)
            let result = try TarApplier(fs: fs).apply(blob)
            guard result.digest == descriptor.digest else {
                throw ConvertError.source("the blob's sha256 is \(result.digest), not its digest \(descriptor.digest)")
            }
            try fs.close()
        } catch {
            throw fail(error)
        }
        if blob.name.hasPrefix(dir) { unlink(blob.name) }
        progress(ConvertEvent(manifest: name, layer: i, layers: n, stage: .commit, detail: descriptor.digest))
        let path = dir + "/overlaybd.commit"
        let out = try LocalFile(path: path, mode: .createTruncate)
        let writer = try ZFileWriter(output: out, base: TarWrapper.payloadOffset, options: options.zfile)
        _ = try LayerCommit.write(segments: w.segments.map { var s = $0; s.tag = 0; return s }, sources: [w.dataFile],
                                  virtualSize: vsize, defaultParent: parent,
                                  args: CommitArgs(uuid: uuid, parentUUID: parent), into: writer)
        try TarWrapper.wrap(output: out, payloadSize: writer.compressedSize)
        try out.flush()
        if !options.reserve { unlink(dir + "/writable_data"); unlink(dir + "/writable_index") }
        let done = try LocalFile(path: path)
        return (try SHA256Stream.digest(of: done), path, done.size)
    }

    /// Seconds of an RFC 3339 time (`created`), or 0.
    static func epoch(_ text: String?) -> Int64 {
        guard let t = text, t.count >= 19 else { return 0 }
        let c = Array(t.utf8)
        func num(_ a: Int, _ n: Int) -> Int? {
            var v = 0
            for k in a..<(a + n) { guard c[k] >= 48 && c[k] <= 57 else { return nil }; v = v * 10 + Int(c[k] - 48) }
            return v
        }
        guard let y = num(0, 4), let mo = num(5, 2), let d = num(8, 2), let h = num(11, 2), let mi = num(14, 2), let s = num(17, 2) else { return 0 }
        var tmv = tm()
        tmv.tm_year = Int32(y - 1900); tmv.tm_mon = Int32(mo - 1); tmv.tm_mday = Int32(d)
        tmv.tm_hour = Int32(h); tmv.tm_min = Int32(mi); tmv.tm_sec = Int32(s)
        return Int64(timegm(&tmv))
    }
}

/// Chain IDs (OCI image spec) and the layer UUIDs ACI derives from them.
public enum ChainID {
    /// chain[0] = diff[0]; chain[i] = sha256(chain[i-1] + " " + diff[i]).
    public static func chain(_ diffIDs: [String]) -> [String] {
        var out: [String] = []
        for d in diffIDs {
            if let prev = out.last {
                out.append(Digest.sha256(of: Array((prev + " " + d).utf8)).description)
            } else {
                out.append(d)
            }
        }
        return out
    }

    /// The first 32 hex digits of the chain ID as 8-4-4-4-12.
    public static func uuid(_ chainID: String) -> LayerUUID {
        let hex = Array(chainID.split(separator: ":").last ?? "")
        let h = hex.count >= 32 ? hex : Array(repeating: "0", count: 32)
        let text = String(h[0..<8]) + "-" + String(h[8..<12]) + "-" + String(h[12..<16]) + "-" + String(h[16..<20]) + "-" + String(h[20..<32])
        return LayerUUID(text) ?? .null
    }
}

/// Guards state kept outside the lock (reports, slots, the cache index).
final class ReportLock: Sendable {
    private let lock = ConditionLock(())
    func run<T>(_ body: () throws -> T) rethrows -> T {
        try lock.withLock { _ in try body() }
    }
}

func removeTree(_ path: String) {
    guard let d = opendir(path) else { unlink(path); return }
    while let e = readdir(d) {
        let n = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if n == "." || n == ".." { continue }
        let p = path + "/" + n
        if e.pointee.d_type == UInt8(DT_DIR) { removeTree(p) } else { unlink(p) }
    }
    closedir(d)
    rmdir(path)
}
