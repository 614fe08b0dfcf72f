import BlockIO
import Synchronization

/// A disk's I/O counters, as `GET /v1/disks/{id}/stats` reports them.
public struct DiskStats: Sendable, Equatable, Codable {
    public var reads = 0
    public var readBytes = 0
    public var writes = 0
    public var writeBytes = 0
    public var flushes = 0
    public var discards = 0
    public var writeZeroes = 0
    /// Requests that failed (an I/O error was returned to the guest).
    public var errors = 0
    /// vhost-user front-end connections served so far (0 for NBD).
    public var sessions = 0
    /// Disks that share this disk's lowers, itself included.
    public var lowersSharedBy = 0

    public init() {}
}

/// Counts a disk's requests on the way to its file, with atomics (no lock on the data path).
final class CountingFile: BlockFile, Sendable {
    let inner: any BlockFile
    private let reads = Atomic<Int>(0), readBytes = Atomic<Int>(0)
    private let writes = Atomic<Int>(0), writeBytes = Atomic<Int>(0)
    private let flushes = Atomic<Int>(0), discards = Atomic<Int>(0), zeroes = Atomic<Int>(0)
    private let errors = Atomic<Int>(0)

    init(_ inner: any BlockFile) { self.inner = inner }

    var size: UInt64 { inner.size }
    var name: String { inner.name }
    var isWritable: Bool { inner.isWritable }
    var mappedBytes: UnsafeRawBufferPointer? { nil }

    @inline(__always)
    private func counted<R>(_ counter: borrowing Atomic<Int>, _ body: () throws -> R) throws -> R {
        counter.add(1, ordering: .relaxed)
        do { return try body() } catch {
            errors.add(1, ordering: .relaxed)
            throw error
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        let n = try counted(reads) { try inner.read(into: buffer, at: offset) }
        readBytes.add(n, ordering: .relaxed)
        return n
    }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try counted(writes) { try inner.write(buffer, at: offset) }
        writeBytes.add(buffer.count, ordering: .relaxed)
    }

    func flush() throws { try counted(flushes) { try inner.flush() } }
    func discard(offset: UInt64, length: UInt64) throws { try counted(discards) { try inner.discard(offset: offset, length: length) } }
    func writeZeroes(offset: UInt64, length: UInt64) throws { try counted(zeroes) { try inner.writeZeroes(offset: offset, length: length) } }

    /// The counters now (each read on its own: a snapshot, not a transaction).
    var snapshot: DiskStats {
        var s = DiskStats()
        s.reads = reads.load(ordering: .relaxed)
        s.readBytes = readBytes.load(ordering: .relaxed)
        s.writes = writes.load(ordering: .relaxed)
        s.writeBytes = writeBytes.load(ordering: .relaxed)
        s.flushes = flushes.load(ordering: .relaxed)
        s.discards = discards.load(ordering: .relaxed)
        s.writeZeroes = zeroes.load(ordering: .relaxed)
        s.errors = errors.load(ordering: .relaxed)
        return s
    }
}
