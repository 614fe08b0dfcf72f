/// One mapping of the LSMT index: a run of virtual-disk sectors and where its data
/// lives. Kept in its 16-byte on-disk packing (two little-endian words):
///
/// - word 0: offset (bits 0–49), length (bits 50–63)
/// - word 1: moffset (bits 0–54), zeroed (bit 55), tag (bits 56–63)
///
/// All positions are in 512-byte sectors.
@frozen
public struct Segment: Equatable, Sendable, CustomStringConvertible {
    public var word0: UInt64
    public var word1: UInt64

    public static let sectorSize: UInt64 = 512
    /// Longest mapping: 14 bits of sectors.
    public static let maxLength: UInt32 = 16383
    /// The offset that marks an unused (padding) entry.
    public static let invalidOffset: UInt64 = (1 << 50) - 1
    /// Largest moffset: 55 bits.
    public static let maxMOffset: UInt64 = (1 << 55) - 1
    /// The padding entry written to fill a read-only index to a multiple of 256.
    public static let invalid = Segment(word0: invalidOffset, word1: 0)

    @inline(__always)
    public init(word0: UInt64, word1: UInt64) {
        self.word0 = word0
        self.word1 = word1
    }

    @inline(__always)
    public init(offset: UInt64, length: UInt32, moffset: UInt64, zeroed: Bool = false, tag: UInt8 = 0) {
        word0 = (offset & Segment.invalidOffset) | (UInt64(length & 0x3FFF) << 50)
        word1 = (moffset & Segment.maxMOffset) | (zeroed ? 1 << 55 : 0) | (UInt64(tag) << 56)
    }

    /// First sector.
    @inline(__always) public var offset: UInt64 {
        get { word0 & Segment.invalidOffset }
        set { word0 = (word0 & ~Segment.invalidOffset) | (newValue & Segment.invalidOffset) }
    }
    /// Number of sectors.
    @inline(__always) public var length: UInt32 {
        get { UInt32(word0 >> 50) }
        set { word0 = (word0 & Segment.invalidOffset) | (UInt64(newValue & 0x3FFF) << 50) }
    }
    /// Sector position of the data in the file selected by `tag`.
    @inline(__always) public var moffset: UInt64 {
        get { word1 & Segment.maxMOffset }
        set { word1 = (word1 & ~Segment.maxMOffset) | (newValue & Segment.maxMOffset) }
    }
    /// Reads as zeros; `moffset` is not meaningful.
    @inline(__always) public var zeroed: Bool {
        get { word1 & (1 << 55) != 0 }
        set { word1 = newValue ? word1 | (1 << 55) : word1 & ~(1 << 55) }
    }
    /// Which file of a stack holds the data (depth; 0 = top).
    @inline(__always) public var tag: UInt8 {
        get { UInt8(word1 >> 56) }
        set { word1 = (word1 & ~(0xFF << 56)) | (UInt64(newValue) << 56) }
    }
    /// One past the last sector.
    @inline(__always) public var end: UInt64 { offset + UInt64(length) }
    /// One past the last data sector in the file (`moffset` for zeroed entries).
    @inline(__always) public var mend: UInt64 { zeroed ? moffset : moffset + UInt64(length) }
    /// Whether this is a padding entry.
    @inline(__always) public var isInvalid: Bool { offset == Segment.invalidOffset }

    /// Drops the first `n` sectors.
    @inline(__always)
    public mutating func trimFront(_ n: UInt64) {
        offset += n
        moffset += n
        length -= UInt32(n)
    }

    /// Keeps only the first `n` sectors.
    @inline(__always)
    public mutating func keepFront(_ n: UInt64) {
        length = UInt32(n)
    }

    public var description: String {
        "\(offset) \(length) \(moffset) \(zeroed ? 1 : 0) \(tag)"
    }

    /// The on-disk bytes.
    public var littleEndianWords: (UInt64, UInt64) { (word0.littleEndian, word1.littleEndian) }

    /// Decodes an entry from 16 on-disk bytes.
    @inline(__always)
    public static func load(from bytes: UnsafeRawBufferPointer, at offset: Int) -> Segment {
        Segment(word0: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)),
                word1: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)))
    }

    /// Encodes entries to on-disk bytes.
    public static func encode(_ segments: ArraySlice<Segment>) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: segments.count * 16)
        out.withUnsafeMutableBytes { raw in
            for (i, s) in segments.enumerated() {
                raw.storeBytes(of: s.word0.littleEndian, toByteOffset: i * 16, as: UInt64.self)
                raw.storeBytes(of: s.word1.littleEndian, toByteOffset: i * 16 + 8, as: UInt64.self)
            }
        }
        return out
    }
}
