@testable import BlockCache
import BlockIO
import Glibc
import Registry
import Synchronization
import Testing
import TestSupport

/// A sequential scan of a registry blob through the cache, against docker-registry:
/// readahead grows into a few large range requests, streamed to disk as they arrive.
@Suite("Block cache: sequential scans of registry blobs", .serialized, .enabled(if: LocalRegistry.available || ReferenceFiles.isCI))
struct SequentialReadTests {
    static func scan(_ file: CachedFile, chunk: Int, expect bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = min(chunk, bytes.count - off)
            let got = try file.readBytes(at: UInt64(off), count: n)
            guard got[...] == bytes[off..<(off + n)] else {
                Issue.record("bytes differ at \(off)")
                return
            }
            off += n
        }
    }

    @Test("readahead runs grow with the streak (4 MiB to 32 MiB), never past the window or short of a unit")
    func shape() {
        let unit: UInt64 = 256 << 10, MiB: UInt64 = 1 << 20
        #expect(CachedFile.readaheadShape(streak: MiB, unit: unit, readahead: 64 * MiB) == (4 * MiB, 4 * MiB))
        #expect(CachedFile.readaheadShape(streak: 4 * MiB, unit: unit, readahead: 64 * MiB) == (8 * MiB, 16 * MiB))
        #expect(CachedFile.readaheadShape(streak: 100 * MiB, unit: unit, readahead: 64 * MiB) == (32 * MiB, 64 * MiB))
        #expect(CachedFile.readaheadShape(streak: 100 * MiB, unit: unit, readahead: 256 * MiB) == (32 * MiB, 256 * MiB))
        // A small configured window is kept; a run is at least one unit.
        #expect(CachedFile.readaheadShape(streak: 100 * MiB, unit: unit, readahead: MiB) == (MiB, MiB))
        #expect(CachedFile.readaheadShape(streak: 100 * MiB, unit: 4 * MiB, readahead: MiB) == (4 * MiB, 4 * MiB))
        #expect(CachedFile.readaheadShape(streak: UInt64.max / 2, unit: unit, readahead: 64 * MiB) == (32 * MiB, 64 * MiB))
    }

    @Test("a 64 MiB scan in 1 MiB reads: bytes exact in a dozen range requests, not one per 4 MiB")
    func fewLargeRequests() throws {
        let reg = try LocalRegistry()
        var g = SplitMix64(seed: 77)
        let bytes = g.bytes(64 << 20)
        let digest = try reg.push(repository: "obd/scan", tag: "v1", layer: bytes)
        let client = RegistryClient(host: reg.host, options: RegistryOptions(plainHTTP: true))
        let dir = TemporaryDirectory("obd-cache")
        defer { dir.remove() }
        let cache = try BlockCache(directory: dir.path, capacity: 256 << 20, refillSize: 256 << 10)
        let file = try cache.open(key: digest, upstream: RemoteBlob(client: client, repository: "obd/scan", digest: digest,
                                                                   size: UInt64(bytes.count)))
        try Self.scan(file, chunk: 1 << 20, expect: bytes)
        let requests = client.requestCount.load(ordering: .relaxed)
        // Runs of a fixed 4 MiB would take 16 requests and more.
        #expect(requests <= 13, "\(requests) requests for a 64 MiB scan")
        #expect(cache.usage == UInt64(bytes.count))
    }

    @Test("streamed runs cut in the middle continue after what arrived; bytes exact, all of it cached")
    func cutRuns() throws {
        let reg = try LocalRegistry()
        var g = SplitMix64(seed: 78)
        let bytes = g.bytes(24 << 20 + 12345)
        let digest = try reg.push(repository: "obd/scancut", tag: "v1", layer: bytes)
        let proxy = try FaultProxy(upstreamPort: reg.port)
        // Every third blob read is cut after 1.5 MiB, every fifth reset after 300 KiB.
        proxy.setPolicy { r, n in
            guard r.isBlobRead else { return .pass }
            if n % 3 == 1 { return .truncate(afterBytes: 3 << 19) }
            if n % 5 == 2 { return .reset(afterBytes: 300_000) }
            return .pass
        }
        var o = RegistryOptions(plainHTTP: true)
        o.timeoutSeconds = 30
        let client = RegistryClient(host: proxy.host, options: o)
        let dir = TemporaryDirectory("obd-cache")
        defer { dir.remove() }
        let cache = try BlockCache(directory: dir.path, capacity: 256 << 20, refillSize: 64 << 10)
        let file = try cache.open(key: digest, upstream: RemoteBlob(client: client, repository: "obd/scancut", digest: digest,
                                                                   size: UInt64(bytes.count)))
        proxy.resetCounters()
        try Self.scan(file, chunk: 256 << 10, expect: bytes)
        #expect(cache.usage == UInt64(bytes.count))
        // Everything is cached: a second scan costs no request.
        proxy.resetCounters()
        try Self.scan(file, chunk: 1 << 20, expect: bytes)
        #expect(proxy.blobReads == 0)
    }
}
