import BlockIO
import CZlib

/// How an index is built.
public struct GzipIndexOptions: Sendable, Equatable {
    /// Access-point spacing in uncompressed bytes (overlaybd's tools use 1 MiB); >= 64 KiB.
    public var span: Int = GzipIndexHeader.defaultSpan
    /// zlib-compress each window and the entry table (`dict_compress_algo` 1), as overlaybd
    /// does by default; false stores them as they are (algo 0).
    public var compressDictionaries = true
    /// zlib level for windows and table (`dict_compress_level`, default 6).
    public var level: Int8 = 6

    public init(span: Int = GzipIndexHeader.defaultSpan, compressDictionaries: Bool = true, level: Int8 = 6) {
        self.span = span
        self.compressDictionaries = compressDictionaries
        self.level = level
    }
}

/// Builds a "ddgzidx" index from a gzip (or zlib) stream (formats/Gzip.md).
public enum GzipIndexWriter {
    static let window = GzipIndexHeader.windowSize

    /// Inflates all of `gzip` and writes its index into `index`, which must be empty.
    /// Multi-member streams are indexed as one uncompressed stream; zero bytes after the
    /// last member are tolerated, anything else there is an error. Returns the header.
    @discardableResult
    public static func write(gzip: any BlockFile, to index: any BlockFile, options: GzipIndexOptions = .init()) throws -> GzipIndexHeader {
        guard options.span >= GzipIndexHeader.minimumSpan, options.span <= Int(Int32.max) else {
            throw GzipError.badOption(reason: "span \(options.span) is outside 65536...\(Int32.max)")
        }
        guard (-1...9).contains(options.level) else { throw GzipError.badOption(reason: "level \(options.level) is outside -1...9") }
        guard index.size == 0 else { throw GzipError.badOption(reason: "\(index.name): the index file must be empty, it has \(index.size) bytes") }
        let builder = try Builder(gzip: gzip, index: index, options: options)
        try builder.run()
        return try builder.finish()
    }

    /// The index of `gzip` as bytes.
    public static func build(gzip: any BlockFile, options: GzipIndexOptions = .init()) throws -> [UInt8] {
        let out = MemoryFile(name: gzip.name + ".gzidx")
        try write(gzip: gzip, to: out, options: options)
        return out.bytes
    }

    struct Candidate {
        var point: GzipAccessPoint
        var window: [UInt8]
    }

    final class Builder {
        let gzip: any BlockFile
        let index: any BlockFile
        let options: GzipIndexOptions
        let inflater: Inflater
        let gzipSize: UInt64
        // Output: the 32 KiB before the write position are always the latest history
        // (zeros before the stream starts).
        var out: UnsafeMutableRawBufferPointer
        var have = GzipIndexWriter.window
        var totalOut: UInt64 = 0
        var input: UnsafeMutableRawBufferPointer
        var inputEnd: UInt64 = 0  // blob offset just past the bytes handed to zlib
        var points: [GzipAccessPoint] = []
        var candidate: Candidate?
        var nextMultiple: UInt64
        var cursor = UInt64(GzipIndexHeader.size)

        init(gzip: any BlockFile, index: any BlockFile, options: GzipIndexOptions) throws {
            self.gzip = gzip
            self.index = index
            self.options = options
            gzipSize = gzip.size
            inflater = try Inflater(windowBits: Inflater.autoDetect)
            out = .allocate(byteCount: GzipIndexWriter.window + (256 << 10), alignment: 4096)
            out.initializeMemory(as: UInt8.self, repeating: 0)
            input = .allocate(byteCount: 256 << 10, alignment: 4096)
            nextMultiple = UInt64(options.span)
        }

        deinit {
            out.deallocate()
            input.deallocate()
        }

        var consumed: UInt64 { inputEnd - UInt64(inflater.strm.pointee.avail_in) }

        func refill() throws -> Bool {
            let n = try gzip.read(into: input, at: inputEnd)
            guard n > 0 else { return false }
            inflater.strm.pointee.next_in = input.baseAddress!.assumingMemoryBound(to: Bytef.self)
            inflater.strm.pointee.avail_in = uInt(n)
            inputEnd += UInt64(n)
            return true
        }

        func run() throws {
            guard gzipSize > 0 else { throw GzipError.corruptStream(path: gzip.name, offset: 0, reason: "an empty file is not a gzip stream") }
            let s = inflater.strm
            while true {
                if s.pointee.avail_in == 0, try !refill() {
                    throw GzipError.truncatedStream(path: gzip.name, offset: inputEnd)
                }
                s.pointee.next_out = (out.baseAddress! + have).assumingMemoryBound(to: Bytef.self)
                let room = out.count - have
                s.pointee.avail_out = uInt(room)
                let rc = inflate(s, Z_BLOCK)
                let produced = room - Int(s.pointee.avail_out)
                have += produced
                totalOut += UInt64(produced)
                switch rc {
                case Z_OK, Z_BUF_ERROR:
                    if rc == Z_BUF_ERROR && s.pointee.avail_in != 0 {
                        throw GzipError.corruptStream(path: gzip.name, offset: consumed, reason: "inflate makes no progress")
                    }
                    if inflater.atBlockBoundary { try boundary() }
                case Z_STREAM_END:
                    if try !nextMember() { return }
                case Z_NEED_DICT:
                    throw GzipError.corruptStream(path: gzip.name, offset: consumed, reason: "zlib stream needs a preset dictionary")
                case Z_MEM_ERROR:
                    throw GzipError.zlib(operation: "inflate", code: rc)
                default:
                    throw GzipError.corruptStream(path: gzip.name, offset: consumed, reason: inflater.message)
                }
                if have == out.count {
                    let w = GzipIndexWriter.window
                    out.baseAddress!.copyMemory(from: out.baseAddress! + (have - w), byteCount: w)
                    have = w
                }
            }
        }

        /// After a member's end: another member follows (true), or the stream is over.
        func nextMember() throws -> Bool {
            let s = inflater.strm
            if s.pointee.avail_in < 2 {
                // Re-read from the first unconsumed byte so at least two bytes are at hand.
                let at = consumed
                s.pointee.avail_in = 0
                inputEnd = at
                if try !refill() { return false }
            }
            let p = s.pointee.next_in!
            if s.pointee.avail_in >= 2, StreamKind(p[0], p[1]) != nil {
                let rc = inflateReset(s)
                if rc != Z_OK { throw GzipError.zlib(operation: "inflateReset", code: rc) }
                return true
            }
            // Only zero padding may follow the last member.
            var at = consumed
            let scan = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
            defer { scan.deallocate() }
            while at < gzipSize {
                let n = try gzip.read(into: scan, at: at)
                if n == 0 { break }
                if let k = scan[0..<n].firstIndex(where: { $0 != 0 }) {
                    throw GzipError.trailingGarbage(path: gzip.name, offset: at + UInt64(k))
                }
                at += UInt64(n)
            }
            return false
        }

        var currentWindow: [UInt8] {
            let w = GzipIndexWriter.window
            return Array(UnsafeRawBufferPointer(rebasing: out[(have - w)..<have]))
        }

        /// A block boundary: the first becomes the first access point; afterwards each
        /// multiple of the span gets the last boundary at or before it, emitted when a
        /// boundary past the multiple shows that none later qualifies.
        func boundary() throws {
            let point = GzipAccessPoint(uncompressedOffset: totalOut, compressedOffset: consumed, bits: inflater.pendingBits,
                                        windowOffset: 0, windowLength: 0)
            if points.isEmpty {
                try emit(point, window: currentWindow)
                return
            }
            while point.uncompressedOffset > nextMultiple {
                if let c = candidate, c.point.bitPosition > points[points.count - 1].bitPosition {
                    try emit(c.point, window: c.window)
                }
                nextMultiple += UInt64(options.span)
            }
            candidate = Candidate(point: point, window: currentWindow)
        }

        func emit(_ point: GzipAccessPoint, window: [UInt8]) throws {
            let stored = options.compressDictionaries
                ? try window.withUnsafeBytes { try ZlibBuffer.compress($0, level: Int32(options.level)) }
                : window
            var p = point
            p.windowOffset = cursor
            p.windowLength = UInt32(stored.count)
            try index.writeBytes(stored, at: cursor)
            cursor += UInt64(stored.count)
            points.append(p)
        }

        func finish() throws -> GzipIndexHeader {
            let table = GzipEntryCodec.encode(points)
            let area = options.compressDictionaries
                ? try table.withUnsafeBytes { try ZlibBuffer.compress($0, level: Int32(options.level)) }
                : table
            try index.writeBytes(area, at: cursor)
            var h = GzipIndexHeader()
            h.dictCompressAlgorithm = options.compressDictionaries ? 1 : 0
            h.dictCompressLevel = options.level
            h.span = Int32(options.span)
            h.indexCount = Int64(points.count)
            h.gzipFileSize = Int64(gzipSize)
            h.uncompressedFileSize = Int64(totalOut)
            h.indexStart = Int64(cursor)
            h.indexAreaLength = Int64(area.count)
            h.indexFileSize = Int64(cursor) + Int64(area.count)
            let bytes = h.encoded()
            h.crc = UInt32(getLE(bytes[...], GzipIndexHeader.Offset.crc, 4))
            try index.writeBytes(bytes, at: 0)
            return h
        }
    }
}
