import BlockIO
import Synchronization
import Testing
import TestSupport
import Threading
import Trace

/// A layer file that counts its reads, the bytes they cover and the most reads in
/// flight at once; with `gate` closed, reads wait until it opens.
final class ObservedFile: BlockFile, Sendable {
    let inner: MemoryFile
    let state = ConditionLock<(inFlight: Int, peak: Int, reads: Int, bytes: Set<UInt64>, gateOpen: Bool)>((0, 0, 0, [], true))

    init(size: Int, gateOpen: Bool = true) {
        inner = MemoryFile(bytes: [UInt8](repeating: 1, count: size), writable: false)
        state.withLock { $0.gateOpen = gateOpen }
    }

    var size: UInt64 { inner.size }
    var name: String { "observed" }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        state.withLock { s in
            s.inFlight += 1
            s.peak = max(s.peak, s.inFlight)
            s.reads += 1
            for b in stride(from: offset, to: offset + UInt64(buffer.count), by: 512) { s.bytes.insert(b) }
        }
        state.notifyAll()
        state.withLock(when: { $0.gateOpen }) { _ in }
        defer {
            state.withLock { $0.inFlight -= 1 }
            state.notifyAll()
        }
        return try inner.read(into: buffer, at: offset)
    }

    func openGate() {
        state.withLock { $0.gateOpen = true }
        state.notifyAll()
    }
}

@Suite("Trace replayer")
struct TraceReplayerTests {
    @Test("every planned range is read once, with at most `concurrency` in flight; missing layers count as failures")
    func replaysThePlan() throws {
        let a = ObservedFile(size: 8 << 20), b = ObservedFile(size: 8 << 20)
        var recs: [TraceRecord] = []
        for i in 0..<200 { recs.append(TraceRecord(layerIndex: UInt32(i % 2), count: 4096, offset: Int64(i / 2) * 40960)) }
        recs.append(TraceRecord(layerIndex: 5, count: 512, offset: 0))
        let plan = ReplayPlan(records: recs, maxRange: 65536)
        let messages = Mutex<[String]>([])
        let replayer = TraceReplayer(plan: plan, files: [0: a, 1: b], concurrency: 3) { m in messages.withLock { $0.append(m) } }
        try replayer.start()
        #expect(replayer.wait(seconds: 60))
        replayer.stop()
        let p = replayer.progress
        #expect(p.done == plan.ranges.count && p.total == plan.ranges.count && p.failures == 1)
        #expect(p.bytes == plan.totalBytes - 512)
        #expect(a.state.withLock { $0.peak } <= 3 && b.state.withLock { $0.peak } <= 3)
        #expect(a.state.withLock { $0.reads } + b.state.withLock { $0.reads } == plan.ranges.count - 1)
        for (layer, f) in [(UInt32(0), a), (1, b)] {
            let want = Set(recs.filter { $0.layerIndex == layer }.flatMap { r in stride(from: UInt64(r.offset), to: UInt64(r.offset) + r.count, by: 512) })
            #expect(f.state.withLock { $0.bytes } == want)
        }
        #expect(messages.withLock { $0 }.contains { $0.contains("no such layer") })
        #expect(messages.withLock { $0 }.contains { $0.hasPrefix("prefetch finished") })
    }

    @Test("stop mid-replay: no new range starts, the reads in flight finish, every thread is joined")
    func stopMidway() throws {
        let f = ObservedFile(size: 64 << 20, gateOpen: false)
        let recs = (0..<64).map { TraceRecord(layerIndex: 0, count: 1 << 20, offset: Int64($0) << 20) }
        let plan = ReplayPlan(records: recs, maxRange: 1 << 20)
        let replayer = TraceReplayer(plan: plan, files: [0: f], concurrency: 4)
        try replayer.start()
        // Wait (bounded) until all four workers sit in a read.
        let inFlight = f.state.withLock(when: { $0.inFlight == 4 }, deadline: monotonicSeconds() + 30) { $0.inFlight }
        #expect(inFlight == 4)
        let stopped = ConditionLock(false)
        try NamedThread.detach(name: "test-stop") {
            replayer.stop()
            stopped.withLock { $0 = true }
            stopped.notifyAll()
        }
        #expect(!replayer.isFinished)
        f.openGate()
        #expect(stopped.withLock(when: { $0 }, deadline: monotonicSeconds() + 30) { $0 } == true)
        #expect(replayer.isFinished)
        let p = replayer.progress
        #expect(p.done < plan.ranges.count, "stopped before the end (\(p.done) of \(plan.ranges.count))")
        #expect(f.state.withLock { $0.inFlight } == 0)
        let reads = f.state.withLock { $0.reads }
        #expect(reads == p.done)
        replayer.stop()
    }

    @Test("an empty plan finishes at once; stop before start prevents the start")
    func edges() throws {
        let empty = TraceReplayer(plan: ReplayPlan(records: []), files: [:], concurrency: 16)
        try empty.start()
        #expect(empty.isFinished)
        empty.stop()
        let f = ObservedFile(size: 4096)
        let never = TraceReplayer(plan: ReplayPlan(records: [TraceRecord(layerIndex: 0, count: 4096, offset: 0)]), files: [0: f], concurrency: 1)
        never.stop()
        try never.start()
        #expect(never.isFinished && f.state.withLock { $0.reads } == 0)
    }
}
