import CZlib

/// One access point of a gzip index: where inflation can start without the bytes before.
public struct GzipAccessPoint: Equatable, Sendable {
    /// Offset in the uncompressed stream (`de_pos`).
    public var uncompressedOffset: UInt64
    /// Offset in the compressed blob of the first byte not yet consumed (`en_pos`).
    public var compressedOffset: UInt64
    /// Unused bits of byte `compressedOffset - 1` that still belong to the next block (0...7).
    public var bits: UInt8
    /// Where the (compressed) 32 KiB window sits in the index file, and its length.
    public var windowOffset: UInt64
    public var windowLength: UInt32

    public init(uncompressedOffset: UInt64, compressedOffset: UInt64, bits: UInt8, windowOffset: UInt64, windowLength: UInt32) {
        self.uncompressedOffset = uncompressedOffset
        self.compressedOffset = compressedOffset
        self.bits = bits
        self.windowOffset = windowOffset
        self.windowLength = windowLength
    }

    /// Position in bits of the next block's first bit in the compressed stream.
    var bitPosition: UInt64 { compressedOffset &* 8 &- UInt64(bits) }
}

/// The fields of the 333-byte "ddgzidx" header (overlaybd's gzip index, formats/Gzip.md).
public struct GzipIndexHeader: Equatable, Sendable {
    public static let size = 333
    public static let magic: [UInt8] = Array("ddgzidx".utf8) + [0]
    public static let majorVersion: UInt8 = 1
    public static let windowSize = 32768
    public static let entrySize = 29
    public static let minimumSpan = 65536
    public static let defaultSpan = 1 << 20
    /// Byte offsets of the fields.
    enum Offset {
        static let major = 8, minor = 9, algo = 10, level = 11, flag = 12, span = 13, window = 17
        static let indexSize = 21, indexNum = 25, gzipSize = 33, indexFileSize = 41, uncompressedSize = 49
        static let reserve = 57, indexStart = 313, indexAreaLength = 321, crc = 329
    }

    public var majorVersion: UInt8 = GzipIndexHeader.majorVersion
    public var minorVersion: UInt8 = 0
    /// 0: windows and table stored as they are; 1: each zlib-compressed.
    public var dictCompressAlgorithm: UInt8 = 1
    public var dictCompressLevel: Int8 = 6
    public var flag: UInt8 = 0
    public var span: Int32 = Int32(GzipIndexHeader.defaultSpan)
    public var window: Int32 = Int32(GzipIndexHeader.windowSize)
    public var indexSize: Int32 = Int32(GzipIndexHeader.entrySize)
    public var indexCount: Int64 = 0
    public var gzipFileSize: Int64 = 0
    public var indexFileSize: Int64 = 0
    public var uncompressedFileSize: Int64 = 0
    public var indexStart: Int64 = 0
    public var indexAreaLength: Int64 = 0
    public var crc: UInt32 = 0

    public init() {}

    /// The 333 header bytes, with the CRC computed over bytes 0..<329.
    public func encoded() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: GzipIndexHeader.size)
        b.replaceSubrange(0..<8, with: GzipIndexHeader.magic)
        b[Offset.major] = majorVersion
        b[Offset.minor] = minorVersion
        b[Offset.algo] = dictCompressAlgorithm
        b[Offset.level] = UInt8(bitPattern: dictCompressLevel)
        b[Offset.flag] = flag
        putLE(&b, Offset.span, UInt64(UInt32(bitPattern: span)), 4)
        putLE(&b, Offset.window, UInt64(UInt32(bitPattern: window)), 4)
        putLE(&b, Offset.indexSize, UInt64(UInt32(bitPattern: indexSize)), 4)
        putLE(&b, Offset.indexNum, UInt64(bitPattern: indexCount), 8)
        putLE(&b, Offset.gzipSize, UInt64(bitPattern: gzipFileSize), 8)
        putLE(&b, Offset.indexFileSize, UInt64(bitPattern: indexFileSize), 8)
        putLE(&b, Offset.uncompressedSize, UInt64(bitPattern: uncompressedFileSize), 8)
        putLE(&b, Offset.indexStart, UInt64(bitPattern: indexStart), 8)
        putLE(&b, Offset.indexAreaLength, UInt64(bitPattern: indexAreaLength), 8)
        putLE(&b, Offset.crc, UInt64(CRC32C.raw(0, b[0..<Offset.crc])), 4)
        return b
    }

    /// Decodes the header fields (no validation beyond the length; see `GzipIndex`).
    init(decoding b: ArraySlice<UInt8>) {
        let s = b.startIndex
        majorVersion = b[s + Offset.major]
        minorVersion = b[s + Offset.minor]
        dictCompressAlgorithm = b[s + Offset.algo]
        dictCompressLevel = Int8(bitPattern: b[s + Offset.level])
        flag = b[s + Offset.flag]
        span = Int32(bitPattern: UInt32(getLE(b, s + Offset.span, 4)))
        window = Int32(bitPattern: UInt32(getLE(b, s + Offset.window, 4)))
        indexSize = Int32(bitPattern: UInt32(getLE(b, s + Offset.indexSize, 4)))
        indexCount = Int64(bitPattern: getLE(b, s + Offset.indexNum, 8))
        gzipFileSize = Int64(bitPattern: getLE(b, s + Offset.gzipSize, 8))
        indexFileSize = Int64(bitPattern: getLE(b, s + Offset.indexFileSize, 8))
        uncompressedFileSize = Int64(bitPattern: getLE(b, s + Offset.uncompressedSize, 8))
        indexStart = Int64(bitPattern: getLE(b, s + Offset.indexStart, 8))
        indexAreaLength = Int64(bitPattern: getLE(b, s + Offset.indexAreaLength, 8))
        crc = UInt32(getLE(b, s + Offset.crc, 4))
    }
}

/// Entry table encoding: 29 packed bytes per access point.
enum GzipEntryCodec {
    static func encode(_ points: [GzipAccessPoint]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: points.count * GzipIndexHeader.entrySize)
        for (i, p) in points.enumerated() {
            let o = i * GzipIndexHeader.entrySize
            putLE(&b, o, p.uncompressedOffset, 8)
            putLE(&b, o + 8, p.compressedOffset, 8)
            putLE(&b, o + 16, p.windowOffset, 8)
            b[o + 24] = p.bits
            putLE(&b, o + 25, UInt64(p.windowLength), 4)
        }
        return b
    }

    /// Decodes raw entries; signed fields come back as their bit patterns (validated later).
    static func decode(_ b: [UInt8]) -> [GzipAccessPoint] {
        let n = b.count / GzipIndexHeader.entrySize
        var out = [GzipAccessPoint]()
        out.reserveCapacity(n)
        for i in 0..<n {
            let o = i * GzipIndexHeader.entrySize
            out.append(GzipAccessPoint(uncompressedOffset: getLE(b[...], o, 8), compressedOffset: getLE(b[...], o + 8, 8),
                                       bits: b[o + 24], windowOffset: getLE(b[...], o + 16, 8),
                                       windowLength: UInt32(getLE(b[...], o + 25, 4))))
        }
        return out
    }
}

@inline(__always)
func putLE(_ b: inout [UInt8], _ at: Int, _ v: UInt64, _ n: Int) {
    for i in 0..<n { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
}

@inline(__always)
func getLE(_ b: ArraySlice<UInt8>, _ at: Int, _ n: Int) -> UInt64 {
    var v: UInt64 = 0
    for i in 0..<n { v |= UInt64(b[at + i]) << (8 * UInt64(i)) }
    return v
}

/// CRC-32C with overlaybd's "raw" semantics: reflected Castagnoli polynomial, the register
/// starts at the given value, no inversion on entry or exit (formats/Gzip.md).
public enum CRC32C {
    static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    public static func raw<C: Collection>(_ seed: UInt32, _ bytes: C) -> UInt32 where C.Element == UInt8 {
        var c = seed
        let t = table
        for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c
    }
}

/// zlib's one-shot compress2/uncompress for windows and the entry table.
enum ZlibBuffer {
    static func compress(_ src: UnsafeRawBufferPointer, level: Int32) throws -> [UInt8] {
        var bound = compressBound(uLong(src.count))
        var out = [UInt8](repeating: 0, count: Int(bound))
        let rc = out.withUnsafeMutableBytes { dst in
            compress2(dst.baseAddress!.assumingMemoryBound(to: Bytef.self), &bound,
                      src.baseAddress?.assumingMemoryBound(to: Bytef.self), uLong(src.count), level)
        }
        guard rc == Z_OK else { throw GzipError.zlib(operation: "compress2", code: rc) }
        out.removeLast(out.count - Int(bound))
        return out
    }

    /// Decompresses one complete zlib stream that must fill `dst` exactly and use all of
    /// `src`; returns nil otherwise.
    static func uncompressExactly(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer) -> String? {
        var s = z_stream()
        guard inflateInit_(&s, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return "zlib cannot start" }
        defer { inflateEnd(&s) }
        s.next_in = UnsafeMutablePointer(mutating: src.baseAddress?.assumingMemoryBound(to: Bytef.self))
        s.avail_in = uInt(src.count)
        s.next_out = dst.baseAddress?.assumingMemoryBound(to: Bytef.self)
        s.avail_out = uInt(dst.count)
        let rc = inflate(&s, Z_FINISH)
        if rc == Z_STREAM_END {
            if s.avail_out != 0 { return "decompresses to \(dst.count - Int(s.avail_out)) bytes, expected \(dst.count)" }
            if s.avail_in != 0 { return "\(s.avail_in) bytes follow the compressed data" }
            return nil
        }
        if rc == Z_BUF_ERROR && s.avail_out == 0 { return "decompresses to more than \(dst.count) bytes" }
        if rc == Z_BUF_ERROR { return "compressed data is truncated" }
        return s.msg.map { String(cString: $0) } ?? "zlib error \(rc)"
    }
}
