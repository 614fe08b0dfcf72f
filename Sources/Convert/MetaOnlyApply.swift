import BlockIO

/// TurboOCI's metadata-only apply (overlaybd's `turboOCI-apply`): the entries of a layer
/// tar go into the ext4 exactly as the native apply puts them (`TarApplier.apply(_:content:)`,
/// whiteouts and all), but a regular file's data is not copied: its blocks are allocated
/// and each extent is mapped to the file's data in the target's *uncompressed* tar
/// stream. Tar data always starts at a multiple of 512 in the stream (headers and data
/// are whole 512-byte blocks), so every file can be mapped; an extent is cut at the file
/// size rounded up to 512, as overlaybd cuts it, so the tail of the last block past that
/// is never mapped (ext4 reads stop at the file size, so the file reads exactly its bytes).
/// GNU/PAX sparse entries are refused (`TarFormatError.sparse`).
extension TarApplier {
    /// What a metadata-only apply did.
    public struct MetaOnlyResult: Sendable, Equatable {
        public var entries = 0
        public var whiteouts = 0
        /// Regular files whose data was mapped, and the bytes mapped (rounded to 512).
        public var files = 0
        public var mappedBytes: UInt64 = 0
        /// Bytes of the stream walked (tar) or of the tar-meta file read.
        public var bytesRead: UInt64 = 0
    }

    /// Applies the tar stream `stream` (a plain tar, or the uncompressed side of a gzip
    /// layer, e.g. a `GzipFile`) metadata-only; mappings go to `sink`. With `export`, the
    /// tar-meta of the stream (`TarMeta`) is written there as well.
    public func applyMetaOnly(stream: any BlockFile, sink: any TargetMapping, export: (any BlockFile)? = nil) throws -> MetaOnlyResult {
        try walk(TarHeaderWalker(source: stream, mode: .tar), sink: sink, export: export)
    }

    /// Applies a tar-meta file (`TarMeta`, overlaybd's `--import`): the same entries without
    /// reading the tar; data offsets come from the headers and must lie inside the target's
    /// uncompressed stream of `streamSize` bytes.
    public func applyTarMeta(_ meta: any BlockFile, streamSize: UInt64, sink: any TargetMapping) throws -> MetaOnlyResult {
        try walk(TarHeaderWalker(source: meta, mode: .tarMeta, streamSize: streamSize), sink: sink, export: nil)
    }

    private func walk(_ w: TarHeaderWalker, sink: any TargetMapping, export: (any BlockFile)?) throws -> MetaOnlyResult {
        var walker = w
        var result = MetaOnlyResult()
        let counting = CountingMapping(sink)
        var exported: UInt64 = 0
        while let r = try walker.next() {
            result.entries += 1
            if let export {
                try export.writeBytes(r.metaBlocks, at: exported)
                exported += UInt64(r.metaBlocks.count)
            }
            if r.entry.isRegular { result.files += 1 }
            if try apply(r.entry, content: .mapped(dataOffset: r.dataOffset, sink: counting)) { result.whiteouts += 1 }
        }
        try finish()
        result.mappedBytes = counting.bytes
        result.bytesRead = walker.offset
        return result
    }
}

/// Counts the bytes mapped on the way to the real sink.
private final class CountingMapping: TargetMapping {
    let sink: any TargetMapping
    var bytes: UInt64 = 0
    init(_ sink: any TargetMapping) { self.sink = sink }
    func mapTarget(deviceOffset: UInt64, length: UInt64, targetOffset: UInt64) throws {
        bytes += length
        try sink.mapTarget(deviceOffset: deviceOffset, length: length, targetOffset: targetOffset)
    }
}

/// TurboOCI tar-meta (overlaybd's `turboOCI-apply --export`): the concatenated 512-byte
/// header blocks of a tar stream (GNU long-name/link and PAX records included, with their
/// data blocks), without file data and without the end-of-archive zero blocks; in each
/// regular-file header, the 8-byte `devmajor` field (offset 329) holds the little-endian
/// i64 offset of the file's data in the uncompressed stream. Those headers' checksums are
/// therefore stale; an import ignores checksums.
public enum TarMeta {
    /// Writes the tar-meta of `stream` (uncompressed tar) to `output` from offset 0;
    /// returns the number of entries and bytes written.
    @discardableResult
    public static func export(stream: any BlockFile, to output: any BlockFile) throws -> (entries: Int, bytes: UInt64) {
        var walker = TarHeaderWalker(source: stream, mode: .tar)
        var at: UInt64 = 0
        var n = 0
        while let r = try walker.next() {
            try output.writeBytes(r.metaBlocks, at: at)
            at += UInt64(r.metaBlocks.count)
            n += 1
        }
        return (n, at)
    }
}
