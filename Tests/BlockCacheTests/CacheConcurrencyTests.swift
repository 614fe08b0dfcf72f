@testable import BlockCache
import BlockIO
import Glibc
import Synchronization
import Testing
import TestSupport
import Threading

@Suite("Block cache: lock-free hits, accounting")
struct CacheConcurrencyTests {
    /// Hits take no lock; evictions racing them must never let a reader see the zeros
    /// an eviction punches into the data file.
    @Test func hitsRacingEvictionsAlwaysReturnTheBlobsBytes() throws {
        let dir = TemporaryDirectory("obd-cache")
        defer { dir.remove() }
        let bytes = BlockCacheTests.blob(1 << 20, seed: 77)
        let cache = try BlockCache(directory: dir.path, capacity: 1 << 30, refillSize: 64 * 1024)
        cache.readahead = 0
        let f = try cache.open(key: "sha256:race", upstream: SlowFile(bytes))
        _ = try f.readBytes(at: 0, count: bytes.count)
        let span = 512 * 1024
        let stop = Atomic<Bool>(false)
        let wrong = Atomic<Int>(0), reads = Atomic<Int>(0)
        var readers: [JoinHandle] = []
        for t in 0..<4 {
            readers.append(try NamedThread.spawn(name: "hit-\(t)") {
                var r = SplitMix64(seed: UInt64(t + 1))
                while !stop.load(ordering: .relaxed) {
                    // Large reads: a long copy out of the data file widens the window an
                    // eviction can hit.
                    let off = Int(r.next() % UInt64(bytes.count - span))
                    if let got = try? f.readBytes(at: UInt64(off), count: span), got[...] == bytes[off..<(off + span)] {} else {
                        wrong.add(1, ordering: .relaxed)
                    }
                    reads.add(1, ordering: .relaxed)
                }
            })
        }
        for _ in 0..<2000 {
            f.invalidate()
            // Let the readers refill, so the next eviction meets fast-path copies.
            _ = try f.readBytes(at: 0, count: 4096)
            _ = try f.readBytes(at: UInt64(bytes.count - 4096), count: 4096)
        }
        stop.store(true, ordering: .relaxed)
        for r in readers { r.join() }
        #expect(reads.load(ordering: .relaxed) > 0)
        #expect(wrong.load(ordering: .relaxed) == 0)
    }

    /// An eviction between a hit's presence check and its copy: the reader must notice
    /// and read again through a refill, never return the punched-out zeros.
    @Test func evictionBetweenPresenceCheckAndCopyIsNoticed() throws {
        let dir = TemporaryDirectory("obd-cache")
        defer { dir.remove() }
        let bytes = BlockCacheTests.blob(1 << 20, seed: 78)
        let cache = try BlockCache(directory: dir.path, capacity: 1 << 30, refillSize: 64 * 1024)
        cache.readahead = 0
        let up = SlowFile(bytes)
        let f = try cache.open(key: "sha256:window", upstream: up)
        _ = try f.readBytes(at: 0, count: bytes.count)
        let fetchesBefore = up.reads.load(ordering: .relaxed)
        let struck = Atomic<Bool>(false)
        f.afterPresenceCheck = { if !struck.exchange(true, ordering: .relaxed) { f.invalidate() } }
        #expect(try f.readBytes(at: 100_000, count: 200_000)[...] == bytes[100_000..<300_000])
        f.afterPresenceCheck = nil
        let didStrike = struck.load(ordering: .relaxed)
        #expect(didStrike)
        #expect(up.reads.load(ordering: .relaxed) > fetchesBefore, "the retry refilled from upstream")
    }

    /// The last unit of a blob is usually short: usage counts its true size.
    @Test func usageCountsTheLastUnitAtItsTrueSize() throws {
        let dir = TemporaryDirectory("obd-cache")
        defer { dir.remove() }
        let n = 300 * 1024
        let bytes = BlockCacheTests.blob(n, seed: 5)
        do {
            let cache = try BlockCache(directory: dir.path, capacity: 1 << 30, refillSize: 256 * 1024)
            let f = try cache.open(key: "sha256:short", upstream: SlowFile(bytes))
            #expect(try f.readBytes(at: 0, count: n) == bytes)
            #expect(cache.usage == UInt64(n))
            try f.flush()
        }
        // Rebuilt from the presence map at start: the same figure.
        let again = try BlockCache(directory: dir.path, capacity: 1 << 30, refillSize: 256 * 1024)
        #expect(again.usage == UInt64(n))
    }

    /// Above the high-water mark eviction runs in the background; a refill that takes
    /// usage over the capacity itself evicts before the read returns.
    @Test func evictionKeepsUsageUnderCapacity() throws {
        let dir = TemporaryDirectory("obd-cache")
        defer { dir.remove() }
        let cache = try BlockCache(directory: dir.path, capacity: 2 << 20, refillSize: 64 * 1024)
        cache.readahead = 0
        var files: [CachedFile] = []
        for i in 0..<8 {
            let b = BlockCacheTests.blob(1 << 20, seed: UInt64(200 + i))
            let f = try cache.open(key: "sha256:e\(i)", upstream: SlowFile(b))
            #expect(try f.readBytes(at: 0, count: b.count) == b)
            #expect(cache.usage <= 2 << 20, "usage \(cache.usage) after blob \(i)")
            files.append(f)
        }
    }
}

/// An upstream with a fixed number of connections (like a registry host's 16): reads
/// from background threads hold their connection until the gate opens.
final class ConnectionLimitedFile: BlockFile, Sendable {
    let inner: MemoryFile
    let connections: ConditionLock<(free: Int, open: Bool, heldByBackground: Int)>
    init(_ bytes: [UInt8], connections n: Int) {
        inner = MemoryFile(bytes: bytes, name: "limited", writable: false)
        connections = ConditionLock((n, false, 0))
    }
    var size: UInt64 { inner.size }
    var name: String { "limited" }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        let background = WorkPriority.current == .background
        connections.withLock(when: { $0.free > 0 }) { c in
            c.free -= 1
            if background { c.heldByBackground += 1 }
        }
        connections.notifyAll()
        if background { connections.withLock(when: { $0.open }) { _ in } }
        defer {
            connections.withLock { c in
                c.free += 1
                if background { c.heldByBackground -= 1 }
            }
            connections.notifyAll()
        }
        return try inner.read(into: buffer, at: offset)
    }
}

extension CacheConcurrencyTests {
    /// 32 prefetch threads stuck on a slow upstream may take only their share of its
    /// connections: a foreground miss still gets one at once.
    @Test func foregroundMissesNeverQueueBehindPrefetch() throws {
        let dir = TemporaryDirectory("obd-cache")
        defer { dir.remove() }
        let bytes = BlockCacheTests.blob(8 << 20, seed: 91)
        let up = ConnectionLimitedFile(bytes, connections: 16)
        let cache = try BlockCache(directory: dir.path, capacity: 1 << 30, refillSize: 64 * 1024)
        cache.readahead = 0
        let f = try cache.open(key: "sha256:prio", upstream: up)
        var prefetchers: [JoinHandle] = []
        for i in 0..<32 {
            prefetchers.append(try NamedThread.spawn(name: "prefetch-\(i)") {
                WorkPriority.background { try? f.prefetch(UInt64(i) * 65536..<UInt64(i + 1) * 65536) }
            })
        }
        // Background work holds what it may of the connections...
        let held = up.connections.withLock(when: { $0.heldByBackground >= BlockCache.backgroundFetchShare },
                                           deadline: monotonicSeconds() + 30) { $0.heldByBackground }
        #expect(held == BlockCache.backgroundFetchShare)
        // ...and a foreground miss elsewhere completes while all of it is stuck.
        let done = ConditionLock<[UInt8]?>(nil)
        let reader = try NamedThread.spawn(name: "foreground") {
            let got = try? f.readBytes(at: 6 << 20, count: 4096)
            done.withLock { $0 = got ?? [] }
            done.notifyAll()
        }
        let got = done.withLock(when: { $0 != nil }, deadline: monotonicSeconds() + 20) { $0! }
        let stillHeld = up.connections.withLock { $0.heldByBackground }
        up.connections.withLock { $0.open = true }
        up.connections.notifyAll()
        reader.join()
        for p in prefetchers { p.join() }
        #expect(got.map { $0[...] == bytes[(6 << 20)..<((6 << 20) + 4096)] } == true, "the foreground read waited behind prefetch")
        #expect(stillHeld <= BlockCache.backgroundFetchShare)
        #expect(try f.readBytes(at: 0, count: 32 * 65536)[...] == bytes[0..<(32 * 65536)])
    }
}
