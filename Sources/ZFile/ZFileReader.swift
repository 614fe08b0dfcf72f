import BlockIO
import Threading

/// Reads a ZFile as the uncompressed file it holds. Decompresses only the blocks a
/// read touches; whole blocks decode straight into the caller's buffer.
///
/// Thread-safe: concurrent reads use per-thread scratch buffers and decoder contexts.
public final class ZFileReader: BlockFile, @unchecked Sendable {
    public let source: any BlockFile
    /// The record the geometry came from (the rewritten header, or the trailer).
    public let record: ZFileHeader
    /// The header at offset 0.
    public let header: ZFileHeader
    public let blockSize: Int
    public let algorithm: ZFileAlgorithm
    public let verify: Bool
    public let table: JumpTable
    private let originalSize: UInt64
    private let dictionary: BlockCodec.Dictionary?
    private let maxStored: Int
    /// The source's bytes when it is memory-mapped: blocks decode straight from it.
    private let mapped: UnsafeRawBufferPointer?

    /// Upper bound on compressed bytes fetched by one underlying read.
    public static let readWindow = 1 << 20
    /// Largest index overlaybd accepts.
    public static let maxIndexSize: UInt64 = 1_000_000_000

    private static let scratch = ThreadLocal { ScratchBuffer(capacity: readWindow + 2 * 65536 + 1024) }

    public var size: UInt64 { originalSize }
    public var name: String { source.name }

    /// Whether `file` starts with a ZFile header. A header whose digest flag is set but
    /// whose digest is wrong is an error, not "not a ZFile" (as in overlaybd).
    public static func isZFile(_ file: any BlockFile) throws -> Bool {
        var buf = [UInt8](repeating: 0, count: ZFileHeader.recordSize)
        let n = try buf.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
        let ok = buf.withUnsafeBytes { ZFileHeader.hasMagic(UnsafeRawBufferPointer(rebasing: $0[0..<min(n, 24)])) }
        guard ok else { return false }
        guard n == ZFileHeader.recordSize else {
            throw ZFileError.corrupt(name: file.name, detail: "file is shorter than a ZFile header (\(n) bytes)")
        }
        let h = try buf.withUnsafeBytes { try ZFileHeader.parse($0, name: file.name) }
        guard h.flags.contains(.isHeader) else { return false }
        if h.flags.contains(.digest) && !h.digestMatches {
            throw ZFileError.checksum(name: file.name, detail: "header digest")
        }
        return true
    }

    public init(source: any BlockFile) throws {
        self.source = source
        let name = source.name
        let fileSize = source.size
        guard fileSize >= UInt64(ZFileHeader.recordSize) else {
            throw ZFileError.corrupt(name: name, detail: "file is shorter than a ZFile header (\(fileSize) bytes)")
        }
        let headerBytes = try source.readBytes(at: 0, count: ZFileHeader.recordSize)
        let header = try headerBytes.withUnsafeBytes { try ZFileHeader.parse($0, name: name) }
        guard header.flags.contains(.isHeader) else {
            throw ZFileError.corrupt(name: name, detail: "the record at offset 0 is not a header")
        }
        if header.flags.contains(.digest) && !header.digestMatches {
            throw ZFileError.checksum(name: name, detail: "header digest does not match")
        }
        self.header = header

        var record = header
        var indexLimit = fileSize
        if !header.flags.contains(.headerOverwrite) {
            guard fileSize >= UInt64(2 * ZFileHeader.recordSize) else {
                throw ZFileError.corrupt(name: name, detail: "no room for a trailer (file is \(fileSize) bytes)")
            }
            let trailerOffset = fileSize - UInt64(ZFileHeader.recordSize)
            let trailerBytes = try source.readBytes(at: trailerOffset, count: ZFileHeader.recordSize)
            let trailer: ZFileHeader
            do {
                trailer = try trailerBytes.withUnsafeBytes { try ZFileHeader.parse($0, name: name) }
            } catch ZFileError.notZFile {
                throw ZFileError.corrupt(name: name, detail: "trailer magic is missing (truncated file?)")
            }
            guard !trailer.flags.contains(.isHeader), trailer.flags.contains(.isDataFile), trailer.flags.contains(.sealed) else {
                throw ZFileError.corrupt(name: name, detail: "trailer flags 0x\(String(trailer.flags.rawValue, radix: 16)) are not those of a sealed data trailer")
            }
            // overlaybd never checks the trailer digest; obd does when the trailer
            // claims one, so a flipped trailer bit cannot go unnoticed.
            if trailer.flags.contains(.digest) && !trailer.digestMatches {
                throw ZFileError.checksum(name: name, detail: "trailer digest does not match")
            }
            record = trailer
            indexLimit = trailerOffset
        }
        self.record = record

        guard let algorithm = record.algorithm else {
            throw ZFileError.unsupported(name: name, detail: "compression algorithm \(record.algorithmByte)\(record.algorithmByte == 0 ? " (mini-LZO)" : "")")
        }
        self.algorithm = algorithm
        let bs = Int(record.blockSize)
        guard bs >= 512, bs <= 65536, bs & (bs - 1) == 0 else {
            throw ZFileError.corrupt(name: name, detail: "block size \(bs) is not a power of two between 512 and 65536")
        }
        blockSize = bs
        verify = record.verify
        if record.flags.contains(.indexCompression) {
            throw ZFileError.unsupported(name: name, detail: "compressed jump table (flag bit 5)")
        }
        let dictSize = UInt64(record.dictSize)
        let dataStart = UInt64(ZFileHeader.recordSize) + dictSize
        guard dataStart <= indexLimit else {
            throw ZFileError.corrupt(name: name, detail: "dictionary size \(dictSize) exceeds the file")
        }
        if record.useDict != 0 {
            guard dictSize > 0, dictSize <= 16 << 20 else {
                throw ZFileError.unsupported(name: name, detail: "dictionary of \(dictSize) bytes")
            }
            let dictBytes = try source.readBytes(at: UInt64(ZFileHeader.recordSize), count: Int(dictSize))
            let dict = BlockCodec.Dictionary(dictBytes, algorithm: algorithm)
            if algorithm == .zstd && dict.zstd == nil {
                throw ZFileError.unsupported(name: name, detail: "zstd dictionary cannot be loaded")
            }
            dictionary = dict
        } else {
            dictionary = nil
        }

        let n = record.indexSize
        guard n <= ZFileReader.maxIndexSize else {
            throw ZFileError.corrupt(name: name, detail: "index size \(n) exceeds the limit \(ZFileReader.maxIndexSize)")
        }
        originalSize = record.originalFileSize
        let expectedBlocks = originalSize / UInt64(bs) + (originalSize % UInt64(bs) == 0 ? 0 : 1)
        guard expectedBlocks == n else {
            throw ZFileError.corrupt(name: name, detail: "index has \(n) blocks but the original size \(originalSize) needs \(expectedBlocks)")
        }
        guard record.indexOffset >= dataStart, record.indexOffset <= indexLimit,
              4 * n <= indexLimit - record.indexOffset else {
            throw ZFileError.corrupt(name: name, detail: "index [\(record.indexOffset), +\(4 * n)) does not fit in the file (\(fileSize) bytes)")
        }
        var lengths = [UInt32](repeating: 0, count: Int(n))
        try lengths.withUnsafeMutableBytes { try source.readExactly(into: $0, at: record.indexOffset) }
        if record.flags.contains(.digest) {
            let crc = lengths.withUnsafeBytes { CRC32C.raw($0) }
            guard crc == record.indexCRC else {
                throw ZFileError.checksum(name: name, detail: "jump table CRC 0x\(String(crc, radix: 16)) != stored 0x\(String(record.indexCRC, radix: 16))")
            }
        }
        for i in lengths.indices { lengths[i] = UInt32(littleEndian: lengths[i]) }
        let bound = max(BlockCodec.compressBound(.lz4, blockSize: bs), BlockCodec.compressBound(.zstd, blockSize: bs)) + 4
        maxStored = bound
        let minLength: UInt32 = record.verify ? 5 : 1
        table = try lengths.withUnsafeBufferPointer {
            try JumpTable(lengths: $0, blockSize: bs, dataStart: dataStart,
                          minLength: minLength, maxLength: UInt32(bound), name: name)
        }
        mapped = source.mappedBytes
        guard table.offset(Int(n)) == record.indexOffset else {
            throw ZFileError.corrupt(name: name, detail: "blocks end at \(table.offset(Int(n))) but the index starts at \(record.indexOffset)")
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        guard offset < originalSize, buffer.count > 0 else { return 0 }
        let count = Int(min(UInt64(buffer.count), originalSize - offset))
        let bs = UInt64(blockSize)
        var block = Int(offset / bs)
        let last = Int((offset + UInt64(count) - 1) / bs)
        let end = offset + UInt64(count)
        let scratch = ZFileReader.scratch.value
        let window = ZFileReader.readWindow
        let work = scratch.reserve(window + maxStored + blockSize)
        while block <= last {
            let start = table.offset(block)
            var stop = block + 1
            while stop <= last && table.offset(stop + 1) - start <= UInt64(window) { stop += 1 }
            let span = Int(table.offset(stop) - start)
            let compressed: UnsafeRawBufferPointer
            if let mapped {
                guard start + UInt64(span) <= UInt64(mapped.count) else {
                    throw ZFileError.corrupt(name: name, detail: "compressed data truncated at offset \(mapped.count)")
                }
                compressed = UnsafeRawBufferPointer(rebasing: mapped[Int(start)..<(Int(start) + span)])
            } else {
                let area = UnsafeMutableRawBufferPointer(rebasing: work[0..<span])
                let got = try source.read(into: area, at: start)
                guard got == span else {
                    throw ZFileError.corrupt(name: name, detail: "compressed data truncated at offset \(start + UInt64(got))")
                }
                compressed = UnsafeRawBufferPointer(area)
            }
            let decodeArea = UnsafeMutableRawBufferPointer(rebasing: work[span..<(span + blockSize)])
            for i in block..<stop {
                let lo = Int(table.offset(i) - start)
                let hi = Int(table.offset(i + 1) - start)
                var payload = UnsafeRawBufferPointer(rebasing: compressed[lo..<hi])
                if verify {
                    let stored = payload.loadUnaligned(fromByteOffset: payload.count - 4, as: UInt32.self).littleEndian
                    payload = UnsafeRawBufferPointer(rebasing: payload[0..<(payload.count - 4)])
                    guard CRC32C.raw(payload, seed: CRC32C.blockSeed) == stored else {
                        throw ZFileError.badBlock(name: name, block: i, offset: table.offset(i), detail: "CRC mismatch")
                    }
                }
                let blockStart = UInt64(i) * bs
                let blockLen = Int(min(bs, originalSize - blockStart))
                let from = max(offset, blockStart)
                let to = min(end, blockStart + UInt64(blockLen))
                let dstOffset = Int(from - offset)
                if from == blockStart && to == blockStart + UInt64(blockLen) {
                    let dst = UnsafeMutableRawBufferPointer(rebasing: buffer[dstOffset..<(dstOffset + blockLen)])
                    guard BlockCodec.decompress(algorithm, payload, into: dst, dictionary: dictionary) == blockLen else {
                        throw ZFileError.badBlock(name: name, block: i, offset: table.offset(i), detail: "does not decompress to \(blockLen) bytes")
                    }
                } else {
                    let dst = UnsafeMutableRawBufferPointer(rebasing: decodeArea[0..<blockLen])
                    guard BlockCodec.decompress(algorithm, payload, into: dst, dictionary: dictionary) == blockLen else {
                        throw ZFileError.badBlock(name: name, block: i, offset: table.offset(i), detail: "does not decompress to \(blockLen) bytes")
                    }
                    let n = Int(to - from)
                    (buffer.baseAddress! + dstOffset).copyMemory(from: decodeArea.baseAddress! + Int(from - blockStart), byteCount: n)
                }
            }
            block = stop
        }
        return count
    }

    /// Checks every block's CRC (and that it decompresses). Returns the number of blocks.
    @discardableResult
    public func verifyAll() throws -> Int {
        let chunk = 1 << 20
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buf.deallocate() }
        var off: UInt64 = 0
        while off < originalSize {
            _ = try read(into: buf, at: off)
            off += UInt64(chunk)
        }
        return table.blockCount
    }

    /// Stored (compressed, CRC included) length of block `i`.
    public func storedLength(_ i: Int) -> Int { Int(table.offset(i + 1) - table.offset(i)) }
}
