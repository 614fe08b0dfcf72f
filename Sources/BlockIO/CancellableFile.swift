import Threading

/// A file whose every operation runs under a cancellation token: the reads of one
/// device (or one disk) end when its token is cancelled, even where the file below is
/// shared with others (a cached registry blob).
public final class CancellableFile: BlockFile {
    public let inner: any BlockFile
    public let token: CancellationToken

    public init(_ inner: any BlockFile, token: CancellationToken) {
        self.inner = inner
        self.token = token
    }

    public var size: UInt64 { inner.size }
    public var name: String { inner.name }
    public var isWritable: Bool { inner.isWritable }
    public var mappedBytes: UnsafeRawBufferPointer? { inner.mappedBytes }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        try token.run { try inner.read(into: buffer, at: offset) }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try token.run { try inner.write(buffer, at: offset) }
    }

    public func flush() throws { try token.run { try inner.flush() } }

    public func discard(offset: UInt64, length: UInt64) throws {
        try token.run { try inner.discard(offset: offset, length: length) }
    }

    public func writeZeroes(offset: UInt64, length: UInt64) throws {
        try token.run { try inner.writeZeroes(offset: offset, length: length) }
    }
}
