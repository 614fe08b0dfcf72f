import BlockIO
import Gzip

/// The members of a TurboOCI layer blob, gzip(tar{`ext4.fs.meta`, `.turbo.ociv1`,
/// `gzip.meta`}) (`formats/Convert.md`), as slices of the blob's uncompressed stream:
/// the blob is inflated once to build an in-memory gzip index, then members are read at
/// random through it, so nothing is held in memory but the index and the span cache.
enum TurboBlobMembers {
    /// The fs meta member obd reads (an erofs meta cannot be read by obd's stack).
    static let fsMetaName = "ext4.fs.meta"
    static let gzipIndexName = "gzip.meta"
    static let markerName = ".turbo.ociv1"

    /// Regular files of the blob's tar by name. Throws `ImageError.layer` when the blob is
    /// not gzip, the tar is malformed, or a member runs past the stream.
    static func read(_ blob: any BlockFile) throws -> [String: any BlockFile] {
        let head = try blob.readBytes(at: 0, count: Int(min(2, blob.size)))
        guard head == [0x1F, 0x8B] else {
            throw ImageError.layer(path: blob.name, detail: "not a TurboOCI layer blob (not gzip)")
        }
        let index = MemoryFile(name: blob.name + " (gzip index)")
        _ = try GzipIndexWriter.write(gzip: blob, to: index, options: GzipIndexOptions(span: 1 << 20))
        let tar = try GzipFile(blob: blob, indexFile: index)
        var members: [String: any BlockFile] = [:]
        var at: UInt64 = 0
        while at + 512 <= tar.size {
            let h = try tar.readBytes(at: at, count: 512)
            if h.allSatisfy({ $0 == 0 }) { break }
            func text(_ r: Range<Int>) -> String { String(decoding: h[r].prefix { $0 != 0 }, as: UTF8.self) }
            var name = text(0..<100)
            if Array(h[257..<262]) == Array("ustar".utf8), h[345] != 0 { name = text(345..<500) + "/" + name }
            let sizeText = text(124..<136).trimmingSpaces
            guard let size = UInt64(sizeText, radix: 8) else {
                throw ImageError.layer(path: blob.name, detail: "tar header at \(at) of the TurboOCI layer blob has a bad size field '\(sizeText)'")
            }
            let data = at + 512
            guard size <= tar.size - min(tar.size, data) else {
                throw ImageError.layer(path: blob.name, detail: "member '\(name)' of \(size) bytes runs past the end of the TurboOCI layer blob's tar")
            }
            if h[156] == UInt8(ascii: "0") || h[156] == 0 {
                while name.hasPrefix("./") { name.removeFirst(2) }
                members[name] = try SliceFile(parent: tar, base: data, length: size)
            }
            at = data + (size + 511) / 512 * 512
        }
        return members
    }
}

fileprivate extension String {
    /// Without leading and trailing spaces (tar numeric fields may be space-padded).
    var trimmingSpaces: String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
