/// Compression algorithm of a ZFile (header byte 76).
public enum ZFileAlgorithm: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case lz4 = 1
    case zstd = 2

    public var description: String { self == .lz4 ? "lz4" : "zstd" }

    public init?(name: String) {
        switch name.lowercased() {
        case "lz4": self = .lz4
        case "zstd": self = .zstd
        default: return nil
        }
    }
}

/// The 512-byte ZFile header/trailer record. See `formats/ZFile.md`.
public struct ZFileHeader: Sendable, Equatable {
    public static let recordSize = 512
    public static let magic0: [UInt8] = [0x5A, 0x46, 0x69, 0x6C, 0x65, 0x00, 0x01, 0x00]
    public static let magic1: [UInt8] = Array("tuji.yyf@Alibaba".utf8)

    /// Flag bits; only bits 0–5 carry meaning (old writers left garbage above).
    public struct Flags: OptionSet, Sendable {
        public let rawValue: UInt64
        public init(rawValue: UInt64) { self.rawValue = rawValue }
        public static let isHeader = Flags(rawValue: 1 << 0)
        public static let isDataFile = Flags(rawValue: 1 << 1)
        public static let sealed = Flags(rawValue: 1 << 2)
        public static let headerOverwrite = Flags(rawValue: 1 << 3)
        public static let digest = Flags(rawValue: 1 << 4)
        public static let indexCompression = Flags(rawValue: 1 << 5)
        public static let meaningful = Flags(rawValue: 0x3F)
    }

    public var flags: Flags = []
    public var digest: UInt32 = 0
    public var indexOffset: UInt64 = 0
    public var indexSize: UInt64 = 0
    public var originalFileSize: UInt64 = 0
    public var indexCRC: UInt32 = 0
    public var blockSize: UInt32 = 4096
    public var algorithmByte: UInt8 = ZFileAlgorithm.lz4.rawValue
    public var level: UInt8 = 0
    public var useDict: UInt8 = 0
    public var dictSize: UInt32 = 0
    public var verify: Bool = true
    /// Whether the stored digest matched the record (meaningful only when `.digest` is set).
    public private(set) var digestMatches = true

    public init() {}

    public var algorithm: ZFileAlgorithm? { ZFileAlgorithm(rawValue: algorithmByte) }

    /// Whether `bytes` starts with the ZFile magic.
    public static func hasMagic(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count >= 24 else { return false }
        return bytes[0..<8].elementsEqual(magic0) && bytes[8..<24].elementsEqual(magic1)
    }

    /// Parses a 512-byte record. Throws `notZFile` on bad magic; checks nothing else.
    public static func parse(_ bytes: UnsafeRawBufferPointer, name: String) throws -> ZFileHeader {
        guard bytes.count >= recordSize, hasMagic(bytes) else { throw ZFileError.notZFile(name: name) }
        func u8(_ o: Int) -> UInt8 { bytes[o] }
        func u32(_ o: Int) -> UInt32 { bytes.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian }
        func u64(_ o: Int) -> UInt64 { bytes.loadUnaligned(fromByteOffset: o, as: UInt64.self).littleEndian }
        var h = ZFileHeader()
        h.digest = u32(28)
        h.flags = Flags(rawValue: u64(32)).intersection(.meaningful)
        h.indexOffset = u64(40)
        h.indexSize = u64(48)
        h.originalFileSize = u64(56)
        h.indexCRC = u32(64)
        h.blockSize = u32(72)
        h.algorithmByte = u8(76)
        h.level = u8(77)
        h.useDict = u8(78)
        h.dictSize = u32(84)
        h.verify = u8(88) != 0
        var copy = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[0..<recordSize]))
        for i in 28..<32 { copy[i] = 0 }
        h.digestMatches = CRC32C.raw(copy) == h.digest
        return h
    }

    /// The 512-byte record; the digest is computed when `.digest` is set.
    public func serialize() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: ZFileHeader.recordSize)
        func put<T: FixedWidthInteger>(_ v: T, _ o: Int) {
            withUnsafeBytes(of: v.littleEndian) { for (i, x) in $0.enumerated() { b[o + i] = x } }
        }
        b.replaceSubrange(0..<8, with: ZFileHeader.magic0)
        b.replaceSubrange(8..<24, with: ZFileHeader.magic1)
        put(UInt32(96), 24)
        put(flags.rawValue, 32)
        put(indexOffset, 40)
        put(indexSize, 48)
        put(originalFileSize, 56)
        put(indexCRC, 64)
        put(blockSize, 72)
        b[76] = algorithmByte
        b[77] = level
        b[78] = useDict
        put(dictSize, 84)
        b[88] = verify ? 1 : 0
        if flags.contains(.digest) { put(CRC32C.raw(b), 28) }
        return b
    }
}
