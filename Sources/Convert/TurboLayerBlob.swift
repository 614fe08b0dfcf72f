import BlockIO
import Gzip
import Hashing

/// The layer blob of a TurboOCI image, as ACI's convertor builds it:
/// gzip(tar{`ext4.fs.meta`, `.turbo.ociv1`, `gzip.meta`}): the committed warp layer (a
/// ZFile of the fs metadata and the tag-1 index), an empty marker, and the gzip index of
/// the original layer when that layer is gzip. Tar headers carry only name, mode (0644),
/// size and type (ustar, as Go's archive/tar writes such a header: no owner, no time), the
/// archive ends with two zero blocks, and the gzip member has no name and mtime 0: the
/// same files always give the same blob. The diff ID is the SHA-256 of the tar.
public enum TurboLayerBlob {
    public static let fsMetaName = "ext4.fs.meta"
    public static let markerName = ".turbo.ociv1"
    public static let gzipIndexName = "gzip.meta"

    /// What `write` produced.
    public struct Written: Sendable, Equatable {
        /// "sha256:<hex>" of the blob (the tar.gz).
        public var digest: String
        public var size: UInt64
        /// "sha256:<hex>" of the uncompressed tar.
        public var diffID: String
    }

    /// Writes the blob of `fsMeta` (and `gzipIndex`, if given) to `path`.
    public static func write(fsMeta: any BlockFile, gzipIndex: (any BlockFile)?, to path: String) throws -> Written {
        let out = try LocalFile(path: path, mode: .createTruncate)
        let gz = try GzipWriter(output: out)
        var tarHash = SHA256Stream()
        func emit(_ bytes: [UInt8]) throws {
            bytes.withUnsafeBytes { tarHash.update($0) }
            try gz.write(bytes)
        }
        var members: [(String, (any BlockFile)?)] = [(fsMetaName, fsMeta), (markerName, nil)]
        if let gzipIndex { members.append((gzipIndexName, gzipIndex)) }
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buf.deallocate() }
        for (name, file) in members {
            let size = file?.size ?? 0
            try emit(header(name: name, size: size))
            guard let file else { continue }
            var off: UInt64 = 0
            while off < size {
                let n = Int(min(UInt64(buf.count), size - off))
                let part = UnsafeMutableRawBufferPointer(rebasing: buf[0..<n])
                try file.readExactly(into: part, at: off)
                tarHash.update(UnsafeRawBufferPointer(part))
                try gz.write(UnsafeRawBufferPointer(part))
                off += UInt64(n)
            }
            let pad = Int((512 - size % 512) % 512)
            if pad > 0 { try emit([UInt8](repeating: 0, count: pad)) }
        }
        try emit([UInt8](repeating: 0, count: 1024))
        let end = try gz.finish()
        try out.truncate(to: end)
        try out.flush()
        return Written(digest: try SHA256Stream.digest(of: LocalFile(path: path)), size: end, diffID: "sha256:" + tarHash.hex())
    }

    /// A ustar header of a regular file `name` (mode 0644, size, everything else zero).
    static func header(name: String, size: UInt64) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        func octal(_ v: UInt64, _ at: Int, _ width: Int) {
            let digits = String(v, radix: 8)
            let text = String(repeating: "0", count: max(0, width - 1 - digits.count)) + digits
            for (k, b) in text.utf8.enumerated() { h[at + k] = b }
        }
        for (k, b) in name.utf8.prefix(100).enumerated() { h[k] = b }
        octal(0o644, 100, 8)
        octal(0, 108, 8)
        octal(0, 116, 8)
        octal(size, 124, 12)
        octal(0, 136, 12)
        h[156] = UInt8(ascii: "0")
        for (k, b) in "ustar".utf8.enumerated() { h[257 + k] = b }
        h[263] = UInt8(ascii: "0"); h[264] = UInt8(ascii: "0")
        octal(0, 329, 8)
        octal(0, 337, 8)
        for k in 148..<156 { h[k] = 0x20 }
        octal(UInt64(h.reduce(0) { $0 + Int($1) }), 148, 7)
        h[154] = 0   // six digits, NUL, space (as Go writes the checksum)
        return h
    }
}
