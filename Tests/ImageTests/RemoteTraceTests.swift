import BlockIO
import Glibc
import Image
import Synchronization
import Testing
import TestSupport
import Trace
import ZFile

/// Trace record and replay with remote lowers: docker-registry on loopback behind the fault proxy.
@Suite("Trace record and replay (remote lowers)", .serialized, .enabled(if: RemoteImageFixture.available))
struct RemoteTraceTests {
    /// Scattered small reads over both lowers (no sequential streak, so no cache readahead
    /// muddles the counts): the local suite's workload, the fixture holds the same layers.
    static var reads: [(offset: UInt64, count: Int)] { TraceImageTests.reads }

    /// config.v1.json of the fixture's remote lowers (plus `extraLowers` digests) with extra top-level keys.
    static func writeConfig(_ f: RemoteImageFixture, digests: [String]? = nil, sizes: [Int]? = nil, dirs: Bool = false, extra: String) throws {
        let ds = digests ?? f.digests, ss = sizes ?? f.layers.map(\.count)
        let lowers = zip(ds, ss).enumerated().map { i, d in
            #"{"digest": "\#(d.0)", "size": \#(d.1)\#(dirs ? #", "dir": "\#(f.layerDir(i))""# : "")}"#
        }.joined(separator: ", ")
        try LocalRegistry.write(f.configPath, """
            {"repoBlobUrl": "http://\(f.host)/v2/\(f.repository)/blobs", "lowers": [\(lowers)], \(extra)}
            """)
    }

    static func open(_ f: RemoteImageFixture, log: TraceImageTests.Log = TraceImageTests.Log()) throws -> Image {
        try Image.open(configPath: f.configPath, global: GlobalConfig.load(from: f.globalPath), log: log.sink)
    }

    static func readWorkload(_ image: Image) throws -> [[UInt8]] {
        try reads.map { try image.stack.readBytes(at: $0.offset, count: $0.count) }
    }

    @Test("record while reading, replay into a fresh cache, then the same reads need no registry request")
    func recordThenReplay() throws {
        let f = try RemoteImageFixture(mode: .anonymous, withProxy: true)
        let proxy = try #require(f.proxy)
        let trace = f.dir.file("trace")
        try TraceImageTests.emptyFile(trace)
        // Background download is on in the config, and off while recording.
        try Self.writeConfig(f, dirs: true, extra: #""recordTracePath": "\#(trace)", "download": {"enable": true, "delay": 0, "delayExtra": 1}"#)
        let log = TraceImageTests.Log()
        let recording = try Self.open(f, log: log)
        #expect(recording.download == nil && log.contains("background download is off while a trace is recorded"))
        let expected = try Self.readWorkload(recording)
        recording.close()
        #expect(access(trace + ".ok", F_OK) == 0)
        let records = try TraceFormat.read(path: trace)
        #expect(!records.isEmpty && Set(records.map(\.layerIndex)) == [0, 1])

        // A fresh cache: the replay must fetch everything the workload needs.
        try f.writeGlobal(cacheDir: f.dir.file("cache2"))
        try Self.writeConfig(f, extra: #""recordTracePath": "\#(trace)""#)
        proxy.resetCounters()
        let replay = try Self.open(f, log: log)
        let p = try #require(replay.prefetcher)
        #expect(p.wait(seconds: 120), "prefetch did not finish: \(p.progress)")
        #expect(p.progress.failures == 0 && p.progress.done == p.plan.ranges.count)
        #expect(proxy.blobReads > 0, "the replay fetched from the registry")
        proxy.resetCounters()
        #expect(try Self.readWorkload(replay) == expected)
        #expect(proxy.requests == 0, "\(proxy.requests) registry requests after the replay; the cache should hold every range")
        replay.close()
    }

    @Test("foreground reads racing a replay get the right bytes; closing mid-replay stops it and joins its threads")
    func closeMidReplay() throws {
        let f = try RemoteImageFixture(mode: .anonymous, withProxy: true)
        let proxy = try #require(f.proxy)
        // Small refill units and two prefetch threads behind a slow registry: the replay
        // takes many round trips, so it is still running when the image closes.
        try f.writeGlobal(refillSize: 4096, extra: #""prefetchConfig": {"concurrency": 2}"#)
        var records: [TraceRecord] = []
        for k in 0..<400 { records.append(TraceRecord(layerIndex: UInt32(k % 2), count: 4096, offset: Int64(k / 2) * 8192)) }
        let trace = f.dir.file("trace")
        try TraceFormat.write(records, to: trace)
        try Self.writeConfig(f, extra: #""recordTracePath": "\#(trace)""#)
        var local = ImageConfig()
        local.lowers = try TraceImageTests.lowers.map { ImageConfig.Lower(file: try ReferenceFiles.path("lsmt") + "/" + $0) }
        let expected = try Self.readWorkload(Image(config: local))
        proxy.latencyMs.store(50, ordering: .relaxed)
        let image = try Self.open(f)
        let p = try #require(image.prefetcher)
        #expect(p.plan.ranges.count >= 100 && p.progress.bytes == 0 || !p.isFinished)
        #expect(try Self.readWorkload(image) == expected, "foreground reads during the replay")
        image.close()
        #expect(p.isFinished, "close returned with prefetch threads running")
        #expect(p.progress.done < p.plan.ranges.count, "the replay was stopped, not finished (\(p.progress))")
        proxy.latencyMs.store(0, ordering: .relaxed)
        // Reopened over the cache the stopped replay left: the same bytes (the image is
        // closed after its reads: a closed image's registry clients are cancelled).
        let again = try Self.open(f)
        #expect(try Self.readWorkload(again) == expected)
        let d = try Digest.sha256(size: 4 << 20) { try again.stack.read(into: $0, at: $1) }
        #expect(d == RemoteImageFixture.expected.first4MiB)
        again.close()
    }

    @Test("a remote acceleration layer (a tar holding 'trace') is fetched and replayed; it is no disk layer")
    func remoteAccelerationLayer() throws {
        let f = try RemoteImageFixture(mode: .anonymous, withProxy: true)
        let proxy = try #require(f.proxy)
        // Record a trace first (local cache), then push the image with an acceleration layer.
        let trace = f.dir.file("trace")
        try TraceImageTests.emptyFile(trace)
        try Self.writeConfig(f, extra: #""recordTracePath": "\#(trace)""#)
        let recording = try Self.open(f)
        let expected = try Self.readWorkload(recording)
        recording.close()
        let bytes = try LocalFile(path: trace).readBytes(at: 0, count: Int(LocalFile(path: trace).size))
        let tar = TarWrapper.prefix(payloadSize: UInt64(bytes.count), mode: 0o100444) + bytes + TarWrapper.suffix(payloadSize: UInt64(bytes.count))
        let digests = try f.registry.push(repository: f.repository, tag: "accel", layers: f.layers + [tar])
        #expect(Array(digests.prefix(2)) == f.digests)
        try f.writeGlobal(cacheDir: f.dir.file("cache2"))
        try Self.writeConfig(f, digests: digests, sizes: f.layers.map(\.count) + [tar.count], extra: #""accelerationLayer": true"#)
        let log = TraceImageTests.Log()
        let image = try Self.open(f, log: log)
        #expect(image.lowerFiles.count == 2 && image.remoteLayers.count == 2)
        let p = try #require(image.prefetcher)
        #expect(p.source.hasSuffix(digests[2] + " (trace)"))
        #expect(p.wait(seconds: 120), "prefetch did not finish: \(p.progress)")
        #expect(p.progress.failures == 0)
        proxy.resetCounters()
        #expect(try Self.readWorkload(image) == expected)
        #expect(proxy.requests == 0)
        image.close()
    }
}
