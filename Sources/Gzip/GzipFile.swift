import BlockIO
import Glibc
import CZlib
import Synchronization
import Threading

/// The uncompressed stream of a gzip blob as a read-only `BlockFile`, served through a
/// gzip index: a read inflates from the nearest access point at or before it
/// (formats/Gzip.md). Whole spans are kept in a `GzipSpanCache`, so a second read of a
/// span does not inflate again. Thread-safe with pread semantics: each thread inflates
/// with its own zlib stream, and the cache has no global lock.
public final class GzipFile: BlockFile, Sendable {
    public struct Options: Sendable {
        /// Bytes of decompressed spans kept in this file's own cache (0: none). Ignored
        /// when a shared `cache` is given.
        public var cacheBytes: Int = 32 << 20
        /// A cache shared with other files.
        public var cache: GzipSpanCache?
        /// When a whole span is inflated, check that the stream reaches the next access
        /// point exactly (compressed position, bits, block boundary, window bytes).
        public var verifySpans = true

        public init(cacheBytes: Int = 32 << 20, cache: GzipSpanCache? = nil, verifySpans: Bool = true) {
            self.cacheBytes = cacheBytes
            self.cache = cache
            self.verifySpans = verifySpans
        }
    }

    public let blob: any BlockFile
    public let index: GzipIndex
    public let cache: GzipSpanCache?
    let kind: StreamKind
    let verifySpans: Bool
    let fileID = GzipSpanCache.newFileID()
    let inflations = Atomic<UInt64>(0)

    public var size: UInt64 { index.uncompressedSize }
    public var name: String { blob.name }

    /// Opens `blob` with an already parsed index; the index's gzip size must be the blob's.
    public init(blob: any BlockFile, index: GzipIndex, options: Options = .init()) throws {
        let size = blob.size
        guard index.gzipSize == size else {
            throw GzipError.sizeMismatch(path: index.path, field: "gzip_file_size", offset: GzipIndexHeader.Offset.gzipSize,
                                         stated: index.gzipSize, actual: size)
        }
        guard size >= 2 else { throw GzipError.corruptStream(path: blob.name, offset: 0, reason: "\(size) bytes are not a gzip stream") }
        let head = try blob.readBytes(at: 0, count: 2)
        guard let kind = StreamKind(head[0], head[1]) else {
            throw GzipError.corruptStream(path: blob.name, offset: 0, reason: "neither a gzip nor a zlib header")
        }
        let dataStart = try GzipFile.firstDeflateByte(of: blob)
        let first = index.points[0]
        guard first.compressedOffset == dataStart, first.bits == 0 else {
            throw GzipError.indexMismatch(path: blob.name, entry: 0, offset: first.compressedOffset,
                                          reason: "the first access point must be where the deflate data starts, at \(dataStart) (bits 0; the index says bits \(first.bits))")
        }
        self.blob = blob
        self.index = index
        self.kind = kind
        verifySpans = options.verifySpans
        cache = options.cache ?? (options.cacheBytes > 0 ? GzipSpanCache(capacity: options.cacheBytes) : nil)
    }

    /// Opens `blob` with the index in `indexFile` (validated against the blob's size).
    public convenience init(blob: any BlockFile, indexFile: any BlockFile, options: Options = .init()) throws {
        try self.init(blob: blob, index: GzipIndex(file: indexFile, gzipSize: blob.size), options: options)
    }

    /// Offset of the first deflate byte: just after the first member's gzip (or zlib) header.
    static func firstDeflateByte(of blob: any BlockFile) throws -> UInt64 {
        let z = try Inflater(windowBits: Inflater.autoDetect)
        let input = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
        defer { input.deallocate() }
        var end: UInt64 = 0
        var sink: UInt8 = 0
        while true {
            if z.strm.pointee.avail_in == 0 {
                let n = try blob.read(into: input, at: end)
                guard n > 0 else { throw GzipError.truncatedStream(path: blob.name, offset: end) }
                z.strm.pointee.next_in = input.baseAddress!.assumingMemoryBound(to: Bytef.self)
                z.strm.pointee.avail_in = uInt(n)
                end += UInt64(n)
            }
            let rc = withUnsafeMutablePointer(to: &sink) { p in
                z.strm.pointee.next_out = p
                z.strm.pointee.avail_out = 1
                return CZlib.inflate(z.strm, Z_BLOCK)
            }
            let at = end - UInt64(z.strm.pointee.avail_in)
            guard rc == Z_OK || rc == Z_BUF_ERROR else {
                throw GzipError.corruptStream(path: blob.name, offset: at, reason: z.message)
            }
            if z.strm.pointee.data_type & 0x80 != 0 { return at }
            if rc == Z_BUF_ERROR && z.strm.pointee.avail_in != 0 {
                throw GzipError.corruptStream(path: blob.name, offset: at, reason: "no deflate data after the header")
            }
        }
    }

    /// How many times a span (or part of one) was inflated.
    public var inflationCount: UInt64 { inflations.load(ordering: .relaxed) }

    /// Spans longer than this are never cached; reads inflate just up to what they need.
    static let maxCachedSpan = 64 << 20

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        guard offset < size, !buffer.isEmpty else { return 0 }
        let n = Int(min(UInt64(buffer.count), size - offset))
        var done = 0
        while done < n {
            let pos = offset + UInt64(done)
            let i = index.pointIndex(containing: pos)
            let start = index.points[i].uncompressedOffset
            let end = index.spanEnd(i)
            let take = Int(min(UInt64(n - done), end - pos))
            let dest = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + take)])
            let spanLength = end - start
            if let cache, spanLength <= UInt64(GzipFile.maxCachedSpan), cache.admits(Int(spanLength)) {
                let key = GzipSpanCache.Key(file: fileID, span: i)
                let bytes: [UInt8]
                if let hit = cache.get(key) {
                    bytes = hit
                } else {
                    bytes = try inflateSpan(i, length: Int(spanLength))
                    cache.put(key, bytes)
                }
                bytes.withUnsafeBytes { src in
                    dest.baseAddress!.copyMemory(from: src.baseAddress! + Int(pos - start), byteCount: take)
                }
            } else {
                try inflate(from: i, skip: pos - start, into: dest, verifyNext: false)
            }
            done += take
        }
        return n
    }

    /// Span `i` whole, checked against the next access point.
    func inflateSpan(_ i: Int, length: Int) throws -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: length) { buf, count in
            try inflate(from: i, skip: 0, into: UnsafeMutableRawBufferPointer(buf), verifyNext: verifySpans)
            count = length
        }
    }

    /// Inflates from access point `i`, drops `skip` bytes and fills `dest`.
    func inflate(from i: Int, skip: UInt64, into dest: UnsafeMutableRawBufferPointer, verifyNext: Bool) throws {
        inflations.add(1, ordering: .relaxed)
        let ctx = GzipFile.contexts.value
        let z = try ctx.inflater()
        var run = InflateRun(file: self, ctx: ctx, z: z, entry: i)
        try run.start()
        try run.output(skip: skip, into: dest)
        if verifyNext {
            if i + 1 < index.points.count { try run.verify(next: i + 1, span: UnsafeRawBufferPointer(dest)) } else { try run.verifyEnd() }
        }
    }

    /// Reads every span in order with verification: span 0 needs no window, and each
    /// verified span vouches for the next point's window, so afterwards the whole index is
    /// known to match the blob. Costs one full decompression; fills the cache on the way.
    public func verifyAll() throws {
        for i in index.points.indices {
            let length = index.spanEnd(i) - index.points[i].uncompressedOffset
            if length <= UInt64(GzipFile.maxCachedSpan) {
                let bytes = try [UInt8](unsafeUninitializedCapacity: Int(length)) { buf, count in
                    try inflate(from: i, skip: 0, into: UnsafeMutableRawBufferPointer(buf), verifyNext: true)
                    count = Int(length)
                }
                cache?.put(GzipSpanCache.Key(file: fileID, span: i), bytes)
            } else {
                throw GzipError.indexMismatch(path: blob.name, entry: i, offset: index.points[i].compressedOffset,
                                              reason: "span of \(length) bytes is too long to verify")
            }
        }
    }

    /// Per-thread zlib stream and buffers, shared by every GzipFile.
    static let contexts = ThreadLocal { InflateContext() }
}

final class InflateContext {
    private var z: Inflater?
    let input = ScratchBuffer(capacity: 128 << 10)
    let discard = ScratchBuffer(capacity: 64 << 10)
    let compressedWindow = ScratchBuffer(capacity: 32 << 10)
    let window = UnsafeMutableRawBufferPointer.allocate(byteCount: GzipIndexHeader.windowSize, alignment: 64)
    let nextWindow = UnsafeMutableRawBufferPointer.allocate(byteCount: GzipIndexHeader.windowSize, alignment: 64)

    func inflater() throws -> Inflater {
        if let z { return z }
        let made = try Inflater(windowBits: Inflater.raw)
        z = made
        return made
    }

    deinit {
        window.deallocate()
        nextWindow.deallocate()
    }
}

/// One inflation from an access point: the zlib stream, where its input stands in the
/// blob, and member transitions (raw deflate inside the first member, then gzip/zlib
/// headers parsed by zlib for the following ones).
struct InflateRun {
    let file: GzipFile
    let ctx: InflateContext
    let z: Inflater
    let entry: Int
    var inputEnd: UInt64 = 0  // blob offset just past the bytes handed to zlib
    var raw = true
    var ended = false

    init(file: GzipFile, ctx: InflateContext, z: Inflater, entry: Int) {
        self.file = file
        self.ctx = ctx
        self.z = z
        self.entry = entry
    }

    var s: UnsafeMutablePointer<z_stream> { z.strm }
    var consumed: UInt64 { inputEnd - UInt64(s.pointee.avail_in) }
    var path: String { file.blob.name }

    func mismatch(_ why: String) -> GzipError {
        .indexMismatch(path: path, entry: entry, offset: file.index.points[entry].compressedOffset, reason: why)
    }

    mutating func start() throws {
        let p = file.index.points[entry]
        try z.reset(windowBits: Inflater.raw)
        s.pointee.avail_in = 0
        s.pointee.next_in = nil
        if p.bits > 0 {
            var byte: UInt8 = 0
            try withUnsafeMutableBytes(of: &byte) { try file.blob.readExactly(into: $0, at: p.compressedOffset - 1) }
            let rc = inflatePrime(s, Int32(p.bits), Int32(byte >> (8 - p.bits)))
            if rc != Z_OK { throw GzipError.zlib(operation: "inflatePrime", code: rc) }
        }
        if p.uncompressedOffset > 0 {
            try file.index.loadWindow(entry, into: ctx.window, scratch: ctx.compressedWindow)
            let rc = inflateSetDictionary(s, ctx.window.baseAddress!.assumingMemoryBound(to: Bytef.self), uInt(GzipIndexHeader.windowSize))
            if rc != Z_OK { throw GzipError.zlib(operation: "inflateSetDictionary", code: rc) }
        }
        inputEnd = p.compressedOffset
    }

    mutating func refill() throws -> Bool {
        let buf = ctx.input.buffer
        let n = try file.blob.read(into: buf, at: inputEnd)
        guard n > 0 else { return false }
        s.pointee.next_in = buf.baseAddress!.assumingMemoryBound(to: Bytef.self)
        s.pointee.avail_in = uInt(n)
        inputEnd += UInt64(n)
        return true
    }

    /// One inflate call (Z_BLOCK: it also returns at block boundaries) into `out`, which
    /// may be empty; returns the bytes produced and whether zlib moved at all. Handles
    /// input refills, member ends and errors.
    mutating func step(_ out: UnsafeMutableRawBufferPointer, where outOffset: UInt64) throws -> (produced: Int, progressed: Bool) {
        if s.pointee.avail_in == 0, try !refill() {
            throw GzipError.truncatedStream(path: path, offset: inputEnd)
        }
        var dummy: UInt8 = 0
        let rc: Int32 = withUnsafeMutablePointer(to: &dummy) { d in
            s.pointee.next_out = out.isEmpty ? d : out.baseAddress!.assumingMemoryBound(to: Bytef.self)
            s.pointee.avail_out = uInt(out.count)
            return inflate(s, Z_BLOCK)
        }
        let produced = out.count - Int(s.pointee.avail_out)
        s.pointee.next_out = nil
        switch rc {
        case Z_OK:
            return (produced, true)
        case Z_BUF_ERROR:
            // No progress: zlib needs output room (or input, refilled on the next call).
            return (produced, false)
        case Z_STREAM_END:
            try memberEnded(at: outOffset + UInt64(produced))
            return (produced, true)
        case Z_MEM_ERROR:
            throw GzipError.zlib(operation: "inflate", code: rc)
        default:
            throw GzipError.corruptStream(path: path, offset: consumed, reason: "\(z.message) (inflating from access point \(entry))")
        }
    }

    /// A member's deflate data ended: skip its trailer (raw mode), and start the next
    /// member if one follows; otherwise the stream is over.
    mutating func memberEnded(at outOffset: UInt64) throws {
        var next = consumed
        if raw { next += file.kind.trailerSize }
        s.pointee.avail_in = 0
        inputEnd = next
        var head: (UInt8, UInt8) = (0, 0)
        let n = try withUnsafeMutableBytes(of: &head) { try file.blob.read(into: $0, at: next) }
        guard n == 2, StreamKind(head.0, head.1) != nil else {
            ended = true
            return
        }
        try z.reset(windowBits: Inflater.autoDetect)
        raw = false
    }

    /// Inflates, dropping `skip` bytes, then filling `dest`.
    mutating func output(skip: UInt64, into dest: UnsafeMutableRawBufferPointer) throws {
        let start = file.index.points[entry].uncompressedOffset
        var skipped: UInt64 = 0
        while skipped < skip {
            let room = Int(min(UInt64(ctx.discard.buffer.count), skip - skipped))
            let (n, progressed) = try step(UnsafeMutableRawBufferPointer(rebasing: ctx.discard.buffer[0..<room]), where: start + skipped)
            skipped += UInt64(n)
            try checkProgress(progressed || n > 0, at: start + skipped, wanted: start + skip + UInt64(dest.count))
        }
        var filled = 0
        while filled < dest.count {
            let (n, progressed) = try step(UnsafeMutableRawBufferPointer(rebasing: dest[filled...]), where: start + skip + UInt64(filled))
            filled += n
            try checkProgress(progressed || n > 0, at: start + skip + UInt64(filled), wanted: start + skip + UInt64(dest.count))
        }
    }

    func checkProgress(_ progressed: Bool, at: UInt64, wanted: UInt64) throws {
        if ended && at < wanted {
            throw mismatch("the stream ends at uncompressed offset \(at), before \(wanted) (uncompressed size \(file.size) in the index)")
        }
        if !progressed && s.pointee.avail_in != 0 {
            throw GzipError.corruptStream(path: path, offset: consumed, reason: "inflate makes no progress")
        }
    }

    /// After the last span: no more data may follow in the stream.
    mutating func verifyEnd() throws {
        while !ended {
            let (_, progressed) = try step(UnsafeMutableRawBufferPointer(start: nil, count: 0), where: file.size)
            if !progressed && s.pointee.avail_in != 0 {
                throw mismatch("the stream has more data after uncompressed offset \(file.size), the size in the index")
            }
        }
    }

    /// After a whole span: the stream must be at a block boundary exactly where access
    /// point `next` says, and the last 32 KiB of output must be its window.
    mutating func verify(next: Int, span: UnsafeRawBufferPointer) throws {
        let q = file.index.points[next]
        let expected = q.bitPosition
        let end = q.uncompressedOffset
        while true {
            let bitpos = consumed &* 8 &- UInt64(z.pendingBits)
            if z.atBlockBoundary && bitpos == expected { break }
            if bitpos > expected || ended {
                throw GzipError.indexMismatch(path: path, entry: next, offset: q.compressedOffset,
                                              reason: "the stream is not at a block boundary there after span \(entry) (compressed bit position \(bitpos), expected \(expected))")
            }
            let (_, progressed) = try step(UnsafeMutableRawBufferPointer(start: nil, count: 0), where: end)
            if !progressed && s.pointee.avail_in != 0 {
                throw GzipError.indexMismatch(path: path, entry: next, offset: q.compressedOffset,
                                              reason: "more uncompressed data follows before the access point (uncompressed offset \(end))")
            }
        }
        try file.index.loadWindow(next, into: ctx.nextWindow, scratch: ctx.compressedWindow)
        let w = GzipIndexHeader.windowSize
        let tail = min(w, span.count)
        if memcmp(ctx.nextWindow.baseAddress! + (w - tail), span.baseAddress! + (span.count - tail), tail) != 0 {
            throw GzipError.badWindow(path: file.index.path, entry: next, offset: q.windowOffset,
                                      reason: "is not the 32 KiB of data before uncompressed offset \(end)")
        }
    }
}
