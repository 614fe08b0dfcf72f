import BlockIO
import Convert
import Ext4
import Glibc
import Image
import LSMT
import Synchronization
import Testing
import TestSupport
import Trace

/// A file that remembers every range read from it.
final class RangeLog: BlockFile, Sendable {
    let inner: any BlockFile
    let reads = Mutex<[(offset: UInt64, length: UInt64)]>([])
    init(_ inner: any BlockFile) { self.inner = inner }
    var size: UInt64 { inner.size }
    var name: String { inner.name }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        let n = try inner.read(into: buffer, at: offset)
        reads.withLock { $0.append((offset, UInt64(n))) }
        return n
    }
    func reset() { reads.withLock { $0 = [] } }
}

/// Log lines an image sends.
final class Log: Sendable {
    let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    var sink: @Sendable (String) -> Void { { [self] m in lines.withLock { $0.append(m) } } }
    func contains(_ s: String) -> Bool { all.contains { $0.contains(s) } }
}

/// Sorted, disjoint, non-adjacent byte intervals: the union of `ranges`.
func union(_ ranges: [(offset: UInt64, length: UInt64)]) -> [ClosedRange<UInt64>] {
    var out: [ClosedRange<UInt64>] = []
    for r in ranges.filter({ $0.length > 0 }).sorted(by: { $0.offset < $1.offset }) {
        let end = r.offset + r.length - 1
        if let last = out.last, r.offset <= last.upperBound + 1 {
            out[out.count - 1] = last.lowerBound...max(last.upperBound, end)
        } else {
            out.append(r.offset...end)
        }
    }
    return out
}

/// Priority lists over a real ext4 image made by `obd convert` from the fixture layers.
/// The expected ranges come from `debugfs` (`stat` for the size, `ex` for the extents) run
/// on a raw export of the merged lowers, not from obd's own ext4 code.
@Suite("Priority lists (real ext4 image)", .serialized,
       .enabled(if: access("/usr/sbin/mke2fs", X_OK) == 0 && access("/usr/sbin/debugfs", X_OK) == 0))
struct PriorityListImageTests {
    let obd = builtProduct("obd")

    /// The converted image: its layer blobs (bottom first) and a raw export of its disk.
    struct Built {
        let dir: TemporaryDirectory
        let layers: [String]
        let raw: String
        let blockSize: UInt64
    }

    static let list = """
        /big.bin
        /usr/bin/tool
        /etc/abs-link
        /usr/lib/
        /data/*
        /nope/missing.txt
           /etc/hostname\u{20}\u{20}
        /home/user
        relative/path
        /dev/null

        """
    /// The regular files the list names (a symlink followed, a hard link and a repeat once).
    static let files = ["/big.bin", "/usr/bin/tool", "/etc/hostname", "/usr/lib/xattr.txt", "/data/sparse.img"]

    func build() throws -> Built {
        let dir = TemporaryDirectory("obd-plist")
        let src = try ConvertImageTests.makeLayers(dir)
        let r = run([obd, "convert", "--vsize", "4", "--cache-dir", "none", "-d", dir.file("w"), "oci:\(src.dir):v1", "oci:\(dir.file("out")):v1"])
        guard r.status == 0 else { throw ConvertImageTests.Failure("convert: \(r.err)") }
        let (_, digests) = try ConvertImageTests.convertedStack(dir.file("out"))
        let layers = digests.map { dir.file("out/blobs/sha256/" + $0.dropFirst(7)) }
        try writeConfig(dir, layers: layers, extra: "")
        let e = run([obd, "export", dir.file("config.v1.json"), "-o", dir.file("disk.raw")])
        guard e.status == 0 else { throw ConvertImageTests.Failure("export: \(e.err)") }
        let stats = debugfs(dir.file("disk.raw"), "stats")
        let bs = stats.split(separator: "\n").first { $0.hasPrefix("Block size:") }.flatMap { UInt64($0.split(separator: " ").last ?? "") } ?? 0
        return Built(dir: dir, layers: layers, raw: dir.file("disk.raw"), blockSize: bs)
    }

    func writeConfig(_ dir: TemporaryDirectory, layers: [String], extra: String) throws {
        let lowers = layers.map { #"{"file": "\#($0)"}"# }.joined(separator: ", ")
        try LocalRegistry.write(dir.file("config.v1.json"), #"{"lowers": [\#(lowers)]\#(extra.isEmpty ? "" : ", " + extra)}"#)
    }

    func debugfs(_ raw: String, _ request: String) -> String {
        run(["/usr/sbin/debugfs", "-R", request, raw]).out
    }

    /// debugfs's view of where `path`'s data lies: leaf extents cut at the size rounded up to 512.
    func expectedRanges(_ b: Built, _ path: String) -> [(offset: UInt64, length: UInt64)] {
        let stat = debugfs(b.raw, "stat \(path)")
        guard let sizeText = stat.range(of: "Size: ").map({ stat[$0.upperBound...].prefix { $0.isNumber } }), let size = UInt64(sizeText) else {
            return []
        }
        let cap = (size + 511) / 512 * 512
        var out: [(offset: UInt64, length: UInt64)] = []
        for line in debugfs(b.raw, "ex \(path)").split(separator: "\n").dropFirst() {
            // " 0/ 0   1/  1     0 -   767 33280 - 34047    768 [Uninit]"
            let f = String(line.map { $0 == "/" ? " " : $0 }).split(separator: " ").map(String.init)
            guard f.count >= 11, f[0] == f[1], f[5] == "-", f[8] == "-" else { continue }
            guard let lblk = UInt64(f[4]), let pblk = UInt64(f[7]), let len = UInt64(f[10]) else { continue }
            if line.contains("Uninit") { continue }
            let start = lblk * b.blockSize
            guard start < cap else { continue }
            out.append((pblk * b.blockSize, min(len * b.blockSize, cap - start)))
        }
        return out
    }

    @Test("the listed files' extents (debugfs's view) are exactly what is prefetched; directory lines walk; repeats, hard links and symlinks read once")
    func exactRanges() throws {
        let b = try build()
        defer { b.dir.remove() }
        #expect(b.blockSize == 4096)
        let want = union(Self.files.flatMap { expectedRanges(b, $0) })
        #expect(!want.isEmpty)
        #expect(expectedRanges(b, "/data/sparse.img").count == 3, "the sparse file's three written pieces")
        try LocalRegistry.write(b.dir.file("list"), Self.list)
        try writeConfig(b.dir, layers: b.layers, extra: #""recordTracePath": "list""#)
        let log = Log()
        let image = try Image.open(configPath: b.dir.file("config.v1.json"), log: log.sink)
        defer { image.close() }
        let p = try #require(image.prefetcher)
        #expect(p.target == .mergedLowers && p.source == b.dir.file("list"))
        #expect(p.wait(seconds: 120), "prefetch did not finish: \(p.progress)")
        let resolved = try #require(p.priorityList)
        #expect(resolved.files == Self.files.count && resolved.missing == ["/nope/missing.txt"], "\(resolved)")
        #expect(resolved.skipped.count == 2 && resolved.skipped.contains { $0.hasPrefix("/home/user: is a directory") }
                && resolved.skipped.contains { $0.hasPrefix("/dev/null: is neither") }, "\(resolved.skipped)")
        #expect(union(p.plan.ranges.map { ($0.offset, $0.length) }) == want)
        #expect(p.plan.ranges.allSatisfy { $0.layerIndex == 0 && $0.length <= 1 << 20 })
        #expect(resolved.records.allSatisfy { $0.count <= 1 << 20 })
        let progress = p.progress
        #expect(progress.done == progress.total && progress.failures == 0 && progress.bytes == p.plan.totalBytes)
        #expect(progress.bytes == want.reduce(0) { $0 + $1.upperBound - $1.lowerBound + 1 })
        #expect(log.contains("/nope/missing.txt does not exist; skipped"), "\(log.all)")
        #expect(log.contains("1 lines are not usable paths"), "\(log.all)")
        #expect(log.contains("prefetch finished"), "\(log.all)")
    }

    @Test("read through a decorator: after the ext4 metadata, the replay reads exactly the listed files' ranges, each at most 1 MiB")
    func readsThroughDecorator() throws {
        let b = try build()
        defer { b.dir.remove() }
        let want = union(Self.files.flatMap { expectedRanges(b, $0) })
        let disk = RangeLog(try LayerStack(lowers: b.layers.map { try LayerOpener.open(path: $0) }))
        let list = try PriorityList(bytes: Array(Self.list.utf8), path: "list")
        let resolved = try PriorityListPlan.resolve(list, disk: disk, source: "list")
        #expect(!disk.reads.withLock { $0 }.isEmpty, "resolving reads the file system's metadata")
        disk.reset()
        let plan = ReplayPlan(records: resolved.records, maxRange: PriorityListPlan.sliceSize, layerSizes: [0: disk.size])
        let replayer = TraceReplayer(plan: plan, files: [0: disk], concurrency: 4)
        try replayer.start()
        #expect(replayer.wait(seconds: 60))
        let reads = disk.reads.withLock { $0 }
        #expect(union(reads) == want)
        #expect(reads.allSatisfy { $0.length <= 1 << 20 } && reads.count == plan.ranges.count)
        // The big file's 3 MiB are read as (at least) three slices.
        #expect(reads.count >= 3 + Self.files.count - 1)
    }

    @Test("a list over 64 KiB is refused clearly; one of exactly 64 KiB is used; nothing but missing paths prefetches nothing")
    func sizesAndMissing() throws {
        let b = try build()
        defer { b.dir.remove() }
        var big = String(repeating: "/usr/bin/tool\n", count: 65536 / 14)
        big += String(repeating: " ", count: 65536 - big.utf8.count)
        #expect(big.utf8.count == 65536)
        try LocalRegistry.write(b.dir.file("list"), big)
        try writeConfig(b.dir, layers: b.layers, extra: #""recordTracePath": "list""#)
        let ok = try Image.open(configPath: b.dir.file("config.v1.json"))
        let p = try #require(ok.prefetcher)
        #expect(p.wait(seconds: 120))
        #expect(p.priorityList?.files == 1 && p.priorityList?.missing == [])
        ok.close()
        try LocalRegistry.write(b.dir.file("list"), big + "/")
        do {
            _ = try Image.open(configPath: b.dir.file("config.v1.json"))
            Issue.record("a 65537-byte priority list was accepted")
        } catch let e as ImageError {
            #expect("\(e)".contains("priority list of 65537 bytes is over the limit of 65536 bytes"), "\(e)")
        }
        try LocalRegistry.write(b.dir.file("list"), "/no/such/file\n/neither/this/\n")
        let log = Log()
        let none = try Image.open(configPath: b.dir.file("config.v1.json"), log: log.sink)
        let q = try #require(none.prefetcher)
        #expect(q.wait(seconds: 60))
        #expect(q.plan.ranges.isEmpty && q.priorityList?.missing == ["/no/such/file", "/neither/this/"])
        #expect(log.contains("/no/such/file does not exist") && log.contains("/neither/this/ does not exist"), "\(log.all)")
        // The image reads fine, and closing right after opening joins the resolver.
        #expect(try none.stack.readBytes(at: 0, count: 4096).count == 4096)
        none.close()
        try LocalRegistry.write(b.dir.file("list"), Self.list)
        let quick = try Image.open(configPath: b.dir.file("config.v1.json"))
        quick.close()
        #expect(try #require(quick.prefetcher).isFinished)
    }

    @Test("an acceleration layer whose trace is a priority list prefetches the files from the lowers below it")
    func accelerationLayerList() throws {
        let b = try build()
        defer { b.dir.remove() }
        _ = run(["/bin/mkdir", "-p", b.dir.file("accel")])
        try LocalRegistry.write(b.dir.file("accel/trace"), "/big.bin\n")
        let lowers = (b.layers.map { #"{"file": "\#($0)"}"# } + [#"{"dir": "accel"}"#]).joined(separator: ", ")
        try LocalRegistry.write(b.dir.file("config.v1.json"), #"{"lowers": [\#(lowers)], "accelerationLayer": true}"#)
        let image = try Image.open(configPath: b.dir.file("config.v1.json"))
        defer { image.close() }
        let p = try #require(image.prefetcher)
        #expect(p.wait(seconds: 60))
        #expect(p.priorityList?.files == 1)
        #expect(union(p.plan.ranges.map { ($0.offset, $0.length) }) == union(expectedRanges(b, "/big.bin")))
        #expect(p.plan.totalBytes == 3 << 20)
    }
}
