import BlockIO
import CExt2fs

/// Walks the 512-byte header blocks of a tar stream without reading file data, as
/// overlaybd's TurboOCI tools do: ustar and GNU headers, GNU long names and links (`L`,
/// `K`), PAX extended headers (`x`: path, linkpath, size, uid, gid, mtime,
/// `SCHILY.xattr.*`), PAX global headers (`g`, skipped, as overlaybd does). Every entry
/// comes with the offset of its data in the stream (always a multiple of 512) and, for
/// tar-meta export, its header blocks with the data offset stored in `devmajor`.
///
/// Two inputs: a tar stream (`.tar`: checksums checked, file data skipped; the stream is
/// the *uncompressed* layer, e.g. a `GzipFile`), or a tar-meta file (`.tarMeta`: header
/// blocks only, checksums ignored, each regular file's data offset read from `devmajor`
/// and checked against `streamSize`, the target's uncompressed size).
/// End of archive: two zero blocks in a row (one when the stream ends after it), or the
/// end of the stream at a header boundary. GNU and PAX sparse files are refused
/// (`TarFormatError.sparse`): their data is not one run of the stream.
public struct TarHeaderWalker {
    public enum Mode: Sendable { case tar, tarMeta }

    /// One entry: what to apply, where its data is, and its tar-meta blocks.
    public struct Record {
        public var entry: LayerEntry
        /// Offset of the entry's first header block (extension headers included).
        public var headerOffset: UInt64
        /// Offset of a regular file's data in the (uncompressed) tar stream.
        public var dataOffset: UInt64
        /// The header blocks as tar-meta holds them: every header and extension block,
        /// no file data; `devmajor` (offset 329) of a regular-file header replaced by the
        /// little-endian i64 offset of the block that follows it in the stream.
        public var metaBlocks: [UInt8]
    }

    /// Extension records (long names, PAX) larger than this are refused.
    public static let extensionLimit: UInt64 = 4 << 20

    let reader: SequentialReader
    let mode: Mode
    let streamSize: UInt64?
    var ended = false

    /// Walks `source` from its first byte. `streamSize`: for `.tarMeta`, the size of the
    /// stream the offsets point into (nil: not checked here).
    public init(source: any BlockFile, mode: Mode, streamSize: UInt64? = nil) {
        reader = SequentialReader(source)
        self.mode = mode
        self.streamSize = streamSize
    }

    /// Bytes of the stream consumed so far.
    public var offset: UInt64 { reader.position }

    /// The next entry, or nil at the end of the archive.
    public mutating func next() throws(TarFormatError) -> Record? {
        guard !ended else { return nil }
        let path = reader.file.name
        var longName: [UInt8]?
        var longLink: [UInt8]?
        var pax = PaxRecords()
        var blocks: [UInt8] = []
        let first = reader.position
        var zeros = 0
        while true {
            let at = reader.position
            guard let header = try reader.block(path: path, allowEnd: true) else {
                ended = true
                // Extension headers with nothing after them: the stream was cut.
                if !blocks.isEmpty { throw .truncated(path: path, offset: at, reading: "the header after an extension header") }
                return nil
            }
            if header.allSatisfy({ $0 == 0 }) {
                zeros += 1
                if zeros >= 2 { ended = true; return nil }
                continue
            }
            if mode == .tar {
                let stored = try Self.number(header, 148, 8, "chksum", at: at, path: path)
                let (unsigned, signed) = Self.checksums(header)
                guard stored == unsigned || stored == signed else {
                    throw .checksum(path: path, offset: at, stored: stored, computed: unsigned)
                }
            }
            var block = header
            let typeflag = header[156]
            if Self.looksRegular(header) {
                // overlaybd stores the offset after every regular-file header block.
                withUnsafeBytes(of: reader.position.littleEndian) { b in
                    for k in 0..<8 { block[329 + k] = b[k] }
                }
            }
            blocks += block
            switch typeflag {
            case UInt8(ascii: "L"), UInt8(ascii: "K"), UInt8(ascii: "x"), UInt8(ascii: "g"):
                let size = UInt64(try Self.number(header, 124, 12, "size", at: at, path: path))
                guard size <= Self.extensionLimit else {
                    throw .extensionTooLarge(path: path, offset: at, size: size, limit: Self.extensionLimit)
                }
                let padded = (size + 511) & ~511
                guard let data = try reader.bytes(Int(padded), path: path) else {
                    throw .truncated(path: path, offset: reader.position, reading: "an extension record")
                }
                blocks += data
                let body = Array(data[0..<Int(size)])
                switch typeflag {
                case UInt8(ascii: "L"): longName = Self.cString(body[...])
                case UInt8(ascii: "K"): longLink = Self.cString(body[...])
                case UInt8(ascii: "x"): try pax.parse(body, at: at, file: path)
                default: break   // global header: ignored, as overlaybd does
                }
                continue
            default:
                break
            }
            return try record(header, at: first, headerAt: at, longName: longName, longLink: longLink,
                              pax: pax, blocks: blocks, path: path)
        }
    }

    private mutating func record(_ h: [UInt8], at first: UInt64, headerAt at: UInt64, longName: [UInt8]?, longLink: [UInt8]?,
                                 pax: PaxRecords, blocks: [UInt8], path: String) throws(TarFormatError) -> Record {
        let ustar = Array(h[257..<263]) == Array("ustar".utf8) + [0]
        var nameBytes = Self.cString(h[0..<100])
        if ustar && h[345] != 0 { nameBytes = Self.cString(h[345..<500]) + [UInt8(ascii: "/")] + nameBytes }
        let name = String(decoding: pax.path ?? longName ?? nameBytes, as: UTF8.self)
        let link = String(decoding: pax.linkpath ?? longLink ?? Self.cString(h[157..<257]), as: UTF8.self)
        let shown = name.isEmpty ? "entry at offset \(at)" : name
        let modeBits = try Self.number(h, 100, 8, "mode", at: at, path: path)
        let uid = try Self.number(h, 108, 8, "uid", at: at, path: path)
        let gid = try Self.number(h, 116, 8, "gid", at: at, path: path)
        let mtime = try Self.number(h, 136, 12, "mtime", at: at, path: path)
        let headerSize = try Self.number(h, 124, 12, "size", at: at, path: path)
        var meta = InodeMetadata(permissions: UInt16(truncatingIfNeeded: modeBits & 0o7777),
                                 uid: UInt32(truncatingIfNeeded: pax.uid ?? uid),
                                 gid: UInt32(truncatingIfNeeded: pax.gid ?? gid),
                                 mtime: pax.mtime?.seconds ?? mtime)
        meta.mtimeNanoseconds = pax.mtime?.nanoseconds ?? 0
        meta.xattrs = pax.xattrs
        let size = pax.size ?? UInt64(max(0, headerSize))
        if pax.sparse { throw .sparse(path: path, entry: shown) }
        let type: Int32
        var hardlink: String?
        let flag = h[156]
        switch flag {
        case UInt8(ascii: "0"), 0, UInt8(ascii: "7"):
            type = name.hasSuffix("/") && flag != UInt8(ascii: "7") ? Int32(LINUX_S_IFDIR) : Int32(LINUX_S_IFREG)
        case UInt8(ascii: "1"): type = Int32(LINUX_S_IFREG); hardlink = link
        case UInt8(ascii: "2"): type = Int32(LINUX_S_IFLNK)
        case UInt8(ascii: "3"): type = Int32(LINUX_S_IFCHR)
        case UInt8(ascii: "4"): type = Int32(LINUX_S_IFBLK)
        case UInt8(ascii: "5"): type = Int32(LINUX_S_IFDIR)
        case UInt8(ascii: "6"): type = Int32(LINUX_S_IFIFO)
        case UInt8(ascii: "S"): throw .sparse(path: path, entry: shown)
        default: throw .unsupportedType(path: path, offset: at, entry: shown, typeflag: flag)
        }
        var entry = LayerEntry(name: name, type: type, hardlink: hardlink, symlink: type == Int32(LINUX_S_IFLNK) ? link : "",
                               meta: meta, size: type == Int32(LINUX_S_IFREG) && hardlink == nil ? size : 0)
        if type == Int32(LINUX_S_IFCHR) || type == Int32(LINUX_S_IFBLK) {
            entry.major = UInt32(truncatingIfNeeded: try Self.number(h, 329, 8, "devmajor", at: at, path: path))
            entry.minor = UInt32(truncatingIfNeeded: try Self.number(h, 337, 8, "devminor", at: at, path: path))
        }
        var dataOffset = reader.position
        if entry.isRegular {
            switch mode {
            case .tar:
                let padded = size > UInt64.max - 511 ? size : (size + 511) & ~511
                // The data and its padding to the next 512-byte block must be there.
                guard dataOffset <= reader.file.size, padded <= reader.file.size - dataOffset else {
                    throw .truncated(path: path, offset: reader.file.size, reading: "the data of \(shown) (\(size) bytes from offset \(dataOffset))")
                }
                reader.skip(padded)
            case .tarMeta:
                dataOffset = h[329..<337].reversed().reduce(0) { $0 << 8 | UInt64($1) }
                guard dataOffset % 512 == 0 else { throw .misaligned(path: path, entry: shown, offset: dataOffset) }
                if let limit = streamSize, dataOffset > limit || size > limit - dataOffset {
                    throw .dataOutOfRange(path: path, entry: shown, offset: dataOffset, size: size, streamSize: limit)
                }
            }
        }
        return Record(entry: entry, headerOffset: first, dataOffset: dataOffset, metaBlocks: blocks)
    }

    /// overlaybd's TH_ISREG: type '0', '\0' or '7', or a mode with S_IFREG on anything but a hard link.
    static func looksRegular(_ h: [UInt8]) -> Bool {
        let t = h[156]
        if t == UInt8(ascii: "0") || t == 0 || t == UInt8(ascii: "7") { return true }
        let mode = (try? number(h, 100, 8, "mode", at: 0, path: "")) ?? 0
        return mode & 0o170000 == 0o100000 && t != UInt8(ascii: "1")
    }

    /// Bytes up to the first NUL.
    static func cString(_ s: ArraySlice<UInt8>) -> [UInt8] {
        Array(s.prefix { $0 != 0 })
    }

    /// A numeric header field: octal (leading spaces, trailing NUL or space) or GNU base-256.
    static func number(_ h: [UInt8], _ at: Int, _ count: Int, _ field: String, at offset: UInt64, path: String) throws(TarFormatError) -> Int64 {
        let f = h[at..<(at + count)]
        if let first = f.first, first & 0x80 != 0 {
            guard first == 0x80, f.dropFirst().prefix(count - 9).allSatisfy({ $0 == 0 }), f.suffix(8).first.map({ $0 & 0x80 == 0 }) ?? true else {
                throw .badField(path: path, offset: offset, field: field)
            }
            return f.suffix(8).reduce(Int64(0)) { $0 << 8 | Int64($1) }
        }
        var v: Int64 = 0
        var i = f.startIndex
        while i < f.endIndex && (f[i] == 0x20) { i += 1 }
        var digits = 0
        while i < f.endIndex, f[i] >= 0x30, f[i] <= 0x37 {
            guard v < Int64.max >> 3 else { throw .badField(path: path, offset: offset, field: field) }
            v = v << 3 | Int64(f[i] - 0x30)
            i += 1
            digits += 1
        }
        while i < f.endIndex {
            guard f[i] == 0 || f[i] == 0x20 else { throw .badField(path: path, offset: offset, field: field) }
            i += 1
        }
        return v
    }

    /// Header checksums: unsigned and signed byte sums with the checksum field as spaces.
    static func checksums(_ h: [UInt8]) -> (Int64, Int64) {
        var u: Int64 = 0, s: Int64 = 0
        for (k, b) in h.enumerated() {
            let c = (148..<156).contains(k) ? UInt8(0x20) : b
            u += Int64(c)
            s += Int64(Int8(bitPattern: c))
        }
        return (u, s)
    }
}

/// The records of PAX extended headers that obd applies.
struct PaxRecords {
    var path: [UInt8]?
    var linkpath: [UInt8]?
    var size: UInt64?
    var uid: Int64?
    var gid: Int64?
    var mtime: (seconds: Int64, nanoseconds: UInt32)?
    var xattrs: [(name: String, value: [UInt8])] = []
    var sparse = false

    /// Parses "<length> <key>=<value>\n" records (binary-safe: by length).
    mutating func parse(_ body: [UInt8], at offset: UInt64, file: String) throws(TarFormatError) {
        let path = file
        var i = 0
        while i < body.count {
            if body[i] == 0 { break }   // NUL padding after the last record
            var len = 0
            var j = i
            while j < body.count, body[j] >= 0x30, body[j] <= 0x39, j - i < 12 { len = len * 10 + Int(body[j] - 0x30); j += 1 }
            guard j < body.count, body[j] == 0x20, j > i, len > j - i + 1, i + len <= body.count, body[i + len - 1] == 0x0A else {
                throw .badPax(path: path, offset: offset, reason: "malformed record at byte \(i)")
            }
            let rec = body[(j + 1)..<(i + len - 1)]
            guard let eq = rec.firstIndex(of: UInt8(ascii: "=")) else {
                throw .badPax(path: path, offset: offset, reason: "record at byte \(i) has no '='")
            }
            let key = String(decoding: rec[rec.startIndex..<eq], as: UTF8.self)
            let value = Array(rec[(eq + 1)...])
            let text = String(decoding: value, as: UTF8.self)
            func int() throws(TarFormatError) -> Int64 {
                guard let v = Int64(text), v >= 0 else { throw .badPax(path: path, offset: offset, reason: "\(key)=\(text) is not a number") }
                return v
            }
            switch key {
            case "path": self.path = value
            case "linkpath": linkpath = value
            case "size": size = UInt64(try int())
            case "uid": uid = try int()
            case "gid": gid = try int()
            case "mtime": mtime = try Self.time(text, key: key, at: offset, path: path)
            default:
                if key.hasPrefix("SCHILY.xattr.") {
                    xattrs.removeAll { $0.name == String(key.dropFirst(13)) }
                    xattrs.append((String(key.dropFirst(13)), value))
                } else if key.hasPrefix("GNU.sparse.") {
                    sparse = true
                }
            }
            i += len
        }
    }

    /// "<seconds>[.<fraction>]", possibly negative.
    static func time(_ text: String, key: String, at offset: UInt64, path: String) throws(TarFormatError) -> (Int64, UInt32) {
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let s = Int64(parts[0]) else { throw .badPax(path: path, offset: offset, reason: "\(key)=\(text) is not a time") }
        var ns: UInt32 = 0
        if parts.count == 2 {
            let frac = parts[1].prefix(9)
            guard frac.allSatisfy({ $0.isASCII && $0.isNumber }) else { throw .badPax(path: path, offset: offset, reason: "\(key)=\(text) is not a time") }
            ns = UInt32(frac + String(repeating: "0", count: 9 - frac.count)) ?? 0
        }
        if s < 0 && ns > 0 { return (s - 1, 1_000_000_000 - ns) }
        return (s, ns)
    }
}

/// Reads a BlockFile front to back through a 1 MiB buffer; `skip` passes over data.
final class SequentialReader {
    let file: any BlockFile
    private(set) var position: UInt64 = 0
    private var buffer: [UInt8] = []
    private var bufferStart: UInt64 = 0
    private let chunk = 1 << 20
    private var readError: (any Error)?

    init(_ file: any BlockFile) { self.file = file }

    /// `count` bytes from the current position, nil if the stream ends first (at the
    /// very position when `allowEnd`, anywhere otherwise: `truncated`).
    func bytes(_ count: Int, path: String, allowEnd: Bool = false) throws(TarFormatError) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            let inBuffer = position >= bufferStart && position < bufferStart + UInt64(buffer.count)
            if !inBuffer {
                guard position < file.size else { break }
                bufferStart = position
                let n = Int(min(UInt64(chunk), file.size - position))
                buffer = [UInt8](repeating: 0, count: n)
                do {
                    let got = try buffer.withUnsafeMutableBytes { try file.read(into: $0, at: position) }
                    buffer.removeLast(n - got)
                } catch {
                    throw .readFailed(path: path, offset: position, reason: "\(error)")
                }
                if buffer.isEmpty { break }
                continue
            }
            let from = Int(position - bufferStart)
            let take = min(count - out.count, buffer.count - from)
            out += buffer[from..<(from + take)]
            position += UInt64(take)
        }
        if out.count == count { return out }
        if out.isEmpty && allowEnd { return nil }
        throw .truncated(path: path, offset: position, reading: "a \(count)-byte block")
    }

    /// One 512-byte block, nil at the end of the stream (a partial block is `truncated`).
    func block(path: String, allowEnd: Bool) throws(TarFormatError) -> [UInt8]? {
        try bytes(512, path: path, allowEnd: allowEnd)
    }

    func skip(_ n: UInt64) { position += n }
}
