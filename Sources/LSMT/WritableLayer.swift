import BlockIO
import Synchronization
import Threading

/// A writable LSMT layer.
///
/// - Append-only mode: a data file (header, then data appended as it is written)
///   and an index file (header, then one 16-byte entry appended per write piece).
///   Later entries override earlier ones.
/// - Sparse mode: the data file holds the virtual disk in place at offset 4096 + X;
///   the index is rebuilt from the file's allocated extents when it is opened.
///
/// Crash safety (append-only): data is written before its index entry, and a write is
/// acknowledged only after both, so after a crash every acknowledged write is present
/// and a torn tail is dropped on reopen. Reads may run concurrently with writes.
public final class WritableLayer: @unchecked Sendable {
    public enum Mode: Sendable { case appendOnly, sparse }

    /// Largest piece a write is split into (overlaybd's MAX_IO_SIZE).
    public static let maxIOSize = 4 << 20
    /// Most entries an index may hold (overlaybd's limit for writable/merged indexes).
    public static let maxIndexSize: UInt64 = 128_000_000

    public let mode: Mode
    public let dataFile: LocalFile
    public let indexFile: LocalFile?
    /// The data file's header.
    public private(set) var header: LSMTHeader
    /// Index entries dropped on open because their data never reached the data file.
    public let recoveredTornEntries: Int
    /// Tag written with new entries (overlaybd uses the number of lower layers). Set once
    /// by the `LayerStack` that adopts this layer, before any write.
    public internal(set) var tag: UInt8 = 0

    private var map: ExtentMap
    private let mapLock = ReadWriteLock()
    private let appendLock = Mutex(())
    private var dataEnd: UInt64
    private var indexEnd: UInt64
    private var sealed = false

    public var name: String { dataFile.path }
    public var virtualSize: UInt64 { header.virtualSize }

    private init(mode: Mode, dataFile: LocalFile, indexFile: LocalFile?, header: LSMTHeader, map: ExtentMap,
                 dataEnd: UInt64, indexEnd: UInt64, recovered: Int) {
        self.mode = mode
        self.dataFile = dataFile
        self.indexFile = indexFile
        self.header = header
        self.map = map
        self.dataEnd = dataEnd
        self.indexEnd = indexEnd
        recoveredTornEntries = recovered
    }

    /// Creates a new writable layer; the files must not exist.
    public static func create(dataPath: String, indexPath: String?, virtualSize: UInt64,
                              parentUUID: LayerUUID = .null, uuid: LayerUUID = .random(),
                              sparse: Bool = false) throws -> WritableLayer {
        let data = try LocalFile(path: dataPath, mode: .createExclusive)
        var header = LSMTHeader(flags: [.isHeader, .isDataFile], virtualSize: virtualSize, uuid: uuid, parentUUID: parentUUID)
        if sparse { header.flags.insert(.sparse) }
        try data.writeBytes(header.serialize(), at: 0)
        var index: LocalFile?
        if let indexPath {
            let f = try LocalFile(path: indexPath, mode: .createExclusive)
            var ih = LSMTHeader(flags: [.isHeader], virtualSize: virtualSize, uuid: uuid, parentUUID: parentUUID)
            ih.indexOffset = UInt64(LSMTHeader.recordSize)
            try f.writeBytes(ih.serialize(), at: 0)
            index = f
        } else if !sparse {
            throw LSMTError.invalidArgument("an append-only writable layer needs an index file")
        }
        if sparse { try data.truncate(to: UInt64(LSMTHeader.recordSize) + virtualSize) }
        try data.flush()
        try index?.flush()
        return WritableLayer(mode: sparse ? .sparse : .appendOnly, dataFile: data, indexFile: index, header: header,
                             map: ExtentMap(), dataEnd: UInt64(LSMTHeader.recordSize),
                             indexEnd: UInt64(LSMTHeader.recordSize), recovered: 0)
    }

    /// Opens an existing writable layer. With `writable: false` nothing is modified.
    public static func open(dataPath: String, indexPath: String?, writable: Bool = true) throws -> WritableLayer {
        let data = try LocalFile(path: dataPath, mode: writable ? .readWrite : .readOnly)
        let header = try LSMTHeader.read(from: data, at: 0)
        guard header.flags.contains(.isHeader), header.flags.contains(.isDataFile) else {
            throw LSMTError.notLSMT(name: dataPath, detail: "header flags 0x\(String(header.flags.rawValue, radix: 16)) are not those of a writable data file")
        }
        let dataSize = data.size
        if dataSize >= UInt64(2 * LSMTHeader.recordSize),
           let t = try? LSMTHeader.read(from: data, at: dataSize - UInt64(LSMTHeader.recordSize)),
           !t.flags.contains(.isHeader), t.flags.contains(.sealed) {
            throw LSMTError.invalidRequest(name: dataPath, detail: "layer is sealed; open it as a read-only layer")
        }
        if header.flags.contains(.sparse) {
            var map = ExtentMap()
            let base = UInt64(LSMTHeader.recordSize)
            for run in try data.dataRuns(from: base) {
                var lo = max(run.lowerBound, base) / 512
                let hi = (run.upperBound + 511) / 512
                while lo < hi {
                    let n = min(hi - lo, UInt64(Segment.maxLength))
                    map.insert(Segment(offset: lo - 8, length: UInt32(n), moffset: lo))
                    lo += n
                }
            }
            return WritableLayer(mode: .sparse, dataFile: data, indexFile: nil, header: header, map: map,
                                 dataEnd: dataSize, indexEnd: 0, recovered: 0)
        }
        guard let indexPath else {
            throw LSMTError.invalidArgument("\(dataPath): an append-only writable layer needs its index file")
        }
        let index = try LocalFile(path: indexPath, mode: writable ? .readWrite : .readOnly)
        let ih = try LSMTHeader.read(from: index, at: 0)
        guard ih.flags.contains(.isHeader), !ih.flags.contains(.isDataFile), !ih.flags.contains(.sealed) else {
            throw LSMTError.notLSMT(name: indexPath, detail: "header flags 0x\(String(ih.flags.rawValue, radix: 16)) are not those of an index file")
        }
        guard ih.indexOffset == UInt64(LSMTHeader.recordSize) else {
            throw LSMTError.corrupt(name: indexPath, detail: "index offset \(ih.indexOffset) is not 4096")
        }
        let indexSize = index.size
        let count = (indexSize - UInt64(LSMTHeader.recordSize)) / 16
        guard count <= maxIndexSize else {
            throw LSMTError.corrupt(name: indexPath, detail: "\(count) index entries exceed the limit \(maxIndexSize)")
        }
        let limit = dataSize / 512
        var map = ExtentMap()
        var validCount = 0
        var firstTorn: Int?
        let chunkEntries = 65536
        var i: UInt64 = 0
        while i < count {
            let n = Int(min(UInt64(chunkEntries), count - i))
            let raw = try index.readBytes(at: UInt64(LSMTHeader.recordSize) + i * 16, count: n * 16)
            try raw.withUnsafeBytes { b in
                for j in 0..<n {
                    var s = Segment.load(from: b, at: j * 16)
                    if s.isInvalid || s.length == 0 { continue }
                    let k = Int(i) + j
                    let fits = s.moffset >= 8 && s.mend <= limit
                    if !fits {
                        if firstTorn == nil { firstTorn = k }
                        continue
                    }
                    if let t = firstTorn {
                        throw LSMTError.corrupt(name: indexPath, detail: "index entry \(t) points past the end of the data file, but later entry \(k) does not")
                    }
                    s.tag = 0
                    map.insert(s)
                    validCount = k + 1
                }
            }
            i += UInt64(n)
        }
        var indexEnd = UInt64(LSMTHeader.recordSize) + UInt64(validCount) * 16
        let recovered = firstTorn.map { Int(count) - $0 } ?? 0
        if firstTorn == nil { indexEnd = UInt64(LSMTHeader.recordSize) + count * 16 }
        if writable && indexEnd != indexSize {
            // Drop a torn tail (a partial entry, or entries whose data never landed).
            try index.truncate(to: indexEnd)
        }
        let dataEnd = (dataSize + 511) / 512 * 512
        return WritableLayer(mode: .appendOnly, dataFile: data, indexFile: index, header: header, map: map,
                             dataEnd: dataEnd, indexEnd: indexEnd, recovered: recovered)
    }

    /// A copy of the current index.
    public var segments: [Segment] { mapLock.withReadLock { map.segments } }

    /// Copies the index entries that overlap sectors `[from, to)` into `scratch` and
    /// returns them. The index lock is held only for the lookup and the copy: readers
    /// then read data (and whatever lies below, perhaps from the network) with no lock
    /// held, so writes never wait for them. Data an entry points to stays valid: the
    /// append-only data file is never rewritten, and a sparse file's in-place data can
    /// change only under a concurrent write to the same sectors.
    public func segments(overlapping from: UInt64, _ to: UInt64, into scratch: SegmentScratch) -> UnsafeBufferPointer<Segment> {
        mapLock.withReadLock {
            map.segments.withUnsafeBufferPointer { all in
                var i = map.firstIndex(endingAfter: from)
                let first = i
                while i < all.count && all[i].offset < to { i += 1 }
                return scratch.copy(UnsafeBufferPointer(rebasing: all[first..<i]))
            }
        }
    }

    private func checkAligned(_ offset: UInt64, _ count: UInt64) throws {
        guard offset % 512 == 0, count % 512 == 0 else {
            throw LSMTError.invalidRequest(name: name, detail: "I/O at \(offset)+\(count) is not aligned to 512 bytes")
        }
        guard !sealed else { throw LSMTError.invalidRequest(name: name, detail: "layer is sealed") }
    }

    /// Writes `buffer` at virtual-disk byte `offset` (both multiples of 512).
    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try checkAligned(offset, UInt64(buffer.count))
        var done = 0
        while done < buffer.count {
            let n = min(buffer.count - done, WritableLayer.maxIOSize)
            let piece = UnsafeRawBufferPointer(rebasing: buffer[done..<(done + n)])
            let lba = (offset + UInt64(done)) / 512
            switch mode {
            case .sparse:
                let pos = UInt64(LSMTHeader.recordSize) + lba * 512
                try dataFile.write(piece, at: pos)
                mapLock.withWriteLock { map.insert(Segment(offset: lba, length: UInt32(n / 512), moffset: pos / 512, tag: tag)) }
            case .appendOnly:
                try appendLock.withLock { _ in
                    let pos = dataEnd
                    try dataFile.write(piece, at: pos)
                    dataEnd += UInt64(n)
                    let seg = Segment(offset: lba, length: UInt32(n / 512), moffset: pos / 512, tag: tag)
                    try appendEntries([seg])
                    mapLock.withWriteLock { map.insert(seg) }
                }
            }
            done += n
        }
    }

    /// Marks `[offset, offset+length)` as zeros (both multiples of 512).
    public func discard(offset: UInt64, length: UInt64) throws {
        try checkAligned(offset, length)
        var lba = offset / 512
        var left = length / 512
        if mode == .sparse {
            try dataFile.discard(offset: UInt64(LSMTHeader.recordSize) + offset, length: length)
        }
        while left > 0 {
            let n = min(left, UInt64(Segment.maxLength))
            switch mode {
            case .sparse:
                let seg = Segment(offset: lba, length: UInt32(n), moffset: (UInt64(LSMTHeader.recordSize) + lba * 512) / 512, zeroed: true, tag: tag)
                mapLock.withWriteLock { map.insert(seg) }
            case .appendOnly:
                try appendLock.withLock { _ in
                    let seg = Segment(offset: lba, length: UInt32(n), moffset: dataEnd / 512, zeroed: true, tag: tag)
                    try appendEntries([seg])
                    mapLock.withWriteLock { map.insert(seg) }
                }
            }
            lba += n
            left -= n
        }
    }

    private func appendEntries(_ segs: [Segment]) throws {
        guard let indexFile else { return }
        let bytes = Segment.encode(segs[...])
        try indexFile.writeBytes(bytes, at: indexEnd)
        indexEnd += UInt64(bytes.count)
    }

    /// Makes every completed write durable: data file first, then the index.
    public func flush() throws {
        try dataFile.flush()
        try indexFile?.flush()
    }

    /// Sets the virtual size and rewrites the headers (and the sparse file's length).
    public func setVirtualSize(_ size: UInt64) throws {
        try appendLock.withLock { _ in
            header.virtualSize = size
            try dataFile.writeBytes(header.serialize(), at: 0)
            if let indexFile {
                var ih = try LSMTHeader.read(from: indexFile, at: 0)
                ih.virtualSize = size
                try indexFile.writeBytes(ih.serialize(), at: 0)
            }
            if mode == .sparse {
                let want = UInt64(LSMTHeader.recordSize) + size
                if dataFile.size < want { try dataFile.truncate(to: want) }
            }
        }
    }

    /// Seals the layer in place (`overlaybd-commit --seal`): appends the sorted index and
    /// a trailer to the data file, which then opens as a read-only layer.
    public func seal() throws {
        try appendLock.withLock { _ in
            guard !sealed else { throw LSMTError.invalidRequest(name: name, detail: "layer is already sealed") }
            let end = mode == .sparse ? dataFile.size : dataEnd
            let segs = mapLock.withReadLock { map.segments }
            var bytes = Segment.encode(segs[...])
            let padded = (bytes.count + 511) / 512 * 512
            bytes.append(contentsOf: repeatElement(0, count: padded - bytes.count))
            try dataFile.writeBytes(bytes, at: end)
            var trailer = header
            trailer.flags = [.isDataFile, .sealed]
            if mode == .sparse { trailer.flags.insert(.sparse) }
            trailer.indexOffset = end
            trailer.indexSize = UInt64(segs.count)
            try dataFile.writeBytes(trailer.serialize(), at: end + UInt64(padded))
            try dataFile.flush()
            sealed = true
        }
    }
}
