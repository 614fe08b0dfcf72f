import BlockIO
import Glibc
import Testing
import TestSupport
@testable import Gzip

/// Indexes that do not match their blob, and broken gzip streams: each must end in a
/// clear GzipError, never in wrong bytes or a crash.
@Suite(.serialized) struct GzipHostileTests {
    let gz: [UInt8]
    let plain: [UInt8]
    let index: [UInt8]

    init() throws {
        let c = GzipFixtures.shared.cases.first { $0.name == "gzip-1" }!
        gz = try contents(c.gz)
        plain = try contents(c.plain)
        index = try GzipIndexWriter.build(gzip: MemoryFile(bytes: gz, writable: false), options: .init(span: 65536))
    }

    func blob(_ b: [UInt8]? = nil) -> MemoryFile { MemoryFile(bytes: b ?? gz, name: "blob.gz", writable: false) }
    func ixFile(_ b: [UInt8]) -> MemoryFile { MemoryFile(bytes: b, name: "blob.gz.idx", writable: false) }

    /// The header with `edit` applied and the CRC recomputed.
    func patched(_ b: [UInt8], _ edit: (inout [UInt8]) -> Void) -> [UInt8] {
        var b = b
        edit(&b)
        let crc = CRC32C.raw(0, b[0..<329])
        putLE(&b, 329, UInt64(crc), 4)
        return b
    }

    /// Re-encodes the index with other entries and windows (areas re-laid out).
    func rebuilt(points: [GzipAccessPoint], windows: [[UInt8]]) throws -> [UInt8] {
        var body = [UInt8]()
        var pts = points
        for k in pts.indices {
            let w = try windows[k].withUnsafeBytes { try ZlibBuffer.compress($0, level: 6) }
            pts[k].windowOffset = UInt64(333 + body.count)
            pts[k].windowLength = UInt32(w.count)
            body += w
        }
        let table = try GzipEntryCodec.encode(pts).withUnsafeBytes { try ZlibBuffer.compress($0, level: 6) }
        var h = GzipIndexHeader(decoding: index[0..<333])
        h.indexCount = Int64(pts.count)
        h.indexStart = Int64(333 + body.count)
        h.indexAreaLength = Int64(table.count)
        h.indexFileSize = h.indexStart + h.indexAreaLength
        return h.encoded() + body + table
    }

    func parsed() throws -> (GzipIndex, [[UInt8]]) {
        let ix = try GzipIndex(file: ixFile(index))
        return (ix, try Independent.parse(index).windows)
    }

    func expectError(_ body: () throws -> Void, _ matches: (GzipError) -> Bool, _ comment: Comment) {
        do {
            try body()
            Issue.record("no error: \(comment)")
        } catch let e as GzipError {
            #expect(matches(e), "\(comment): \(e)")
            #expect(!e.description.isEmpty)
        } catch {
            Issue.record("\(comment): not a GzipError: \(error)")
        }
    }

    @Test func headerDamage() throws {
        expectError({ _ = try GzipIndex(file: ixFile(Array(index[0..<200]))) }, { if case .indexTooShort = $0 { true } else { false } }, "short")
        var b = index
        b[0] = UInt8(ascii: "x")
        expectError({ _ = try GzipIndex(file: ixFile(b)) }, { if case .badMagic = $0 { true } else { false } }, "magic")
        b = index
        b[100] ^= 1
        expectError({ _ = try GzipIndex(file: ixFile(b)) }, { if case .headerChecksumMismatch = $0 { true } else { false } }, "crc")
        let fields: [(Int, UInt64, Int, String)] = [(8, 2, 1, "major_version"), (10, 3, 1, "dict_compress_algo"), (13, 4096, 4, "span"),
                                                     (17, 65536, 4, "window"), (21, 28, 4, "index_size"), (25, 1 << 40, 8, "index_num")]
        for (off, v, n, name) in fields {
            let p = patched(index) { putLE(&$0, off, v, n) }
            expectError({ _ = try GzipIndex(file: ixFile(p)) }, { if case .badHeaderField(_, let f, let o, _, _) = $0 { f == name && o == off } else { false } }, "\(name)")
        }
    }

    @Test func sizesThatDoNotMatch() throws {
        // index_file_size, a truncated index, index_area_len, gzip_file_size against the blob.
        var p = patched(index) { putLE(&$0, 41, UInt64($0.count + 1), 8) }
        expectError({ _ = try GzipIndex(file: ixFile(p)) }, { if case .sizeMismatch(_, "index_file_size", 41, _, _) = $0 { true } else { false } }, "index_file_size")
        expectError({ _ = try GzipIndex(file: ixFile(Array(index.dropLast()))) }, { if case .sizeMismatch(_, "index_file_size", _, _, _) = $0 { true } else { false } }, "truncated index")
        p = patched(index) { putLE(&$0, 321, getLE($0[...], 321, 8) - 1, 8) }
        expectError({ _ = try GzipIndex(file: ixFile(p)) }, { if case .sizeMismatch(_, "index_area_len", _, _, _) = $0 { true } else { false } }, "index_area_len")
        p = patched(index) { putLE(&$0, 33, UInt64(gz.count + 10), 8) }
        expectError({ _ = try GzipFile(blob: blob(), indexFile: ixFile(p)) }, { if case .sizeMismatch(_, "gzip_file_size", 33, _, _) = $0 { true } else { false } }, "gzip_file_size")
        expectError({ _ = try GzipFile(blob: blob(Array(gz.dropLast(5))), indexFile: ixFile(index)) }, { if case .sizeMismatch = $0 { true } else { false } }, "truncated blob")
        // An uncompressed size larger than the stream: the read past the real end fails.
        p = patched(index) { putLE(&$0, 49, UInt64(plain.count + 5000), 8) }
        let f = try GzipFile(blob: blob(), indexFile: ixFile(p))
        var buf = [UInt8](repeating: 0, count: 4096)
        expectError({ _ = try buf.withUnsafeMutableBytes { try f.read(into: $0, at: UInt64(plain.count + 1000)) } }, { if case .indexMismatch = $0 { true } else { false } }, "size past the end")
        expectError({ try f.verifyAll() }, { if case .indexMismatch = $0 { true } else { false } }, "verifyAll size past the end")
        // The entry table compressed to fewer entries than index_num says.
        let (ix, windows) = try parsed()
        let short = try rebuilt(points: Array(ix.points.dropLast()), windows: Array(windows.dropLast()))
        p = patched(short) { putLE(&$0, 25, UInt64(ix.points.count), 8) }
        expectError({ _ = try GzipIndex(file: ixFile(p)) }, { if case .badEntryTable = $0 { true } else { false } }, "entry count")
    }

    @Test func entriesOutOfOrderOrMisplaced() throws {
        let (ix, windows) = try parsed()
        #expect(ix.points.count > 10)
        var pts = ix.points
        pts.swapAt(3, 4)
        var w = windows
        w.swapAt(3, 4)
        expectError({ _ = try GzipIndex(file: ixFile(try rebuilt(points: pts, windows: w))) }, { if case .badEntry(_, 4, _) = $0 { true } else { false } }, "swapped")
        pts = ix.points
        pts[5].compressedOffset = UInt64(gz.count + 1)
        expectError({ _ = try GzipIndex(file: ixFile(try rebuilt(points: pts, windows: windows))) }, { if case .badEntry(_, 5, _) = $0 { true } else { false } }, "past the blob")
        pts = ix.points
        pts[0].uncompressedOffset = 7
        expectError({ _ = try GzipIndex(file: ixFile(try rebuilt(points: pts, windows: windows))) }, { if case .badEntry(_, 0, _) = $0 { true } else { false } }, "first not at 0")
        pts = ix.points
        pts[2].bits = 9
        expectError({ _ = try GzipIndex(file: ixFile(try rebuilt(points: pts, windows: windows))) }, { if case .badEntry(_, 2, _) = $0 { true } else { false } }, "bits")
        // Windows not laid out one after another.
        var raw = index
        let table = try Independent.zlibUncompress(raw[Int(ix.header.indexStart)...], size: ix.points.count * 29)
        var t = table
        putLE(&t, 2 * 29 + 16, getLE(t[...], 2 * 29 + 16, 8) + 1, 8)
        let area = try t.withUnsafeBytes { try ZlibBuffer.compress($0, level: 6) }
        raw = Array(raw[0..<Int(ix.header.indexStart)]) + area
        raw = patched(raw) { putLE(&$0, 321, UInt64(area.count), 8); putLE(&$0, 41, UInt64($0.count), 8) }
        expectError({ _ = try GzipIndex(file: ixFile(raw)) }, { if case .badWindow(_, 2, _, _) = $0 { true } else { false } }, "window placement")
        // The first point not where the deflate data starts.
        pts = ix.points
        pts[0].compressedOffset += 1
        expectError({ _ = try GzipFile(blob: blob(), indexFile: ixFile(try rebuilt(points: pts, windows: windows))) },
                    { if case .indexMismatch(_, 0, _, _) = $0 { true } else { false } }, "first point")
        // A point moved off its block boundary: caught when the span before it is read.
        pts = ix.points
        pts[6].compressedOffset += 1
        let moved = try GzipFile(blob: blob(), indexFile: ixFile(try rebuilt(points: pts, windows: windows)))
        var buf = [UInt8](repeating: 0, count: 4096)
        expectError({ _ = try buf.withUnsafeMutableBytes { try moved.read(into: $0, at: pts[5].uncompressedOffset) } },
                    { if case .indexMismatch(_, 6, _, _) = $0 { true } else { false } }, "moved point")
        expectError({ try moved.verifyAll() }, { if case .indexMismatch = $0 { true } else { false } }, "moved point, verifyAll")
        // A point's uncompressed offset shifted: the span before it ends off the boundary.
        pts = ix.points
        pts[7].uncompressedOffset -= 10
        let shifted = try GzipFile(blob: blob(), indexFile: ixFile(try rebuilt(points: pts, windows: windows)))
        expectError({ _ = try buf.withUnsafeMutableBytes { try shifted.read(into: $0, at: pts[6].uncompressedOffset) } },
                    { if case .indexMismatch(_, 7, _, _) = $0 { true } else { false } }, "shifted point")
    }

    @Test func windowsThatDoNotMatch() throws {
        let (ix, windows) = try parsed()
        var w = windows
        w[4][1000] ^= 0x55
        let f = try GzipFile(blob: blob(), indexFile: ixFile(try rebuilt(points: ix.points, windows: w)))
        var buf = [UInt8](repeating: 0, count: 4096)
        expectError({ _ = try buf.withUnsafeMutableBytes { try f.read(into: $0, at: ix.points[3].uncompressedOffset + 10) } },
                    { if case .badWindow(_, 4, _, _) = $0 { true } else { false } }, "window")
        expectError({ try f.verifyAll() }, { if case .badWindow(_, 4, _, _) = $0 { true } else { false } }, "window, verifyAll")
        // A window that does not decompress to 32 KiB.
        w = windows
        w[2] = Array(w[2][0..<1000])
        let g = try GzipFile(blob: blob(), indexFile: ixFile(try rebuilt(points: ix.points, windows: w)))
        expectError({ _ = try buf.withUnsafeMutableBytes { try g.read(into: $0, at: ix.points[2].uncompressedOffset) } },
                    { if case .badWindow(_, 2, _, let why) = $0 { why.contains("1000") } else { false } }, "short window")
        // The index of another blob of another size.
        let other = try GzipIndexWriter.build(gzip: MemoryFile(bytes: try contents(GzipFixtures.shared.cases[1].gz), writable: false))
        expectError({ _ = try GzipFile(blob: blob(), indexFile: ixFile(other)) }, { if case .sizeMismatch = $0 { true } else { false } }, "other blob")
    }

    @Test func brokenGzipStreams() throws {
        func build(_ b: [UInt8]) throws { _ = try GzipIndexWriter.build(gzip: MemoryFile(bytes: b, name: "x.gz", writable: false)) }
        expectError({ try build(Array(gz.dropLast(100))) }, { if case .truncatedStream = $0 { true } else { false } }, "truncated")
        expectError({ try build(Array(gz[0..<gz.count / 2])) }, { if case .truncatedStream = $0 { true } else { false } }, "half")
        expectError({ try build([]) }, { if case .corruptStream(_, 0, _) = $0 { true } else { false } }, "empty")
        expectError({ try build(Array("not gzip at all".utf8)) }, { if case .corruptStream = $0 { true } else { false } }, "not gzip")
        var bad = gz
        for k in 0..<64 { bad[gz.count / 2 + k] ^= 0xA5 }
        expectError({ try build(bad) }, { if case .corruptStream = $0 { true } else { false } }, "corrupt middle")
        expectError({ try build(gz + Array("garbage".utf8)) }, { if case .trailingGarbage(_, let o) = $0 { o == UInt64(gz.count) } else { false } }, "garbage")
        // Zero padding after the last member is tolerated (as gzip -dc does).
        let padded = try GzipIndexWriter.build(gzip: MemoryFile(bytes: gz + [UInt8](repeating: 0, count: 1000), writable: false))
        #expect(try Independent.parse(padded).uncompressSize == Int64(plain.count))
        // A corrupted blob read through the index of the good one: errors, not bytes.
        let f = try GzipFile(blob: blob(bad), indexFile: ixFile(index))
        expectError({ try f.verifyAll() }, { _ in true }, "corrupt blob, verifyAll")
        let at = UInt64(gz.count / 2)
        let (ix, _) = try parsed()
        let i = ix.points.lastIndex { $0.compressedOffset <= at }!
        var buf = [UInt8](repeating: 0, count: 4096)
        let g = try GzipFile(blob: blob(bad), indexFile: ixFile(index))
        expectError({ _ = try buf.withUnsafeMutableBytes { try g.read(into: $0, at: ix.points[i].uncompressedOffset) } }, { _ in true }, "corrupt span")
    }
}
