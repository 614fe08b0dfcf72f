/// A positioned random-access file: the one protocol every obd layer speaks.
///
/// A ZFile is a `BlockFile` over a `BlockFile`; an LSMT stack is a `BlockFile` over many;
/// a registry blob behind the cache is a `BlockFile`. Calls are synchronous and
/// thread-safe with `pread` semantics: concurrent reads never interfere.
public protocol BlockFile: AnyObject, Sendable {
    /// Current size in bytes.
    var size: UInt64 { get }

    /// A short, human-readable name for error messages (usually a path).
    var name: String { get }

    /// Whether `write`, `flush` and `discard` are allowed.
    var isWritable: Bool { get }

    /// Reads up to `buffer.count` bytes at `offset` into `buffer`.
    ///
    /// Returns the number of bytes read: fewer than requested only when the
    /// read reaches the end of the file (zero at or past the end).
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int

    /// Writes all of `buffer` at `offset`.
    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws

    /// Makes every completed write durable.
    func flush() throws

    /// Declares `[offset, offset+length)` unused: it reads back as zeros afterwards.
    func discard(offset: UInt64, length: UInt64) throws

    /// Makes `[offset, offset+length)` read as zeros, durably (unlike `discard`, whose
    /// range may fall back to lower layers). The default writes zero bytes.
    func writeZeroes(offset: UInt64, length: UInt64) throws

    /// The whole file as memory, when it is mapped (read-only local files are), so
    /// readers can decode straight from it without a copy or a system call.
    var mappedBytes: UnsafeRawBufferPointer? { get }
}

extension BlockFile {
    public var isWritable: Bool { false }

    public var mappedBytes: UnsafeRawBufferPointer? { nil }

    public func writeZeroes(offset: UInt64, length: UInt64) throws {
        try writeZeroBuffers(offset: offset, length: length) { try write($0, at: $1) }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        throw BlockIOError.readOnly(name: name)
    }

    public func flush() throws {}

    public func discard(offset: UInt64, length: UInt64) throws {
        throw BlockIOError.readOnly(name: name)
    }

    /// Reads exactly `buffer.count` bytes at `offset`, or throws `truncated`.
    public func readExactly(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        let got = try read(into: buffer, at: offset)
        if got != buffer.count {
            throw BlockIOError.truncated(name: name, offset: offset, wanted: buffer.count, got: got)
        }
    }

    /// Reads exactly `count` bytes at `offset` into a new array (not for hot paths).
    public func readBytes(at offset: UInt64, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try readExactly(into: $0, at: offset) }
        return bytes
    }

    /// Writes an array at `offset` (not for hot paths).
    public func writeBytes(_ bytes: [UInt8], at offset: UInt64) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }
}

/// Writes `length` zero bytes at `offset` through `write`, 1 MiB at a time.
public func writeZeroBuffers(offset: UInt64, length: UInt64,
                             _ write: (UnsafeRawBufferPointer, UInt64) throws -> Void) throws {
    let chunk = 1 << 20
    let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
    defer { zeros.deallocate() }
    zeros.initializeMemory(as: UInt8.self, repeating: 0)
    var done: UInt64 = 0
    while done < length {
        let n = Int(min(UInt64(chunk), length - done))
        try write(UnsafeRawBufferPointer(rebasing: zeros[0..<n]), offset + done)
        done += UInt64(n)
    }
}

extension BlockFile {
    /// Reads the whole file in pieces of `chunk` bytes (one buffer, reused) and hands each
    /// piece with its offset to `body`.
    public func forEachChunk(_ chunk: Int = 4 << 20, _ body: (UnsafeRawBufferPointer, UInt64) throws -> Void) throws {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buf.deallocate() }
        var off: UInt64 = 0
        while off < size {
            let n = Int(min(UInt64(chunk), size - off))
            let part = UnsafeMutableRawBufferPointer(rebasing: buf[0..<n])
            try readExactly(into: part, at: off)
            try body(UnsafeRawBufferPointer(part), off)
            off += UInt64(n)
        }
    }
}
