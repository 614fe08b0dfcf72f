import BlockCache
import BlockIO
import Registry
import Dispatch
import Glibc
import Synchronization
import Testing
import TestSupport

/// An upstream that counts reads and can be slow (a stand-in for a registry blob).
final class SlowFile: BlockFile, @unchecked Sendable {
    let inner: MemoryFile
    let delay: UInt32
    let reads = Atomic<Int>(0)
    init(_ bytes: [UInt8], delayMicroseconds: UInt32 = 0) {
        inner = MemoryFile(bytes: bytes, name: "upstream", writable: false)
        delay = delayMicroseconds
    }
    var size: UInt64 { inner.size }
    var name: String { "upstream" }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        reads.add(1, ordering: .relaxed)
        if delay > 0 { usleep(delay) }
        return try inner.read(into: buffer, at: offset)
    }
}

@Suite("Block cache", .serialized)
struct BlockCacheTests {
    static func blob(_ n: Int, seed: UInt64) -> [UInt8] {
        var g = SplitMix64(seed: seed)
        return g.bytes(n)
    }

    @Test("reads through the cache equal upstream; warm ranges cost no upstream read, also after a restart")
    func warmAfterRestart() throws {
        let dir = TemporaryDirectory("obd-cache")
        defer { dir.remove() }
        let bytes = Self.blob(3 << 20 + 777, seed: 1)
        var g = SplitMix64(seed: 2)
        let ranges = (0..<100).map { _ -> (UInt64, Int) in
            let off = g.next() % UInt64(bytes.count)
            return (off, min(Int(g.next() % 100_000) + 1, bytes.count - Int(off)))
        }
        do {
            let cache = try BlockCache(directory: dir.path, capacity: 1 << 30, refillSize: 64 * 1024)
            let up = SlowFile(bytes)
            let f = try cache.open(key: "sha256:aaaa", upstream: up)
            for (off, n) in ranges { #expect(try f.readBytes(at: off, count: n)[...] == bytes[Int(off)..<(Int(off) + n)]) }
            let cold = up.reads.load(ordering: .relaxed)
            #expect(cold > 0)
            for (off, n) in ranges { _ = try f.readBytes(at: off, count: n) }
            #expect(up.reads.load(ordering: .relaxed) == cold, "a warm pass reads nothing upstream")
            try f.flush()
        }
        let cache = try BlockCache(directory: dir.path, capacity: 1 << 30, refillSize: 64 * 1024)
        #expect(cache.usage > 0)
        let up = SlowFile(bytes)
        let f = try cache.open(key: "sha256:aaaa", upstream: up)
        for (off, n) in ranges { #expect(try f.readBytes(at: off, count: n)[...] == bytes[Int(off)..<(Int(off) + n)]) }
        #expect(up.reads.load(ordering: .relaxed) == 0, "after a restart the warm cache makes zero upstream reads")
    }

    @Test("concurrent misses of one unit fetch it once")
    func coalesced() throws {
        let dir = TemporaryDirectory("obd-cache")
        defer { dir.remove() }
        let bytes = Self.blob(1 << 20, seed: 3)
        let cache = try BlockCache(directory: dir.path, capacity: 1 << 30, refillSize: 256 * 1024)
        let up = SlowFile(bytes, delayMicroseconds: 50_000)
        let f = try cache.open(key: "sha256:bbbb", upstream: up)
        let bad = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            let got = try? f.readBytes(at: UInt64(1000 + i * 100), count: 4096)
            if got.map({ $0[...] == bytes[(1000 + i * 100)..<(5096 + i * 100)] }) != true { bad.add(1, ordering: .relaxed) }
        }
        #expect(bad.load(ordering: .relaxed) == 0)
        #expect(up.reads.load(ordering: .relaxed) == 1)
    }

    @Test("the size limit holds: least recently used blobs are evicted")
    func sizeLimit() throws {
        let dir = TemporaryDirectory("obd-cache")
        defer { dir.remove() }
        let cache = try BlockCache(directory: dir.path, capacity: 4 << 20, refillSize: 64 * 1024)
        var blobs: [(CachedFile, [UInt8])] = []
        for i in 0..<6 {
            let bytes = Self.blob(2 << 20, seed: UInt64(10 + i))
            let f = try cache.open(key: "sha256:c\(i)", upstream: SlowFile(bytes))
            #expect(try f.readBytes(at: 0, count: bytes.count) == bytes)
            blobs.append((f, bytes))
            #expect(cache.usage <= 4 << 20 || i == 0, "usage \(cache.usage) after blob \(i)")
        }
        // Evicted blobs read correctly again (fetched anew).
        for (f, bytes) in blobs { #expect(try f.readBytes(at: 12345, count: 50_000)[...] == bytes[12345..<62345]) }
    }

    @Test("registry blobs: a workload three times the cache keeps the disk usage under the limit, bytes exact",
          .enabled(if: LocalRegistry.available || ReferenceFiles.isCI))
    func sizeLimitWithRegistry() throws {
        let reg = try LocalRegistry()
        let blobs = (0..<6).map { Self.blob(2 << 20, seed: UInt64(40 + $0)) }
        let digests = try reg.push(repository: "obd/cache", tag: "v1", layers: blobs)
        let client = RegistryClient(host: reg.host, options: RegistryOptions(plainHTTP: true))
        let dir = TemporaryDirectory("obd-cache")
        defer { dir.remove() }
        let capacity: UInt64 = 4 << 20
        let cache = try BlockCache(directory: dir.path, capacity: capacity, refillSize: 64 * 1024)
        let files = try zip(digests, blobs).map { d, b in
            try cache.open(key: d, upstream: RemoteBlob(client: client, repository: "obd/cache", digest: d, size: UInt64(b.count)))
        }
        var g = SplitMix64(seed: 99)
        var maxOnDisk: UInt64 = 0
        for step in 0..<600 {
            let i = Int(g.next() % 6)
            let off = Int(g.next() % UInt64(blobs[i].count - 4096)) & ~4095
            #expect(try files[i].readBytes(at: UInt64(off), count: 4096)[...] == blobs[i][off..<(off + 4096)])
            if step % 50 == 0 {
                let du = run(["/usr/bin/du", "-s", "--block-size=1", dir.path]).out.split(separator: "\t").first.flatMap { UInt64($0) } ?? 0
                maxOnDisk = max(maxOnDisk, du)
            }
        }
        // Data within the limit, plus the presence maps and directory blocks.
        #expect(maxOnDisk <= capacity + (256 << 10), "\(maxOnDisk) bytes on disk for a \(capacity)-byte cache")
        #expect(cache.usage <= capacity)
    }

    @Test("one process per cache folder; a blob open with one size refuses another")
    func exclusive() throws {
        let dir = TemporaryDirectory("obd-cache")
        defer { dir.remove() }
        var cache: BlockCache? = try BlockCache(directory: dir.path, capacity: 8 << 20, refillSize: 64 * 1024)
        let bytes = Self.blob(1 << 20, seed: 5)
        let f = try cache!.open(key: "sha256:k", upstream: SlowFile(bytes))
        #expect(throws: BlockIOError.self) { try cache!.open(key: "sha256:k", upstream: SlowFile(Self.blob(2 << 20, seed: 5))) }
        #expect(try f.readBytes(at: 1000, count: 10)[...] == bytes[1000..<1010])
        // Another process (flock(1) here) holding the folder: a clear refusal.
        cache = nil
        let holder = try holdLockInAnotherProcess(dir.file(".lock"))
        defer { kill(holder, SIGKILL); var st: Int32 = 0; waitpid(holder, &st, 0) }
        #expect(throws: BlockCacheError.self) { try BlockCache(directory: dir.path, capacity: 8 << 20) }
    }

    @Test("a damaged presence map is discarded, never trusted")
    func damagedMap() throws {
        let dir = TemporaryDirectory("obd-cache")
        defer { dir.remove() }
        let bytes = Self.blob(1 << 20, seed: 5)
        do {
            let cache = try BlockCache(directory: dir.path, capacity: 1 << 30, refillSize: 64 * 1024)
            let f = try cache.open(key: "sha256:dddd", upstream: SlowFile(bytes))
            _ = try f.readBytes(at: 0, count: bytes.count)
            try f.flush()
        }
        // The data file lost its content while the map still says every unit is present.
        let data = try LocalFile(path: dir.file("sha256:dddd"), mode: .readWrite)
        try data.truncate(to: 0)
        do {
            let cache = try BlockCache(directory: dir.path, capacity: 1 << 30, refillSize: 64 * 1024)
            let up = SlowFile(bytes)
            let f = try cache.open(key: "sha256:dddd", upstream: up)
            #expect(try f.readBytes(at: 0, count: bytes.count) == bytes)
            #expect(up.reads.load(ordering: .relaxed) > 0)
            try f.flush()
        }
        // A map with a bad header (each cache is released before the next one: one per folder).
        let map = try LocalFile(path: dir.file("sha256:dddd.map"), mode: .readWrite)
        try map.writeBytes(Array("XXXXXXXX".utf8), at: 0)
        let cache = try BlockCache(directory: dir.path, capacity: 1 << 30, refillSize: 64 * 1024)
        let up = SlowFile(bytes)
        let f = try cache.open(key: "sha256:dddd", upstream: up)
        #expect(try f.readBytes(at: 0, count: bytes.count) == bytes)
        #expect(up.reads.load(ordering: .relaxed) > 0)
        #expect(throws: BlockIOError.self) { try cache.open(key: "../escape", upstream: up) }
    }
}
