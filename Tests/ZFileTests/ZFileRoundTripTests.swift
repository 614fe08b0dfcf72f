import BlockIO
import Testing
import TestSupport
import ZFile

/// Mixed data: random, zeros, text — so blocks compress very differently.
func mixedData(_ count: Int, seed: UInt64) -> [UInt8] {
    var g = SplitMix64(seed: seed)
    var out = [UInt8]()
    out.reserveCapacity(count)
    while out.count < count {
        let kind = g.next() % 3
        let n = min(count - out.count, Int(g.next() % 20_000) + 1)
        switch kind {
        case 0: out += g.bytes(n)
        case 1: out += [UInt8](repeating: 0, count: n)
        default: out += Array(String(repeating: "obd zfile round trip ", count: n / 21 + 1).utf8.prefix(n))
        }
    }
    return out
}

func compress(_ data: [UInt8], _ options: ZFileOptions, base: UInt64 = 0) throws -> MemoryFile {
    let out = MemoryFile()
    let w = try ZFileWriter(output: out, base: base, options: options)
    // Feed in uneven pieces so block boundaries fall inside appends.
    var off = 0
    var g = SplitMix64(seed: UInt64(data.count))
    while off < data.count {
        let n = min(data.count - off, Int(g.next() % 70_000) + 1)
        try data[off..<(off + n)].withUnsafeBytes { try w.append($0) }
        off += n
    }
    try w.finish()
    return out
}

@Suite("ZFile round trips")
struct ZFileRoundTripTests {
    static let settings: [(ZFileAlgorithm, Int, Bool)] = {
        var s: [(ZFileAlgorithm, Int, Bool)] = []
        for a in ZFileAlgorithm.allCases { for kib in [4, 8, 16, 32, 64] { for v in [true, false] { s.append((a, kib, v)) } } }
        return s
    }()

    @Test("random data through every setting reads back bit-exactly", arguments: 0..<20)
    func roundTrip(setting: Int) throws {
        let (alg, kib, verify) = Self.settings[setting]
        let data = mixedData(700_001 + setting * 4099, seed: UInt64(setting))
        let opts = ZFileOptions(algorithm: alg, blockSize: kib * 1024, verify: verify, threads: 1 + setting % 3,
                                overwriteHeader: setting % 2 == 0, allowOversizedBlocks: true)
        let file = try compress(data, opts)
        let r = try ZFileReader(source: file)
        #expect(r.size == UInt64(data.count))
        #expect(r.algorithm == alg && r.blockSize == kib * 1024 && r.verify == verify)
        var whole = [UInt8](repeating: 0, count: data.count)
        _ = try whole.withUnsafeMutableBytes { try r.read(into: $0, at: 0) }
        #expect(whole == data)
        var g = SplitMix64(seed: 99)
        for _ in 0..<200 {
            let off = Int(g.next() % UInt64(data.count))
            let len = Int(g.next() % 150_000) + 1
            var buf = [UInt8](repeating: 0, count: len)
            let n = try buf.withUnsafeMutableBytes { try r.read(into: $0, at: UInt64(off)) }
            #expect(n == min(len, data.count - off))
            #expect(buf[0..<n] == data[off..<(off + n)])
        }
        // Reads at and past the end.
        var one = [UInt8](repeating: 0, count: 1)
        #expect(try one.withUnsafeMutableBytes { try r.read(into: $0, at: UInt64(data.count)) } == 0)
    }

    @Test("thread count never changes the output bytes")
    func threadsIdentical() throws {
        let data = mixedData(2_000_000, seed: 3)
        for alg in ZFileAlgorithm.allCases {
            let one = try compress(data, ZFileOptions(algorithm: alg, threads: 1)).bytes
            for t in [2, 4, 7] {
                #expect(try compress(data, ZFileOptions(algorithm: alg, threads: t)).bytes == one)
            }
        }
    }

    @Test("empty input makes a valid empty ZFile")
    func empty() throws {
        let f = try compress([], ZFileOptions())
        let r = try ZFileReader(source: f)
        #expect(r.size == 0)
    }

    @Test("header rewrite sets flags 0x1B and the index fields; without it the header keeps zeros")
    func headerRewrite() throws {
        let data = mixedData(100_000, seed: 8)
        let a = try ZFileReader(source: compress(data, ZFileOptions(overwriteHeader: true)))
        #expect(a.header.flags.rawValue == 0x1B && a.header.indexSize == a.record.indexSize)
        let b = try ZFileReader(source: compress(data, ZFileOptions()))
        #expect(b.header.flags.rawValue == 0x13 && b.header.indexSize == 0)
        #expect(b.record.flags.rawValue == 0x16)
    }

    @Test("a tar-wrapped ZFile unwraps and reads back")
    func tarRoundTrip() throws {
        let data = mixedData(300_000, seed: 11)
        let out = try compress(data, ZFileOptions(), base: TarWrapper.payloadOffset)
        let zsize = out.size - TarWrapper.payloadOffset
        try TarWrapper.wrap(output: out, payloadSize: zsize)
        #expect(out.size % 512 == 0)
        let payload = try #require(try TarWrapper.unwrap(out))
        let r = try ZFileReader(source: payload)
        #expect(try r.readBytes(at: 0, count: data.count) == data)
    }

    @Test("bad writer options are refused", arguments: [1000, 2048, 131072])
    func badOptions(bs: Int) {
        #expect(throws: ZFileError.self) { try ZFileWriter(output: MemoryFile(), options: ZFileOptions(blockSize: bs)) }
    }
}
