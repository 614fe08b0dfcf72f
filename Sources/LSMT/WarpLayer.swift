import BlockIO
import Threading

/// A committed TurboOCI ("warp") layer opened with its target, as overlaybd's
/// `open_warpfile_ro(blob, target)` (`formats/LSMT.md` section 13): a read-only LSMT file
/// (header 0x07, trailer 0x06, index not padded) whose entries keep their tags, less the
/// smallest tag present: tag 0 reads the layer file itself, tag 1 reads the target (the
/// original layer's uncompressed tar stream).
///
/// As a `BlockFile` it is the disk this layer shows (unmapped ranges read as zeros). In a
/// stack it is seen through an identity mapping: `ReadOnlyLayer(warp:)` covers exactly
/// the ranges the warp index maps, and its file is this object, which resolves them.
///
/// Opening checks every entry (order, the tag-0 data inside the file, the tag-1 data
/// inside the target, no other tag): a layer whose tag-1 ranges leave the target is
/// refused with `LSMTError.corrupt` naming the entry, never read as zeros. A target that
/// comes up short later (a truncated blob) fails the read.
public final class WarpLayer: BlockFile, Sendable {
    /// The layer file (decompressed), whose data tag-0 entries read.
    public let file: any BlockFile
    /// The uncompressed target stream, whose data tag-1 entries read.
    public let target: any BlockFile
    public let header: LSMTHeader
    public let trailer: LSMTHeader
    /// The index, sorted; tags 0 (file) and 1 (target).
    public let index: SegmentIndex

    public var name: String { file.name }
    public var size: UInt64 { trailer.virtualSize }
    public var virtualSize: UInt64 { trailer.virtualSize }

    public init(file: any BlockFile, target: any BlockFile) throws {
        self.file = file
        self.target = target
        let name = file.name
        (header, trailer) = try ReadOnlyLayer.records(of: file)
        let count = Int(trailer.indexSize)
        let raw = try file.readBytes(at: trailer.indexOffset, count: 16 * count)
        var segs: [Segment] = []
        segs.reserveCapacity(count)
        raw.withUnsafeBytes { b in
            for i in 0..<count {
                let s = Segment.load(from: b, at: i * 16)
                if !s.isInvalid { segs.append(s) }
            }
        }
        let minTag = segs.map(\.tag).min() ?? 0
        let limit = trailer.indexOffset / 512
        let targetSectors = target.size / 512
        var previous: Segment?
        for i in segs.indices {
            segs[i].tag -= minTag
            let s = segs[i]
            guard s.length > 0 else {
                throw LSMTError.corrupt(name: name, detail: "index entry \(i) has length 0")
            }
            if let p = previous, p.end > s.offset {
                throw LSMTError.corrupt(name: name, detail: "index entry \(i) (\(s)) overlaps or precedes the entry before it (\(p))")
            }
            previous = s
            switch s.tag {
            case 0:
                guard s.moffset >= 8, s.mend <= limit else {
                    throw LSMTError.corrupt(name: name, detail: "index entry \(i) (\(s)) points outside the data area [8, \(limit)) sectors")
                }
            case 1:
                guard s.zeroed || s.mend <= targetSectors else {
                    throw LSMTError.corrupt(name: name, detail: "index entry \(i) (\(s)) leaves the target \(target.name) of \(target.size) bytes (tag-1 data up to byte \(s.mend * 512))")
                }
            default:
                throw LSMTError.corrupt(name: name, detail: "index entry \(i) (\(s)) has tag \(s.tag) (after subtracting the smallest tag \(minTag)); a warp layer has only tags 0 (layer) and 1 (target)")
            }
        }
        index = SegmentIndex(sorted: segs)
    }

    /// Reads exactly `buffer.count` bytes of the target, or fails: a target range that an
    /// entry maps must exist (never zeros in its place).
    static func readTarget(_ target: any BlockFile, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, layer: String) throws {
        let got = try target.read(into: buffer, at: offset)
        guard got == buffer.count else {
            throw LSMTError.corrupt(name: layer, detail: "the target \(target.name) ends at byte \(offset + UInt64(got)), inside a mapped range [\(offset), +\(buffer.count))")
        }
    }

    /// Largest hole in the target between two entries a run may read through.
    static let runGap: UInt64 = 64 << 10
    /// Largest target range one run reads.
    static let runLimit: UInt64 = 8 << 20
    /// Per-thread room for a run's target bytes.
    private static let runScratch = ThreadLocal { ScratchBuffer(capacity: 1 << 20) }

    /// Reads a run of index-adjacent tag-1 entries from `i` on whose target ranges ascend
    /// with small holes (consecutive files of a tar: headers and padding between them) in
    /// one target read, then scatters it; the disk gaps between the entries read as zeros.
    /// One large read instead of one per file lets the cache below fetch it in one request.
    /// Returns the new position and entry index, or nil when no run of two entries starts at `i`.
    private func readTargetRun(_ segs: [Segment], from i: Int, pos: UInt64, offset: UInt64, end: UInt64,
                               buffer: UnsafeMutableRawBufferPointer) throws -> (UInt64, Int)? {
        let first = segs[i]
        let tStart = first.moffset * 512 + (pos - first.offset * 512)
        var j = i + 1
        var tEnd = first.moffset * 512 + (min(first.end * 512, end) - first.offset * 512)
        while j < segs.count {
            let s = segs[j]
            guard s.tag == 1, !s.zeroed, s.offset * 512 < end, s.moffset * 512 >= tEnd, s.moffset * 512 - tEnd <= Self.runGap else { break }
            let stop = min(s.end * 512, end)
            let e = s.moffset * 512 + (stop - s.offset * 512)
            guard e - tStart <= Self.runLimit else { break }
            tEnd = e
            j += 1
        }
        guard j - i >= 2 else { return nil }
        let count = Int(tEnd - tStart)
        let scratch = UnsafeMutableRawBufferPointer(rebasing: Self.runScratch.value.reserve(count)[0..<count])
        try Self.readTarget(target, into: scratch, at: tStart, layer: name)
        var at = pos
        for k in i..<j {
            let s = segs[k]
            let from = max(at, s.offset * 512)
            if from > at {
                UnsafeMutableRawBufferPointer(rebasing: buffer[Int(at - offset)..<Int(from - offset)]).initializeMemory(as: UInt8.self, repeating: 0)
            }
            let stop = min(s.end * 512, end)
            let src = Int(s.moffset * 512 + (from - s.offset * 512) - tStart)
            let n = Int(stop - from)
            UnsafeMutableRawBufferPointer(rebasing: buffer[Int(from - offset)..<Int(stop - offset)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: scratch[src..<(src + n)]))
            at = stop
        }
        return (at, j)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        guard offset < virtualSize, buffer.count > 0 else { return 0 }
        let count = Int(min(UInt64(buffer.count), virtualSize - offset))
        let end = offset + UInt64(count)
        var pos = offset
        var i = index.firstIndex(endingAfter: offset / 512)
        let segs = index.segments
        while pos < end {
            let next: UInt64 = i < segs.count ? max(pos, min(segs[i].offset * 512, end)) : end
            if next > pos {
                UnsafeMutableRawBufferPointer(rebasing: buffer[Int(pos - offset)..<Int(next - offset)]).initializeMemory(as: UInt8.self, repeating: 0)
                pos = next
                continue
            }
            let s = segs[i]
            let stop = min(s.end * 512, end)
            let p = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(pos - offset)..<Int(stop - offset)])
            let at = s.moffset * 512 + (pos - s.offset * 512)
            if s.tag == 1 && !s.zeroed, let next = try readTargetRun(segs, from: i, pos: pos, offset: offset, end: end, buffer: buffer) {
                (pos, i) = next
                continue
            }
            if s.zeroed {
                p.initializeMemory(as: UInt8.self, repeating: 0)
            } else if s.tag == 0 {
                let got = try file.read(into: p, at: at)
                if got < p.count { UnsafeMutableRawBufferPointer(rebasing: p[got...]).initializeMemory(as: UInt8.self, repeating: 0) }
            } else {
                try Self.readTarget(target, into: p, at: at, layer: name)
            }
            pos = stop
            i += 1
        }
        return count
    }
}

extension ReadOnlyLayer {
    /// A warp layer as a stack lower: its entries as an identity mapping (offset =
    /// moffset, tag 0, zeroed kept) over `file`, which is the warp layer itself or a view
    /// of it (`decorate`, e.g. trace recording). Gaps fall through to the layers below.
    public convenience init(warp: WarpLayer, decorate: (any BlockFile) -> any BlockFile = { $0 }) {
        let identity = warp.index.segments.map { s in
            Segment(offset: s.offset, length: s.length, moffset: s.offset, zeroed: s.zeroed, tag: 0)
        }
        self.init(file: decorate(warp), header: warp.header, trailer: warp.trailer, segments: identity,
                  storedEntryCount: warp.trailer.indexSize)
    }
}
