import BlockIO
import Gzip

/// The original layer of a TurboOCI layer (its "target") as the uncompressed tar stream
/// the warp layer's tag-1 mappings point into: a plain tar is its own stream, a gzip
/// layer is read through a ddgzidx index (1 MiB span, as ACI builds it). zstd and other
/// compressions cannot be read at random offsets and are refused.
public enum TurboTarget {
    /// Whether `blob` is gzip (true) or a plain tar (false).
    public static func isGzip(_ blob: any BlockFile) throws -> Bool {
        let head = try blob.readBytes(at: 0, count: Int(min(blob.size, 512)))
        if head.count >= 2 && head[0] == 0x1F && head[1] == 0x8B { return true }
        if head.count >= 4 && Array(head[0...3]) == [0x28, 0xB5, 0x2F, 0xFD] {
            throw ConvertError.source("\(blob.name): a zstd layer cannot be a TurboOCI target (only gzip and plain tar layers can be read at random offsets)")
        }
        guard head.count == 512, Array(head[257..<262]) == Array("ustar".utf8) || head.allSatisfy({ $0 == 0 }) else {
            throw ConvertError.source("\(blob.name): neither gzip nor a tar (a TurboOCI target must be one of them)")
        }
        return false
    }

    /// The uncompressed stream of `blob`. For gzip, the index is built into `indexPath`
    /// (in memory when nil) with a 1 MiB span, or read from there when `reuseIndex` and
    /// the file exists.
    public static func open(_ blob: any BlockFile, indexPath: String?, reuseIndex: Bool = false) throws -> (stream: any BlockFile, gzip: Bool) {
        guard try isGzip(blob) else { return (blob, false) }
        let index: any BlockFile
        if let indexPath {
            if reuseIndex, let existing = try? LocalFile(path: indexPath) {
                index = existing
            } else {
                let f = try LocalFile(path: indexPath, mode: .createTruncate)
                _ = try GzipIndexWriter.write(gzip: blob, to: f, options: GzipIndexOptions(span: 1 << 20))
                try f.flush()
                index = try LocalFile(path: indexPath)
            }
        } else {
            let m = MemoryFile(name: blob.name + ".gzip.meta")
            _ = try GzipIndexWriter.write(gzip: blob, to: m, options: GzipIndexOptions(span: 1 << 20))
            index = m
        }
        return (try GzipFile(blob: blob, indexFile: index), true)
    }
}
