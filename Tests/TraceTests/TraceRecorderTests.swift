import BlockIO
import Synchronization
import Testing
import TestSupport
import Threading
import Trace

@Suite("Trace recorder and recording decorator")
struct TraceRecorderTests {
    @Test("many threads recording at once: every record kept, each thread's records in its own order")
    func manyThreads() throws {
        let recorder = TraceRecorder()
        recorder.begin()
        let threads = 16, perThread = 4000
        try parallelForEach(count: threads, threads: threads) { t in
            for i in 0..<perThread {
                recorder.record(layerIndex: UInt32(t), offset: UInt64(i) * 4096, count: 4096 + t)
            }
        }
        let records = recorder.finish()
        #expect(records.count == threads * perThread)
        #expect(!recorder.isRecording)
        var seen = [Int](repeating: 0, count: threads)
        for r in records {
            let t = Int(r.layerIndex)
            #expect(r.offset == Int64(seen[t]) * 4096 && r.count == UInt64(4096 + t))
            seen[t] += 1
        }
        #expect(seen.allSatisfy { $0 == perThread })
        #expect(recorder.finish().isEmpty, "a second finish has nothing")
    }

    @Test("idle recorders record nothing; a new recording starts empty; the record limit drops and counts the rest")
    func lifecycle() {
        let recorder = TraceRecorder(maxRecords: 10)
        recorder.record(layerIndex: 0, offset: 0, count: 1)
        recorder.begin()
        for i in 0..<25 { recorder.record(layerIndex: 0, offset: UInt64(i), count: 1) }
        #expect(recorder.droppedCount == 15)
        #expect(recorder.finish().map(\.offset) == Array(0..<10))
        recorder.record(layerIndex: 0, offset: 99, count: 1)
        recorder.begin()
        recorder.record(layerIndex: 3, offset: 7, count: 2)
        #expect(recorder.finish() == [TraceRecord(layerIndex: 3, count: 2, offset: 7)])
    }

    @Test("the decorator records successful full reads only, with its layer index, and passes bytes through")
    func decorator() throws {
        var g = SplitMix64(seed: 5)
        let bytes = g.bytes(100_000)
        let recorder = TraceRecorder()
        let file = TracingFile(MemoryFile(bytes: bytes, writable: false), layerIndex: 4, recorder: recorder)
        #expect(file.size == 100_000 && file.mappedBytes == nil && !file.isWritable)
        _ = try file.readBytes(at: 0, count: 10)  // idle: not recorded
        recorder.begin()
        #expect(try file.readBytes(at: 4096, count: 8192) == Array(bytes[4096..<12288]))
        var buf = [UInt8](repeating: 0, count: 4096)
        let short = try buf.withUnsafeMutableBytes { try file.read(into: $0, at: 99_000) }
        #expect(short == 1000)
        let none = try buf.withUnsafeMutableBytes { try file.read(into: $0, at: 200_000) }
        #expect(none == 0)
        _ = try file.readBytes(at: 0, count: 512)
        #expect(recorder.finish() == [TraceRecord(layerIndex: 4, count: 8192, offset: 4096), TraceRecord(layerIndex: 4, count: 512, offset: 0)])
    }
}
