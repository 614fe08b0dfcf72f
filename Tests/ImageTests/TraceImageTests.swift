import BlockIO
import FoundationEssentials
import Glibc
import Image
import Synchronization
import Testing
import TestSupport
import Trace

/// Trace recording and replay through a real image over the overlaybd reference layers.
@Suite("Trace record and replay (local lowers)", .enabled(if: ReferenceFiles.shouldRun), .serialized)
struct TraceImageTests {
    static let lowers = ["l1/layer1.commit.lz4.zfile", "l2/layer2.commit.lz4.zfile"]
    /// Disk ranges the "workload" reads: scattered and small, at data each lower
    /// provides (first, middle and last mapped segments of each), so both lowers are read.
    static let reads: [(offset: UInt64, count: Int)] = {
        guard let root = try? ReferenceFiles.path("lsmt") else { return [] }
        var config = ImageConfig()
        config.lowers = lowers.map { ImageConfig.Lower(file: root + "/" + $0) }
        guard let image = try? Image(config: config) else { return [] }
        var out: [(offset: UInt64, count: Int)] = []
        for tag in [UInt8(0), 1] {
            let segs = image.stack.flattenedIndex().filter { $0.tag == tag && !$0.zeroed }
            for s in [segs.first, segs.dropFirst(segs.count / 2).first, segs.last].compactMap({ $0 }) {
                out.append((s.offset * 512, Int(min(UInt64(s.length) * 512, 65536))))
            }
        }
        return out.sorted { $0.offset < $1.offset }
    }()

    final class Log: Sendable {
        let lines = Mutex<[String]>([])
        var all: [String] { lines.withLock { $0 } }
        var sink: @Sendable (String) -> Void { { [self] m in lines.withLock { $0.append(m) } } }
        func contains(_ s: String) -> Bool { all.contains { $0.contains(s) } }
    }

    static func exists(_ p: String) -> Bool { access(p, F_OK) == 0 }

    /// A config of the two reference lowers; `extraLowers` adds lowers (JSON), `extra` top-level keys.
    static func config(_ dir: TemporaryDirectory, extraLowers: [String] = [], extra: String = "") throws -> String {
        let root = try ReferenceFiles.path("lsmt")
        let lowers = (Self.lowers.map { #"{"file": "\#(root)/\#($0)"}"# } + extraLowers).joined(separator: ", ")
        let path = dir.file("config.v1.json")
        try LocalRegistry.write(path, #"{"lowers": [\#(lowers)]\#(extra.isEmpty ? "" : ", " + extra)}"#)
        return path
    }

    static func readWorkload(_ image: Image) throws -> [[UInt8]] {
        try reads.map { try image.stack.readBytes(at: $0.offset, count: $0.count) }
    }

    static func emptyFile(_ path: String) throws { try LocalFile(path: path, mode: .createTruncate).flush() }

    /// Records the workload into `dir/trace` and returns the trace's records.
    static func record(_ dir: TemporaryDirectory) throws -> [TraceRecord] {
        try emptyFile(dir.file("trace"))
        let path = try config(dir, extra: #""recordTracePath": "trace""#)
        let log = Log()
        let image = try Image.open(configPath: path, log: log.sink)
        #expect(exists(dir.file("trace.lock")) && !exists(dir.file("trace.ok")))
        #expect(image.prefetcher == nil && image.traceRecording != nil)
        _ = try readWorkload(image)
        image.close()
        #expect(exists(dir.file("trace.ok")) && !exists(dir.file("trace.lock")))
        #expect(log.contains("trace recording ended (the image closes)"), "\(log.all)")
        return try TraceFormat.read(path: dir.file("trace"))
    }

    @Test("an empty recordTracePath records the lowers' reads in layer-file coordinates; close writes the trace and .ok")
    func recordLocal() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let records = try Self.record(dir)
        #expect(!records.isEmpty)
        let root = try ReferenceFiles.path("lsmt")
        let sizes = try Self.lowers.map { try LayerOpener.unwrap(LocalFile(path: root + "/" + $0)).0.size }
        #expect(Set(records.map(\.layerIndex)).isSubset(of: [0, 1]))
        #expect(Set(records.map(\.layerIndex)) == [0, 1], "the workload reaches both lowers")
        for r in records {
            #expect(r.op == TraceRecord.read && r.count > 0 && UInt64(r.offset) + r.count <= sizes[Int(r.layerIndex)], "\(r)")
        }
        // The recorded ranges, read from the layer files, are what the stack read: replay
        // them into a recorder-free image and compare bytes (a recording changes nothing).
        let plain = try Image(config: ImageConfig.load(path: Self.config(TemporaryDirectory())))
        let again = try Self.readWorkload(plain)
        var c = try ImageConfig.load(path: dir.file("config.v1.json"))
        c.recordTracePath = ""
        #expect(try Self.readWorkload(Image(config: c)) == again)
    }

    @Test("a binary trace at recordTracePath replays at open: every merged range read, no lock made, close joins it")
    func replayLocal() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let records = try Self.record(dir)
        let replayDir = TemporaryDirectory()
        defer { replayDir.remove() }
        try TraceFormat.write(records, to: replayDir.file("trace"))
        let log = Log()
        var g = GlobalConfig()
        g.prefetchConfig.concurrency = 3
        let image = try Image(config: ImageConfig.load(path: Self.config(replayDir, extra: #""recordTracePath": "trace""#)), global: g, log: log.sink)
        let p = try #require(image.prefetcher)
        #expect(image.traceRecording == nil && !Self.exists(replayDir.file("trace.lock")))
        #expect(p.wait(seconds: 120))
        let progress = p.progress
        #expect(progress.done == progress.total && progress.failures == 0 && progress.total == p.plan.ranges.count)
        #expect(progress.bytes == p.plan.totalBytes)
        #expect(p.plan.ranges.count <= records.count && p.plan.ranges.allSatisfy { $0.length <= 4 << 20 })
        #expect(log.contains("prefetch finished"), "\(log.all)")
        #expect(log.contains("\(records.count) records -> \(p.plan.ranges.count) ranges"), "\(log.all)")
        image.close()
        #expect(p.isFinished)
        #expect(try Self.readWorkload(image).map(\.count) == Self.reads.map(\.count))
    }

    @Test("acceleration layer: the top lower is no disk layer, its dir/trace replays; unknown layer indexes are skipped and logged")
    func accelerationLayerLocal() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var records = try Self.record(dir)
        records.append(TraceRecord(layerIndex: 9, count: 4096, offset: 0))
        records.append(TraceRecord(layerIndex: 1, count: 4096, offset: 1 << 40))
        _ = run(["/bin/mkdir", "-p", dir.file("accel")])
        try TraceFormat.write(records, to: dir.file("accel/trace"))
        let path = try Self.config(dir, extraLowers: [#"{"dir": "accel"}"#], extra: #""accelerationLayer": true"#)
        let log = Log()
        let image = try Image.open(configPath: path, log: log.sink)
        #expect(image.lowerFiles.count == 2 && image.lowerPaths.count == 2)
        let p = try #require(image.prefetcher)
        #expect(p.source == dir.file("accel/trace"))
        #expect(p.wait(seconds: 120))
        #expect(p.progress.failures == 0)
        #expect(p.plan.unknownLayers == [9] && p.plan.clippedRecords == 1)
        #expect(log.contains("name layers [9] that this image does not have"), "\(log.all)")
        image.close()
        #expect(try Self.readWorkload(image).count == Self.reads.count)
        // An acceleration layer without a trace: nothing to prefetch, the image opens.
        unlink(dir.file("accel/trace"))
        let bare = try Image.open(configPath: path, log: log.sink)
        #expect(bare.prefetcher == nil && log.contains("no trace at"))
    }

    @Test("a priority list opens the image and resolves in the background; a corrupt trace or a missing file opens the image without prefetch, with a log line")
    func refusedAndSkipped() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        try LocalRegistry.write(dir.file("list"), "/usr/bin/\n/etc/passwd\n")
        let listed = try Image.open(configPath: Self.config(dir, extra: #""recordTracePath": "list""#))
        let lp = try #require(listed.prefetcher)
        #expect(lp.target == .mergedLowers && lp.wait(seconds: 120))
        listed.close()
        _ = run(["/bin/mkdir", "-p", dir.file("accel")])
        try LocalRegistry.write(dir.file("accel/trace"), "/usr/bin/\n")
        let accel = try Image.open(configPath: Self.config(dir, extraLowers: [#"{"dir": "accel"}"#], extra: #""accelerationLayer": true"#))
        #expect(accel.prefetcher?.target == .mergedLowers && accel.lowerFiles.count == 2)
        accel.close()
        // Over 64 KiB: refused.
        try LocalRegistry.write(dir.file("accel/trace"), String(repeating: "/usr/bin/x\n", count: 7000))
        #expect(throws: ImageError.self) {
            try Image.open(configPath: Self.config(dir, extraLowers: [#"{"dir": "accel"}"#], extra: #""accelerationLayer": true"#))
        }
        var bytes = TraceFormat.encode([TraceRecord(layerIndex: 0, count: 4096, offset: 0)])
        bytes[30] ^= 1
        try LocalFile(path: dir.file("bad"), mode: .createTruncate).writeBytes(bytes, at: 0)
        let log = Log()
        let bad = try Image.open(configPath: Self.config(dir, extra: #""recordTracePath": "bad""#), log: log.sink)
        #expect(bad.prefetcher == nil && bad.traceRecording == nil)
        #expect(log.contains("the trace is not replayed") && log.contains("checksum"), "\(log.all)")
        let missing = try Image.open(configPath: Self.config(dir, extra: #""recordTracePath": "none""#), log: log.sink)
        #expect(missing.prefetcher == nil && missing.traceRecording == nil && !Self.exists(dir.file("none.lock")))
        #expect(log.contains("does not exist: no trace is recorded or replayed"))
        // A stale lock from a crashed recording refuses the record request clearly.
        try Self.emptyFile(dir.file("t2"))
        try Self.emptyFile(dir.file("t2.lock"))
        do {
            _ = try Image.open(configPath: Self.config(dir, extra: #""recordTracePath": "t2""#))
            Issue.record("recorded over a stale lock")
        } catch {
            #expect("\(error)".contains("t2.lock: exists"), "\(error)")
        }
    }

    @Test("start and stop a recording on an open image (for a CLI): one at a time, the lock protocol")
    func startStop() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let image = try Image.open(configPath: Self.config(dir))
        #expect(image.traceRecording == nil && !image.traceRecorder.isRecording)
        #expect(try image.stopRecording() == nil)
        try image.startRecording(path: dir.file("t"))
        #expect(throws: TraceError.alreadyRecording(path: dir.file("u"), running: dir.file("t"))) { try image.startRecording(path: dir.file("u")) }
        #expect(Self.exists(dir.file("t.lock")))
        _ = try Self.readWorkload(image)
        let summary = try #require(try image.stopRecording())
        #expect(summary.records > 0 && Self.exists(dir.file("t.ok")))
        #expect(try TraceFormat.read(path: dir.file("t")).count == summary.records)
        // A second recording after the first ended.
        try image.startRecording(path: dir.file("u"))
        image.close()
        #expect(Self.exists(dir.file("u.ok")))
    }
}
