import BlockIO
import Synchronization
import Threading

/// The writable form of a TurboOCI ("warp") layer, as `overlaybd-create --turboOCI`
/// makes it (`formats/LSMT.md` section 13):
///
/// - an **index file**: a header (flags 0x01, index_offset 4096), then one 16-byte entry
///   per write, discard or target mapping, appended as a log (later entries win);
/// - an **fsmeta file** without a header, the disk in place (byte X of the disk is byte X
///   of the file, which is as long as the virtual size): writes land there, and their
///   entries are tag 0 with `moffset = offset` (LBA identity);
/// - the **target**: the original layer's uncompressed tar stream, outside the layer.
///   Tag-1 entries map disk ranges to it (`moffset` = byte offset in the stream / 512),
///   each at most 16383 sectors.
///
/// As a `BlockFile` it is the disk this layer shows: tag 0 from fsmeta, tag 1 from the
/// target, zeroed ranges as zeros, and unmapped ranges from `base` (the lowers below it,
/// or zeros without one). Data is written before its entry, so a write survives a crash
/// once `flush` returned. Reads may run concurrently with writes.
public final class WritableWarpLayer: BlockFile, @unchecked Sendable {
    /// Tag of entries whose data is in the fsmeta file.
    public static let fsmetaTag: UInt8 = 0
    /// Tag of entries whose data is in the target.
    public static let targetTag: UInt8 = 1

    public let indexFile: LocalFile
    public let fsmetaFile: LocalFile
    /// The index file's header (virtual size, uuid, parent).
    public let header: LSMTHeader
    /// The original layer's uncompressed stream, read by tag-1 entries (nil: such reads fail).
    public let target: (any BlockFile)?
    /// What unmapped ranges read (nil: zeros).
    public let base: (any BlockFile)?

    private var map: ExtentMap
    private let mapLock = ReadWriteLock()
    private let appendLock = Mutex(())
    private var indexEnd: UInt64

    public var name: String { fsmetaFile.path }
    public var size: UInt64 { header.virtualSize }
    public var virtualSize: UInt64 { header.virtualSize }
    public var isWritable: Bool { indexFile.isWritable && fsmetaFile.isWritable }

    private init(indexFile: LocalFile, fsmetaFile: LocalFile, header: LSMTHeader, map: ExtentMap, indexEnd: UInt64,
                 target: (any BlockFile)?, base: (any BlockFile)?) {
        self.indexFile = indexFile
        self.fsmetaFile = fsmetaFile
        self.header = header
        self.map = map
        self.indexEnd = indexEnd
        self.target = target
        self.base = base
    }

    /// Creates a new warp layer; neither file may exist.
    /// - Parameters:
    ///   - target: the uncompressed stream tag-1 entries read (mappings are checked against its size).
    ///   - base: what unmapped ranges read (the lowers), nil for zeros.
    public static func create(indexPath: String, fsmetaPath: String, virtualSize: UInt64,
                              uuid: LayerUUID = .random(), parentUUID: LayerUUID = .null,
                              target: (any BlockFile)? = nil, base: (any BlockFile)? = nil) throws -> WritableWarpLayer {
        guard virtualSize % 512 == 0 else {
            throw LSMTError.invalidArgument("\(fsmetaPath): virtual size \(virtualSize) is not a multiple of 512")
        }
        let index = try LocalFile(path: indexPath, mode: .createExclusive)
        var h = LSMTHeader(flags: [.isHeader], virtualSize: virtualSize, uuid: uuid, parentUUID: parentUUID)
        h.indexOffset = UInt64(LSMTHeader.recordSize)
        try index.writeBytes(h.serialize(), at: 0)
        let fsmeta = try LocalFile(path: fsmetaPath, mode: .createExclusive)
        try fsmeta.truncate(to: virtualSize)
        try fsmeta.flush()
        try index.flush()
        return WritableWarpLayer(indexFile: index, fsmetaFile: fsmeta, header: h, map: ExtentMap(),
                                 indexEnd: UInt64(LSMTHeader.recordSize), target: target, base: base)
    }

    /// Opens an existing warp layer. With `writable: false` nothing is modified. Entries are
    /// checked: tags 0 or 1 only, tag-0 data at its own LBA inside the fsmeta file, tag-1
    /// data inside `target` (when given).
    public static func open(indexPath: String, fsmetaPath: String, writable: Bool = true,
                            target: (any BlockFile)? = nil, base: (any BlockFile)? = nil) throws -> WritableWarpLayer {
        let index = try LocalFile(path: indexPath, mode: writable ? .readWrite : .readOnly)
        let h = try LSMTHeader.read(from: index, at: 0)
        guard h.flags.contains(.isHeader), !h.flags.contains(.isDataFile), !h.flags.contains(.sealed) else {
            throw LSMTError.notLSMT(name: indexPath, detail: "header flags 0x\(String(h.flags.rawValue, radix: 16)) are not those of an index file")
        }
        guard h.indexOffset == UInt64(LSMTHeader.recordSize) else {
            throw LSMTError.corrupt(name: indexPath, detail: "index offset \(h.indexOffset) is not 4096")
        }
        let fsmeta = try LocalFile(path: fsmetaPath, mode: writable ? .readWrite : .readOnly)
        let count = (index.size - UInt64(LSMTHeader.recordSize)) / 16
        guard count <= WritableLayer.maxIndexSize else {
            throw LSMTError.corrupt(name: indexPath, detail: "\(count) index entries exceed the limit \(WritableLayer.maxIndexSize)")
        }
        let fsmetaSectors = fsmeta.size / 512
        var map = ExtentMap()
        let chunk: UInt64 = 65536
        var i: UInt64 = 0
        while i < count {
            let n = Int(min(chunk, count - i))
            let raw = try index.readBytes(at: UInt64(LSMTHeader.recordSize) + i * 16, count: n * 16)
            try raw.withUnsafeBytes { b in
                for j in 0..<n {
                    let s = Segment.load(from: b, at: j * 16)
                    if s.isInvalid || s.length == 0 { continue }
                    try check(s, entry: i + UInt64(j), fsmetaSectors: fsmetaSectors, target: target, name: indexPath)
                    map.insert(s)
                }
            }
            i += UInt64(n)
        }
        let end = UInt64(LSMTHeader.recordSize) + count * 16
        if writable && end != index.size { try index.truncate(to: end) }   // a torn partial entry
        return WritableWarpLayer(indexFile: index, fsmetaFile: fsmeta, header: h, map: map, indexEnd: end,
                                 target: target, base: base)
    }

    static func check(_ s: Segment, entry k: UInt64, fsmetaSectors: UInt64, target: (any BlockFile)?, name: String) throws {
        switch s.tag {
        case fsmetaTag:
            guard s.zeroed || s.moffset == s.offset else {
                throw LSMTError.corrupt(name: name, detail: "index entry \(k) (\(s)) is tag 0 but not at its own LBA in the fsmeta file")
            }
            guard s.zeroed || s.end <= fsmetaSectors else {
                throw LSMTError.corrupt(name: name, detail: "index entry \(k) (\(s)) lies past the end of the fsmeta file (\(fsmetaSectors) sectors)")
            }
        case targetTag:
            if let target, !s.zeroed, s.mend > target.size / 512 {
                throw LSMTError.corrupt(name: name, detail: "index entry \(k) (\(s)) leaves the target \(target.name) of \(target.size) bytes")
            }
        default:
            throw LSMTError.corrupt(name: name, detail: "index entry \(k) (\(s)) has tag \(s.tag); a warp layer has only tags 0 (fsmeta) and 1 (target)")
        }
    }

    /// A copy of the index (tags 0 and 1).
    public var segments: [Segment] { mapLock.withReadLock { map.segments } }

    private func checkRange(_ offset: UInt64, _ count: UInt64) throws {
        guard offset % 512 == 0, count % 512 == 0 else {
            throw LSMTError.invalidRequest(name: name, detail: "I/O at \(offset)+\(count) is not aligned to 512 bytes")
        }
        guard offset <= virtualSize, count <= virtualSize - offset else {
            throw BlockIOError.outOfRange(name: name, offset: offset, length: count, size: virtualSize)
        }
    }

    private func append(_ segs: [Segment]) throws {
        let bytes = Segment.encode(segs[...])
        try indexFile.writeBytes(bytes, at: indexEnd)
        indexEnd += UInt64(bytes.count)
        mapLock.withWriteLock { for s in segs { map.insert(s) } }
    }

    /// Writes `buffer` at disk byte `offset` (both multiples of 512) into the fsmeta file,
    /// in place, with tag-0 entries of at most 4 MiB.
    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try checkRange(offset, UInt64(buffer.count))
        var done = 0
        while done < buffer.count {
            let n = min(buffer.count - done, WritableLayer.maxIOSize)
            let pos = offset + UInt64(done)
            try appendLock.withLock { _ in
                try fsmetaFile.write(UnsafeRawBufferPointer(rebasing: buffer[done..<(done + n)]), at: pos)
                try append([Segment(offset: pos / 512, length: UInt32(n / 512), moffset: pos / 512, tag: Self.fsmetaTag)])
            }
            done += n
        }
    }

    /// Marks `[offset, offset+length)` as zeros: zeroed tag-0 entries (at most 16383
    /// sectors each) and a hole in the fsmeta file.
    public func discard(offset: UInt64, length: UInt64) throws {
        try checkRange(offset, length)
        try appendLock.withLock { _ in
            try fsmetaFile.discard(offset: offset, length: length)
            var segs: [Segment] = []
            var lba = offset / 512
            var left = length / 512
            while left > 0 {
                let n = min(left, UInt64(Segment.maxLength))
                segs.append(Segment(offset: lba, length: UInt32(n), moffset: lba, zeroed: true, tag: Self.fsmetaTag))
                lba += n
                left -= n
            }
            try append(segs)
        }
    }

    /// Maps `length` bytes of the disk at `deviceOffset` to the target's stream at
    /// `targetOffset` (all multiples of 512): tag-1 entries of at most 16383 sectors, as
    /// overlaybd's `RemoteData` ioctl splits them. A range leaving the target is refused.
    public func mapTarget(deviceOffset: UInt64, length: UInt64, targetOffset: UInt64) throws {
        try checkRange(deviceOffset, length)
        guard targetOffset % 512 == 0 else {
            throw LSMTError.invalidRequest(name: name, detail: "target offset \(targetOffset) is not aligned to 512 bytes")
        }
        if let target, targetOffset > target.size || length > target.size - targetOffset {
            throw LSMTError.invalidRequest(name: name, detail: "mapping [\(targetOffset), +\(length)) leaves the target \(target.name) of \(target.size) bytes")
        }
        var segs: [Segment] = []
        var lba = deviceOffset / 512
        var m = targetOffset / 512
        var left = length / 512
        while left > 0 {
            let n = min(left, UInt64(Segment.maxLength))
            segs.append(Segment(offset: lba, length: UInt32(n), moffset: m, tag: Self.targetTag))
            lba += n
            m += n
            left -= n
        }
        try appendLock.withLock { _ in try append(segs) }
    }

    /// Makes every completed write durable: fsmeta first, then the index.
    public func flush() throws {
        try fsmetaFile.flush()
        try indexFile.flush()
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        guard offset < virtualSize, buffer.count > 0 else { return 0 }
        let count = Int(min(UInt64(buffer.count), virtualSize - offset))
        let end = offset + UInt64(count)
        let segs: [Segment] = mapLock.withReadLock {
            var i = map.firstIndex(endingAfter: offset / 512)
            var out: [Segment] = []
            while i < map.segments.count && map.segments[i].offset * 512 < end {
                out.append(map.segments[i])
                i += 1
            }
            return out
        }
        var pos = offset
        func piece(_ a: UInt64, _ b: UInt64) -> UnsafeMutableRawBufferPointer {
            UnsafeMutableRawBufferPointer(rebasing: buffer[Int(a - offset)..<Int(b - offset)])
        }
        func gap(to stop: UInt64) throws {
            guard stop > pos else { return }
            let p = piece(pos, stop)
            if let base {
                try base.readExactly(into: p, at: pos)
            } else {
                p.initializeMemory(as: UInt8.self, repeating: 0)
            }
            pos = stop
        }
        for s in segs {
            try gap(to: max(pos, s.offset * 512))
            let stop = min(s.end * 512, end)
            guard stop > pos else { continue }
            let p = piece(pos, stop)
            let inSeg = pos - s.offset * 512
            if s.zeroed {
                p.initializeMemory(as: UInt8.self, repeating: 0)
            } else if s.tag == Self.fsmetaTag {
                let got = try fsmetaFile.read(into: p, at: s.moffset * 512 + inSeg)
                if got < p.count { UnsafeMutableRawBufferPointer(rebasing: p[got...]).initializeMemory(as: UInt8.self, repeating: 0) }
            } else {
                guard let target else {
                    throw LSMTError.invalidRequest(name: name, detail: "disk range [\(pos), \(stop)) is mapped to the target, and no target is open")
                }
                try WarpLayer.readTarget(target, into: p, at: s.moffset * 512 + inSeg, layer: name)
            }
            pos = stop
        }
        try gap(to: end)
        return count
    }

    /// Commits the layer into a read-only warp layer in `sink`, as `overlaybd-commit
    /// --turboOCI` does (`formats/LSMT.md` section 13): header 0x07; fsmeta extents
    /// compacted as a native commit compacts them; tag-1 entries copied verbatim; the fold
    /// pass; the index **not** padded; trailer 0x06. uuid and parent come only from `args`
    /// (else null); the virtual size is the index header's.
    /// - Returns: the number of index entries written.
    @discardableResult
    public func commit(args: CommitArgs, into sink: any AppendSink, progress: ((UInt64) -> Void)? = nil) throws -> Int {
        guard args.message.count <= LSMTHeader.userTagSize else {
            throw LSMTError.invalidArgument("commit message is \(args.message.count) bytes; at most \(LSMTHeader.userTagSize) fit in the header")
        }
        var h = LSMTHeader(flags: [.isHeader, .isDataFile, .sealed], virtualSize: virtualSize,
                           uuid: args.uuid ?? .null, parentUUID: args.parentUUID ?? .null)
        h.userTag = args.message
        return try LayerCommit.compact(segments: segments, sources: [fsmetaFile], header: h, verbatimTag: Self.targetTag,
                                       padIndex: false, into: sink, progress: progress)
    }
}
