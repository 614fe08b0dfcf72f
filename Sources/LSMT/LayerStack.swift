import BlockIO
import Threading

/// The virtual disk of an image: read-only lowers merged into one index (upper
/// layers win), with an optional writable layer on top. Unmapped ranges and zeroed
/// extents read as zeros.
public final class LayerStack: BlockFile, Sendable {
    /// Most layers in a stack (overlaybd's limit).
    public static let maxLayers = 255

    /// Lowers, bottom to top, as given.
    public let lowers: [ReadOnlyLayer]
    /// Layer files by tag: index 0 is the top lower.
    public let files: [any BlockFile]
    /// The merged index of the lowers.
    public let index: SegmentIndex
    public let upper: WritableLayer?
    public let virtualSize: UInt64
    public let name: String

    /// - Parameters:
    ///   - lowers: read-only layers, bottom first.
    ///   - upper: optional writable layer; a zero virtual size is set to the lowers'.
    public init(lowers: [ReadOnlyLayer], upper: WritableLayer? = nil, name: String = "image") throws {
        guard lowers.count + (upper == nil ? 0 : 1) <= LayerStack.maxLayers else {
            throw LSMTError.invalidArgument("\(name): \(lowers.count) layers exceed the limit of \(LayerStack.maxLayers)")
        }
        self.lowers = lowers
        self.name = name
        let topDown = Array(lowers.reversed())
        files = topDown.map(\.file)
        let merged = IndexMerger.merge(topToBottom: topDown.map(\.segments))
        guard UInt64(merged.count) <= WritableLayer.maxIndexSize else {
            throw LSMTError.invalidArgument("\(name): merged index of \(merged.count) entries exceeds the limit")
        }
        index = SegmentIndex(sorted: merged)
        let lowerSize = topDown.first(where: { $0.virtualSize > 0 })?.virtualSize ?? 0
        if let upper {
            upper.tag = UInt8(truncatingIfNeeded: lowers.count)
            if upper.virtualSize == 0 && lowerSize > 0 && upper.dataFile.isWritable {
                try upper.setVirtualSize(lowerSize)
            }
            virtualSize = upper.virtualSize > 0 ? upper.virtualSize : lowerSize
        } else {
            virtualSize = lowerSize
        }
        self.upper = upper
    }

    /// Per-thread room for the upper's entries of one read (no allocation per read).
    private static let scratch = ThreadLocal { SegmentScratch() }

    public var size: UInt64 { virtualSize }
    public var isWritable: Bool { upper?.dataFile.isWritable ?? false }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        guard offset < virtualSize, buffer.count > 0 else { return 0 }
        let count = Int(min(UInt64(buffer.count), virtualSize - offset))
        let dst = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
        if let upper {
            // The upper's entries for this range, copied out: no lock is held while the
            // data is read, so a lower's registry fetch never holds up the upper's writes.
            let segs = upper.segments(overlapping: offset / 512, (offset + UInt64(count) + 511) / 512,
                                      into: LayerStack.scratch.value)
            try readRange(segs, start: 0, from: offset, dst: dst, upperFile: upper.dataFile)
        } else {
            try readLowers(into: dst, at: offset)
        }
        return count
    }

    /// Reads from the merged lower index only.
    private func readLowers(into dst: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try index.segments.withUnsafeBufferPointer { segs in
            try readRange(segs, start: index.firstIndex(endingAfter: offset / 512), from: offset, dst: dst, upperFile: nil)
        }
    }

    @inline(__always)
    private func readData(_ file: any BlockFile, _ piece: UnsafeMutableRawBufferPointer, _ fileOffset: UInt64) throws {
        let got = try file.read(into: piece, at: fileOffset)
        if got < piece.count {
            // A short read at the end of a layer file reads as zeros (as in overlaybd).
            UnsafeMutableRawBufferPointer(rebasing: piece[got...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    /// Fills `dst` (disk bytes from `from`) piece by piece from `segs`: data, zeroed
    /// extents and gaps. With `upperFile`, `segs` is the upper's index (data comes from
    /// that file; gaps from the lowers); without, it is the merged lower index (data
    /// from `files[tag]`; gaps read as zeros).
    private func readRange(_ segs: UnsafeBufferPointer<Segment>, start: Int, from: UInt64,
                           dst: UnsafeMutableRawBufferPointer, upperFile: (any BlockFile)?) throws {
        let end = from + UInt64(dst.count)
        var pos = from
        var i = start
        while pos < end {
            let gapEnd: UInt64 = (i >= segs.count || segs[i].offset * 512 >= end) ? end : max(pos, segs[i].offset * 512)
            if gapEnd > pos {
                let piece = UnsafeMutableRawBufferPointer(rebasing: dst[Int(pos - from)..<Int(gapEnd - from)])
                if upperFile != nil {
                    try readLowers(into: piece, at: pos)
                } else {
                    piece.initializeMemory(as: UInt8.self, repeating: 0)
                }
                pos = gapEnd
                if pos >= end { return }
            }
            let seg = segs[i]
            let segStart = seg.offset * 512
            // Join following extents that continue this one in the same file, so a
            // sequential read makes one copy per run instead of one per extent.
            var last = seg
            while i + 1 < segs.count && last.end * 512 < end {
                let next = segs[i + 1]
                guard next.offset == last.end, next.zeroed == seg.zeroed, next.tag == seg.tag,
                      seg.zeroed || next.moffset == last.mend else { break }
                last = next
                i += 1
            }
            let pieceEnd = min(last.end * 512, end)
            let piece = UnsafeMutableRawBufferPointer(rebasing: dst[Int(pos - from)..<Int(pieceEnd - from)])
            if seg.zeroed {
                piece.initializeMemory(as: UInt8.self, repeating: 0)
            } else {
                try readData(upperFile ?? files[Int(seg.tag)], piece, seg.moffset * 512 + (pos - segStart))
            }
            pos = pieceEnd
            i += 1
        }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard let upper, upper.dataFile.isWritable else { throw BlockIOError.readOnly(name: name) }
        guard offset <= virtualSize, UInt64(buffer.count) <= virtualSize - offset else {
            throw BlockIOError.outOfRange(name: name, offset: offset, length: UInt64(buffer.count), size: virtualSize)
        }
        try upper.write(buffer, at: offset)
    }

    public func discard(offset: UInt64, length: UInt64) throws {
        guard let upper, upper.dataFile.isWritable else { throw BlockIOError.readOnly(name: name) }
        guard offset <= virtualSize, length <= virtualSize - offset else {
            throw BlockIOError.outOfRange(name: name, offset: offset, length: length, size: virtualSize)
        }
        try upper.discard(offset: offset, length: length)
    }

    public func flush() throws {
        try upper?.flush()
    }

    /// Zeroed extents in an append-only upper (they persist); written zeros in a sparse
    /// one, whose holes would show the lowers again after a reopen.
    public func writeZeroes(offset: UInt64, length: UInt64) throws {
        guard let upper, upper.dataFile.isWritable else { throw BlockIOError.readOnly(name: name) }
        if upper.mode == .appendOnly {
            try discard(offset: offset, length: length)
            return
        }
        guard offset <= virtualSize, length <= virtualSize - offset else {
            throw BlockIOError.outOfRange(name: name, offset: offset, length: length, size: virtualSize)
        }
        try writeZeroBuffers(offset: offset, length: length) { try upper.write($0, at: $1) }
    }

    /// Every mapped extent of the disk, upper layer included, in order; tags are
    /// depths (lowers 0... top to bottom, the upper = number of lowers).
    public func flattenedIndex() -> [Segment] {
        guard let upper else { return index.segments }
        var top = upper.segments
        for i in top.indices { top[i].tag = 0 }
        // Merge with the upper as depth 0, then renumber: upper -> lowers.count, lower d -> d - 1.
        let merged = IndexMerger.merge(topToBottom: [top] + Array(lowers.reversed()).map(\.segments))
        let n = UInt8(truncatingIfNeeded: lowers.count)
        return merged.map { var s = $0; s.tag = s.tag == 0 ? n : s.tag - 1; return s }
    }

    /// Files by the tags of `flattenedIndex()`.
    public var flattenedFiles: [any BlockFile] {
        guard let upper else { return files }
        return files + [upper.dataFile]
    }
}
