import BlockIO
import Glibc
import Synchronization
import Testing
import Threading
import TestSupport
@testable import Gzip

@Suite(.serialized) struct GzipIndexTests {
    let fx = GzipFixtures.shared

    @Test func fixturesAreMade() {
        #expect(fx.failures.isEmpty, "\(fx.failures)")
        #expect(fx.cases.count >= 6)
    }

    @Test func crc32cRawVectors() {
        #expect(CRC32C.raw(0, Array("123456789".utf8)) == 0x58E3_FA20)
        #expect(CRC32C.raw(100007, Array("123456789".utf8)) == 0x3C9B_D4E0)
        #expect(Independent.crc32cRaw(0, Array("123456789".utf8)[...]) == 0x58E3_FA20)
    }

    /// Every header field, every entry and every window, read back by the independent
    /// reader, for each maker of gzip files and two spans.
    @Test(arguments: [1 << 20, 65536])
    func everyFieldMatchesTheIndependentReader(span: Int) throws {
        for c in fx.cases {
            let gz = try contents(c.gz)
            let plain = try contents(c.plain)
            let bytes = try GzipIndexWriter.build(gzip: MemoryFile(bytes: gz, name: c.gz, writable: false), options: .init(span: span))
            let ix = try Independent.parse(bytes)
            #expect(ix.magic == Array("ddgzidx".utf8) + [0], "\(c.name)")
            #expect(ix.major == 1 && ix.minor == 0 && ix.algo == 1 && ix.level == 6 && ix.flag == 0, "\(c.name)")
            #expect(ix.span == Int32(span) && ix.window == 32768 && ix.indexSize == 29, "\(c.name)")
            #expect(ix.indexNum == Int64(ix.entries.count), "\(c.name)")
            #expect(ix.gzipFileSize == Int64(gz.count), "\(c.name)")
            #expect(ix.indexFileSize == Int64(bytes.count), "\(c.name)")
            #expect(ix.uncompressSize == Int64(plain.count), "\(c.name)")
            #expect(ix.reserve.allSatisfy { $0 == 0 }, "\(c.name)")
            #expect(ix.indexStart + ix.indexAreaLen == Int64(bytes.count), "\(c.name)")
            #expect(ix.crc == Independent.crc32cRaw(0, bytes[0..<329]), "\(c.name): CRC")
            // Windows follow each other from 333 up to the entry table, each is the 32 KiB
            // before its point (zeros before the stream), and each is zlib's compress2 at
            // level 6 of those bytes.
            var next: Int64 = 333
            for (k, e) in ix.entries.enumerated() {
                #expect(e.winPos == next, "\(c.name) entry \(k)")
                next += Int64(e.winLen)
                let lo = Int(e.dePos) - 32768
                let expected = [UInt8](repeating: 0, count: max(0, -lo)) + plain[max(0, lo)..<Int(e.dePos)]
                #expect(ix.windows[k] == expected, "\(c.name) entry \(k) window")
                let recompressed = try expected.withUnsafeBytes { try ZlibBuffer.compress($0, level: 6) }
                #expect(Array(bytes[Int(e.winPos)..<Int(e.winPos) + Int(e.winLen)]) == recompressed, "\(c.name) entry \(k) window bytes")
            }
            #expect(next == ix.indexStart, "\(c.name)")
            // Points: exactly the digest's rule over zlib's block boundaries.
            let expected = Independent.expectedPoints(try Independent.boundaries(gz), span: Int64(span))
            #expect(ix.entries.map { Independent.Boundary(out: $0.dePos, inPos: $0.enPos, bits: $0.bits) } == expected, "\(c.name) points")
            // Each point really is one: raw inflate from it (digest recipe) gives the data.
            for (k, e) in ix.entries.enumerated() where k % 3 == 0 {
                let want = min(70000, plain.count - Int(e.dePos))
                let got = try Independent.inflateFrom(gz: gz, entry: e, window: ix.windows[k], count: want)
                #expect(got == Array(plain[Int(e.dePos)..<Int(e.dePos) + got.count]) && got.count > 0 || want == 0, "\(c.name) entry \(k) inflates")
            }
            // The module's own reader agrees.
            let parsed = try GzipIndex(file: MemoryFile(bytes: bytes, name: "ix", writable: false), gzipSize: UInt64(gz.count))
            #expect(parsed.points.count == ix.entries.count && parsed.uncompressedSize == UInt64(plain.count))
        }
    }

    @Test func storedDictionariesAreAlgoZero() throws {
        let c = fx.cases[0]
        let gz = try contents(c.gz)
        let bytes = try GzipIndexWriter.build(gzip: MemoryFile(bytes: gz, writable: false), options: .init(compressDictionaries: false))
        let ix = try Independent.parse(bytes)
        #expect(ix.algo == 0 && ix.entries.allSatisfy { $0.winLen == 32768 })
        #expect(ix.indexAreaLen == 29 * ix.indexNum)
        #expect(ix.crc == Independent.crc32cRaw(0, bytes[0..<329]))
        let file = try GzipFile(blob: MemoryFile(bytes: gz, writable: false), indexFile: MemoryFile(bytes: bytes, writable: false))
        try file.verifyAll()
    }

    /// Thousands of random reads through the index equal `gzip -dc`.
    @Test func randomReadsEqualGzipDc() throws {
        var rng = SplitMix64(seed: 7)
        for c in fx.cases {
            let plain = try contents(c.plain)
            let blob = try LocalFile(path: c.gz)
            let ixFile = MemoryFile(name: c.gz + ".gzidx")
            try GzipIndexWriter.write(gzip: blob, to: ixFile)
            for cacheBytes in [32 << 20, 0] {
                let file = try GzipFile(blob: blob, indexFile: ixFile, options: .init(cacheBytes: cacheBytes))
                #expect(file.size == UInt64(plain.count))
                let reads = cacheBytes == 0 ? 300 : 2500
                var buf = [UInt8](repeating: 0, count: 70000)
                for r in 0..<reads {
                    let len = r % 3 == 0 ? 4096 : Int(rng.next() % 70000) + 1
                    let off = Int(rng.next() % UInt64(plain.count + 100))
                    let n = try buf.withUnsafeMutableBytes { try file.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<len]), at: UInt64(off)) }
                    let want = max(0, min(len, plain.count - off))
                    guard n == want, same(buf, 0, plain, min(off, plain.count), want) else {
                        Issue.record("\(c.name): read \(len) at \(off) (cache \(cacheBytes)): got \(n) bytes, want \(want), or different bytes")
                        break
                    }
                }
            }
        }
    }

    @Test func aSecondReadOfASpanDoesNotInflateAgain() throws {
        let c = fx.cases[0]
        let blob = try LocalFile(path: c.gz)
        let ix = MemoryFile()
        try GzipIndexWriter.write(gzip: blob, to: ix)
        let file = try GzipFile(blob: blob, indexFile: ix)
        let i = try #require(file.index.points.indices.dropFirst().first { file.index.spanEnd($0) - file.index.points[$0].uncompressedOffset > 100_000 })
        let at = file.index.points[i].uncompressedOffset
        var buf = [UInt8](repeating: 0, count: 4096)
        _ = try buf.withUnsafeMutableBytes { try file.read(into: $0, at: at + 100) }
        #expect(file.inflationCount == 1)
        _ = try buf.withUnsafeMutableBytes { try file.read(into: $0, at: at + 50_000) }
        #expect(file.inflationCount == 1)
        #expect(file.cache!.hits == 1 && file.cache!.misses == 1)
    }

    @Test func concurrentReadersAgree() throws {
        let c = fx.cases.first { $0.name == "docs-tar" }!
        let plain = try contents(c.plain)
        let blob = try LocalFile(path: c.gz)
        let ix = MemoryFile()
        try GzipIndexWriter.write(gzip: blob, to: ix)
        let file = try GzipFile(blob: blob, indexFile: ix, options: .init(cacheBytes: 4 << 20))
        let bad = Atomic<Int>(0)
        let plainCopy = plain
        try parallelForEach(count: 4, threads: 4) { t in
            var rng = SplitMix64(seed: UInt64(t))
            var buf = [UInt8](repeating: 0, count: 8192)
            for _ in 0..<300 {
                let off = Int(rng.next() % UInt64(plainCopy.count - 8192))
                let n = (try? buf.withUnsafeMutableBytes { try file.read(into: $0, at: UInt64(off)) }) ?? -1
                if n != 8192 || !same(buf, 0, plainCopy, off, 8192) { bad.add(1, ordering: .relaxed) }
            }
        }
        #expect(bad.load(ordering: .relaxed) == 0)
    }

    @Test func verifyAllAcceptsEveryMakersIndex() throws {
        for c in fx.cases {
            let blob = try LocalFile(path: c.gz)
            let ix = MemoryFile()
            try GzipIndexWriter.write(gzip: blob, to: ix, options: .init(span: 65536))
            try GzipFile(blob: blob, indexFile: ix).verifyAll()
        }
    }
}

/// memcmp of two array ranges (fast in debug builds too).
func same(_ a: [UInt8], _ ao: Int, _ b: [UInt8], _ bo: Int, _ n: Int) -> Bool {
    n == 0 || a.withUnsafeBytes { x in b.withUnsafeBytes { y in memcmp(x.baseAddress! + ao, y.baseAddress! + bo, n) == 0 } }
}
