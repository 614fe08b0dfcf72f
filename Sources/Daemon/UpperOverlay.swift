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

    /// A sparse upper records what it holds only as the data file's allocated extents,
    /// which the file system keeps in whole blocks. A write of part of a block would
    /// allocate all of it, and after a reopen the rest of that block (never written)
    /// would read as zeros instead of the lowers' bytes. So a write that starts or ends
    /// inside a block first fills that block from the disk as it reads now, and writes
    /// the whole block.
    public static let fileBlock: UInt64 = 4096

    /// Serializes the read-modify-write of a partial block with another one on the same
    /// block (writes to different sectors of one block must both survive).
    private let stripes = (0..<64).map { _ in ConditionLock(()) }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try check(offset, UInt64(buffer.count))
        let b = UpperOverlay.fileBlock
        let end = offset + UInt64(buffer.count)
        guard buffer.count > 0 else { return }
        var pos = offset
        // Head: a partial first block.
        if pos % b != 0 || end - pos < b {
            let blockEnd = min(pos / b * b + b, end)
            try writePartialBlock(buffer, from: offset, range: pos..<blockEnd)
            pos = blockEnd
        }
        // Middle: whole blocks, written as they come.
        let middleEnd = end / b * b
        if middleEnd > pos {
            try upper.write(UnsafeRawBufferPointer(rebasing: buffer[Int(pos - offset)..<Int(middleEnd - offset)]), at: pos)
            pos = middleEnd
        }
        // Tail: a partial last block.
        if end > pos { try writePartialBlock(buffer, from: offset, range: pos..<end) }
    }

    /// Writes disk bytes `range` (inside one block) from `buffer` (which starts at disk
    /// byte `from`) as the whole block: the rest comes from what the disk reads now.
    private func writePartialBlock(_ buffer: UnsafeRawBufferPointer, from: UInt64, range: Range<UInt64>) throws {
        let b = UpperOverlay.fileBlock
        let start = range.lowerBound / b * b
        let stop = min(start + b, size)
        if range.lowerBound == start && range.upperBound == stop {
            try upper.write(UnsafeRawBufferPointer(rebasing: buffer[Int(range.lowerBound - from)..<Int(range.upperBound - from)]), at: start)
            return
        }
        try stripes[Int((start / b) % UInt64(stripes.count))].withLock { _ in
            let block = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(stop - start), alignment: 4096)
            defer { block.deallocate() }
            _ = try read(into: block, at: start)
            UnsafeMutableRawBufferPointer(rebasing: block[Int(range.lowerBound - start)..<Int(range.upperBound - start)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[Int(range.lowerBound - from)..<Int(range.upperBound - from)]))
            try upper.write(UnsafeRawBufferPointer(block), at: start)
        }
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
        try writeZeroBuffers(offset: offset, length: length) { try write($0, at: $1) }
    }

    public func flush() throws { try upper.flush() }
}
