import BlockIO
import Ext4
import Glibc
import Hashing
import LSMT
import Registry
import ZFile

/// `obd convert --turbo-oci`, one layer (`formats/Convert.md`, "TurboOCI"): the original
/// layer (gzip or plain tar) is applied metadata-only into a writable warp layer over
/// the warp layers built so far; the warp layer is committed as a ZFile (`ext4.fs.meta`)
/// and packed with the gzip index into the turbo layer blob. The original blob is not
/// converted: the image keeps referencing it.
extension Converter {
    static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    static let ociLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    /// The `version` annotation of a TurboOCI layer.
    static let turboVersion = "0.1.0-turbo.ociv1"

    /// What one TurboOCI layer build produced.
    struct TurboLayer {
        /// The turbo layer blob.
        var digest: String
        var path: String
        var size: UInt64
        var diffID: String
        /// The original layer (the target) and where its bytes are.
        var target: Descriptor
        var targetPath: String
        var targetIsGzip: Bool
        /// The committed warp layer with its target, as the next layer's lower.
        var lower: ReadOnlyLayer
    }

    /// The layer media type for a turbo layer (and a target's normalised type): gzip or
    /// plain tar, in the output's family (OCI with `--oci`, else docker).
    func turboMediaType(gzip: Bool) -> String {
        if gzip { return options.oci ? Self.ociLayerGzip : Self.dockerLayerGzip }
        return options.oci ? MediaType.ociLayerTar : MediaType.dockerLayerTar
    }

    /// Builds layer `i` in `dir` over `lowers` (the warp layers of the layers below).
    func buildTurboLayer(_ i: Int, of n: Int, descriptor: Descriptor, lowers: [ReadOnlyLayer], chain: [String], epoch: Int64,
                         dir: String, name: String) throws -> TurboLayer {
        removeTree(dir)
        makeDirectories(dir)
        func fail(_ e: any Error) -> ConvertError { .layer(index: i, digest: descriptor.digest, cause: UnderlyingError(e)) }
        progress(ConvertEvent(manifest: name, layer: i, layers: n, stage: .download, detail: descriptor.digest))
        let blob: any BlockFile
        do { blob = try source.layer(descriptor, scratch: dir) } catch { throw fail(error) }
        progress(ConvertEvent(manifest: name, layer: i, layers: n, stage: .apply, detail: descriptor.digest))
        let vsize = options.vsizeGiB << 30
        let indexPath = dir + "/" + TurboLayerBlob.gzipIndexName
        let stream: any BlockFile
        let gzip: Bool
        let warp: WritableWarpLayer
        do {
            let digest = try SHA256Stream.digest(of: blob)
            guard digest == descriptor.digest else {
                throw ConvertError.source("the blob's sha256 is \(digest), not its digest \(descriptor.digest)")
            }
            (stream, gzip) = try TurboTarget.open(blob, indexPath: indexPath)
            let base: (any BlockFile)? = lowers.isEmpty ? nil : try LayerStack(lowers: lowers, name: "layers below \(i)")
            warp = try WritableWarpLayer.create(indexPath: dir + "/writable_index", fsmetaPath: dir + "/writable_data",
                                                virtualSize: vsize, uuid: ChainID.uuid(chain[i]),
                                                parentUUID: i > 0 ? ChainID.uuid(chain[i - 1]) : .null,
                                                target: stream, base: base)
            if i == 0 { try Ext4Maker.make(on: warp, uuid: ChainID.uuid(chain[0]).description, epoch: epoch, scratch: dir) }
            let fs = try Ext4Filesystem(file: warp, epoch: epoch)
            _ = try TarApplier(fs: fs).applyMetaOnly(stream: stream, sink: warp)
            try fs.close()
        } catch {
            throw fail(error)
        }
        progress(ConvertEvent(manifest: name, layer: i, layers: n, stage: .commit, detail: descriptor.digest))
        // As overlaybd-commit -z --turboOCI: a ZFile, no tar wrapper, uuid and parent null.
        let metaPath = dir + "/" + TurboLayerBlob.fsMetaName
        let out = try LocalFile(path: metaPath, mode: .createTruncate)
        let writer = try ZFileWriter(output: out, base: 0, options: options.zfile)
        try warp.commit(args: CommitArgs(), into: writer)
        try out.flush()
        if !options.reserve { unlink(dir + "/writable_data"); unlink(dir + "/writable_index") }
        let meta = try LocalFile(path: metaPath)
        let written = try TurboLayerBlob.write(fsMeta: meta, gzipIndex: gzip ? try LocalFile(path: indexPath) : nil,
                                               to: dir + "/turboOCIv1.tar.gz")
        let committed = try WarpLayer(file: ZFileReader(source: meta), target: stream)
        return TurboLayer(digest: written.digest, path: dir + "/turboOCIv1.tar.gz", size: written.size, diffID: written.diffID,
                          target: descriptor, targetPath: blob.name, targetIsGzip: gzip, lower: ReadOnlyLayer(warp: committed))
    }

    /// The manifest's descriptor of a turbo layer, with ACI's annotations.
    func turboDescriptor(_ l: TurboLayer) -> JSONValue {
        .object(["mediaType": .string(turboMediaType(gzip: true)), "digest": .string(l.digest), "size": .int(Int64(l.size)),
                 "annotations": .object([
                    "containerd.io/snapshot/overlaybd/blob-digest": .string(l.digest),
                    "containerd.io/snapshot/overlaybd/blob-size": .string("\(l.size)"),
                    "containerd.io/snapshot/overlaybd/version": .string(Self.turboVersion),
                    "containerd.io/snapshot/overlaybd/turbo-oci/target-digest": .string(l.target.digest),
                    "containerd.io/snapshot/overlaybd/turbo-oci/target-media-type": .string(turboMediaType(gzip: l.targetIsGzip)),
                 ])])
    }
}
