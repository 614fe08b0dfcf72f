/// The in-memory jump table of a ZFile: where each compressed block starts.
///
/// Like overlaybd it keeps one absolute `UInt64` offset per group of blocks
/// (a group covers 64 KiB of uncompressed data) plus one `UInt16` delta per block,
/// about 2.5 bytes per block instead of 8.
public struct JumpTable: Sendable {
    public let blockCount: Int
    private let groupShift: Int
    private let bases: [UInt64]
    private let deltas: [UInt16]

    /// Builds the table from stored block lengths (CRC included), validating each.
    /// - Parameters:
    ///   - dataStart: file offset of block 0.
    ///   - minLength: smallest legal stored length (5 with CRC, 1 without).
    ///   - maxLength: largest legal stored length.
    public init(lengths: UnsafeBufferPointer<UInt32>, blockSize: Int, dataStart: UInt64,
                minLength: UInt32, maxLength: UInt32, name: String) throws {
        let group = max(1, 65536 / blockSize)
        groupShift = group.trailingZeroBitCount
        let mask = group - 1
        blockCount = lengths.count
        var bases: [UInt64] = []
        bases.reserveCapacity(lengths.count / group + 2)
        var deltas = [UInt16](repeating: 0, count: lengths.count + 1)
        var offset = dataStart
        for i in 0...lengths.count {
            if i & mask == 0 {
                bases.append(offset)
            } else {
                let d = offset - bases[bases.count - 1]
                guard d < 65535 else {
                    throw ZFileError.corrupt(name: name, detail: "jump table: block \(i) is \(d) bytes from its group start (limit 65534)")
                }
                deltas[i] = UInt16(d)
            }
            if i < lengths.count {
                let len = lengths[i]
                guard len >= minLength, len <= maxLength else {
                    throw ZFileError.corrupt(name: name, detail: "jump table: block \(i) has impossible stored length \(len) (allowed \(minLength)...\(maxLength))")
                }
                offset += UInt64(len)
            }
        }
        self.bases = bases
        self.deltas = deltas
    }

    /// File offset of block `i`; `i == blockCount` gives the end of the last block.
    @inline(__always)
    public func offset(_ i: Int) -> UInt64 {
        bases[i &>> groupShift] &+ UInt64(deltas[i])
    }

    /// Bytes of memory the table holds.
    public var memoryBytes: Int { bases.count * 8 + deltas.count * 2 }
}
