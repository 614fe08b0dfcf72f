import BlockIO
import Glibc
import Testing
import TestSupport
import Trace

/// `obd trace inspect`, and `obd trace record` / `stop` driving a running `obd serve nbd`.
@Suite("obd trace", .serialized)
struct TraceCLITests {
    let obd = builtProduct("obd")

    func write(_ path: String, _ bytes: [UInt8]) throws {
        try LocalFile(path: path, mode: .createTruncate).writeBytes(bytes, at: 0)
    }

    @Test("inspect a binary trace: header, checksum, per-layer totals, one line per record; a broken checksum is shown and exits 1")
    func inspectTrace() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let records = [TraceRecord(layerIndex: 0, count: 4096, offset: 0), TraceRecord(layerIndex: 1, count: 512, offset: 1 << 20),
                       TraceRecord(layerIndex: 0, count: 8192, offset: 65536), TraceRecord(op: TraceRecord.write, layerIndex: 1, count: 1, offset: 7)]
        var bytes = TraceFormat.encode(records)
        try write(dir.file("t"), bytes)
        let r = run([obd, "trace", "inspect", dir.file("t")])
        #expect(r.status == 0, "\(r.err)")
        let lines = r.out.split(separator: "\n").map(String.init)
        #expect(lines.contains("format: binary trace (overlaybd)") && lines.contains("records: 4 (data size 96 bytes)"), "\(r.out)")
        #expect(lines.contains { $0.hasPrefix("checksum: 0x") && $0.hasSuffix(" holds") }, "\(r.out)")
        #expect(lines.contains("layer 0: 2 reads, 12288 bytes") && lines.contains("layer 1: 1 reads, 512 bytes, 1 write records"), "\(r.out)")
        #expect(lines.contains("0\tR\t0\t0\t4096") && lines.contains("1\tR\t1\t1048576\t512") && lines.contains("3\tW\t1\t7\t1"), "\(r.out)")
        let quiet = run([obd, "trace", "inspect", "--no-records", dir.file("t")])
        #expect(quiet.status == 0 && !quiet.out.contains("4096\n") && quiet.out.contains("layer 0:"))
        bytes[40] ^= 0xFF
        try write(dir.file("bad"), bytes)
        let bad = run([obd, "trace", "inspect", dir.file("bad")])
        #expect(bad.status == 1 && bad.out.contains("does NOT hold") && bad.out.contains("records: 4"), "\(bad.out)")
        #expect(bad.err.contains("obd: error:") && bad.err.contains("checksum does not hold"), "\(bad.err)")
        // A header that lies about its size: a clear error, nothing printed as records.
        var lying = TraceFormat.encode(records)
        lying[8] = 0xFF
        try write(dir.file("lying"), lying)
        let l = run([obd, "trace", "inspect", dir.file("lying")])
        #expect(l.status == 1 && l.err.contains("is not 24 + data size"), "\(l.err)")
    }

    @Test("inspect a priority list: it says so, lists paths and skipped lines; over 64 KiB is an error")
    func inspectList() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        try LocalRegistry.write(dir.file("list"), "/usr/bin/\n  /etc/passwd \nrelative\n/usr/lib/*\n")
        let r = run([obd, "trace", "inspect", dir.file("list")])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.contains("format: priority list (not a binary trace: no trace magic)"), "\(r.out)")
        #expect(r.out.contains("paths: 3 (2 directory walks), 1 lines skipped"), "\(r.out)")
        #expect(r.out.contains("line 1\twalk\t/usr/bin/") && r.out.contains("line 2\tfile\t/etc/passwd") && r.out.contains("line 3\tskipped\tnot an absolute path"), "\(r.out)")
        try LocalRegistry.write(dir.file("big"), String(repeating: "/x\n", count: 22000))
        let big = run([obd, "trace", "inspect", dir.file("big")])
        #expect(big.status == 1 && big.err.contains("over the limit of 65536 bytes"), "\(big.err)")
        try LocalRegistry.write(dir.file("empty"), "")
        #expect(run([obd, "trace", "inspect", dir.file("empty")]).out.contains("format: empty"))
    }

    @Test("record arms an image, obd serve nbd records while qemu-io reads, stop removes the lock and waits for .ok", .enabled(if: ReferenceFiles.shouldRun))
    func recordAndStop() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let root = try ReferenceFiles.path("lsmt")
        let config = dir.file("config.v1.json")
        try LocalRegistry.write(config, #"{"lowers": [{"file": "\#(root)/l1/layer1.commit.lz4.zfile"}, {"file": "\#(root)/l2/layer2.commit.lz4.zfile"}]}"#)
        // No recordTracePath and no --trace: refused.
        let none = run([obd, "trace", "record", config])
        #expect(none.status == 1 && none.err.contains("has no recordTracePath"), "\(none.err)")
        let armed = run([obd, "trace", "record", config, "--trace", "trace"])
        #expect(armed.status == 0 && armed.out.contains("armed: \(dir.file("trace")) is empty"), "\(armed.err)")
        #expect(readText(config).contains(#""recordTracePath":"trace""#))
        let stopIdle = run([obd, "trace", "stop", config])
        #expect(stopIdle.status == 1 && stopIdle.err.contains("no recording runs"), "\(stopIdle.err)")
        let pid = try ServeNBDTests.start([config, "--socket", dir.file("s"), "--read-only"], socket: dir.file("s"), log: dir.file("log"))
        #expect(access(dir.file("trace.lock"), F_OK) == 0, "the open image took the lock")
        let twice = run([obd, "trace", "record", config])
        #expect(twice.status == 1 && twice.err.contains("a recording runs"), "\(twice.err)")
        let q = run(["/usr/bin/qemu-io", "-f", "raw", "-r", "-c", "read 0 64k", "-c", "read 1M 128k", "nbd+unix:///?socket=" + dir.file("s")])
        #expect(q.status == 0, "\(q.out) \(q.err)")
        let stop = run([obd, "trace", "stop", config, "--timeout", "30"])
        #expect(stop.status == 0, "\(stop.err)")
        #expect(access(dir.file("trace.ok"), F_OK) == 0 && access(dir.file("trace.lock"), F_OK) != 0)
        let records = try TraceFormat.read(path: dir.file("trace"))
        #expect(!records.isEmpty && stop.out.contains("recorded \(dir.file("trace")): \(records.count) records"), "\(stop.out)")
        #expect(ServeNBDTests.stop(pid) == 0)
        // The trace is non-empty now: record refuses to throw it away without -f.
        let keep = run([obd, "trace", "record", config])
        #expect(keep.status == 1 && keep.err.contains("-f empties it"), "\(keep.err)")
        #expect(run([obd, "trace", "record", "-f", config]).status == 0)
        #expect(access(dir.file("trace.ok"), F_OK) != 0)
    }
}
