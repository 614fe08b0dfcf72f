import BlockIO
import Testing
import TestSupport
import ZFile

/// Reading and writing against the files the real overlaybd tools produced.
@Suite("ZFile against overlaybd's reference files", .enabled(if: ReferenceFiles.shouldRun))
struct ZFileReferenceTests {
    static let inputHash = "8e01102586485a0d1369adf2e3ae3f6de559502a8c5dec307dd731d578260e32"

    static let stored: [(file: String, algorithm: ZFileAlgorithm, kib: Int, verify: Bool)] = [
        ("zfile-lz4-bs4.zfile", .lz4, 4, true),
        ("zfile-zstd-bs4.zfile", .zstd, 4, true),
        ("zfile-zstd-bs16.zfile", .zstd, 16, true),
        ("zfile-lz4-bs32.zfile", .lz4, 32, true),
        ("zfile-lz4-bs64.zfile", .lz4, 64, true),
        ("zfile-lz4-bs4-nocrc.zfile", .lz4, 4, false),
    ]

    @Test("CRC32C is the raw variant: test vectors")
    func crcVectors() {
        let s = Array("123456789".utf8)
        #expect(CRC32C.raw(s) == 0x58E3_FA20)
        #expect(CRC32C.raw(s, seed: CRC32C.blockSeed) == 0x3C9B_D4E0)
        #expect(CRC32C.raw([UInt8](repeating: 0, count: 100)) == 0)
    }

    @Test("every stored ZFile decompresses to zfile-input.bin", arguments: stored.map(\.file))
    func decompress(name: String) throws {
        let reader = try ZFileReader(source: LocalFile(path: ReferenceFiles.path("zfile/" + name)))
        #expect(reader.size == 3_158_073)
        let hash = try Digest.sha256(size: reader.size, chunk: 1 << 20) { try reader.read(into: $0, at: $1) }
        #expect(hash == Self.inputHash)
    }

    @Test("random reads of every stored ZFile match the input", arguments: stored.map(\.file))
    func randomReads(name: String) throws {
        let input = try LocalFile(path: ReferenceFiles.path("zfile/zfile-input.bin")).readBytes(at: 0, count: 3_158_073)
        let reader = try ZFileReader(source: LocalFile(path: ReferenceFiles.path("zfile/" + name)))
        var g = SplitMix64(seed: 5)
        for _ in 0..<300 {
            let off = Int(g.next() % UInt64(input.count))
            let len = Int(g.next() % 200_000) + 1
            var buf = [UInt8](repeating: 0xAA, count: len)
            let n = try buf.withUnsafeMutableBytes { try reader.read(into: $0, at: UInt64(off)) }
            #expect(n == min(len, input.count - off))
            #expect(buf[0..<n] == input[off..<(off + n)])
        }
    }

    @Test("the writer reproduces each stored ZFile byte for byte (1 and 3 threads)", arguments: stored.map(\.file), [1, 3])
    func reproduce(name: String, threads: Int) throws {
        let spec = Self.stored.first { $0.file == name }!
        let input = try LocalFile(path: ReferenceFiles.path("zfile/zfile-input.bin")).readBytes(at: 0, count: 3_158_073)
        let expected = try LocalFile(path: ReferenceFiles.path("zfile/" + name))
        let out = MemoryFile()
        let w = try ZFileWriter(output: out, options: ZFileOptions(algorithm: spec.algorithm, blockSize: spec.kib * 1024,
                                                                   verify: spec.verify, threads: threads,
                                                                   allowOversizedBlocks: spec.kib == 64))
        try input.withUnsafeBytes { try w.append($0) }
        try w.finish()
        #expect(out.bytes == (try expected.readBytes(at: 0, count: Int(expected.size))))
    }

    @Test("64 KiB blocks that overflow overlaybd's reader are refused unless allowed")
    func oversizedRefused() throws {
        let input = try LocalFile(path: ReferenceFiles.path("zfile/zfile-input.bin")).readBytes(at: 0, count: 3_158_073)
        let w = try ZFileWriter(output: MemoryFile(), options: ZFileOptions(blockSize: 65536))
        #expect(throws: ZFileError.blockTooLarge(block: 0, storedLength: 65798)) {
            try input.withUnsafeBytes { try w.append($0) }
            try w.finish()
        }
    }

    @Test("the 2021 base layer with garbage in reserved header bytes opens and reads")
    func oldBaseLayer() throws {
        let file = try LocalFile(path: ReferenceFiles.path("base/ext4_64"))
        #expect(try ZFileReader.isZFile(file))
        let reader = try ZFileReader(source: file)
        #expect(!reader.header.flags.contains(.digest))
        #expect(reader.size == 541_937_664)
        let hash = try Digest.sha256(size: reader.size) { try reader.read(into: $0, at: $1) }
        #expect(hash == "799dbd74cbcfbd7f37611057130b20fda0e1e671280df97cc3a05d73620d5ac7")
    }

    @Test("the tar-wrapped commit unwraps to the plain ZFile's bytes")
    func tarWrapped() throws {
        let wrapped = try LocalFile(path: ReferenceFiles.path("lsmt/l1/layer1.commit.lz4.zfile.tar"))
        let plain = try LocalFile(path: ReferenceFiles.path("lsmt/l1/layer1.commit.lz4.zfile"))
        let payload = try #require(try TarWrapper.unwrap(wrapped))
        #expect(payload.base == 1536)
        #expect(payload.size == plain.size)
        #expect(try payload.readBytes(at: 0, count: Int(payload.size)) == plain.readBytes(at: 0, count: Int(plain.size)))
        #expect(try TarWrapper.unwrap(plain) == nil)
        // Our wrapper bytes equal overlaybd's.
        let prefix = TarWrapper.prefix(payloadSize: plain.size)
        #expect(prefix == (try wrapped.readBytes(at: 0, count: 1536)))
        let suffix = TarWrapper.suffix(payloadSize: plain.size)
        #expect(1536 + plain.size + UInt64(suffix.count) == wrapped.size)
    }
}
