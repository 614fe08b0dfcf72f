import BlockIO
import CLZ4
import CZstd
import Testing
import TestSupport
import ZFile

/// overlaybd never writes dictionary ZFiles, but the format has `use_dict`/`dict_size`.
/// obd reads them; these files are built by hand with each codec's dictionary API.
@Suite("ZFile dictionaries")
struct ZFileDictionaryTests {
    static func build(_ alg: ZFileAlgorithm, data: [UInt8], dict: [UInt8], bs: Int = 4096) -> [UInt8] {
        var h = ZFileHeader()
        h.flags = [.isHeader, .isDataFile, .digest]
        h.blockSize = UInt32(bs)
        h.algorithmByte = alg.rawValue
        h.useDict = 1
        h.dictSize = UInt32(dict.count)
        var out = h.serialize() + dict
        var lengths: [UInt32] = []
        var off = 0
        let cctx = ZSTD_createCCtx()
        defer { ZSTD_freeCCtx(cctx) }
        while off < data.count {
            let n = min(bs, data.count - off)
            var dst = [UInt8](repeating: 0, count: 2 * bs + 1024)
            let c: Int = data[off..<(off + n)].withUnsafeBytes { src in
                dict.withUnsafeBytes { d in
                    dst.withUnsafeMutableBytes { o in
                        if alg == .zstd {
                            return ZSTD_compress_usingDict(cctx, o.baseAddress, o.count, src.baseAddress, n, d.baseAddress, d.count, 3)
                        }
                        let stream = LZ4_createStream()
                        defer { LZ4_freeStream(stream) }
                        LZ4_loadDict(stream, d.baseAddress!.assumingMemoryBound(to: CChar.self), Int32(d.count))
                        return Int(LZ4_compress_fast_continue(stream, src.baseAddress!.assumingMemoryBound(to: CChar.self),
                                                              o.baseAddress!.assumingMemoryBound(to: CChar.self), Int32(n), Int32(o.count), 1))
                    }
                }
            }
            let block = Array(dst[0..<c])
            let crc = CRC32C.raw(block, seed: CRC32C.blockSeed)
            out += block + withUnsafeBytes(of: crc.littleEndian, Array.init)
            lengths.append(UInt32(c + 4))
            off += n
        }
        let index = lengths.flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) }
        var t = h
        t.flags = [.isDataFile, .sealed, .digest]
        t.indexOffset = UInt64(out.count)
        t.indexSize = UInt64(lengths.count)
        t.originalFileSize = UInt64(data.count)
        t.indexCRC = CRC32C.raw(index)
        return out + index + t.serialize()
    }

    @Test("dictionary ZFiles read back", arguments: ZFileAlgorithm.allCases)
    func dictionary(alg: ZFileAlgorithm) throws {
        let text = Array(String(repeating: "overlaybd dictionary block content; ", count: 3000).utf8)
        let dict = Array(text[0..<8192])
        let file = Self.build(alg, data: text, dict: dict)
        let r = try ZFileReader(source: MemoryFile(bytes: file))
        #expect(try r.readBytes(at: 0, count: text.count) == text)
        #expect(try r.readBytes(at: 5000, count: 777)[...] == text[5000..<5777])
    }

    @Test("a dictionary that does not fit, or an unset size, is refused")
    func badDictionary() throws {
        var file = Self.build(.zstd, data: [UInt8](repeating: 1, count: 10000), dict: [UInt8](repeating: 2, count: 100))
        // dict_size past the end of the file, in the trailer (the record the reader uses).
        let t = file.count - 512
        var h = try file[t...].withUnsafeBytes { try ZFileHeader.parse($0, name: "x") }
        h.dictSize = 1 << 30
        file.replaceSubrange(t..<file.count, with: h.serialize())
        #expect(throws: ZFileError.self) { try ZFileReader(source: MemoryFile(bytes: file)) }
        // use_dict with a zero dict_size.
        h.dictSize = 0
        file.replaceSubrange(t..<file.count, with: h.serialize())
        #expect(throws: ZFileError.self) { try ZFileReader(source: MemoryFile(bytes: file)) }
    }
}
