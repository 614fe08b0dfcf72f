import BlockIO
import LSMT
import Threading

/// A writable disk: a sparse upper of its own over shared, read-only lowers.
///
/// Unlike a `LayerStack`, which merges its lowers' indexes when it is built, this
/// reads the lowers through the one merged stack the `SharedLowers` already hold, so
/// making a disk costs no index work at all: only the empty upper. Reads take the
/// upper's extents for the range (copied out, no lock held while data is read) and
/// fill the gaps from the lowers.
public final class UpperOverlay: BlockFile, Sendable {
    /// The disk's own writable layer (sparse: data in place, holes show the lowers).
    public let upper: WritableLayer
    /// The shared lowers, read-only.
    public let base: any BlockFile
    public let name: String
    public let size: UInt64

    private static let scratch = ThreadLocal { SegmentScratch() }

    /// - Parameters:
    ///   - upper: a sparse writable layer whose virtual size is the lowers'.
    ///   - base: the lowers.
    public init(upper: WritableLayer, base: any BlockFile, name: String) {
        self.upper = upper
        self.base = base
        self.name = name
        size = base.size
    }

    public var isWritable: Bool { upper.dataFile.isWritable }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        guard offset < size, buffer.count > 0 else { return 0 }
        let count = Int(min(UInt64(buffer.count), size - offset))
        let end = offset + UInt64(count)
        let segs = upper.segments(overlapping: offset / 512, (end + 511) / 512, into: UpperOverlay.scratch.value)
        var pos = offset
        var i = 0
        while pos < end {
            let next: UInt64 = i < segs.count ? max(pos, min(end, segs[i].offset * 512)) : end
            if next > pos {
                try fill(from: base, buffer, offset: offset, range: pos..<next, fileOffset: pos)
                pos = next
                continue
            }
            let seg = segs[i]
            let segEnd = min(end, seg.end * 512)
            if segEnd > pos {
                if seg.zeroed {
                    UnsafeMutableRawBufferPointer(rebasing: buffer[Int(pos - offset)..<Int(segEnd - offset)])
                        .initializeMemory(as: UInt8.self, repeating: 0)
                } else {
                    try fill(from: upper.dataFile, buffer, offset: offset, range: pos..<segEnd,
                             fileOffset: seg.moffset * 512 + (pos - seg.offset * 512))
                }
                pos = segEnd
            }
            i += 1
        }
        return count
    }

    /// Reads disk bytes `range` from `file` at `fileOffset`; a short read is zeros.
    @inline(__always)
    private func fill(from file: any BlockFile, _ buffer: UnsafeMutableRawBufferPointer, offset: UInt64,
                      range: Range<UInt64>, fileOffset: UInt64) throws {
        let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(range.lowerBound - offset)..<Int(range.upperBound - offset)])
        var done = 0
        while done < piece.count {
            let n = try file.read(into: UnsafeMutableRawBufferPointer(rebasing: piece[done...]), at: fileOffset + UInt64(done))
            if n <= 0 { break }
            done += n
        }
        if done < piece.count {
            UnsafeMutableRawBufferPointer(rebasing: piece[done...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    private func check(_ offset: UInt64, _ length: UInt64) throws {
        guard isWritable else { throw BlockIOError.readOnly(name: name) }
        guard offset <= size, length <= size - offset else {
            throw BlockIOError.outOfRange(name: name, offset: offset, length: length, size: size)
        }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try check(offset, UInt64(buffer.count))
        try upper.write(buffer, at: offset)
    }

    /// The range reads as zeros until the disk is closed; a sparse upper keeps no
    /// record of it, so after a reopen it shows the lowers again (discarded data
    /// has no defined content). `writeZeroes` is the durable form.
    public func discard(offset: UInt64, length: UInt64) throws {
        try check(offset, length)
        try upper.discard(offset: offset, length: length)
    }

    /// Zeros written into the upper: durable, and they hide the lowers.
    public func writeZeroes(offset: UInt64, length: UInt64) throws {
        try check(offset, length)
        try writeZeroBuffers(offset: offset, length: length) { try upper.write($0, at: $1) }
    }

    public func flush() throws { try upper.flush() }
}
