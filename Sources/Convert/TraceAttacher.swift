import BlockIO
import Glibc
import Registry

/// What `obd trace attach` did.
public struct AttachReport: Sendable, Equatable {
    public var rootDigest = ""
    public var rootMediaType = ""
    /// The new platform manifests' digests.
    public var manifests: [String] = []
    /// The acceleration layer blob.
    public var layerDigest = ""
    public var layerSize: UInt64 = 0
    public var content: AccelerationLayer.Content = .priorityList(paths: 0)
    /// Blobs of the source image (and the new layer and configs) uploaded, already present, mounted.
    public var blobsUploaded = 0
    public var blobsPresent = 0
    public var blobsMounted = 0
}

/// `obd trace attach`: appends an acceleration layer (a trace or a priority list) to an
/// obd image, as ACI's `ctr record-trace` does, and writes the result to a target (a
/// registry repository or an OCI layout, the same stores `obd convert` uses). The
/// source's layers and the new layer, configs and manifests are copied to the target
/// (present blobs skipped, cross-repository mounts used when possible); for an index,
/// every platform gets the layer (a binary trace only fits an index of one platform,
/// since its records name that platform's layers). Attestation manifests are dropped,
/// as by `obd convert`. Nothing is written to the target before every manifest was built.
public final class TraceAttacher: Sendable {
    let source: any ImageSource
    let target: any ImageTarget
    let tag: String?
    let trace: [UInt8]
    let traceName: String
    let workdir: String
    let created: String
    let expect: AccelerationLayer.Content?

    /// - Parameters:
    ///   - trace: the `trace` file's bytes; `traceName` names it in errors.
    ///   - expect: insist on a binary trace or a priority list (nil: either).
    ///   - workdir: scratch folder (the new blobs, downloaded source layers).
    ///   - created: RFC 3339 time for the history entry and the config's `created`.
    public init(source: any ImageSource, target: any ImageTarget, tag: String?, trace: [UInt8], traceName: String,
                expect: AccelerationLayer.Content? = nil, workdir: String,
                created: String = AccelerationLayer.timestamp(Int64(time(nil)))) {
        self.source = source
        self.target = target
        self.tag = tag
        self.trace = trace
        self.traceName = traceName
        self.expect = expect
        self.workdir = workdir
        self.created = created
    }

    struct Built {
        var manifest: [UInt8]
        var mediaType: String
        var config: [UInt8]
        var layers: [Descriptor]
    }

    public func run() throws -> AttachReport {
        var report = AttachReport()
        report.content = try AccelerationLayer.check(trace, path: traceName, expect: expect)
        let blob = try AccelerationLayer.blob(trace: trace)
        let digest = AccelerationLayer.digest(blob)
        report.layerDigest = digest
        report.layerSize = UInt64(blob.count)
        makeDirectories(workdir)
        let blobPath = workdir + "/accel-" + digest.suffix(64) + ".tar"
        try writeAll(blobPath, blob)
        defer { unlink(blobPath) }

        let root = try source.root()
        let rootJSON = try JSONValue.parse(root.bytes)
        let type = rootJSON["mediaType"]?.string ?? root.mediaType
        var built: [Built] = []
        var rootBytes: [UInt8]
        var rootType: String
        if let children = rootJSON["manifests"]?.array, ImageManifest.indexTypes.contains(type) || rootJSON["layers"] == nil {
            let wanted = children.filter { $0["annotations"]?["vnd.docker.reference.type"]?.string != "attestation-manifest" }
            if case .trace = report.content, wanted.count > 1 {
                throw ConvertError.options("\(traceName): a binary trace names the layers of one platform, and the source is an index of \(wanted.count) platforms; attach it to one platform's manifest (by digest), or use a priority list")
            }
            var entries: [JSONValue] = []
            for (i, child) in wanted.enumerated() {
                guard let d = child["digest"]?.string else { throw ConvertError.source("index entry \(i) has no digest") }
                let b = try attach(try source.manifest(d), name: "manifest \(d)", layer: (digest, UInt64(blob.count)))
                var entry = child
                entry["mediaType"] = .string(b.mediaType)
                entry["digest"] = .string(Digest.sha256(of: b.manifest).description)
                entry["size"] = .int(Int64(b.manifest.count))
                entries.append(entry)
                built.append(b)
            }
            var index = rootJSON
            index["manifests"] = .array(entries)
            rootBytes = try index.bytes()
            rootType = type.isEmpty ? MediaType.ociIndex : type
        } else {
            let b = try attach(root.bytes, name: "\(source.repositoryName ?? "source") manifest", layer: (digest, UInt64(blob.count)))
            built.append(b)
            rootBytes = b.manifest
            rootType = b.mediaType
        }

        // Everything built: copy blobs, then child manifests, then the root.
        let from = source.registryHost.flatMap { h in source.repositoryName.map { (host: h, repository: $0) } }
        var sent = Set<String>()
        func count(_ how: BlobTransfer) {
            switch how {
            case .uploaded: report.blobsUploaded += 1
            case .present: report.blobsPresent += 1
            case .mounted: report.blobsMounted += 1
            }
        }
        for b in built {
            for l in b.layers where sent.insert(l.digest).inserted {
                if l.digest == digest {
                    count(try target.putBlob(digest, file: LocalFile(path: blobPath), mountFrom: nil))
                } else if let how = try target.reuseBlob(l.digest, mountFrom: from) {
                    count(how)
                } else {
                    let scratch = workdir + "/layers"
                    makeDirectories(scratch)
                    let file = try source.layer(l, scratch: scratch)
                    let local = try file as? LocalFile ?? LocalFile(path: file.name)
                    count(try target.putBlob(l.digest, file: local, mountFrom: from))
                    if file.name.hasPrefix(scratch) { unlink(file.name) }
                }
            }
            let configDigest = Digest.sha256(of: b.config).description
            let cfgPath = workdir + "/config-" + configDigest.suffix(64)
            try writeAll(cfgPath, b.config)
            count(try target.putBlob(configDigest, file: LocalFile(path: cfgPath), mountFrom: nil))
            unlink(cfgPath)
            if built.count > 1 || rootBytes != b.manifest { try target.putManifest(b.manifest, mediaType: b.mediaType, tag: nil) }
        }
        try target.putManifest(rootBytes, mediaType: rootType, tag: tag)
        removeTree(workdir + "/layers")
        report.rootDigest = Digest.sha256(of: rootBytes).description
        report.rootMediaType = rootType
        report.manifests = built.map { Digest.sha256(of: $0.manifest).description }
        return report
    }

    /// One platform's manifest with the layer appended, its config rewritten.
    func attach(_ bytes: [UInt8], name: String, layer: (digest: String, size: UInt64)) throws -> Built {
        var m = try JSONValue.parse(bytes)
        guard let configDigest = m["config"]?["digest"]?.string, let layers = m["layers"]?.array else {
            throw ConvertError.source("\(name): not an image manifest")
        }
        var config = try JSONValue.parse(source.small(configDigest))
        try AccelerationLayer.append(manifest: &m, config: &config, digest: layer.digest, size: layer.size,
                                     created: created, manifestName: name)
        let configBytes = try config.bytes()
        m["config"]?["digest"] = .string(Digest.sha256(of: configBytes).description)
        m["config"]?["size"] = .int(Int64(configBytes.count))
        let type = m["mediaType"]?.string ?? MediaType.ociManifest
        var descriptors: [Descriptor] = []
        for (i, l) in layers.enumerated() {
            guard let d = l["digest"]?.string, let s = l["size"]?.int, s >= 0 else {
                throw ConvertError.source("\(name): layer \(i) has no digest or size")
            }
            descriptors.append(Descriptor(mediaType: l["mediaType"]?.string ?? "", digest: d, size: UInt64(s)))
        }
        descriptors.append(Descriptor(mediaType: AccelerationLayer.mediaType(inManifest: type), digest: layer.digest, size: layer.size))
        return Built(manifest: try m.bytes(), mediaType: type, config: configBytes, layers: descriptors)
    }
}
