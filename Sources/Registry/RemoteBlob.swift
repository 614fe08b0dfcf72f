import BlockIO
import Glibc
import Synchronization
import Threading

/// A registry blob seen as a read-only file: every read is an HTTP range request.
/// Identical ranges requested while one is in flight are fetched once: later callers
/// wait for the first and copy its bytes. (The BlockCache module wraps this.)
public final class RemoteBlob: StreamingBlockFile, @unchecked Sendable {
    public let client: RegistryClient
    public let repository: String
    public let digest: String
    public let size: UInt64
    private let inFlight = Mutex<[RangeKey: SharedFetch]>([:])
    /// Reads answered by another caller's identical in-flight request.
    public let coalesced = Atomic<Int>(0)

    public var name: String { client.blobURL(repository: repository, digest: digest) }

    struct RangeKey: Hashable { var offset: UInt64; var count: Int }

    /// One in-flight range and the callers waiting for it.
    /// `waiters`, `bytes` and `failure` are written under the blob's `inFlight` lock, before
    /// `finish()`, and read by waiters only after `wait()` returns.
    final class SharedFetch: @unchecked Sendable {
        var waiters = 0
        var bytes: [UInt8] = []
        var failure: (any Error)?
        private let done = ConditionLock(false)
        func finish() {
            done.withLock { $0 = true }
            done.notifyAll()
        }
        func wait() { done.withLock(when: { $0 }) { _ in } }
    }

    /// - Parameter size: the blob size if known (from config), else asked with HEAD.
    public init(client: RegistryClient, repository: String, digest: String, size: UInt64? = nil) throws {
        self.client = client
        self.repository = repository
        self.digest = digest
        self.size = try size ?? client.blobSize(repository: repository, digest: digest)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        guard offset < size, buffer.count > 0 else { return 0 }
        let n = Int(min(UInt64(buffer.count), size - offset))
        let key = RangeKey(offset: offset, count: n)
        var leader = false
        let shared: SharedFetch = inFlight.withLock { d in
            if let s = d[key] { s.waiters += 1; return s }
            let s = SharedFetch()
            d[key] = s
            leader = true
            return s
        }
        if !leader {
            shared.wait()
            coalesced.add(1, ordering: .relaxed)
            if let f = shared.failure { throw f }
            shared.bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: n) }
            return n
        }
        var failure: (any Error)?
        do {
            let got = try client.readBlob(repository: repository, digest: digest, offset: offset,
                                          into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
            if got != n { failure = BlockIOError.truncated(name: name, offset: offset, wanted: n, got: got) }
        } catch {
            failure = error
        }
        inFlight.withLock { d in
            d.removeValue(forKey: key)
            if shared.waiters > 0 {
                shared.failure = failure
                if failure == nil { shared.bytes = Array(UnsafeRawBufferPointer(rebasing: buffer[0..<n])) }
            }
        }
        shared.finish()
        if let failure { throw failure }
        return n
    }

    /// Streams a range straight from the registry (not coalesced with identical reads:
    /// the cache above already fetches each unit once).
    public func stream(at offset: UInt64, count: Int, into deliver: (UnsafeRawBufferPointer) throws -> Void) throws -> Int {
        guard offset < size, count > 0 else { return 0 }
        let n = Int(min(UInt64(count), size - offset))
        let got = try client.streamBlob(repository: repository, digest: digest, offset: offset, count: n, deliver)
        guard got == n else { throw BlockIOError.truncated(name: name, offset: offset, wanted: n, got: got) }
        return got
    }
}
