import BlockIO

/// The 4096-byte LSMT header/trailer record. See `formats/LSMT.md`.
public struct LSMTHeader: Equatable, Sendable {
    public static let recordSize = 4096
    public static let structSize: UInt32 = 390
    public static let magic0: [UInt8] = [0x4C, 0x53, 0x4D, 0x54, 0x00, 0x01, 0x02, 0x00]
    public static let magic1: [UInt8] = [0x65, 0x7E, 0x63, 0xD2, 0x94, 0x44, 0x08, 0x4C,
                                         0xA2, 0xD2, 0xC8, 0xEC, 0x4F, 0xCF, 0xAE, 0x8A]
    public static let userTagSize = 256

    public struct Flags: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let isHeader = Flags(rawValue: 1 << 0)
        public static let isDataFile = Flags(rawValue: 1 << 1)
        public static let sealed = Flags(rawValue: 1 << 2)
        public static let gcLayer = Flags(rawValue: 1 << 3)
        public static let sparse = Flags(rawValue: 1 << 4)
    }

    public var flags: Flags = []
    public var indexOffset: UInt64 = 0
    public var indexSize: UInt64 = 0
    public var virtualSize: UInt64 = 0
    public var uuid: LayerUUID = .null
    public var parentUUID: LayerUUID = .null
    public var version: UInt8 = 1
    public var subVersion: UInt8 = 1
    /// Commit message bytes (at most 256).
    public var userTag: [UInt8] = []

    public init(flags: Flags = [], virtualSize: UInt64 = 0, uuid: LayerUUID = .null, parentUUID: LayerUUID = .null) {
        self.flags = flags
        self.virtualSize = virtualSize
        self.uuid = uuid
        self.parentUUID = parentUUID
    }

    /// The user tag as text, without trailing NULs.
    public var message: String {
        String(decoding: userTag.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// Parses a record; checks only the magic.
    public static func parse(_ b: UnsafeRawBufferPointer, name: String) throws -> LSMTHeader {
        guard b.count >= 390, b[0..<8].elementsEqual(magic0), b[8..<24].elementsEqual(magic1) else {
            throw LSMTError.notLSMT(name: name, detail: "bad magic")
        }
        func u32(_ o: Int) -> UInt32 { b.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian }
        func u64(_ o: Int) -> UInt64 { b.loadUnaligned(fromByteOffset: o, as: UInt64.self).littleEndian }
        func uuidField(_ o: Int) -> LayerUUID {
            let text = String(decoding: b[o..<(o + 36)], as: UTF8.self)
            return LayerUUID(text) ?? .null
        }
        var h = LSMTHeader()
        h.flags = Flags(rawValue: u32(28))
        h.indexOffset = u64(32)
        h.indexSize = u64(40)
        h.virtualSize = u64(48)
        h.uuid = uuidField(56)
        h.parentUUID = uuidField(93)
        h.version = b[132]
        h.subVersion = b[133]
        var tag = Array(b[134..<390])
        while let last = tag.last, last == 0 { tag.removeLast() }
        h.userTag = tag
        return h
    }

    /// The 4096-byte record.
    public func serialize() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: LSMTHeader.recordSize)
        func put<T: FixedWidthInteger>(_ v: T, _ o: Int) {
            withUnsafeBytes(of: v.littleEndian) { for (i, x) in $0.enumerated() { b[o + i] = x } }
        }
        b.replaceSubrange(0..<8, with: LSMTHeader.magic0)
        b.replaceSubrange(8..<24, with: LSMTHeader.magic1)
        put(LSMTHeader.structSize, 24)
        put(flags.rawValue, 28)
        put(indexOffset, 32)
        put(indexSize, 40)
        put(virtualSize, 48)
        b.replaceSubrange(56..<92, with: Array(uuid.description.utf8))
        b.replaceSubrange(93..<129, with: Array(parentUUID.description.utf8))
        b[132] = version
        b[133] = subVersion
        let tag = userTag.prefix(LSMTHeader.userTagSize)
        b.replaceSubrange(134..<(134 + tag.count), with: tag)
        return b
    }

    /// Reads and parses the record at `offset` of `file`.
    public static func read(from file: any BlockFile, at offset: UInt64) throws -> LSMTHeader {
        guard offset <= file.size, file.size - offset >= UInt64(recordSize) else {
            throw LSMTError.corrupt(name: file.name, detail: "file too short for a 4096-byte record at offset \(offset) (size \(file.size))")
        }
        let bytes = try file.readBytes(at: offset, count: recordSize)
        return try bytes.withUnsafeBytes { try parse($0, name: file.name) }
    }
}
