import BlockIO
import CZlib
import Threading

/// A parsed, validated gzip index ("ddgzidx"). The header and entry table are held in
/// memory; windows are read from the index file when an access point is used.
public struct GzipIndex: Sendable {
    public let header: GzipIndexHeader
    public let points: [GzipAccessPoint]
    /// The index file (windows are read from it on demand).
    public let file: any BlockFile

    public var path: String { file.name }
    public var span: Int { Int(header.span) }
    public var uncompressedSize: UInt64 { UInt64(header.uncompressedFileSize) }
    public var gzipSize: UInt64 { UInt64(header.gzipFileSize) }

    /// Reads and validates an index: magic, version, CRC, every size and count against the
    /// file, the entry table, and the order and placement of every entry and window.
    /// `gzipSize`, when given, must equal the header's `gzip_file_size`.
    public init(file: any BlockFile, gzipSize: UInt64? = nil) throws {
        let path = file.name
        let size = file.size
        guard size >= UInt64(GzipIndexHeader.size) else { throw GzipError.indexTooShort(path: path, size: size) }
        let raw = try file.readBytes(at: 0, count: GzipIndexHeader.size)
        guard Array(raw[0..<8]) == GzipIndexHeader.magic else { throw GzipError.badMagic(path: path, found: Array(raw[0..<8])) }
        let h = GzipIndexHeader(decoding: raw[...])
        let computed = CRC32C.raw(0, raw[0..<GzipIndexHeader.Offset.crc])
        guard computed == h.crc else { throw GzipError.headerChecksumMismatch(path: path, stored: h.crc, computed: computed) }
        typealias O = GzipIndexHeader.Offset
        func bad(_ field: String, _ offset: Int, _ value: Int64, _ expected: String) -> GzipError {
            .badHeaderField(path: path, field: field, offset: offset, value: value, expected: expected)
        }
        guard h.majorVersion == GzipIndexHeader.majorVersion else { throw bad("major_version", O.major, Int64(h.majorVersion), "1") }
        guard h.dictCompressAlgorithm <= 1 else { throw bad("dict_compress_algo", O.algo, Int64(h.dictCompressAlgorithm), "0 or 1") }
        guard (-1...9).contains(h.dictCompressLevel) else { throw bad("dict_compress_level", O.level, Int64(h.dictCompressLevel), "-1...9") }
        guard h.span >= Int32(GzipIndexHeader.minimumSpan) else { throw bad("span", O.span, Int64(h.span), "at least 65536") }
        guard h.window == Int32(GzipIndexHeader.windowSize) else { throw bad("window", O.window, Int64(h.window), "32768") }
        guard h.indexSize == Int32(GzipIndexHeader.entrySize) else { throw bad("index_size", O.indexSize, Int64(h.indexSize), "29") }
        guard h.gzipFileSize >= 0 else { throw bad("gzip_file_size", O.gzipSize, h.gzipFileSize, "not negative") }
        guard h.uncompressedFileSize >= 0 else { throw bad("uncompress_file_size", O.uncompressedSize, h.uncompressedFileSize, "not negative") }
        guard h.indexFileSize >= 0, UInt64(h.indexFileSize) == size else {
            throw GzipError.sizeMismatch(path: path, field: "index_file_size", offset: O.indexFileSize, stated: UInt64(bitPattern: h.indexFileSize), actual: size)
        }
        guard h.indexStart >= Int64(GzipIndexHeader.size), h.indexStart <= h.indexFileSize else {
            throw bad("index_start", O.indexStart, h.indexStart, "within 333...\(h.indexFileSize)")
        }
        guard h.indexAreaLength >= 0, h.indexStart + h.indexAreaLength == h.indexFileSize else {
            throw GzipError.sizeMismatch(path: path, field: "index_area_len", offset: O.indexAreaLength,
                                         stated: UInt64(bitPattern: h.indexAreaLength), actual: size - UInt64(h.indexStart))
        }
        if let gzipSize, UInt64(h.gzipFileSize) != gzipSize {
            throw GzipError.sizeMismatch(path: path, field: "gzip_file_size", offset: O.gzipSize, stated: UInt64(h.gzipFileSize), actual: gzipSize)
        }
        // Every entry has its own window: at least 8 bytes compressed (a zlib stream's
        // header and trailer), exactly 32 KiB stored.
        let windowArea = h.indexStart - Int64(GzipIndexHeader.size)
        let compressed = h.dictCompressAlgorithm == 1
        guard h.indexCount >= 1,
              compressed ? h.indexCount <= windowArea / 8 : h.indexCount * Int64(GzipIndexHeader.windowSize) == windowArea else {
            throw bad("index_num", O.indexNum, h.indexCount,
                      compressed ? "1...\(max(1, windowArea / 8)) (one window each in \(windowArea) bytes)" : "\(windowArea / 32768) (one 32 KiB window each)")
        }
        let count = Int(h.indexCount)
        let tableLength = count * GzipIndexHeader.entrySize
        let area = try file.readBytes(at: UInt64(h.indexStart), count: Int(h.indexAreaLength))
        var table: [UInt8]
        if compressed {
            table = [UInt8](repeating: 0, count: tableLength)
            if let why = area.withUnsafeBytes({ src in table.withUnsafeMutableBytes { ZlibBuffer.uncompressExactly(src, into: $0) } }) {
                throw GzipError.badEntryTable(path: path, offset: UInt64(h.indexStart), reason: "\(why) (\(count) entries of 29 bytes expected)")
            }
        } else {
            guard area.count == tableLength else {
                throw GzipError.badEntryTable(path: path, offset: UInt64(h.indexStart), reason: "\(area.count) bytes, expected \(count) entries of 29 bytes")
            }
            table = area
        }
        let points = GzipEntryCodec.decode(table)
        try GzipIndex.validate(points, header: h, path: path)
        header = h
        self.points = points
        self.file = file
    }

    static func validate(_ points: [GzipAccessPoint], header h: GzipIndexHeader, path: String) throws {
        let signedLimit = UInt64(Int64.max)
        var nextWindow = UInt64(GzipIndexHeader.size)
        for (i, p) in points.enumerated() {
            func bad(_ why: String) -> GzipError { .badEntry(path: path, entry: i, reason: why) }
            guard p.uncompressedOffset <= signedLimit, p.compressedOffset <= signedLimit, p.windowOffset <= signedLimit else {
                throw bad("negative offset")
            }
            if i == 0, p.uncompressedOffset != 0 { throw bad("the first access point is at uncompressed offset \(p.uncompressedOffset), not 0") }
            guard p.uncompressedOffset <= UInt64(h.uncompressedFileSize) else {
                throw bad("uncompressed offset \(p.uncompressedOffset) is past the uncompressed size \(h.uncompressedFileSize)")
            }
            guard p.compressedOffset <= UInt64(h.gzipFileSize) else {
                throw bad("compressed offset \(p.compressedOffset) is past the gzip size \(h.gzipFileSize)")
            }
            guard p.bits <= 7 else { throw bad("bits \(p.bits) is not 0...7") }
            guard p.bits == 0 || p.compressedOffset >= 1 else { throw bad("bits \(p.bits) at compressed offset 0") }
            if i > 0 {
                let q = points[i - 1]
                guard p.uncompressedOffset >= q.uncompressedOffset else {
                    throw bad("uncompressed offset \(p.uncompressedOffset) is before the previous entry's \(q.uncompressedOffset)")
                }
                guard p.bitPosition > q.bitPosition else {
                    throw bad("compressed position \(p.compressedOffset) (bits \(p.bits)) is not after the previous entry's \(q.compressedOffset) (bits \(q.bits))")
                }
            }
            guard p.windowOffset == nextWindow else {
                throw GzipError.badWindow(path: path, entry: i, offset: p.windowOffset, reason: "windows must follow each other from offset 333; expected offset \(nextWindow)")
            }
            guard p.windowLength > 0, h.dictCompressAlgorithm == 1 || p.windowLength == UInt32(GzipIndexHeader.windowSize) else {
                throw GzipError.badWindow(path: path, entry: i, offset: p.windowOffset, reason: "length \(p.windowLength)")
            }
            nextWindow += UInt64(p.windowLength)
            guard nextWindow <= UInt64(h.indexStart) else {
                throw GzipError.badWindow(path: path, entry: i, offset: p.windowOffset, reason: "length \(p.windowLength) runs into the entry table at \(h.indexStart)")
            }
        }
        guard nextWindow == UInt64(h.indexStart) else {
            throw GzipError.badWindow(path: path, entry: points.count - 1, offset: nextWindow,
                                      reason: "\(UInt64(h.indexStart) - nextWindow) bytes between the last window and the entry table")
        }
    }

    /// The access point whose span holds `offset`: the last with uncompressed offset <= `offset`.
    public func pointIndex(containing offset: UInt64) -> Int {
        var lo = 0, hi = points.count  // invariant: points[lo].uncompressedOffset <= offset
        while hi - lo > 1 {
            let mid = (lo + hi) / 2
            if points[mid].uncompressedOffset <= offset { lo = mid } else { hi = mid }
        }
        return lo
    }

    /// Uncompressed end of the span of point `i` (the next point's offset, or the size).
    public func spanEnd(_ i: Int) -> UInt64 {
        i + 1 < points.count ? points[i + 1].uncompressedOffset : uncompressedSize
    }

    /// Reads and decompresses the 32 KiB window of point `i` into `window`; `scratch` holds
    /// the compressed bytes.
    func loadWindow(_ i: Int, into window: UnsafeMutableRawBufferPointer, scratch: ScratchBuffer) throws {
        let p = points[i]
        let n = Int(p.windowLength)
        if header.dictCompressAlgorithm == 0 {
            try file.readExactly(into: UnsafeMutableRawBufferPointer(rebasing: window[0..<GzipIndexHeader.windowSize]), at: p.windowOffset)
            return
        }
        let buf = scratch.reserve(n)
        let src = UnsafeMutableRawBufferPointer(rebasing: buf[0..<n])
        try file.readExactly(into: src, at: p.windowOffset)
        if let why = ZlibBuffer.uncompressExactly(UnsafeRawBufferPointer(src), into: UnsafeMutableRawBufferPointer(rebasing: window[0..<GzipIndexHeader.windowSize])) {
            throw GzipError.badWindow(path: path, entry: i, offset: p.windowOffset, reason: why)
        }
    }
}
