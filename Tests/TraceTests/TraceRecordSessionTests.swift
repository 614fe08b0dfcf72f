import BlockIO
import Glibc
import Synchronization
import Testing
import TestSupport
import Threading
import Trace

@Suite("Trace record session (lock, trace, ok)")
struct TraceRecordSessionTests {
    static func exists(_ p: String) -> Bool { access(p, F_OK) == 0 }

    /// Polls `condition` every 10 ms until it holds or `seconds` pass.
    static func waitFor(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = monotonicSeconds() + seconds
        while !condition() {
            if monotonicSeconds() > deadline { return false }
            usleep(10_000)
        }
        return true
    }

    @Test("removing the lock file ends the recording: trace written with its checksum, lock gone, .ok created")
    func stopByUnlinkingTheLock() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.file("trace")
        try LocalFile(path: path, mode: .createTruncate).flush()
        try LocalFile(path: path + ".ok", mode: .createTruncate).flush()  // left by an earlier run
        let recorder = TraceRecorder()
        let messages = Mutex<[String]>([])
        let session = try TraceRecordSession.start(path: path, recorder: recorder, pollInterval: 0.05) { m in messages.withLock { $0.append(m) } }
        #expect(Self.exists(path + ".lock"))
        #expect(!Self.exists(path + ".ok"), "a stale .ok is removed when recording starts")
        #expect(recorder.isRecording)
        let layer = TracingFile(MemoryFile(bytes: [UInt8](repeating: 7, count: 1 << 20), writable: false), layerIndex: 1, recorder: recorder)
        for i in 0..<50 { _ = try layer.readBytes(at: UInt64(i) * 8192, count: 4096) }
        #expect(unlink(path + ".lock") == 0)
        #expect(Self.waitFor(10) { Self.exists(path + ".ok") }, ".ok did not appear")
        #expect(!Self.exists(path + ".lock"))
        let records = try TraceFormat.read(path: path)
        #expect(records.count == 50)
        #expect(records.first == TraceRecord(layerIndex: 1, count: 4096, offset: 0))
        #expect(records.last == TraceRecord(layerIndex: 1, count: 4096, offset: 49 * 8192))
        // The independent reader agrees on header and checksum.
        let bytes = try LocalFile(path: path).readBytes(at: 0, count: 24 + 50 * 24)
        #expect(IndependentTrace.header(bytes).checksum == IndependentTrace.crc32cRaw(bytes[24...]))
        #expect(try session.result() == TraceRecordSummary(records: 50, dropped: 0, bytes: 50 * 4096))
        #expect(!recorder.isRecording)
        // Reads after the end are not recorded; stop afterwards changes nothing.
        _ = try layer.readBytes(at: 0, count: 4096)
        #expect(try session.stop().records == 50)
        #expect(try TraceFormat.read(path: path).count == 50)
        #expect(messages.withLock { $0 }.contains { $0.contains("50 records") && $0.contains("was removed") })
    }

    @Test("stop (the image closing) ends the recording at once; an existing lock refuses a second recording")
    func stopAndLockExists() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.file("trace")
        let recorder = TraceRecorder()
        let session = try TraceRecordSession.start(path: path, recorder: recorder, pollInterval: 3600)
        #expect(throws: TraceError.lockExists(path: path + ".lock")) {
            _ = try TraceRecordSession.start(path: path, recorder: TraceRecorder())
        }
        recorder.record(layerIndex: 0, offset: 512, count: 512)
        let t0 = monotonicSeconds()
        let summary = try session.stop()
        #expect(monotonicSeconds() - t0 < 60, "stop did not wait for the hour-long poll")
        #expect(summary.records == 1)
        #expect(Self.exists(path + ".ok") && !Self.exists(path + ".lock"))
        #expect(try TraceFormat.read(path: path) == [TraceRecord(layerIndex: 0, count: 512, offset: 512)])
        // Recording again after a finished session: the same recorder, a fresh trace.
        unlink(path)
        let again = try TraceRecordSession.start(path: path, recorder: recorder, pollInterval: 3600)
        #expect(!Self.exists(path + ".ok"))
        #expect(try again.stop().records == 0)
        #expect(try TraceFormat.read(path: path).isEmpty)
    }

    @Test("a lock that cannot be created and a trace that cannot be written are clear errors")
    func failures() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        #expect(throws: TraceError.io(path: dir.file("none/trace.lock"), operation: "create", errno: ENOENT)) {
            _ = try TraceRecordSession.start(path: dir.file("none/trace"), recorder: TraceRecorder())
        }
        // The trace path is a folder: the rename fails, the lock is still removed.
        let path = dir.file("folder")
        mkdir(path, 0o755)
        let session = try TraceRecordSession.start(path: path, recorder: TraceRecorder(), pollInterval: 3600)
        var failure: TraceError?
        do { _ = try session.stop() } catch { failure = error }
        if case .io(let p, let op, _)? = failure {
            #expect(p == path && op.hasPrefix("rename"))
        } else {
            Issue.record("expected a rename error, got \(String(describing: failure))")
        }
        #expect(!Self.exists(path + ".lock") && !Self.exists(path + ".ok"))
    }
}
