import BlockIO
import Dispatch
import Synchronization

/// Options of the ZFile writer.
public struct ZFileOptions: Sendable {
    public var algorithm: ZFileAlgorithm = .lz4
    /// 4, 8, 16, 32 or 64 KiB.
    public var blockSize: Int = 4096
    /// Append a CRC32C to every block (every overlaybd tool does).
    public var verify: Bool = true
    /// Compression threads; output is byte-identical for any count.
    public var threads: Int = 1
    /// Rewrite the header with the final index fields at the end (`overlaybd-commit -z`).
    public var overwriteHeader: Bool = false
    /// Write blocks larger than overlaybd's 64 KiB read window instead of failing.
    public var allowOversizedBlocks: Bool = false

    public init(algorithm: ZFileAlgorithm = .lz4, blockSize: Int = 4096, verify: Bool = true, threads: Int = 1,
                overwriteHeader: Bool = false, allowOversizedBlocks: Bool = false) {
        self.algorithm = algorithm
        self.blockSize = blockSize
        self.verify = verify
        self.threads = threads
        self.overwriteHeader = overwriteHeader
        self.allowOversizedBlocks = allowOversizedBlocks
    }

    public static let allowedBlockSizes = [4096, 8192, 16384, 32768, 65536]
}

/// Writes a ZFile front to back: the uncompressed bytes are appended, blocks are
/// compressed (on several threads if asked) and written in order, and `finish()`
/// writes the jump table, the trailer and, if asked, the rewritten header.
public final class ZFileWriter: AppendSink {
    /// Largest stored block overlaybd's reader accepts.
    public static let overlaybdMaxStoredBlock = 65536

    public let options: ZFileOptions
    public let output: any BlockFile
    public let base: UInt64
    private let sink: FileAppendSink
    private let batchBlocks: Int
    private let input: UnsafeMutableRawBufferPointer
    private var inputUsed = 0
    private var consumed: UInt64 = 0
    private var lengths: [UInt32] = []
    private let compressors: [BlockCodec.Compressor]
    private let bound: Int
    private let staging: UnsafeMutableRawBufferPointer
    private var stagedLengths: [Int]
    private var finished = false
    /// Blocks written larger than overlaybd's limit (only with `allowOversizedBlocks`).
    public private(set) var oversizedBlocks = 0

    /// - Parameters:
    ///   - output: the file to write; the ZFile starts at `base` (1536 inside a tar wrapper).
    public init(output: any BlockFile, base: UInt64 = 0, options: ZFileOptions) throws {
        guard ZFileOptions.allowedBlockSizes.contains(options.blockSize) else {
            throw ZFileError.invalidOption("block size \(options.blockSize) (allowed: 4, 8, 16, 32, 64 KiB)")
        }
        guard options.threads >= 1, options.threads <= 256 else {
            throw ZFileError.invalidOption("thread count \(options.threads) (allowed: 1...256)")
        }
        self.options = options
        self.output = output
        self.base = base
        sink = FileAppendSink(file: output, start: base, syncOnFinish: false)
        batchBlocks = options.threads == 1 ? 16 : options.threads * 16
        input = .allocate(byteCount: batchBlocks * options.blockSize, alignment: 4096)
        bound = BlockCodec.compressBound(options.algorithm, blockSize: options.blockSize)
        staging = .allocate(byteCount: batchBlocks * (bound + 4), alignment: 64)
        stagedLengths = [Int](repeating: 0, count: batchBlocks)
        compressors = (0..<options.threads).map { _ in BlockCodec.Compressor(options.algorithm) }
        let header = startHeader().serialize()
        try header.withUnsafeBytes { try sink.append($0) }
    }

    deinit {
        input.deallocate()
        staging.deallocate()
    }

    /// Uncompressed bytes appended so far.
    public var position: UInt64 { consumed + UInt64(inputUsed) }

    /// Size of the ZFile written (valid after `finish()`).
    public private(set) var compressedSize: UInt64 = 0

    private func startHeader() -> ZFileHeader {
        var h = ZFileHeader()
        h.flags = [.isHeader, .isDataFile, .digest]
        h.blockSize = UInt32(options.blockSize)
        h.algorithmByte = options.algorithm.rawValue
        h.verify = options.verify
        return h
    }

    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        precondition(!finished, "append after finish")
        var src = bytes
        while !src.isEmpty {
            let n = min(src.count, input.count - inputUsed)
            (input.baseAddress! + inputUsed).copyMemory(from: src.baseAddress!, byteCount: n)
            inputUsed += n
            src = UnsafeRawBufferPointer(rebasing: src[n...])
            if inputUsed == input.count { try compressBatch() }
        }
    }

    /// Compresses the buffered input (all whole blocks plus, at the end, the short one).
    private func compressBatch() throws {
        guard inputUsed > 0 else { return }
        let bs = options.blockSize
        let blocks = (inputUsed + bs - 1) / bs
        let stride = bound + 4
        let threads = min(options.threads, blocks)
        let verify = options.verify
        let used = inputUsed
        let input = self.input
        let staging = self.staging
        let compressors = self.compressors
        let failure = ErrorBox()
        stagedLengths.withUnsafeMutableBufferPointer { lens in
            let job = CompressionJob(input: input, used: used, blockSize: bs, blocks: blocks, threads: threads,
                                     staging: staging, stride: stride, bound: bound, verify: verify,
                                     compressors: compressors, lengths: lens, failure: failure)
            if threads == 1 { job.run(worker: 0) } else { DispatchQueue.concurrentPerform(iterations: threads) { job.run(worker: $0) } }
        }
        if let error = failure.error { throw error }
        for i in 0..<blocks {
            let n = stagedLengths[i]
            if n > ZFileWriter.overlaybdMaxStoredBlock {
                if !options.allowOversizedBlocks {
                    throw ZFileError.blockTooLarge(block: lengths.count, storedLength: n)
                }
                oversizedBlocks += 1
            }
            try sink.append(UnsafeRawBufferPointer(rebasing: staging[(i * stride)..<(i * stride + n)]))
            lengths.append(UInt32(n))
        }
        consumed += UInt64(used)
        inputUsed = 0
    }

    public func finish() throws {
        precondition(!finished, "finish called twice")
        finished = true
        try compressBatch()
        let indexOffset = sink.position
        var index = lengths.map { $0.littleEndian }
        let indexCRC = index.withUnsafeBytes { CRC32C.raw($0) }
        try index.withUnsafeBytes { try sink.append($0) }
        index = []
        var trailer = startHeader()
        trailer.flags = [.isDataFile, .sealed, .digest]
        trailer.indexOffset = indexOffset
        trailer.indexSize = UInt64(lengths.count)
        trailer.originalFileSize = consumed
        trailer.indexCRC = indexCRC
        try trailer.serialize().withUnsafeBytes { try sink.append($0) }
        try sink.finish()
        compressedSize = sink.position
        if options.overwriteHeader {
            var h = trailer
            h.flags = [.isHeader, .isDataFile, .headerOverwrite, .digest]
            try output.writeBytes(h.serialize(), at: base)
        }
    }
}

/// Collects the first error thrown by a worker thread.
final class ErrorBox: Sendable {
    private let first = Mutex<(any Error)?>(nil)
    var error: (any Error)? { first.withLock { $0 } }
    func set(_ e: any Error) { first.withLock { if $0 == nil { $0 = e } } }
}

/// One batch of blocks to compress; worker `w` takes blocks w, w+threads, ...
/// Every worker writes only its own blocks' slots, so sharing the buffers is safe.
private struct CompressionJob: @unchecked Sendable {
    let input: UnsafeMutableRawBufferPointer
    let used: Int
    let blockSize: Int
    let blocks: Int
    let threads: Int
    let staging: UnsafeMutableRawBufferPointer
    let stride: Int
    let bound: Int
    let verify: Bool
    let compressors: [BlockCodec.Compressor]
    let lengths: UnsafeMutableBufferPointer<Int>
    let failure: ErrorBox

    func run(worker w: Int) {
        var i = w
        while i < blocks {
            let lo = i * blockSize
            let src = UnsafeRawBufferPointer(rebasing: input[lo..<min(lo + blockSize, used)])
            let dst = UnsafeMutableRawBufferPointer(rebasing: staging[(i * stride)..<(i * stride + bound)])
            do {
                var n = try compressors[w].compress(src, into: dst)
                if verify {
                    let crc = CRC32C.raw(UnsafeRawBufferPointer(rebasing: dst[0..<n]), seed: CRC32C.blockSeed)
                    staging.storeBytes(of: crc.littleEndian, toByteOffset: i * stride + n, as: UInt32.self)
                    n += 4
                }
                lengths[i] = n
            } catch {
                failure.set(error)
            }
            i += threads
        }
    }
}
