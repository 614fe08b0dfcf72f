/// A sequential byte sink: where writers that produce a file front to back put their bytes.
///
/// LSMT commit writes into any sink; `obd commit -z` hands it a ZFile writer.
public protocol AppendSink: AnyObject {
    /// Bytes appended so far.
    var position: UInt64 { get }
    /// Appends bytes at `position`.
    func append(_ bytes: UnsafeRawBufferPointer) throws
    /// Completes the output (writes trailers, flushes buffers). Call once.
    func finish() throws
}

/// Appends to a `BlockFile` through a buffer, so small appends cost no system call each.
public final class FileAppendSink: AppendSink {
    public let file: any BlockFile
    private let start: UInt64
    private var written: UInt64 = 0
    private var buffer: UnsafeMutableRawBufferPointer
    private var used = 0
    private let syncOnFinish: Bool

    /// - Parameters:
    ///   - start: file offset of the first appended byte.
    ///   - syncOnFinish: fsync the file in `finish()`.
    public init(file: any BlockFile, start: UInt64 = 0, bufferSize: Int = 1 << 20, syncOnFinish: Bool = true) {
        self.file = file
        self.start = start
        self.syncOnFinish = syncOnFinish
        buffer = .allocate(byteCount: bufferSize, alignment: 4096)
    }

    deinit { buffer.deallocate() }

    public var position: UInt64 { written + UInt64(used) }

    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        var src = bytes
        while !src.isEmpty {
            if used == 0 && src.count >= buffer.count {
                try file.write(src, at: start + written)
                written += UInt64(src.count)
                return
            }
            let n = min(src.count, buffer.count - used)
            (buffer.baseAddress! + used).copyMemory(from: src.baseAddress!, byteCount: n)
            used += n
            src = UnsafeRawBufferPointer(rebasing: src[n...])
            if used == buffer.count { try drain() }
        }
    }

    private func drain() throws {
        guard used > 0 else { return }
        try file.write(UnsafeRawBufferPointer(rebasing: buffer[0..<used]), at: start + written)
        written += UInt64(used)
        used = 0
    }

    public func finish() throws {
        try drain()
        if syncOnFinish { try file.flush() }
    }
}
