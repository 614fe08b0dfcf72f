import BlockIO
import CLZ4
import CZstd
import Threading

/// Compresses and decompresses single ZFile blocks: raw LZ4 block format, or one
/// complete zstd frame per block at level 3 (what overlaybd writes).
public enum BlockCodec {
    /// The zstd level overlaybd hard-codes.
    public static let zstdLevel: Int32 = 3

    /// Largest compressed size of one `blockSize` block.
    public static func compressBound(_ algorithm: ZFileAlgorithm, blockSize: Int) -> Int {
        switch algorithm {
        case .lz4: return Int(LZ4_compressBound(Int32(blockSize)))
        case .zstd: return ZSTD_compressBound(blockSize)
        }
    }

    /// A compressor owned by one thread at a time (it keeps a zstd context).
    public final class Compressor {
        public let algorithm: ZFileAlgorithm
        private let cctx: OpaquePointer?

        public init(_ algorithm: ZFileAlgorithm) {
            self.algorithm = algorithm
            cctx = algorithm == .zstd ? ZSTD_createCCtx() : nil
        }

        deinit { if let cctx { ZSTD_freeCCtx(cctx) } }

        /// Compresses `src` into `dst` (at least `compressBound` bytes); returns the length.
        public func compress(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer) throws -> Int {
            switch algorithm {
            case .lz4:
                let n = LZ4_compress_default(
                    src.baseAddress!.assumingMemoryBound(to: CChar.self),
                    dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                    Int32(src.count), Int32(dst.count))
                if n <= 0 { throw ZFileError.invalidOption("LZ4 compression failed") }
                return Int(n)
            case .zstd:
                let n = ZSTD_compressCCtx(cctx, dst.baseAddress, dst.count, src.baseAddress, src.count, BlockCodec.zstdLevel)
                if ZSTD_isError(n) != 0 {
                    throw ZFileError.invalidOption("zstd compression failed: \(String(cString: ZSTD_getErrorName(n)))")
                }
                return n
            }
        }
    }

    private final class DecompressContext {
        let dctx: OpaquePointer? = ZSTD_createDCtx()
        deinit { ZSTD_freeDCtx(dctx) }
    }

    private static let contexts = ThreadLocal { DecompressContext() }

    /// Decompresses one block into `dst`; returns the decoded length or nil if the
    /// block is corrupt. `dst.count` is the expected size; a block decoding to more fails.
    @inline(__always)
    public static func decompress(_ algorithm: ZFileAlgorithm, _ src: UnsafeRawBufferPointer,
                                  into dst: UnsafeMutableRawBufferPointer, dictionary: Dictionary? = nil) -> Int? {
        switch algorithm {
        case .lz4:
            let n: Int32
            if let dictionary, let d = dictionary.bytes.baseAddress {
                n = LZ4_decompress_safe_usingDict(
                    src.baseAddress!.assumingMemoryBound(to: CChar.self),
                    dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                    Int32(src.count), Int32(dst.count),
                    d.assumingMemoryBound(to: CChar.self), Int32(dictionary.bytes.count))
            } else {
                n = LZ4_decompress_safe(
                    src.baseAddress!.assumingMemoryBound(to: CChar.self),
                    dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                    Int32(src.count), Int32(dst.count))
            }
            return n < 0 ? nil : Int(n)
        case .zstd:
            let ctx = contexts.value
            let n: Int
            if let dictionary, let ddict = dictionary.zstd {
                n = ZSTD_decompress_usingDDict(ctx.dctx, dst.baseAddress, dst.count, src.baseAddress, src.count, ddict)
            } else {
                n = ZSTD_decompressDCtx(ctx.dctx, dst.baseAddress, dst.count, src.baseAddress, src.count)
            }
            return ZSTD_isError(n) != 0 ? nil : n
        }
    }

    /// A decompression dictionary stored in a ZFile (`use_dict`). obd never writes one.
    public final class Dictionary: @unchecked Sendable {
        let bytes: UnsafeMutableRawBufferPointer
        let zstd: OpaquePointer?

        init(_ data: [UInt8], algorithm: ZFileAlgorithm) {
            bytes = .allocate(byteCount: data.count, alignment: 16)
            bytes.copyBytes(from: data)
            zstd = algorithm == .zstd ? ZSTD_createDDict(bytes.baseAddress, bytes.count) : nil
        }

        deinit {
            if let zstd { ZSTD_freeDDict(zstd) }
            bytes.deallocate()
        }
    }
}
