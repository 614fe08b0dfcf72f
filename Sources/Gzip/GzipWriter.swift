import BlockIO
import CZlib

/// Writes one gzip member to a BlockFile, streaming: zlib deflate at `level` (6, Go's
/// and gzip's default), a gzip header with no name and mtime 0, so the same input always
/// gives the same bytes. `write` appends; `finish` ends the member and returns its size.
public final class GzipWriter {
    let output: any BlockFile
    private let strm: UnsafeMutablePointer<z_stream>
    private let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 18, alignment: 16)
    private var at: UInt64
    private var finished = false

    /// A member written into `output` from `offset`.
    public init(output: any BlockFile, offset: UInt64 = 0, level: Int32 = 6) throws(GzipError) {
        self.output = output
        at = offset
        strm = .allocate(capacity: 1)
        strm.initialize(to: z_stream())
        let rc = obd_deflateInit2(strm, level, 16 + 15)
        guard rc == Z_OK else {
            strm.deallocate()
            out.deallocate()
            throw .zlib(operation: "deflateInit2", code: rc)
        }
    }

    deinit {
        deflateEnd(strm)
        strm.deallocate()
        out.deallocate()
    }

    /// Compresses `bytes`.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count > 0 else { return }
        try run(bytes, flush: Z_NO_FLUSH)
    }

    /// Compresses `bytes`.
    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Ends the member; returns the offset just past it.
    @discardableResult
    public func finish() throws -> UInt64 {
        guard !finished else { return at }
        finished = true
        try run(UnsafeRawBufferPointer(start: nil, count: 0), flush: Z_FINISH)
        return at
    }

    private func run(_ input: UnsafeRawBufferPointer, flush: Int32) throws {
        strm.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        strm.pointee.avail_in = uInt(input.count)
        while true {
            strm.pointee.next_out = out.baseAddress!.assumingMemoryBound(to: Bytef.self)
            strm.pointee.avail_out = uInt(out.count)
            let rc = deflate(strm, flush)
            guard rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR else { throw GzipError.zlib(operation: "deflate", code: rc) }
            let n = out.count - Int(strm.pointee.avail_out)
            if n > 0 {
                try output.write(UnsafeRawBufferPointer(rebasing: out[0..<n]), at: at)
                at += UInt64(n)
            }
            if flush == Z_FINISH { if rc == Z_STREAM_END { return } } else if strm.pointee.avail_in == 0 && strm.pointee.avail_out > 0 { return }
        }
    }
}
