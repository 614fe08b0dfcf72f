import CZlib
import Glibc

/// A reader of "ddgzidx" files written for the tests from formats/Gzip.md and the
/// reference digest, sharing no code with the Gzip module (its own CRC, parsing and
/// zlib calls), plus an independent list of deflate block boundaries of a gzip stream.
enum Independent {
    struct Entry: Equatable {
        var dePos: Int64, enPos: Int64, winPos: Int64, bits: UInt8, winLen: UInt32
    }

    struct Index {
        var bytes: [UInt8]
        var magic: [UInt8]
        var major: UInt8, minor: UInt8, algo: UInt8, level: Int8, flag: UInt8
        var span: Int32, window: Int32, indexSize: Int32
        var indexNum: Int64, gzipFileSize: Int64, indexFileSize: Int64, uncompressSize: Int64
        var reserve: [UInt8]
        var indexStart: Int64, indexAreaLen: Int64
        var crc: UInt32
        var entries: [Entry]
        /// Each entry's window, decompressed.
        var windows: [[UInt8]]
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    static func le(_ b: [UInt8], _ o: Int, _ n: Int) -> UInt64 {
        (0..<n).reduce(UInt64(0)) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) }
    }

    /// Bitwise CRC-32C, register from `seed`, no inversion.
    static func crc32cRaw(_ seed: UInt32, _ data: ArraySlice<UInt8>) -> UInt32 {
        var crc = seed
        for byte in data {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        }
        return crc
    }

    static func zlibUncompress(_ src: ArraySlice<UInt8>, size: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        var len = uLongf(size)
        let s = Array(src)
        let rc = out.withUnsafeMutableBufferPointer { o in s.withUnsafeBufferPointer { i in uncompress(o.baseAddress, &len, i.baseAddress, uLong(s.count)) } }
        guard rc == Z_OK, len == uLongf(size) else { throw Failure(description: "uncompress rc \(rc) len \(len) wanted \(size)") }
        return out
    }

    static func parse(_ b: [UInt8]) throws -> Index {
        guard b.count >= 333 else { throw Failure(description: "short") }
        let algo = b[10]
        let num = Int64(bitPattern: le(b, 25, 8))
        let start = Int64(bitPattern: le(b, 313, 8)), areaLen = Int64(bitPattern: le(b, 321, 8))
        let area = b[Int(start)..<Int(start + areaLen)]
        let table = algo == 1 ? try zlibUncompress(area, size: Int(num) * 29) : Array(area)
        var entries = [Entry]()
        var windows = [[UInt8]]()
        for k in 0..<Int(num) {
            let o = k * 29
            let e = Entry(dePos: Int64(bitPattern: le(table, o, 8)), enPos: Int64(bitPattern: le(table, o + 8, 8)),
                          winPos: Int64(bitPattern: le(table, o + 16, 8)), bits: table[o + 24], winLen: UInt32(le(table, o + 25, 4)))
            entries.append(e)
            let w = b[Int(e.winPos)..<Int(e.winPos) + Int(e.winLen)]
            windows.append(algo == 1 ? try zlibUncompress(w, size: 32768) : Array(w))
        }
        return Index(bytes: b, magic: Array(b[0..<8]), major: b[8], minor: b[9], algo: algo, level: Int8(bitPattern: b[11]), flag: b[12],
                     span: Int32(bitPattern: UInt32(le(b, 13, 4))), window: Int32(bitPattern: UInt32(le(b, 17, 4))),
                     indexSize: Int32(bitPattern: UInt32(le(b, 21, 4))), indexNum: num,
                     gzipFileSize: Int64(bitPattern: le(b, 33, 8)), indexFileSize: Int64(bitPattern: le(b, 41, 8)),
                     uncompressSize: Int64(bitPattern: le(b, 49, 8)), reserve: Array(b[57..<313]),
                     indexStart: start, indexAreaLen: areaLen, crc: UInt32(le(b, 329, 4)), entries: entries, windows: windows)
    }

    struct Boundary: Equatable { var out: Int64, inPos: Int64, bits: UInt8 }

    /// Every deflate block boundary of a (multi-member) gzip stream, by zlib's Z_BLOCK:
    /// the position after each gzip header and after each end-of-block code that does not
    /// end a member.
    static func boundaries(_ gz: [UInt8]) throws -> [Boundary] {
        var out = [Boundary]()
        var strm = z_stream()
        guard inflateInit2_(&strm, 47, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else { throw Failure(description: "init") }
        defer { inflateEnd(&strm) }
        var sink = [UInt8](repeating: 0, count: 1 << 16)
        var pos = 0
        var total: Int64 = 0
        try gz.withUnsafeBufferPointer { g in
            while pos < gz.count {
                strm.next_in = UnsafeMutablePointer(mutating: g.baseAddress! + pos)
                strm.avail_in = uInt(gz.count - pos)
                var rc: Int32 = Z_OK
                repeat {
                    rc = sink.withUnsafeMutableBufferPointer { s in
                        strm.next_out = s.baseAddress
                        strm.avail_out = uInt(s.count)
                        let r = CZlib.inflate(&strm, Z_BLOCK)
                        total += Int64(s.count - Int(strm.avail_out))
                        return r
                    }
                    guard rc == Z_OK || rc == Z_STREAM_END else { throw Failure(description: "inflate \(rc)") }
                    if rc == Z_OK, strm.data_type & 128 != 0, strm.data_type & 64 == 0 {
                        out.append(Boundary(out: total, inPos: Int64(gz.count - Int(strm.avail_in)), bits: UInt8(strm.data_type & 7)))
                    }
                } while rc != Z_STREAM_END
                pos = gz.count - Int(strm.avail_in)
                inflateReset(&strm)
                if pos + 1 < gz.count, gz[pos] != 0x1F || gz[pos + 1] != 0x8B { break }
            }
        }
        return out
    }

    /// The access points the digest prescribes: the first boundary, then for each multiple
    /// m of the span crossed by a later boundary, the last boundary at or before m.
    static func expectedPoints(_ bs: [Boundary], span: Int64) -> [Boundary] {
        guard let first = bs.first else { return [] }
        var points = [first]
        var m = span
        var candidate = first
        for b in bs.dropFirst() {
            while b.out > m {
                if candidate != points.last! { points.append(candidate) }
                m += span
            }
            candidate = b
        }
        return points
    }

    /// Inflates from one entry with raw zlib, as the digest's read recipe says, and
    /// returns `count` bytes (fewer at the end of the member).
    static func inflateFrom(gz: [UInt8], entry e: Entry, window: [UInt8], count: Int) throws -> [UInt8] {
        var strm = z_stream()
        guard inflateInit2_(&strm, -15, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else { throw Failure(description: "init") }
        defer { inflateEnd(&strm) }
        if e.bits > 0 { inflatePrime(&strm, Int32(e.bits), Int32(gz[Int(e.enPos) - 1] >> (8 - e.bits))) }
        if e.dePos > 0 { _ = window.withUnsafeBufferPointer { inflateSetDictionary(&strm, $0.baseAddress, 32768) } }
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        gz.withUnsafeBufferPointer { g in
            out.withUnsafeMutableBufferPointer { o in
                strm.next_in = UnsafeMutablePointer(mutating: g.baseAddress! + Int(e.enPos))
                strm.avail_in = uInt(gz.count - Int(e.enPos))
                strm.next_out = o.baseAddress
                strm.avail_out = uInt(count)
                _ = CZlib.inflate(&strm, Z_NO_FLUSH)
                got = count - Int(strm.avail_out)
            }
        }
        return Array(out[0..<got])
    }
}
